"""Continual Backprop: generate-and-test replacement of low-utility units
(Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood, Sutton; Nature 632, 2024).

Specification: ``../shared/papers/recycling.md`` (checked against the
authors' code, shibhansh/loss-of-plasticity ``lop/algos/gnt.py``).
"""

from __future__ import annotations

import warnings

import torch

from ..core.status import unit_observations
from ..surgery import INITS, absorb, layers_of, outgoing_weight_sum, reinit_units, zero_outgoing
from .base import Option, Technique, TrainContext, choice, int_at_least, number


class ContinualBackprop(Technique):
    """After every optimizer step, update each hidden unit's contribution
    utility and replace the least useful mature units at rate ``cbp_rho``.

    Per hidden layer (never the output layer), with ``h_i`` the unit's
    activation averaged over the batch (conv: over batch and positions) from
    the step's training forward (watched by a hook:
    :meth:`~jumpstart.surgery.HiddenLayer.watch`) and ``w_ki`` its outgoing
    weights:

    - ``u_i <- eta u_i + (1 - eta) |h_i| sum_k |w_ki|`` (contribution utility)
      and ``f_i <- eta f_i + (1 - eta) h_i`` (mean activation), bias-corrected
      as ``u_i / (1 - eta^age_i)``, ``f_i / (1 - eta^age_i)``;
    - every unit's age grows by 1; units older than ``cbp_maturity`` are mature;
    - an accumulator adds ``cbp_rho * (number of mature units)`` (no debt
      before maturity); while it is ``>= 1`` the mature unit of lowest
      bias-corrected utility is replaced and 1 is subtracted;
    - replacement (:mod:`jumpstart.surgery`): the readers' biases absorb the
      unit's bias-corrected mean contribution (``b_next += w_next[:, i] f_i``;
      for a reader without a bias, followed by BatchNorm, its running mean
      moves instead: :func:`~jumpstart.surgery.absorb`),
      incoming weights re-drawn from ``cbp_init`` (uniform with the Kaiming
      bound, as the authors' code), bias 0, outgoing weights 0, utility, mean
      and age 0, and the optimizer state of the incoming rows, bias and
      outgoing columns zeroed per element (the authors' ``AdamGnT`` also
      resets a per-element step count; a torch optimizer's scalar step is kept).

    Options: ``cbp_rho`` (replacement rate, default 1e-4), ``cbp_maturity``
    (``m``, steps, default 100), ``cbp_eta`` (utility decay, default 0.99),
    ``cbp_init`` (one of :data:`~jumpstart.surgery.INITS`, default
    ``kaiming_uniform``). Logged every epoch: ``replaced`` (units replaced in
    the epoch, all layers).

    On a net with residual connections the residual path still carries a
    replaced unit (only the next layer's weights read by it are zeroed).
    Any other model (a torchvision or timm net) is traced as for
    :class:`~jumpstart.techniques.redo.ReDo` (layers whose units are one
    layer's outputs; the rest skipped with a warning); a layer whose reader
    has neither a bias nor a BatchNorm to absorb the replaced unit's mean is
    skipped too, with a warning. There the units' activations are watched at
    the reader's input (after any pooling between), and the first step,
    taken before the trace, updates no utility.

    Raises:
        ImportError: a model outside the toolkit without Torch-Pruning.
    """

    name = "cbp"
    options = {
        "cbp_rho": Option(1e-4, *number(lambda v: 0 <= v <= 1, "a number in [0, 1]")),
        "cbp_maturity": Option(100, *int_at_least(0)),
        "cbp_eta": Option(0.99, *number(lambda v: 0 <= v < 1, "a number in [0, 1)")),
        "cbp_init": Option("kaiming_uniform", *choice(INITS)),
    }

    def attach(self, ctx: TrainContext) -> None:
        self.layers, self.handles, self.replaced = None, [], 0
        self._watch(layers_of(ctx.model, getattr(ctx.data, "x_train", None)))

    def _watch(self, layers) -> None:
        if layers is None:
            return
        absorbable = [l for l in layers
                      if all(r.module.bias is not None or r.norm is not None for r in l.readers)]
        if len(absorbable) < len(layers):
            left = sorted({l.name for l in layers} - {l.name for l in absorbable})
            warnings.warn(f"cbp: layer(s) {', '.join(left)} skipped: a reader has neither a "
                          "bias nor a BatchNorm to absorb a replaced unit's mean",
                          UserWarning, stacklevel=3)
        self.layers = absorbable
        self.state = [{"util": torch.zeros(layer.width), "mean": torch.zeros(layer.width),
                       "age": torch.zeros(layer.width, dtype=torch.long), "debt": 0.0,
                       "h": None} for layer in self.layers]
        for layer, st in zip(self.layers, self.state):
            self.handles.append(layer.watch(lambda module, h, st=st: self._seen(module, h, st)))

    @staticmethod
    def _seen(module, h: torch.Tensor, st: dict) -> None:
        if module.training and torch.is_grad_enabled():  # a training forward
            st["h"] = unit_observations(h.float()).mean(0).cpu()

    def after_step(self, ctx: TrainContext) -> None:
        if self.layers is None:
            self._watch(layers_of(ctx.model, ctx.batch[0]))
            return
        eta = self.config["cbp_eta"]
        for layer, st in zip(self.layers, self.state):
            h, st["h"] = st["h"], None
            if h is None:
                continue
            out = outgoing_weight_sum(layer).cpu()
            st["age"] += 1
            st["util"].mul_(eta).add_((1 - eta) * h.abs() * out)
            st["mean"].mul_(eta).add_((1 - eta) * h)
            self._replace(ctx, layer, st, eta)

    def _replace(self, ctx: TrainContext, layer, st: dict, eta: float) -> None:
        mature = (st["age"] > self.config["cbp_maturity"]).nonzero().flatten()
        if not len(mature):
            return
        st["debt"] += self.config["cbp_rho"] * len(mature)
        count = int(st["debt"])
        if count < 1:
            return
        st["debt"] -= count
        correction = 1 - eta ** st["age"][mature].double()
        utility = st["util"][mature].double() / correction
        units = mature[utility.argsort()[:count]]
        mean = (st["mean"][units].double() / (1 - eta ** st["age"][units].double())).float()
        absorb(layer, units, mean)
        reinit_units(layer, units, init=self.config["cbp_init"], optimizer=ctx.optimizer)
        zero_outgoing(layer, units, optimizer=ctx.optimizer)
        for key in ("util", "mean", "age"):
            st[key][units] = 0
        self.replaced += len(units)

    def after_epoch(self, ctx: TrainContext) -> None:
        ctx.log("replaced", self.replaced)
        self.replaced = 0

    def detach(self, ctx: TrainContext) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
