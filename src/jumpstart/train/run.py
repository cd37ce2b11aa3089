"""One run end to end: seed, data, model, training, activation status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.status import ActivationStatus, activation_status
from ..data import load_dataset
from ..techniques.builtin import HIDDEN_ACTIVATIONS
from ..models import MoonsConv, Rectangular
from .loop import FitResult, fit


@dataclass
class RunResult:
    """A finished run: its config, the trained model, the fit and the status.

    ``status`` is measured on the training set after training (CPAIOR
    Definitions 1 and 2); ``metrics()`` is what ``jumpstart train --json``
    prints.
    """

    config: dict
    model: nn.Module
    fit: FitResult
    status: ActivationStatus

    def metrics(self) -> dict:
        """Config, accuracies, timings, ``diverged`` and ``status`` ratios."""
        return {**self.config, **self.fit.metrics(), "status": self.status.ratios()}

    def save(self, out: str | Path) -> Path:
        """Write ``run.json``, ``curves.csv`` and ``status.png`` into ``out``."""
        import pandas as pd

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(self.metrics(), indent=2) + "\n")
        pd.DataFrame(self.fit.history).to_csv(out / "curves.csv", index=False)
        c = self.config
        self.status.plot(
            out / "status.png",
            title=f"{c['dataset']} depth {c['depth']} width {c['width']} {c['technique']}: "
                  "status on the training set",
        )
        return out


DEVICES = ("auto", "cpu", "cuda")


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
    width: int,
    technique: str = "baseline",
    epochs: int = 5000,
    lr: float = 0.01,
    batch_size: int | None = None,
    seed: int = 0,
    init: str = "glorot",
    head: str = "flatten",
    data_dir: str | None = None,
    target: str = "target",
    device: str = "auto",
    precision: str = "32",
    progress: bool = False,
    **options,
) -> RunResult:
    """Train one ReLU net on a named data set under a technique and measure it.

    ``model`` is ``"rectangular"`` (dense, :class:`~jumpstart.models.Rectangular`,
    shaped by the technique's model options), ``"conv"`` (Rectangular with
    3x3 convs and ``head`` ``"flatten"`` or ``"maxavg"``, for image data) or
    ``"moons_conv"`` (the CPAIOR Keras MOONS net, :class:`~jumpstart.models.MoonsConv`). ``dataset`` is
    ``"moons"`` or a table name or path (:func:`jumpstart.data.load_dataset`,
    split by ``seed``). The status uses the technique's ``granularity`` when
    it has one (Jumpstart), else ``"channel"``.

    ``torch.manual_seed(seed)`` fixes the initialization and the minibatch
    order, so runs of different techniques with the same seed start from the
    same weights (when the technique leaves the architecture alone). Binary
    tasks use one output logit (CPAIOR Sec. 4).

    Args:
        technique: registered name, ``"a+b"`` for combinations
            (:mod:`jumpstart.techniques`).
        target: the class column of a table.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or
            ``"cuda"``; conv nets on CUDA use the channels-last layout.
        precision: ``"32"`` or ``"bf16"`` (autocast), see :func:`fit`.
        **options: the technique's options (``lam``, ``aggregation``, ...).

    Raises:
        ValueError: before any training: unknown technique or model, an
            option the technique does not take or a bad value, a table that
            cannot be used, ``depth``/``width`` < 1, ``epochs`` < 1,
            ``lr <= 0``; the message names the bad value.
        FileNotFoundError: an unknown data set name.
    """
    from ..techniques import make_technique

    tech = make_technique(technique, **options)
    dev = resolve_device(device)
    if model not in ("rectangular", "conv", "moons_conv"):
        raise ValueError(f"unknown model {model!r}; allowed: rectangular, conv, moons_conv")
    data = load_dataset(dataset, seed=seed, directory=data_dir, target=target)
    torch.manual_seed(seed)
    out_features = 1 if data.num_classes == 2 else data.num_classes
    if model == "moons_conv":
        if dataset != "moons":
            raise ValueError("model moons_conv takes the moons data set only")
        tech.model_options({})
        net = MoonsConv(depth, width)
    else:
        shape = tech.model_options({"activation": "relu", "norm": None, "skip": None})
        if model == "conv":
            if data.x_train.dim() != 4:
                raise ValueError(f"model conv needs image data (N, C, H, W); {dataset} has "
                                 f"features of shape {tuple(data.x_train.shape[1:])}")
            net = Rectangular(depth, width, data.x_train.shape[1], out_features, init=init,
                              kind="conv", head=head,
                              input_size=tuple(data.x_train.shape[2:]), **shape)
        else:
            if data.x_train.dim() != 2:
                raise ValueError(f"model rectangular needs flat features (N, F); use model "
                                 f"conv for {dataset} (shape {tuple(data.x_train.shape[1:])})")
            net = Rectangular(depth, width, data.in_features, out_features, init=init, **shape)
    net.to(dev)
    if dev.type == "cuda" and model == "conv":
        net.to(memory_format=torch.channels_last)
    result = fit(net, data, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
                 technique=tech, precision=precision, progress=progress)
    config = {"dataset": dataset, "model": model, "depth": depth, "width": width,
              **({"head": head} if model == "conv" else {}),
              "technique": tech.name, **tech.config, "lr": lr, "batch_size": batch_size,
              "seed": seed}
    granularity = tech.config.get("granularity", "channel")
    status = activation_status(net, data.x_train, granularity=granularity,
                               activations=HIDDEN_ACTIVATIONS)
    return RunResult(config, net, result, status)
