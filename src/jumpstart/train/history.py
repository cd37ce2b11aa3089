"""One per-member training history for every trainer: per-epoch curves, last
and best values, and the metrics a finished run reports.

:func:`~jumpstart.train.fit` is a population of one; the population trainers
record ``P`` members at once. Metric names are defined here once
(:data:`CURVE_METRICS`) and read by the results store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

#: per-epoch metrics every trainer records: ``loss`` (mean task loss of the
#: epoch's training batches), ``penalty`` (mean extra loss term of the
#: technique, e.g. ``lam * P``; 0 without one), ``train_acc`` (of the epoch's
#: training forwards), ``val_acc`` and, with a test part, ``test_acc`` (eval
#: mode, after the epoch's updates). Techniques may log more
#: (:meth:`~jumpstart.techniques.TrainContext.log`); every one is kept in the curves.
CURVE_METRICS = ("loss", "penalty", "train_acc", "val_acc", "test_acc")
#: metrics whose best value over the epochs is reported (``best_<name>``)
BEST_METRICS = ("train_acc", "val_acc")
#: keys of :meth:`History.metrics` besides the curve metrics (never a logged name)
RESERVED = {"best_train_acc", "best_val_acc", "final_loss", "epochs", "seconds", "diverged",
            "best_val_test_acc", "status", "params", "widths", "split", "epoch"}


@dataclass
class MemberResult:
    """What one member's training measured.

    Attributes:
        metrics: :meth:`History.metrics`, plus ``status`` (ratios on the
            training set at the end) where the trainer measured it.
        curves: dict of equal-length lists ``epoch`` and every recorded metric
            (:data:`CURVE_METRICS` and any a technique logged), every
            ``curve_every`` epochs and at the last one.
        model: the trained member as a standalone net.
    """

    metrics: dict
    curves: dict
    model: nn.Module


class History:
    """Per-epoch records of ``members`` runs trained side by side.

    Per member it keeps the last value of every metric, the best of
    :data:`BEST_METRICS`, the test accuracy at the first epoch of best
    validation accuracy (early stopping, IEEE Access 2025 protocol), the
    epochs completed, and curves every ``curve_every`` epochs (and at
    ``epochs``). A member stops being recorded at its first non-finite epoch
    (``alive`` False): its values are those of its last finite epoch; a member
    with no finished epoch reports NaN (undefined), never 0.

    Args:
        members: ``P >= 1``.
        epochs: the epoch budget (its last epoch is always on the curves).
        curve_every: curve spacing in epochs (1: every epoch).
        keys: metrics whose curves exist even before their first record.
    """

    def __init__(self, members: int, epochs: int, curve_every: int = 1,
                 keys: tuple[str, ...] = ()) -> None:
        self.members, self.epochs, self.curve_every = members, epochs, curve_every
        self._alive = np.ones(members, dtype=bool)
        self.done = np.zeros(members, dtype=np.int64)
        self.last: dict[str, np.ndarray] = {}
        self.best = {k: np.full(members, -math.inf) for k in BEST_METRICS}
        self.best_val_test = np.full(members, math.nan)
        self.curves: dict[str, list] = {"epoch": [], **{k: [] for k in keys}}

    @property
    def alive(self) -> Tensor:
        """``(P,)`` bool: members still recorded (no non-finite loss yet)."""
        return torch.from_numpy(self._alive)

    def record(self, epoch: int, values: dict[str, Tensor | float],
               logged: dict[str, Tensor | float] | None = None) -> None:
        """Record epoch ``epoch`` for the members still alive.

        Args:
            values: the trainer's metrics: name -> ``(P,)`` tensor or a float
                shared by all members; must include ``train_acc`` and ``val_acc``.
            logged: metrics a technique logged, same form.

        Raises:
            ValueError: a logged name that is a trainer metric (:data:`CURVE_METRICS`)
                or a key of :meth:`metrics`.
        """
        clash = set(logged or ()) & (set(CURVE_METRICS) | set(values) | RESERVED)
        if clash:
            raise ValueError(f"a technique logged {sorted(clash)}: names the trainer reports "
                             "itself; log under another name")
        values = {**values, **(logged or {})}
        now = {k: (v.detach().double().numpy() if isinstance(v, Tensor)
                   else np.full(self.members, float(v))) for k, v in values.items()}
        alive = self._alive
        for k, v in now.items():
            old = self.last.get(k)
            self.last[k] = v.copy() if old is None and alive.all() else np.where(
                alive, v, math.nan if old is None else old)
        improved = alive & (now["val_acc"] > self.best["val_acc"])
        if "test_acc" in now:
            self.best_val_test = np.where(improved, now["test_acc"], self.best_val_test)
        for k in BEST_METRICS:
            self.best[k] = np.where(alive, np.maximum(self.best[k], now[k]), self.best[k])
        self.done[alive] = epoch
        if epoch % self.curve_every == 0 or epoch == self.epochs:
            at = len(self.curves["epoch"])
            self.curves["epoch"].append(epoch)
            for k, v in now.items():
                self.curves.setdefault(k, [None] * at).append(v.copy())
            for k, values in self.curves.items():
                if len(values) == at:  # not recorded this epoch
                    values.append(None)

    def stop(self, finite: Tensor) -> list[int]:
        """Members whose ``finite`` (``(P,)`` bool) is False stop here (diverged);
        returns those that stopped just now (alive until this call)."""
        now = self._alive & ~finite.numpy()
        self._alive &= ~now
        return np.flatnonzero(now).tolist()

    def metrics(self, p: int, seconds: float) -> dict:
        """Member ``p``'s metrics: ``train_acc``, ``best_train_acc``,
        ``val_acc``, ``best_val_acc``, ``final_loss``, ``epochs`` (completed),
        ``seconds``, ``diverged``; with a test part ``test_acc`` (last) and
        ``best_val_test_acc``; the last value of every metric a technique
        logged. Values of a member with no finished epoch are NaN."""

        def last(k):
            return float(self.last[k][p]) if k in self.last else math.nan

        def best(k):
            value = float(self.best[k][p])
            return value if value > -math.inf else math.nan

        out = {"train_acc": last("train_acc"), "best_train_acc": best("train_acc"),
               "val_acc": last("val_acc"), "best_val_acc": best("val_acc"),
               "final_loss": last("loss"), "epochs": int(self.done[p]),
               "seconds": round(seconds, 3), "diverged": not bool(self.alive[p])}
        if "test_acc" in self.last:
            out["test_acc"] = last("test_acc")
            out["best_val_test_acc"] = float(self.best_val_test[p])
        for k in self.last:
            if k not in CURVE_METRICS:
                out[k] = last(k)
        return out

    def member_curves(self, p: int) -> dict[str, list]:
        """Member ``p``'s curves up to its last finished epoch (``None`` where
        a metric was not recorded at an epoch)."""
        keep = [i for i, e in enumerate(self.curves["epoch"]) if e <= int(self.done[p])]
        out = {"epoch": [self.curves["epoch"][i] for i in keep]}
        for k, values in self.curves.items():
            if k != "epoch":
                out[k] = [None if values[i] is None else float(values[i][p]) for i in keep]
        return out
