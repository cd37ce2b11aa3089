"""Dynamic Neural Diversification (Kovalenko, Kordik, Friedjungova, 2021):
decorrelation penalties on hidden units, on a schedule.

A reconstruction: only the paper's abstract and a short follow-up are public,
and no code; ``../shared/papers/neural-diversification.md`` gives what is
confirmed and the reconstruction implemented here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import correlation
from ..core.hooks import PreActivationHooks
from ..core.activations import post_activation
from ..core.status import unit_observations
from ..surgery import hidden_layers
from .base import Option, Technique, TrainContext, choice, int_at_least, number

#: the penalties (:mod:`jumpstart.core.correlation`)
KINDS = ("weight_corr", "decov", "ncl", "logdet")
#: when the penalty is on
SCHEDULES = ("const", "early", "trigger")


class Diversify(Technique):
    """Loss ``task + div_lam * R``, ``R`` a decorrelation penalty averaged over
    the hidden layers (a reconstruction of Kovalenko et al. 2021, see the
    module docstring).

    ``div_kind`` (:mod:`jumpstart.core.correlation`):

    - ``weight_corr`` (default): mean squared correlation between weight rows
      (centred; plain cosine with the bias when the fan-in is below 4);
    - ``decov``: DeCov (Cogswell et al. 2016), the off-diagonal batch
      covariance of the units' activations;
    - ``ncl``: minus the spread of the activations across units per sample
      (negative-correlation learning carried to hidden units; keep
      ``div_lam`` small);
    - ``logdet``: ``-log det(R_W + 1e-4 I)`` of the weight-row correlation,
      on the layers with ``H <= D - 1`` only (the others have a singular
      ``R_W``); a net with no such layer is refused at attach.

    ``div_schedule`` ("dynamic" application): ``const`` (always on),
    ``early`` (the first ``div_epochs`` epochs only), ``trigger`` (on during
    an epoch when the mean ``|rho|`` between weight rows, averaged over the
    layers and measured at the start and after each epoch, exceeds
    ``div_tau``). Logged every epoch: ``corr/<layer>`` (mean ``|rho|``
    between weight rows) and ``div_on`` (1 when the penalty was on in the
    epoch just trained, else 0).

    Options: ``div_kind``, ``div_lam`` (>= 0, default 0.01), ``div_schedule``
    (default ``const``), ``div_epochs`` (default 5), ``div_tau`` (in [0, 1],
    default 0.3). Activations are taken after each layer's activation (conv:
    every sample and position is an observation). The penalty is computed in
    float32 with autocast off, whatever precision the forward ran in (the
    fast path's bfloat16: ``torch.logdet`` has no bfloat16 kernel, and
    bfloat16's 8-bit mantissa would round correlations to about 0.004).

    Raises:
        ValueError: at attach, a model :func:`~jumpstart.surgery.hidden_layers`
            does not know, or ``logdet`` with no layer of ``H <= D - 1``.
    """

    name = "diversify"
    options = {
        "div_kind": Option("weight_corr", *choice(KINDS)),
        "div_lam": Option(0.01, *number(lambda v: v >= 0, "a number >= 0")),
        "div_schedule": Option("const", *choice(SCHEDULES)),
        "div_epochs": Option(5, *int_at_least(1)),
        "div_tau": Option(0.3, *number(lambda v: 0 <= v <= 1, "a number in [0, 1]")),
    }

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.hooks: PreActivationHooks | None = None

    def attach(self, ctx: TrainContext) -> None:
        kind = self.config["div_kind"]
        self.layers = hidden_layers(ctx.model)
        if kind == "logdet":
            self.layers = [l for l in self.layers
                           if l.width <= l.module.weight[0].numel() - 1]
            if not self.layers:
                raise ValueError("diversify with div_kind 'logdet' needs a hidden layer with "
                                 "fewer units than its fan-in (H <= D - 1); this net has none")
        self.pre: dict[str, Tensor] = {}
        if kind in ("decov", "ncl"):
            self.hooks = PreActivationHooks(ctx.model, self.pre.__setitem__,
                                            on_start=self.pre.clear)
        schedule = self.config["div_schedule"]
        self.on = schedule != "trigger" or self._mean_corr() > self.config["div_tau"]

    def _mean_corr(self) -> float:
        """Mean over the layers of the mean ``|rho|`` between weight rows."""
        values = self._layer_corr()
        return sum(values) / len(values)

    def _layer_corr(self) -> list[float]:
        out = []
        for layer in self.layers:
            w = layer.module.weight.detach()
            b = None if layer.module.bias is None else layer.module.bias.detach()
            keep = ~correlation.constant_rows(w, b)
            mean, _ = correlation.correlation_stats(correlation.row_correlation(w, b), keep)
            out.append(0.0 if mean != mean else mean)  # NaN (under two rows): nothing to correlate
        return out

    def _penalty(self, layer) -> Tensor:
        kind = self.config["div_kind"]
        if kind in ("weight_corr", "logdet"):
            return getattr(correlation, kind)(layer.module.weight, layer.module.bias)
        g = self.pre[layer.activation_name]
        h = post_activation(layer.activation, g.float())
        return getattr(correlation, kind)(unit_observations(h))

    def loss(self, ctx: TrainContext) -> Tensor | None:
        if not self.on or self.config["div_lam"] == 0:
            return None
        device = self.layers[0].module.weight.device.type
        with torch.autocast(device, enabled=False):  # float32 (see the class)
            terms = [self._penalty(layer) for layer in self.layers]
        return self.config["div_lam"] * sum(terms[1:], terms[0]) / len(terms)

    def after_epoch(self, ctx: TrainContext) -> None:
        for layer, value in zip(self.layers, self._layer_corr()):
            ctx.log(f"corr/{layer.name}", value)
        ctx.log("div_on", float(self.on))
        schedule = self.config["div_schedule"]
        if schedule == "early":
            self.on = ctx.epoch < self.config["div_epochs"]
        elif schedule == "trigger":
            self.on = self._mean_corr() > self.config["div_tau"]

    def detach(self, ctx: TrainContext) -> None:
        if self.hooks is not None:
            self.hooks.remove()
            self.hooks = None
