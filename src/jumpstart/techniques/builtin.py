"""The techniques of the IEEE Access 2025 UCI comparison: baseline,
Jumpstart, batch normalization, skip connections, GELU."""

from __future__ import annotations

from torch import Tensor, nn

from ..core.deficits import GRANULARITIES, TIE_BREAKS
from ..core.regularizer import AGGREGATIONS, Jumpstart
from .base import Option, Technique, choice, int_at_least, number


#: activation module types whose inputs are the hidden pre-activations
HIDDEN_ACTIVATIONS = (nn.ReLU, nn.GELU)


class Baseline(Technique):
    """The plain ReLU net, trained on the task loss alone."""

    name = "baseline"

    def stack_penalty(self) -> tuple[float, dict]:
        return 0.0, {}


class JumpstartTechnique(Technique):
    """Jumpstart regularization: loss ``task + lam * P`` (CPAIOR eq. (7)), the
    penalty from :class:`~jumpstart.Jumpstart` on every hidden pre-activation.

    Options: ``lam`` (>= 0), ``aggregation``, ``margin``, ``sign_balance``,
    ``tie_break``, ``granularity``, as :class:`~jumpstart.Jumpstart`. On a
    population model (``model.members``) the penalty is per member, shape ``(P,)``.
    """

    name = "jumpstart"
    options = {
        "lam": Option(1e-4, *number(lambda v: v >= 0, "a number >= 0")),
        "aggregation": Option("balanced", *choice(AGGREGATIONS)),
        "margin": Option(1.0, *number(lambda v: v > 0, "a number > 0")),
        "sign_balance": Option(0.5, *number(lambda v: 0 <= v <= 1, "a number in [0, 1]")),
        "tie_break": Option("single", *choice(TIE_BREAKS)),
        "granularity": Option("channel", *choice(GRANULARITIES)),
    }

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.regularizer: Jumpstart | None = None

    def attach(self, model: nn.Module) -> None:
        opts = {k: v for k, v in self.config.items() if k != "lam"}
        self.regularizer = Jumpstart(model, members=bool(getattr(model, "members", 0)),
                                     activations=HIDDEN_ACTIVATIONS, **opts)

    def loss(self) -> Tensor | None:
        if self.regularizer is None or self.config["lam"] == 0:
            return None
        return self.config["lam"] * self.regularizer.penalty()

    def detach(self) -> None:
        if self.regularizer is not None:
            self.regularizer.remove()
            self.regularizer = None

    def stack_penalty(self) -> tuple[float, dict]:
        opts = {k: v for k, v in self.config.items() if k != "lam"}
        return float(self.config["lam"]), opts


class BatchNorm(Technique):
    """Batch normalization before every hidden activation (Ioffe & Szegedy 2015);
    the pre-activation another technique sees is then the normalized one."""

    name = "batchnorm"

    def model_options(self, options: dict) -> dict:
        return {**self._need(options, "norm"), "norm": "batch"}


class Skip(Technique):
    """Residual connections (He et al. 2016): the output of every ``skip_every``-th
    hidden layer is added to the pre-activation ``skip_every`` layers later
    (:class:`~jumpstart.models.Rectangular`, ``skip``)."""

    name = "skip"
    options = {"skip_every": Option(2, *int_at_least(1))}

    def model_options(self, options: dict) -> dict:
        return {**self._need(options, "skip"), "skip": self.config["skip_every"]}


class Gelu(Technique):
    """GELU activations instead of ReLU (Hendrycks & Gimpel 2016)."""

    name = "gelu"

    def model_options(self, options: dict) -> dict:
        return {**self._need(options, "activation"), "activation": "gelu"}
