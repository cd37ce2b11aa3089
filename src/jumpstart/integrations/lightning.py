"""Jumpstart for any ``LightningModule``: a callback, no change to the module."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
from torch import Tensor

from ..core.regularizer import CONSTRAINTS, Jumpstart, check_options
from ..techniques.builtin import HIDDEN_ACTIVATIONS


class JumpstartCallback(pl.Callback):
    """Adds ``lam * P`` (CPAIOR eq. (7)) to the loss of every training step.

    At fit start the callback hooks every hidden activation of the module
    (:class:`~jumpstart.Jumpstart`) and wraps its ``training_step`` so the
    returned loss (a tensor, or the ``"loss"`` entry of a dict) gains
    ``lam * penalty``, taken from that step's own forward pass. Under DDP
    each process thus regularizes its own batch, and the penalty's gradient
    is averaged with the task gradient by the usual all-reduce. The penalty is
    logged as ``jumpstart/penalty``. Example::

        trainer = lightning.Trainer(callbacks=[JumpstartCallback(lam=1e-3)])
        trainer.fit(my_module, loader)

    Args:
        lam: coefficient ``>= 0``.
        **options: :class:`~jumpstart.Jumpstart` options (``aggregation``,
            ``margin``, ``tie_break``, ...; default activations ReLU and GELU).

    Raises:
        ValueError: ``lam < 0`` or a bad option (at construction); a
            ``training_step`` that returns no loss tensor (at that step).
    """

    def __init__(self, lam: float = 1e-3, **options) -> None:
        if not (isinstance(lam, (int, float)) and lam >= 0):
            raise ValueError(f"lam must be a number >= 0; got {lam!r}")
        check_options(options.get("margin", 1.0), options.get("aggregation", "balanced"),
                      options.get("sign_balance", 0.5), options.get("constraints", CONSTRAINTS),
                      options.get("tie_break", "single"))
        options.setdefault("activations", HIDDEN_ACTIVATIONS)
        self.lam, self.options = float(lam), options
        self.regularizer: Jumpstart | None = None
        self.last_penalty: float | None = None
        self._original = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.regularizer = Jumpstart(pl_module, **self.options)
        original = pl_module.training_step
        self._original = original

        @functools.wraps(original)
        def training_step(*args, **kwargs):
            with self.regularizer.collect():  # the step may call sub-networks, not forward
                out = original(*args, **kwargs)
            penalty = self.regularizer.penalty()
            self.last_penalty = float(penalty.detach())
            pl_module.log("jumpstart/penalty", penalty.detach(), on_step=True, prog_bar=False)
            extra = self.lam * penalty
            if isinstance(out, Tensor):
                return out + extra
            if isinstance(out, dict) and isinstance(out.get("loss"), Tensor):
                return {**out, "loss": out["loss"] + extra}
            raise ValueError("JumpstartCallback: training_step must return a loss tensor or "
                             "a dict with a 'loss' tensor")

        pl_module.training_step = training_step

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._original is not None:
            pl_module.training_step = self._original
            self._original = None
        if self.regularizer is not None:
            self.regularizer.remove()
            self.regularizer = None
