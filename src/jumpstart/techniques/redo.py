"""ReDo: recycling tau-dormant units (Sokar, Agarwal, Castro, Evci; ICML 2023).

Specification: ``../shared/papers/recycling.md`` (checked against the official
code, google/dopamine ``labs/redo/weight_recyclers.py``).
"""

from __future__ import annotations

import torch

from ..core.status import dormant_scores, unit_observations
from ..surgery import INITS, layer_outputs, layers_of, reinit_units, zero_outgoing
from .base import Option, Technique, TrainContext, choice, int_at_least, number


class ReDo(Technique):
    """Every ``redo_every`` optimizer steps, re-initialize the tau-dormant units
    of every hidden layer (never the output layer).

    Score of unit ``i`` of a layer on a batch of activations ``h`` (after the
    activation; conv: mean over batch and positions, one score per channel):
    ``s_i = mean|h_i| / ((1/H) sum_k mean|h_k|)`` (ReDo eq. (1), normalized
    by the layer mean as the official code does;
    :func:`~jumpstart.core.status.dormant_scores`). A unit is dormant if
    ``s_i <= redo_tau`` (``redo_tau = 0``: exactly zero). Dormant units get
    (:mod:`jumpstart.surgery`) incoming weights re-drawn from ``redo_init``
    (Glorot uniform by default, as the official code) with bias 0, outgoing
    weights 0, and the optimizer state of those incoming rows and outgoing
    columns zeroed; as in the official code the bias state and the step
    count are kept. With BatchNorm (not in the official code) the reset
    scale and shift of those units get zeroed state too. On a net with
    residual connections the residual path still carries a recycled unit
    (only the next layer's weights read by it are zeroed).

    Statistics come from one batch of the last ``redo_batch`` training
    inputs seen (default 256, the paper's ``batch_size_statistics``), run
    through the model in eval mode without gradient (a choice of ours: the
    official code's RL networks have no BatchNorm whose running statistics a
    train-mode pass would move). Logged every epoch on the same batch:
    ``dormant`` (share of hidden units tau-dormant) and ``dormant/<layer>``.

    Options: ``redo_every`` (steps, default 1000), ``redo_tau`` (default 0.1),
    ``redo_batch`` (default 256), ``redo_init`` (one of
    :data:`~jumpstart.surgery.INITS`, default ``glorot``).

    Any model: the toolkit's nets and ``nn.Sequential`` chains are read by
    hand; any other (a torchvision or timm net) is traced once through
    Torch-Pruning's dependency graph on the run's first training inputs
    (:func:`~jumpstart.surgery.hidden_layers`), and only its layers whose
    units are one conv or linear layer's outputs read by the next ones are
    recycled; a residual stream, a concatenation, a depthwise conv or a
    LayerNorm'd channel is skipped with a warning naming it (re-drawing one
    branch's rows there would not re-initialize the unit). Such a layer's
    scores are taken at its reader's input (after any pooling between).

    Raises:
        ImportError: a model outside the toolkit without Torch-Pruning.
    """

    name = "redo"
    options = {
        "redo_every": Option(1000, *int_at_least(1)),
        "redo_tau": Option(0.1, *number(lambda v: v >= 0, "a number >= 0")),
        "redo_batch": Option(256, *int_at_least(1)),
        "redo_init": Option("glorot", *choice(INITS)),
    }

    def attach(self, ctx: TrainContext) -> None:
        self.layers = layers_of(ctx.model, getattr(ctx.data, "x_train", None))
        self.inputs = None

    def _remember(self, x: torch.Tensor) -> None:
        x = x.detach()
        keep = self.config["redo_batch"]
        self.inputs = x[-keep:] if self.inputs is None else torch.cat([self.inputs, x])[-keep:]

    def dormant(self, model) -> list[torch.Tensor]:
        """Per hidden layer, the dormant mask ``(C,)`` on the remembered batch."""
        was = model.training
        model.eval()
        try:
            outs = layer_outputs(model, self.layers, self.inputs)
        finally:
            model.train(was)
        tau = self.config["redo_tau"]
        return [dormant_scores(unit_observations(h).abs().mean(0)) <= tau
                for h in outs]

    def after_step(self, ctx: TrainContext) -> None:
        self._remember(ctx.batch[0])
        if self.layers is None:
            self.layers = layers_of(ctx.model, ctx.batch[0])
        if ctx.step % self.config["redo_every"]:
            return
        for layer, mask in zip(self.layers, self.dormant(ctx.model)):
            units = mask.nonzero().flatten().cpu()
            if not len(units):
                continue
            reinit_units(layer, units, init=self.config["redo_init"])
            zero_outgoing(layer, units)
            ctx.zero_state(layer.module.weight, units)
            if layer.norm is not None:  # scale and shift were reset with the weights
                ctx.zero_state(layer.norm.weight, units)
                ctx.zero_state(layer.norm.bias, units)
            for reader in layer.readers:
                ctx.zero_state(reader.module.weight,
                               (slice(None), reader.columns(units, layer.width)))

    def after_epoch(self, ctx: TrainContext) -> None:
        if self.inputs is None:
            return
        masks = self.dormant(ctx.model)
        for layer, mask in zip(self.layers, masks):
            ctx.log(f"dormant/{layer.name}", mask.float().mean())
        ctx.log("dormant", torch.cat(masks).float().mean())

    def detach(self, ctx: TrainContext) -> None:
        self.inputs = None
