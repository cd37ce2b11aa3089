"""The single-run training loop: any model, any technique, any optimizer of
:mod:`jumpstart.optim`, in memory or streamed from disk."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..core.hooks import ActivationRecorder
from ..data.augment import check_augment, crop_flip
from ..data.base import Dataset
from ..data.folder import FolderData
from ..models import layer_widths
from ..optim import build_optimizer, build_schedule, check_optimizer
from ..techniques import Technique, TrainContext
from .fast_path import FastPath, flushing, resolve_fast_path
from .history import History


@dataclass
class FitResult:
    """What :func:`fit` measured.

    Attributes:
        history: per-epoch lists ``epoch`` (1-based) and every recorded metric
            (:data:`~jumpstart.train.history.CURVE_METRICS`: ``loss``,
            ``penalty``, ``train_acc``, ``val_acc``, ``test_acc`` with a test
            part; and any the technique logged).
        seconds: wall time of the loop.
        summary: :meth:`~jumpstart.train.history.History.metrics` of the run.
        model: the trained model: the one given, or the last one a technique
            put in its place (:meth:`~jumpstart.techniques.TrainContext.replace_model`).
        fast_path: the precision, memory format, denormal flushing and threads
            the run trained with (:mod:`jumpstart.train.fast_path`).
    """

    history: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)
    model: nn.Module | None = None
    fast_path: FastPath | None = None

    @property
    def diverged(self) -> bool:
        """The loss became NaN or inf; training stopped there."""
        return bool(self.summary.get("diverged", False))

    @property
    def epochs(self) -> int:
        """Epochs completed."""
        return len(self.history.get("epoch", []))

    def metrics(self) -> dict[str, float | int | bool]:
        """Final and best accuracies, ``epochs``, ``seconds``, ``diverged``; with
        a test part also ``test_acc`` (final) and ``best_val_test_acc`` (test
        accuracy at the first epoch of best validation accuracy); ``widths``
        (:func:`~jumpstart.models.layer_widths` of the final model);
        ``fast_path`` (:meth:`~jumpstart.train.fast_path.FastPath.record`)."""
        return {**self.summary, "seconds": round(self.seconds, 3),
                **({"widths": layer_widths(self.model)} if self.model is not None else {}),
                **({"fast_path": self.fast_path.record()} if self.fast_path else {})}


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


def check_schedule(lr: float, epochs: int, batch_size: int | None) -> None:
    """Validate the training schedule every trainer shares.

    Raises:
        ValueError: ``lr`` not a finite number > 0, ``epochs`` not an integer >= 1, or
            ``batch_size`` neither ``None`` nor an integer >= 1.
    """
    if isinstance(lr, (int, float)) and not math.isfinite(lr):
        raise ValueError(f"lr must be finite; got {lr!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be an integer >= 1; got {epochs!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be None or an integer >= 1; got {batch_size!r}")


def fit(
    model: nn.Module,
    data: Dataset | FolderData,
    *,
    lr: float = 0.01,
    epochs: int = 5000,
    batch_size: int | None = None,
    seed: int = 0,
    technique: Technique | None = None,
    precision: str = "auto",
    memory_format: str = "auto",
    flush_denormal: bool = True,
    loader_workers: int = 4,
    progress: bool = False,
    augment: str = "none",
    **optimizer_options,
) -> FitResult:
    """Train ``model`` on ``data`` under a technique.

    Minimizes ``task_loss + technique.loss(ctx)`` (for Jumpstart ``lam * P``,
    CPAIOR eq. (7)); the task loss is binary cross-entropy on one logit when
    the model has one output, else cross-entropy. The technique's hooks get
    one :class:`~jumpstart.techniques.TrainContext` (model, optimizer, step,
    epoch, batch, and the last training forward's pre-activations when it
    sets ``needs_activations``): ``attach`` before the first step,
    ``after_step`` after every optimizer step, ``after_epoch`` after every
    epoch's evaluation, ``detach`` at the end (its ``model_options`` must
    already have shaped ``model``). When a hook replaces the model, training
    goes on with the new one under a fresh optimizer at the initial learning
    rate (see :meth:`~jumpstart.techniques.TrainContext.replace_model`). A
    non-finite loss stops training and marks the result diverged (no
    exception escapes).

    In-memory data are moved to the model's device once and sliced there;
    :class:`~jumpstart.data.FolderData` is streamed through DataLoaders
    (``loader_workers`` processes, pinned memory on CUDA). Image models train
    on the fast path by default (:mod:`jumpstart.train.fast_path`: bfloat16
    autocast on a CPU with native bfloat16, channels-last, denormals
    flushed); ``precision="32"`` and ``memory_format="contiguous"`` restore
    full float32 in the standard layout.

    Args:
        model: maps ``(N, *feature_shape)`` to logits ``(N, K)``, ``K = 1``
            for binary tasks or ``K = data.num_classes``. Trained in place.
        data: the train/validation(/test) split, in memory or on disk.
        lr: initial learning rate.
        epochs: passes over the training set.
        batch_size: samples per step; ``None`` is full batch (in-memory data only).
        seed: seeds the minibatch order (and the DataLoader workers' augmentation).
        technique: from :func:`jumpstart.techniques.make_technique`;
            ``None`` trains the plain model.
        precision: ``"auto"``, ``"32"`` or ``"bf16"`` (forward and loss under
            ``torch.autocast`` with bfloat16 on the model's device).
        memory_format: ``"auto"``, ``"contiguous"`` or ``"channels_last"``
            (of the parameters and the image batches).
        flush_denormal: flush denormals to zero while training (CPU; the
            previous state is restored after).
        loader_workers: DataLoader worker processes for on-disk data.
        progress: show a progress bar over the steps (stderr).
        augment: ``"none"`` or ``"crop_flip"`` (random crop of the 4-pixel
            zero-padded image and horizontal flip of each training image, drawn
            from a generator seeded with ``seed + 1``;
            :func:`jumpstart.data.augment.crop_flip`), for in-memory images;
            on-disk data bring their own transforms.
        **optimizer_options: :data:`~jumpstart.optim.OPTIMIZER_OPTIONS`
            (``optimizer`` ``"adam"`` by default, ``"adamw"``, ``"sgd"``;
            ``momentum``, ``nesterov``, ``weight_decay``; the step schedule
            ``lr_milestones`` (epochs) and ``lr_gamma``, stepped per epoch).

    Returns:
        :class:`FitResult`.

    Raises:
        ValueError: ``lr <= 0``, ``epochs < 1``, ``batch_size < 1`` (or
            ``None`` for on-disk data), ``loader_workers < 0``, an unknown
            precision or augmentation (or one asked of data that are not
            in-memory images), a bad optimizer option, or a model whose output
            does not fit the number of classes, or a fast-path option not in
            :data:`~jumpstart.train.fast_path.FAST_OPTIONS`.
    """
    check_schedule(lr, epochs, batch_size)
    opt_options = check_optimizer(**optimizer_options)
    if not (isinstance(loader_workers, int) and loader_workers >= 0):
        raise ValueError(f"loader_workers must be an integer >= 0; got {loader_workers!r}")
    check_augment(augment)
    if augment != "none" and (isinstance(data, FolderData) or data.x_train.dim() != 4):
        raise ValueError(f"augment {augment!r} takes in-memory images (N, C, H, W); "
                         f"{data.name} is not")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    sample = data.val[0][0][None] if isinstance(data, FolderData) else data.x_train[:1]
    fast = resolve_fast_path(model, sample, device, precision=precision,
                             memory_format=memory_format, flush_denormal=flush_denormal)
    autocast = fast.autocast(device)
    fast.apply(model)
    generator = torch.Generator().manual_seed(seed)
    batches = _Batches(data, batch_size, device, generator, loader_workers,
                       torch.Generator().manual_seed(seed + 1) if augment != "none" else None,
                       fast)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(batches.sample())
    model.train(was_training)
    expected = (1, data.num_classes) if data.num_classes == 2 else (data.num_classes,)
    if out.dim() != 2 or out.shape[1] not in expected:
        raise ValueError(
            f"model output shape {tuple(out.shape)} does not fit {data.num_classes} classes; "
            f"expected (N, {' or '.join(map(str, expected))})"
        )
    run = _Run(model, technique, lr, opt_options, device, fast)
    run.ctx.data, run.ctx.criterion = data, task_loss
    n = batches.n
    history = History(1, epochs, keys=("loss", "penalty", "train_acc",
                                       *(f"{name}_acc" for name in batches.evals)))
    bar = _progress_bar(epochs * batches.steps) if progress else None
    ctx = run.ctx
    start = time.perf_counter()
    with flushing(fast.flush_denormal):  # the previous state restored after
        try:
            run.attach()
            epoch = 0
            while epoch < history.epochs:  # a replacement may extend the budget
                epoch += 1
                ctx.epoch = epoch
                ctx.model.train()
                loss_sum = pen_sum = 0.0
                correct = 0
                diverged = False
                for xb, yb in batches.train():
                    ctx.batch = (xb, yb)
                    with autocast:
                        logits = ctx.model(xb)
                        run.observe()
                        loss = run.task_loss(logits.float(), yb)
                        extra = technique.loss(ctx) if technique is not None else None
                    total = loss
                    if extra is not None:
                        total = loss + extra
                        pen_sum += extra.item() * xb.shape[0]
                    value = total.item()
                    if not math.isfinite(value):
                        diverged = True
                        break
                    ctx.optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    ctx.optimizer.step()
                    ctx.step += 1
                    task_value = loss.item()
                    loss_sum += task_value * xb.shape[0]
                    correct += int((predict(logits.detach()) == yb).sum())
                    run.after("after_step", history, epochs_done=epoch - 1,
                              schedule_steps=epoch - 1)
                    if bar is not None:
                        bar[0].update(bar[1], advance=1, loss=task_value, epoch=epoch)
                ctx.batch = None
                if diverged:
                    history.stop(torch.tensor([False]))
                    break
                ctx.model.eval()
                values = {"loss": loss_sum / n, "penalty": pen_sum / n, "train_acc": correct / n}
                with torch.no_grad():
                    for name in batches.evals:
                        hits = total_n = 0
                        for x, y in batches.evaluate(name):
                            with autocast:
                                logits = ctx.model(x)
                            hits += int((predict(logits) == y).sum())
                            total_n += len(y)
                        values[f"{name}_acc"] = hits / max(1, total_n)
                run.after("after_epoch", history, epochs_done=epoch, schedule_steps=epoch - 1)
                if bar is not None and bar[0].tasks[0].total != history.epochs * batches.steps:
                    bar[0].update(bar[1], total=history.epochs * batches.steps)  # extended
                history.record(epoch, values, logged=ctx.logged)
                ctx.logged.clear()
                if run.schedule is not None:
                    with warnings.catch_warnings():  # a model replaced this epoch: its new
                        # optimizer has not stepped yet, which is expected here
                        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
                        run.schedule.step()
        finally:
            run.detach()
            if bar is not None:
                bar[0].stop()
            seconds = time.perf_counter() - start
            ctx.model.eval()
    return FitResult(history=history.member_curves(0), seconds=seconds,
                     summary=history.metrics(0, seconds), model=ctx.model, fast_path=fast)


class _Run:
    """The mutable state of one :func:`fit`: the technique's context, the
    optimizer and schedule, the activation recorder; rebuilt when a hook
    replaces the model."""

    def __init__(self, model, technique, lr, opt_options, device, fast) -> None:
        self.technique, self.lr, self.opt, self.device = technique, lr, opt_options, device
        self.fast = fast
        self.ctx = TrainContext(model, build_optimizer(model.parameters(), lr, **opt_options))
        self.schedule = (build_schedule(self.ctx.optimizer, **opt_options)
                         if opt_options["lr_milestones"] else None)
        self.recorder = None

    def attach(self) -> None:
        if self.technique is None:
            return
        if self.technique.needs_activations:
            self.recorder = ActivationRecorder(self.ctx.model)
        self.technique.attach(self.ctx)

    def detach(self) -> None:
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None
        if self.technique is not None:
            self.technique.detach(self.ctx)

    def observe(self) -> None:
        """After a forward: the context's activations are that forward's."""
        if self.recorder is not None:
            self.ctx.activations = self.recorder.last

    def task_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The technique's task loss of the last forward, else :func:`task_loss`."""
        own = self.technique.task_loss(self.ctx, logits, y) if self.technique else None
        return task_loss(logits, y) if own is None else own

    def after(self, hook: str, history: History, *, epochs_done: int,
              schedule_steps: int) -> None:
        """Call the technique's ``hook``; then swap in a replacement model if
        it asked for one: ``epochs_done`` complete epochs so far (the shift of
        the milestones, and of the epoch budget in ``history``, when the
        technique asks for them), ``schedule_steps`` schedule steps taken so
        far (the new schedule starts there)."""
        if self.technique is None:
            return
        getattr(self.technique, hook)(self.ctx)
        if self.ctx.replacement is None:
            return
        new, shift, extend = self.ctx.replacement
        if extend:
            history.epochs += epochs_done
        self.ctx.replacement = None
        self.detach()
        self.fast.apply(new.to(self.device))
        self.ctx.model = new
        self.ctx.optimizer = build_optimizer(new.parameters(), self.lr, **self.opt)
        if self.schedule is not None:
            self.schedule = build_schedule(self.ctx.optimizer, shift=epochs_done if shift else 0,
                                           done_epochs=schedule_steps, **self.opt)
        self.attach()


class _Batches:
    """The minibatches of :func:`fit`, on the model's device: sliced from
    tensors held there (in-memory data, one eval batch per part) or loaded
    by DataLoaders (on-disk data)."""

    def __init__(self, data, batch_size, device, generator, workers, augment, fast) -> None:
        self.device, self.generator, self.augment, self.fast = device, generator, augment, fast
        if isinstance(data, FolderData):
            if batch_size is None:
                raise ValueError(f"{data.name} is read from disk: give a batch_size "
                                 "(full batch is for in-memory data)")
            from torch.utils.data import DataLoader

            common = dict(batch_size=batch_size, num_workers=workers,
                          pin_memory=device.type == "cuda", persistent_workers=workers > 0)
            self._train = DataLoader(data.train, shuffle=True, generator=generator, **common)
            self._evals = {"val": DataLoader(data.val, shuffle=False, **common)}
            self.n, self.steps = len(data.train), len(self._train)
            self._sample = data.val[0][0][None]
            self._tensors = None
        else:  # moved (and laid out) once; slices need no _move
            self._tensors = self._move(data.x_train, data.y_train)
            self._evals = {name: [self._move(x, y)] for name, x, y in data.parts()[1:]}
            self.n = data.x_train.shape[0]
            self.bs = self.n if batch_size is None else min(batch_size, self.n)
            self.steps = math.ceil(self.n / self.bs)
            self._sample = data.x_train[:1]

    @property
    def evals(self) -> list[str]:
        """Names of the evaluated parts (``val``, maybe ``test``)."""
        return list(self._evals)

    def _move(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self.fast.layout(x.to(self.device, non_blocking=True))
        return x, y.to(self.device, non_blocking=True)

    def sample(self) -> Tensor:
        """One input ``(1, *feature_shape)`` on the device."""
        return self._move(self._sample, torch.zeros(1))[0]

    def train(self):
        """Yield ``(x, y)`` minibatches of one training epoch."""
        if self._tensors is None:
            for x, y in self._train:
                yield self._move(x, y)
            return
        x_tr, y_tr = self._tensors
        if self.bs == self.n:
            yield self._augmented(x_tr), y_tr
            return
        order = torch.randperm(self.n, generator=self.generator).to(self.device)
        for lo in range(0, self.n, self.bs):
            idx = order[lo: lo + self.bs]
            yield self._augmented(x_tr[idx]), y_tr[idx]

    def _augmented(self, x: Tensor) -> Tensor:
        return x if self.augment is None else self.fast.layout(crop_flip(x, self.augment))

    def evaluate(self, name: str):
        """Yield ``(x, y)`` batches of the part ``name``."""
        if self._tensors is not None:
            yield from self._evals[name]
            return
        for x, y in self._evals[name]:
            yield self._move(x, y)


def _progress_bar(steps: int):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(), transient=True,
    )
    task = bar.add_task("train", total=steps, loss=float("nan"), epoch=1)
    bar.start()
    return bar, task
