"""How redundant a network's hidden units are: correlation between their
weight rows and between their activations over a data set.

The diagnostics of Dynamic Neural Diversification (Kovalenko, Kordik,
Friedjungova, 2021) as reconstructed in
``../shared/papers/neural-diversification.md`` (only the abstract and a
short follow-up are public): per hidden layer, mean and max ``|rho|``
between weight rows and between unit activations, the log determinant of the
weight correlation matrix, and the units that are constant (whose
correlation is undefined, so they are counted apart).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .core.correlation import constant_rows, correlation_stats, row_correlation
from .core.status import evaluating, input_batches, unit_observations
from .surgery import hidden_layers

#: a unit whose standard deviation over the data is at most this share of its
#: mean magnitude (or exactly 0) is constant: its correlation is undefined
CONSTANT_SHARE = 1e-6
#: ``eps`` of the log determinant ``log det(R_W + eps I)``
LOGDET_EPS = 1e-4


@dataclass
class Diversity:
    """Redundancy of every hidden layer (:func:`diversity`).

    Attributes (one entry per hidden layer, input to output):
        layer_names: names of the layers' weighted modules.
        units: units per layer.
        weight_corr_mean, weight_corr_max: mean and max ``|rho_ij|``, ``i != j``,
            between weight rows (:func:`~jumpstart.core.correlation.row_correlation`),
            constant rows left out; NaN with fewer than two.
        weight_logdet: ``log det(R_W + eps I)`` over the non-constant rows
            (0 is fully decorrelated; very negative is redundant).
        act_corr_mean, act_corr_max: the same between unit activations (after
            the activation) over the data (conv: every sample and position is
            an observation), constant units left out.
        constant_units: units whose activation is constant over the data
            (dead ReLU units among them).
        constant_rows: units whose weight row is constant.
    """

    layer_names: list[str]
    units: list[int]
    weight_corr_mean: list[float]
    weight_corr_max: list[float]
    weight_logdet: list[float]
    act_corr_mean: list[float]
    act_corr_max: list[float]
    constant_units: list[int]
    constant_rows: list[int]

    def to_frame(self):
        """One row per hidden layer (pandas DataFrame), a column per attribute."""
        import pandas as pd

        return pd.DataFrame({"layer": range(len(self.layer_names)), "name": self.layer_names,
                             "units": self.units, "weight_corr_mean": self.weight_corr_mean,
                             "weight_corr_max": self.weight_corr_max,
                             "weight_logdet": self.weight_logdet,
                             "act_corr_mean": self.act_corr_mean,
                             "act_corr_max": self.act_corr_max,
                             "constant_units": self.constant_units,
                             "constant_rows": self.constant_rows})

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """Mean and max ``|rho|`` per layer (weights and activations) and the
        share of constant units, against depth. Format from the suffix."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        layers = np.arange(1, len(self.layer_names) + 1)
        fig, (ax, ax_c) = plt.subplots(1, 2, figsize=(10, 3.4))
        for values, label, style in ((self.weight_corr_mean, "weights, mean", "-"),
                                     (self.weight_corr_max, "weights, max", ":"),
                                     (self.act_corr_mean, "activations, mean", "-"),
                                     (self.act_corr_max, "activations, max", ":")):
            colour = "#1f77b4" if label.startswith("weights") else "#d62728"
            ax.plot(layers, values, style, color=colour, label=label, marker=".")
        ax.set_xlabel("hidden layer")
        ax.set_ylabel("|correlation| between units")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        ax_c.bar(layers, np.asarray(self.constant_units) / np.asarray(self.units),
                 color="#7f7f7f")
        ax_c.set_xlabel("hidden layer")
        ax_c.set_ylabel("constant units (share)")
        ax_c.set_ylim(0, 1)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def weight_diversity(layer) -> tuple[float, float, float, int]:
    """Of one :class:`~jumpstart.surgery.HiddenLayer`'s weight rows: mean and
    max ``|rho|``, ``log det(R + eps I)`` (non-constant rows), constant rows."""
    w = layer.module.weight.detach().double()
    b = None if layer.module.bias is None else layer.module.bias.detach().double()
    const = constant_rows(w, b)
    corr = row_correlation(w, b)
    mean, mx = correlation_stats(corr, ~const)
    sub = corr[~const][:, ~const]
    logdet = float(torch.logdet(sub + LOGDET_EPS * torch.eye(sub.shape[0], dtype=sub.dtype))) \
        if sub.shape[0] else math.nan
    return mean, mx, logdet, int(const.sum())


class _Moments:
    """Streaming first and second moments of ``(n, H)`` observations in
    float64, shifted by the first batch's mean (so a constant unit has
    variance exactly 0 or at rounding level)."""

    def __init__(self) -> None:
        self.n, self.shift, self.s, self.ss = 0, None, None, None

    def add(self, obs: Tensor) -> None:
        obs = obs.double()
        if self.shift is None:
            self.shift = obs.mean(0)
            self.s = torch.zeros_like(self.shift)
            self.ss = torch.zeros(obs.shape[1], obs.shape[1], dtype=torch.float64)
        x = obs - self.shift
        self.n += obs.shape[0]
        self.s += x.sum(0)
        self.ss += x.T @ x

    def correlation(self) -> tuple[Tensor, Tensor]:
        """``(corr (H, H), constant (H,) bool)``."""
        mean = self.s / self.n
        cov = self.ss / self.n - torch.outer(mean, mean)
        std = cov.diagonal().clamp_min(0).sqrt()
        constant = std <= CONSTANT_SHARE * (mean + self.shift).abs()
        safe = torch.where(constant, torch.ones_like(std), std)
        return cov / torch.outer(safe, safe), constant


def diversity(model: nn.Module, data, *, batch_size: int = 1024) -> Diversity:
    """Redundancy of the hidden units of ``model`` over ``data`` (a
    reconstruction of Kovalenko et al.'s diagnostics, see the module docstring).

    Runs ``model`` in eval mode without gradient (its mode is restored),
    streaming: per layer only the ``(H, H)`` sums of activation products are
    kept, so the result is exact for the whole data set at any size.

    Args:
        model: a model :func:`jumpstart.surgery.hidden_layers` knows (the
            toolkit's nets, plain ``nn.Sequential`` chains).
        data: inputs ``(N, ...)``, or an iterable of ``x`` or ``(x, y, ...)`` batches.
        batch_size: samples per forward when ``data`` is a tensor.

    Returns:
        :class:`Diversity`.

    Raises:
        ValueError: a model family surgery does not know, empty data,
            ``batch_size < 1``, non-finite activations.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    layers = hidden_layers(model)
    moments = [_Moments() for _ in layers]
    seen: dict[int, Tensor] = {}
    handles = [layer.activation.register_forward_hook(
        lambda m, i, out: seen.setdefault(id(m), out.detach())) for layer in layers]
    try:
        with evaluating(model) as device:
            for x in input_batches(data, batch_size):
                seen.clear()
                model(x.to(device))
                for layer, mom in zip(layers, moments):
                    h = seen[id(layer.activation)]
                    if not bool(torch.isfinite(h).all()):
                        raise ValueError(f"layer {layer.name}: activations hold NaN or inf")
                    mom.add(unit_observations(h).cpu())
    finally:
        for handle in handles:
            handle.remove()
    if not moments or moments[0].n == 0:
        raise ValueError("data holds no batch")
    rows = [weight_diversity(layer) for layer in layers]
    acts = []
    for mom in moments:
        corr, constant = mom.correlation()
        acts.append((*correlation_stats(corr, ~constant), int(constant.sum())))
    return Diversity(
        layer_names=[layer.name for layer in layers], units=[layer.width for layer in layers],
        weight_corr_mean=[r[0] for r in rows], weight_corr_max=[r[1] for r in rows],
        weight_logdet=[r[2] for r in rows], act_corr_mean=[a[0] for a in acts],
        act_corr_max=[a[1] for a in acts], constant_units=[a[2] for a in acts],
        constant_rows=[r[3] for r in rows])


__all__ = ["Diversity", "diversity", "weight_diversity"]
