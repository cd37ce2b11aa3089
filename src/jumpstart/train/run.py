"""One run end to end: seed, data, model, training, activation status."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import strict_json
from ..core.status import ActivationStatus, NonFiniteError, activation_status, undefined_ratios
from ..data import Dataset, FolderData, load_dataset
from ..data.augment import check_augment
from ..models.rectangular import DECORRELATE_LR, DECORRELATE_STEPS
from ..optim import OPTIMIZER_OPTIONS, check_optimizer
from ..techniques import Technique, make_technique
from .build import MODELS, build_model
from .checkpoint import checkpoint_bytes
from .loop import FitResult, fit


@dataclass
class RunResult:
    """A finished run: its config, the trained model, the fit and the status.

    ``status`` is measured on the training set after training (CPAIOR
    Definitions 1 and 2); ``None`` when it is undefined (a diverged net whose
    pre-activations are non-finite: every ratio NaN in ``metrics()``).
    ``metrics()`` is what ``jumpstart train --json`` prints.
    """

    config: dict
    model: nn.Module
    fit: FitResult
    status: ActivationStatus | None
    split: dict | None = None

    def metrics(self) -> dict:
        """Config, accuracies, timings, ``diverged``, ``status`` ratios, and
        ``split`` when the loader did more than a plain split (rare classes)."""
        ratios = self.status.ratios() if self.status is not None else undefined_ratios()
        return {**self.config, **self.fit.metrics(), "status": ratios,
                **({"split": self.split} if self.split else {})}

    def save(self, out: str | Path) -> Path:
        """Write ``run.json``, ``curves.csv``, ``model.pt`` (the trained
        weights: :func:`~jumpstart.train.checkpoint.read_checkpoint`) and
        ``status.png`` into ``out``."""
        import pandas as pd

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.pt").write_bytes(checkpoint_bytes(self.config, self.model))
        (out / "run.json").write_text(strict_json.dumps(self.metrics(), indent=2) + "\n")
        pd.DataFrame(self.fit.history).to_csv(out / "curves.csv", index=False)
        c = self.config
        if self.status is None:  # undefined: a diverged net
            return out
        self.status.plot(
            out / "status.png",
            title=f"{c['dataset']} depth {c['depth']} width {c['width']} {c['technique']}: "
                  "status on the training set",
        )
        return out


DEVICES = ("auto", "cpu", "cuda")
#: model families a run can build (see :func:`train_run`)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``; ``"cuda"``.

    Raises:
        ValueError: unknown name, or ``"cuda"`` with no CUDA device.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but torch sees no CUDA device")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def train_run(
    *,
    dataset: str = "moons",
    model: str = "rectangular",
    depth: int,
    width: int | float,
    technique: str | Technique = "baseline",
    epochs: int = 5000,
    lr: float = 0.01,
    batch_size: int | None = None,
    seed: int = 0,
    init: str = "glorot",
    init_steps: int = DECORRELATE_STEPS,
    init_lr: float = DECORRELATE_LR,
    head: str = "flatten",
    data_dir: str | None = None,
    target: str = "target",
    min_class_rows: int | None = None,
    test_split: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    memory_format: str = "auto",
    flush_denormal: bool = True,
    loader_workers: int = 4,
    progress: bool = False,
    augment: str = "none",
    data: Dataset | FolderData | None = None,
    **options,
) -> RunResult:
    """Train one ReLU net on a named data set under a technique and measure it.

    ``model`` is one of :data:`~jumpstart.train.build.MODELS`:

    - ``"rectangular"``: dense :class:`~jumpstart.models.Rectangular`;
    - ``"conv"``: Rectangular with 3x3 convs and ``head`` ``"flatten"`` or
      ``"maxavg"``, for image data (CPAIOR Sec. 4);
    - ``"moons_conv"``: the CPAIOR Keras MOONS net (:class:`~jumpstart.models.MoonsConv`);
    - ``"resnet"``: :class:`~jumpstart.models.ResNet` of ``depth`` 18, 34,
      50, 101 or 152 with ``width`` as its width multiplier, no BN and no
      skips unless the technique adds them (``batchnorm+skip`` is the
      standard net; the IEEE Access 2025 ImageNet model is ``depth=50,
      width=2`` under ``jumpstart``). Its blocks fix where skips go, so the
      ``skip`` technique's ``skip_every`` does not apply there;
    - ``"vgg"``: Neural Rejuvenation's CIFAR :class:`~jumpstart.models.VGG`
      of ``depth`` 19 whose first conv has ``width`` channels (64 is the
      paper's), plain unless the technique adds BatchNorm (``batchnorm``,
      ``nr``);
    - ``"cifar_resnet"``: Neural Rejuvenation's CIFAR bottleneck
      :class:`~jumpstart.models.CifarResNet` of ``depth`` ``9 n + 2`` (164:
      the paper's) with ``width`` as its width multiplier; always with
      BatchNorm and shortcuts.

    The technique's model options shape the net. ``dataset`` is any name
    :func:`jumpstart.data.load_dataset` takes (tables split by ``seed``;
    ``imagenet`` is streamed from ``data_dir`` by DataLoaders with
    ``loader_workers`` processes). The status (CPAIOR Definitions 1 and 2)
    is measured on the training set after training, with the eval transform
    for streamed images; it uses the technique's ``granularity`` when it has
    one (Jumpstart), else ``"channel"``.

    ``torch.manual_seed(seed)`` fixes the initialization and the minibatch
    order, so runs of different techniques with the same seed start from the
    same weights (when the technique leaves the architecture alone). Binary
    tasks use one output logit (CPAIOR Sec. 4).

    Args:
        technique: registered name, ``"a+b"`` for combinations
            (:mod:`jumpstart.techniques`), or a technique already built (then
            ``options`` hold no technique option).
        init: one of :data:`jumpstart.models.rectangular.INITS` (``"glorot"``,
            ``"kaiming"``, ``"zero"``, ``"orthogonal"``, ``"decorrelated"``).
        init_steps, init_lr: the ``"decorrelated"`` init's data-free Adam
            steps and rate (:func:`~jumpstart.models.rectangular.decorrelate_`).
        target: the class column of a table.
        min_class_rows: drop a table's classes with fewer rows than this
            (:func:`jumpstart.data.tabular`; default: rare classes go to the
            training part).
        test_split: hold out this share of the validation part as a test
            part (data sets without one: MNIST, CIFAR, MOONS; see
            :meth:`jumpstart.data.Dataset.with_test_split`); ``None``: none.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or
            ``"cuda"``.
        precision, memory_format, flush_denormal: the fast path
            (:mod:`jumpstart.train.fast_path`; ``"auto"``: bfloat16 autocast
            on a CPU with native bfloat16 and channels-last for conv nets on
            images), see :func:`fit`; ``precision="32"`` trains in float32.
        augment: ``"none"`` or ``"crop_flip"`` (in-memory images), see :func:`fit`.
        data: the data set already loaded (as ``load_dataset(dataset,
            seed=seed, directory=data_dir, target=target)`` returns it), to
            share one load between runs; ``None`` loads it.
        **options: the technique's options (``lam``, ``aggregation``, ...)
            and the optimizer's (:data:`~jumpstart.optim.OPTIMIZER_OPTIONS`:
            ``optimizer``, ``momentum``, ``nesterov``, ``weight_decay``,
            ``lr_milestones``, ``lr_gamma``).

    Raises:
        ValueError: before any training: unknown technique or model, an
            option the technique does not take or a bad value, a model that
            does not fit the data, a table that cannot be used, ``depth`` or
            ``width`` out of range, ``epochs`` < 1, ``lr <= 0``; the message
            names the bad value.
        FileNotFoundError: an unknown data set name or missing files.
    """
    check_augment(augment)

    optimizer = {k: v for k, v in options.items() if k in OPTIMIZER_OPTIONS}
    check_optimizer(**optimizer)
    tech_options = {k: v for k, v in options.items() if k not in OPTIMIZER_OPTIONS}
    if isinstance(technique, Technique):
        if tech_options:
            raise ValueError(f"technique {technique.name!r} is already built; it takes no "
                             f"option(s) {sorted(tech_options)} here")
        tech = technique
    else:
        tech = make_technique(technique, **tech_options)
    dev = resolve_device(device)
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
    if data is None:
        data = load_dataset(dataset, seed=seed, directory=data_dir, target=target,
                            min_class_rows=min_class_rows, test_split=test_split)
    streamed = isinstance(data, FolderData)
    shape = data.feature_shape if streamed else tuple(data.x_train.shape[1:])
    torch.manual_seed(seed)
    net = build_model(model, tech, data.num_classes, shape, dataset=dataset, depth=depth,
                      width=width, init=init, head=head, init_steps=init_steps, init_lr=init_lr)
    net.to(dev)
    result = fit(net, data, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
                 technique=tech, precision=precision, memory_format=memory_format,
                 flush_denormal=flush_denormal, loader_workers=loader_workers,
                 progress=progress, augment=augment, **optimizer)
    net = result.model
    decorrelated = {"init_steps": init_steps, "init_lr": init_lr} if init == "decorrelated" else {}
    config = {"dataset": dataset, "model": model, "depth": depth, "width": width,
              **({"init": init, **decorrelated} if init != "glorot" else {}),
              **({"min_class_rows": min_class_rows} if min_class_rows is not None else {}),
              **({"test_split": test_split} if test_split is not None else {}),
              **({"head": head} if model == "conv" else {}),
              **({"augment": augment} if augment != "none" else {}),
              "technique": tech.name, **tech.config, "lr": lr, **optimizer,
              "batch_size": batch_size, "seed": seed}
    granularity = tech.config.get("granularity", "channel")
    if streamed:
        from torch.utils.data import DataLoader

        inputs = DataLoader(data.train.eval_view(), batch_size=batch_size,
                            num_workers=loader_workers)
    else:
        inputs = data.x_train
    try:
        status = activation_status(net, inputs, granularity=granularity)
    except NonFiniteError:
        status = None
    return RunResult(config, net, result, status, getattr(data, "split", None))
