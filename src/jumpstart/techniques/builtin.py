"""The techniques of the IEEE Access 2025 UCI comparison: baseline,
Jumpstart, batch normalization, skip connections, GELU."""

from __future__ import annotations

from torch import Tensor

from ..core.regularizer import JUMPSTART_OPTIONS, Jumpstart
from .base import Option, Technique, TrainContext, int_at_least


class Baseline(Technique):
    """The plain ReLU net, trained on the task loss alone."""

    name = "baseline"
    supports = frozenset({"population", "stacks"})


class JumpstartTechnique(Technique):
    """Jumpstart regularization: loss ``task + lam * P`` (CPAIOR eq. (7)), the
    penalty from :class:`~jumpstart.Jumpstart` on every hidden pre-activation.

    Options: :data:`~jumpstart.core.regularizer.JUMPSTART_OPTIONS` (``lam``
    >= 0, ``aggregation``, ``margin``, ``sign_balance``, ``constraints``,
    ``tie_break``, ``granularity``), with their defaults there. On a
    population model (``model.members``) the penalty is per member, shape ``(P,)``.
    """

    name = "jumpstart"
    options = JUMPSTART_OPTIONS
    supports = frozenset({"population", "stacks"})

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.regularizer: Jumpstart | None = None

    def attach(self, ctx: TrainContext) -> None:
        opts = {k: v for k, v in self.config.items() if k != "lam"}
        self.regularizer = Jumpstart(ctx.model, members=bool(getattr(ctx.model, "members", 0)),
                                     **opts)

    def loss(self, ctx: TrainContext) -> Tensor | None:
        if self.regularizer is None or self.config["lam"] == 0:
            return None
        return self.config["lam"] * self.regularizer.penalty()

    def detach(self, ctx: TrainContext) -> None:
        if self.regularizer is not None:
            self.regularizer.remove()
            self.regularizer = None


class BatchNorm(Technique):
    """Batch normalization before every hidden activation (Ioffe & Szegedy 2015);
    the pre-activation another technique sees is then the normalized one."""

    name = "batchnorm"
    supports = frozenset({"population"})

    def model_options(self, options: dict) -> dict:
        return {**self._need(options, "norm"), "norm": "batch"}


class Skip(Technique):
    """Residual connections (He et al. 2016): the output of every ``skip_every``-th
    hidden layer is added to the pre-activation ``skip_every`` layers later
    (:class:`~jumpstart.models.Rectangular`, ``skip``)."""

    name = "skip"
    options = {"skip_every": Option(2, *int_at_least(1))}
    supports = frozenset({"population"})

    def model_options(self, options: dict) -> dict:
        return {**self._need(options, "skip"), "skip": self.config["skip_every"]}


class Gelu(Technique):
    """GELU activations instead of ReLU (Hendrycks & Gimpel 2016)."""

    name = "gelu"
    supports = frozenset({"population"})

    def model_options(self, options: dict) -> dict:
        return {**self._need(options, "activation"), "activation": "gelu"}
