"""Jumpstart for any ``LightningModule``: a callback, no change to the module."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
from torch import Tensor

from ..core.regularizer import JUMPSTART_OPTIONS, Jumpstart, check_options


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
        lam: coefficient ``>= 0``; default and every other option's default
            from :data:`~jumpstart.core.regularizer.JUMPSTART_OPTIONS`.
        **options: :class:`~jumpstart.Jumpstart` options (``aggregation``,
            ``margin``, ``tie_break``, ..., ``activations``, ``layers``).

    Raises:
        ValueError: ``lam < 0`` or a bad option (at construction); a
            ``training_step`` that returns no loss tensor (at that step).
    """

    def __init__(self, lam: float = JUMPSTART_OPTIONS["lam"].default, **options) -> None:
        hooks = {k: options.pop(k) for k in ("activations", "layers", "members")
                 if k in options}
        self.lam = float(check_options(lam=lam, **options)["lam"])
        self.options = {**options, **hooks}
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
