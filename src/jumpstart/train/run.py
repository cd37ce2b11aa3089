"""One run end to end: seed, data, model, training, activation status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.regularizer import AGGREGATIONS
from ..core.status import ActivationStatus, activation_status
from ..data import DATASETS
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
            title=f"{c['dataset']} depth {c['depth']} width {c['width']} lam {c['lam']:g}: "
                  "status on the training set",
        )
        return out


def train_run(
    *,
    dataset: str = "moons",
    model: str = "rectangular",
    depth: int,
    width: int,
    lam: float = 0.0,
    aggregation: str = "balanced",
    margin: float = 1.0,
    sign_balance: float = 0.5,
    tie_break: str = "single",
    granularity: str = "channel",
    epochs: int = 5000,
    lr: float = 0.01,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> RunResult:
    """Train one ReLU net on a named data set and measure it.

    ``model`` is ``"rectangular"`` (dense, :class:`~jumpstart.models.Rectangular`)
    or ``"moons_conv"`` (the CPAIOR Keras MOONS net,
    :class:`~jumpstart.models.MoonsConv`; with ``granularity="position"`` as
    the authors ran it). The status uses the same ``granularity``.

    ``torch.manual_seed(seed)`` fixes the Glorot initialization and the
    minibatch order, so a baseline (``lam=0``) and a Jumpstart run with the
    same seed start from the same weights. Binary tasks use one output logit
    (CPAIOR Sec. 4).

    Raises:
        ValueError: before any training: unknown data set or aggregation,
            ``margin <= 0`` (here), ``depth``/``width`` < 1 (``Rectangular``),
            ``epochs`` < 1, ``lam < 0``, ``lr <= 0`` (``fit``); the message
            names the bad value.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; allowed: {', '.join(AGGREGATIONS)}")
    if not margin > 0:  # checked here too: without Jumpstart (lam 0) nothing else would
        raise ValueError(f"margin must be > 0; got {margin!r}")
    if model not in ("rectangular", "moons_conv"):
        raise ValueError(f"unknown model {model!r}; allowed: rectangular, moons_conv")
    data = DATASETS[dataset]()
    torch.manual_seed(seed)
    out_features = 1 if data.num_classes == 2 else data.num_classes
    if model == "moons_conv":
        if dataset != "moons":
            raise ValueError("model moons_conv takes the moons data set only")
        net = MoonsConv(depth, width)
    else:
        net = Rectangular(depth, width, data.in_features, out_features)
    options = {"aggregation": aggregation, "margin": margin, "sign_balance": sign_balance,
               "tie_break": tie_break, "granularity": granularity}
    result = fit(net, data, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed, lam=lam,
                 jumpstart=options, progress=progress)
    config = {"dataset": dataset, "model": model, "depth": depth, "width": width, "lam": lam,
              **options, "lr": lr, "batch_size": batch_size, "seed": seed}
    status = activation_status(net, data.x_train, granularity=granularity)
    return RunResult(config, net, result, status)
