"""The training loop: Adam on a task loss plus whatever a technique adds."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..data.base import Dataset
from ..techniques import Technique

PRECISIONS = ("32", "bf16")


@dataclass
class FitResult:
    """What :func:`fit` measured.

    Attributes:
        history: per-epoch lists ``epoch`` (1-based), ``loss`` (task loss),
            ``penalty`` (the technique's extra loss term, e.g. ``lam * P``
            for Jumpstart; 0 without one), ``train_acc`` (of the training
            forward passes of that epoch), ``val_acc`` and, when the data
            have a test part, ``test_acc`` (eval mode, after the epoch's
            updates).
        diverged: the loss became NaN or inf; training stopped there.
        seconds: wall time of the loop.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    diverged: bool = False
    seconds: float = 0.0

    def _last(self, key: str) -> float:
        values = self.history.get(key) or [math.nan]
        return float(values[-1])

    def _best(self, key: str) -> float:
        values = self.history.get(key) or [math.nan]
        return float(max(values))

    @property
    def epochs(self) -> int:
        """Epochs completed."""
        return len(self.history.get("epoch", []))

    def metrics(self) -> dict[str, float | int | bool]:
        """Final and best accuracies, ``epochs``, ``seconds``, ``diverged``; with
        a test part also ``test_acc`` (final) and ``best_val_test_acc`` (test
        accuracy at the first epoch of best validation accuracy)."""
        extra = {}
        if self.history.get("test_acc"):
            val = self.history["val_acc"]
            extra = {"test_acc": self._last("test_acc"),
                     "best_val_test_acc": float(self.history["test_acc"][val.index(max(val))])}
        return {
            "train_acc": self._last("train_acc"),
            "best_train_acc": self._best("train_acc"),
            "val_acc": self._last("val_acc"),
            "best_val_acc": self._best("val_acc"),
            "final_loss": self._last("loss"),
            "epochs": self.epochs,
            "seconds": round(self.seconds, 3),
            "diverged": self.diverged,
            **extra,
        }


def task_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean task loss over the sample dim of logits ``(..., N, K)`` with labels
    ``(..., N)``: binary cross-entropy on the single logit when ``K = 1``, else
    cross-entropy. Shape ``(...)`` (0-dim for one net, ``(P,)`` for a population)."""
    k = logits.shape[-1]
    if k == 1:
        per = nn.functional.binary_cross_entropy_with_logits(
            logits[..., 0], y.to(logits.dtype), reduction="none")
    else:
        per = nn.functional.cross_entropy(logits.reshape(-1, k), y.reshape(-1),
                                          reduction="none").view(y.shape)
    return per.mean(-1)


def predict(logits: Tensor) -> Tensor:
    """Class ids ``(..., N)`` from logits ``(..., N, K)`` (``logit > 0`` when ``K = 1``)."""
    return (logits[..., 0] > 0).long() if logits.shape[-1] == 1 else logits.argmax(-1)


def fit(
    model: nn.Module,
    data: Dataset,
    *,
    lr: float = 0.01,
    epochs: int = 5000,
    batch_size: int | None = None,
    seed: int = 0,
    technique: Technique | None = None,
    precision: str = "32",
    progress: bool = False,
) -> FitResult:
    """Train ``model`` on ``data`` with Adam under a technique.

    Minimizes ``task_loss + technique.loss()`` (for Jumpstart ``lam * P``,
    CPAIOR eq. (7)); the task loss is binary cross-entropy on one logit when
    the model has one output, else cross-entropy. The technique is attached
    to ``model`` before the first step, called after every step
    (``after_step``) and detached at the end (its ``model_options`` must
    already have shaped ``model``). A non-finite loss stops training and
    marks the result diverged (no exception escapes).

    Args:
        model: maps ``(N, *feature_shape)`` to logits ``(N, K)``, ``K = 1``
            for binary tasks or ``K = data.num_classes``. Trained in place.
        data: the train/validation split.
        lr: Adam learning rate.
        epochs: passes over the training set.
        batch_size: samples per step; ``None`` is full batch.
        seed: seeds the minibatch order.
        technique: from :func:`jumpstart.techniques.make_technique`;
            ``None`` trains the plain model.
        precision: ``"32"`` or ``"bf16"`` (forward and loss under
            ``torch.autocast`` with bfloat16 on the model's device).
        progress: show a progress bar (stderr).

    Returns:
        :class:`FitResult`.

    Raises:
        ValueError: ``lr <= 0``, ``epochs < 1``, ``batch_size < 1``, or a
            model whose output does not fit the number of classes.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be an integer >= 1; got {epochs!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be None or an integer >= 1; got {batch_size!r}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    channels_last = device.type == "cuda" and data.x_train.dim() == 4
    x_tr, y_tr = data.x_train.to(device), data.y_train.to(device)
    evals = [(name, x.to(device), y.to(device)) for name, x, y in data.parts()[1:]]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(x_tr[:1])
    model.train(was_training)
    expected = (1, data.num_classes) if data.num_classes == 2 else (data.num_classes,)
    if out.dim() != 2 or out.shape[1] not in expected:
        raise ValueError(
            f"model output shape {tuple(out.shape)} does not fit {data.num_classes} classes; "
            f"expected (N, {' or '.join(map(str, expected))})"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = x_tr.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    keys = ("epoch", "loss", "penalty", "train_acc", *(f"{name}_acc" for name, _, _ in evals))
    result = FitResult(history={k: [] for k in keys})
    bar = _progress_bar(epochs) if progress else None
    if technique is not None:
        technique.attach(model)
    start = time.perf_counter()
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(n, generator=generator).to(device) if bs < n else None
            loss_sum = pen_sum = 0.0
            correct = 0
            for lo in range(0, n, bs):
                idx = order[lo : lo + bs] if order is not None else slice(None)
                xb, yb = x_tr[idx], y_tr[idx]
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with autocast:
                    logits = model(xb)
                    loss = task_loss(logits.float(), yb)
                    extra = technique.loss() if technique is not None else None
                total = loss
                if extra is not None:
                    total = loss + extra
                    pen_sum += extra.item() * xb.shape[0]
                value = total.item()
                if not math.isfinite(value):
                    result.diverged = True
                    break
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                if technique is not None:
                    technique.after_step(model)
                loss_sum += loss.item() * xb.shape[0]
                correct += int((predict(logits.detach()) == yb).sum())
            if result.diverged:
                break
            model.eval()
            h = result.history
            with torch.no_grad():
                for name, x, y in evals:
                    with autocast:
                        logits = model(x)
                    h[f"{name}_acc"].append(float((predict(logits) == y).sum()) / max(1, len(y)))
            h["epoch"].append(epoch)
            h["loss"].append(loss_sum / n)
            h["penalty"].append(pen_sum / n)
            h["train_acc"].append(correct / n)
            if bar is not None:
                bar[0].update(bar[1], advance=1, loss=loss_sum / n, acc=correct / n)
    finally:
        if technique is not None:
            technique.detach()
        if bar is not None:
            bar[0].stop()
        result.seconds = time.perf_counter() - start
        model.eval()
    return result


def _progress_bar(epochs: int):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f}"),
        TimeRemainingColumn(), transient=True,
    )
    task = bar.add_task("train", total=epochs, loss=float("nan"), acc=float("nan"))
    bar.start()
    return bar, task
