"""Dead, linear and nonlinear units and points over a data set.

CPAIOR 2022, Definitions 1 (units) and 2 (points), Sec. 3; the aggregate
ratios are those of DESIGN.md ("Status over a data set"). Computed in one
eval-mode pass with no gradient, streaming over batches, exact for the whole
data set: per unit only the running max and min are kept, per point and layer
one status code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .activations import (DEAD, KINDS, LINEAR, NEGATIVE, NONLINEAR, SATURATED, STATUS_NAMES,
                          region_codes)
from .deficits import check_granularity
from .extremes import margin_extremes
from .hooks import PreActivationHooks
#: the scalar ratios of :meth:`ActivationStatus.ratios`
RATIOS = ("unit_dead_ratio", "unit_linear_ratio", "unit_nonlinear_ratio",
          "point_dead_ratio", "point_linear_ratio", "point_nonlinear_ratio",
          "layer_point_dead_ratio", "layer_point_linear_ratio",
          "layer_point_nonlinear_ratio", "point_efficiency", "unit_dormant_ratio")
#: ReDo's dormancy threshold of the performance runs (Sokar et al. 2023), used
#: by :attr:`ActivationStatus.unit_dormant_ratio`
DORMANT_TAU = 0.1
#: by status code: red, blue, green, purple, orange
STATUS_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e")
RELU_PIECES = KINDS["relu"].pieces


def status_codes(mx: Tensor, mn: Tensor, pieces=RELU_PIECES) -> np.ndarray:
    """Status code per element (``DEAD``, ``LINEAR``, ``NONLINEAR``, and for
    other activations ``SATURATED``, ``NEGATIVE``; CPAIOR Definitions 1 and 2,
    :mod:`~jumpstart.core.activations` for the pieces) from its max and min
    over the reduced dims: for ReLU, dead if ``max <= 0``, linear if
    ``min > 0``. Returns ``int8``, ``mx``'s shape."""
    return region_codes(mx.cpu(), mn.cpu(), pieces).numpy()


def dormant_scores(mean_abs: Tensor) -> Tensor:
    """ReDo's score of every unit of one layer (Sokar et al., ICML 2023, eq. (1)):
    ``s_i = m_i / ((1/H) sum_k m_k)`` from ``mean_abs`` ``(H,)``, each unit's
    mean ``|h|`` (after the activation) over the samples (and positions).
    Normalized by the layer *mean*, as the official code ran (the paper's text
    says "sum"). A layer whose units all output 0 scores 0 everywhere (all
    dormant at any ``tau >= 0``). A unit is tau-dormant if ``s_i <= tau``."""
    layer = mean_abs.mean()
    return mean_abs / layer if bool(layer > 0) else torch.zeros_like(mean_abs)


def unit_observations(h: Tensor) -> Tensor:
    """``(N * S, C)``: the values of ``h`` ``(N, C, *spatial)`` with each
    sample and position an observation (row) of the ``C`` units (columns)."""
    return h.transpose(0, 1).reshape(h.shape[1], -1).T


def unit_abs_sum(h: Tensor) -> Tensor:
    """``(C,)``: the sum of ``|h|`` over every dim of ``h`` ``(N, C, *spatial)``
    but the unit dim 1 (samples and positions), in one pass (the 1-norm)."""
    return torch.linalg.vector_norm(h, 1, dim=[d for d in range(h.dim()) if d != 1])


@dataclass
class ActivationStatus:
    """Status of every hidden unit and every (point, layer) cell.

    Attributes:
        layer_names: one name per hidden layer (module call), in call order.
        unit_status: per layer an ``int8`` array of shape ``(C_l,)`` with codes
            ``DEAD=0``, ``LINEAR=1``, ``NONLINEAR=2`` (Definition 1); of shape
            ``(C_l * S_l,)`` with granularity ``"position"``.
        point_status: ``int8`` array of shape ``(N, L)``, same codes
            (Definition 2), rows in the order the data was streamed.
        unit_abs_mean: per layer a ``float`` array ``(C_l,)``: each unit's
            (channel's) mean ``|h|`` after the activation over the samples and
            positions, the input of ReDo's score (:meth:`dormant_scores`);
            ``None`` when not measured (the dormant ratio is then NaN).
    """

    layer_names: list[str]
    unit_status: list[np.ndarray]
    point_status: np.ndarray
    unit_abs_mean: list[np.ndarray] | None = None
    _units: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._units = np.concatenate(self.unit_status)

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)

    @property
    def num_points(self) -> int:
        return int(self.point_status.shape[0])

    def _unit_ratio(self, code: int) -> float:
        return float(np.mean(self._units == code))

    @property
    def unit_dead_ratio(self) -> float:
        """Share of all hidden units that are dead (``max g <= 0`` on every input)."""
        return self._unit_ratio(DEAD)

    @property
    def unit_linear_ratio(self) -> float:
        """Share of all hidden units that are linear (``min g > 0``)."""
        return self._unit_ratio(LINEAR)

    @property
    def unit_nonlinear_ratio(self) -> float:
        """Share of all hidden units that are nonlinear."""
        return self._unit_ratio(NONLINEAR)

    @property
    def point_dead_ratio(self) -> float:
        """Share of points dead at *any* layer (they get no gradient)."""
        return float(np.mean((self.point_status == DEAD).any(axis=1)))

    @property
    def point_linear_ratio(self) -> float:
        """Share of points linear at *every* layer."""
        return float(np.mean((self.point_status == LINEAR).all(axis=1)))

    @property
    def point_nonlinear_ratio(self) -> float:
        """Share of points nonlinear at *every* layer."""
        return float(np.mean((self.point_status == NONLINEAR).all(axis=1)))

    @property
    def layer_point_dead_ratio(self) -> float:
        """Share of (point, layer) cells that are dead."""
        return float(np.mean(self.point_status == DEAD))

    @property
    def layer_point_linear_ratio(self) -> float:
        """Share of (point, layer) cells that are linear."""
        return float(np.mean(self.point_status == LINEAR))

    @property
    def layer_point_nonlinear_ratio(self) -> float:
        """Share of (point, layer) cells that are nonlinear."""
        return float(np.mean(self.point_status == NONLINEAR))

    @property
    def point_efficiency(self) -> float:
        """Share of (point, layer) cells that still get gradient.

        A point dead at layer ``l`` (1-based) sends no gradient to layers
        ``1..l`` (CPAIOR Sec. 3, after Definition 2), so cells at or before its
        deepest dead layer are lost: ``mean_i (L - d_i) / L``, ``d_i = 0`` for
        a point never dead.
        """
        dead = self.point_status == DEAD
        layers = self.num_layers
        # 1-based index of the deepest dead layer, 0 when none.
        deepest = np.where(dead.any(axis=1), layers - np.argmax(dead[:, ::-1], axis=1), 0)
        return float(np.mean((layers - deepest) / layers))

    def dormant_scores(self) -> list[np.ndarray]:
        """Per layer, ReDo's score of every unit (channel), ``(C_l,)``
        (:func:`dormant_scores`); NaN arrays when ``unit_abs_mean`` is ``None``."""
        if self.unit_abs_mean is None:
            return [np.full(1, np.nan) for _ in self.layer_names]
        return [dormant_scores(torch.from_numpy(m)).numpy() for m in self.unit_abs_mean]

    def dormant_ratio(self, tau: float = DORMANT_TAU) -> float:
        """Share of all hidden units (channels) that are tau-dormant,
        ``s_i <= tau`` (ReDo, Sokar et al. 2023, Definition 3.1): a relative
        notion, per layer, beside the absolute one of :attr:`unit_dead_ratio`.
        NaN when the scores were not measured."""
        scores = np.concatenate(self.dormant_scores())
        return float(np.mean(scores <= tau)) if not np.isnan(scores).any() else math.nan

    @property
    def unit_dormant_ratio(self) -> float:
        """:meth:`dormant_ratio` at ReDo's ``tau =`` :data:`DORMANT_TAU`."""
        return self.dormant_ratio()

    def ratios(self) -> dict[str, float]:
        """All eleven scalar ratios as a dict (the ``status`` of ``jumpstart train --json``)."""
        return {k: getattr(self, k) for k in RATIOS}

    def to_frame(self):
        """Per-layer table (pandas DataFrame), one row per hidden layer.

        Columns: ``layer`` (0-based), ``name``, ``units``, ``dead_units``,
        ``linear_units``, ``nonlinear_units``, and ``dead_points``,
        ``linear_points``, ``nonlinear_points`` (shares of points at that layer),
        ``saturated_units`` (ReLU6 / Hardtanh above their top), ``negative_units``
        (LeakyReLU / PReLU on their negative piece),
        ``dormant_units`` (ReDo tau-dormant units at :data:`DORMANT_TAU`).
        """
        import pandas as pd

        rows = []
        scores = self.dormant_scores()
        for i, (name, units) in enumerate(zip(self.layer_names, self.unit_status)):
            col = self.point_status[:, i]
            rows.append({
                "layer": i, "name": name, "units": int(units.size),
                "dead_units": int(np.sum(units == DEAD)),
                "linear_units": int(np.sum(units == LINEAR)),
                "nonlinear_units": int(np.sum(units == NONLINEAR)),
                "saturated_units": int(np.sum(units == SATURATED)),
                "negative_units": int(np.sum(units == NEGATIVE)),
                "dead_points": float(np.mean(col == DEAD)),
                "linear_points": float(np.mean(col == LINEAR)),
                "nonlinear_points": float(np.mean(col == NONLINEAR)),
                "dormant_units": int(np.sum(scores[i] <= DORMANT_TAU)),
            })
        return pd.DataFrame(rows)

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """Write a figure: a layers x units heatmap and, per layer, the share
        of points in each status (readable at any number of points).

        Dead, linear, nonlinear, saturated and negative are red, blue, green,
        purple and orange; units absent from a narrower layer are left white;
        the y axis names the layers (every k-th when there are more than 40). Format from the suffix (PNG, SVG,
        PDF). Returns the path written.
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        layers, codes = self.num_layers, len(STATUS_NAMES)
        width = max(u.size for u in self.unit_status)
        units = np.full((layers, width), np.nan)
        for i, u in enumerate(self.unit_status):
            units[i, : u.size] = u
        # points: per layer, the share of points in each status (any number of points)
        shares = np.stack([np.bincount(self.point_status[:, i].astype(np.int64),
                                       minlength=codes)[:codes] / self.num_points
                           for i in range(layers)])
        present = sorted(set(np.unique(self._units)) | set(np.unique(self.point_status)))
        cmap = ListedColormap(STATUS_COLOURS).with_extremes(bad="white")
        fig, (ax_u, ax_p) = plt.subplots(
            1, 2, figsize=(11, 1.8 + 0.16 * min(layers, 120)), sharey=True,
            gridspec_kw={"width_ratios": [3, 1]}, layout="constrained")
        ax_u.imshow(np.ma.masked_invalid(units), cmap=cmap, vmin=-0.5, vmax=codes - 0.5,
                    aspect="auto", interpolation="nearest")
        ax_u.set_xlabel(f"unit (widest layer: {width})")
        left = np.zeros(layers)
        for code in range(codes):
            ax_p.barh(np.arange(layers), shares[:, code], left=left, height=1.0,
                      color=STATUS_COLOURS[code], linewidth=0)
            left += shares[:, code]
        ax_p.set_xlim(0, 1)
        ax_p.set_xlabel(f"share of the {self.num_points} points")
        step = max(1, layers // 40)  # at most ~40 layer names
        ticks = np.arange(0, layers, step)
        ax_u.set_yticks(ticks, [self.layer_names[i] for i in ticks], fontsize=7)
        ax_u.set_ylim(layers - 0.5, -0.5)
        ax_u.set_title(f"units: {self.unit_dead_ratio:.0%} dead, "
                       f"{self.unit_linear_ratio:.0%} linear", fontsize=9, loc="left")
        ax_p.set_title(f"points: {self.layer_point_dead_ratio:.0%} of cells dead",
                       fontsize=9, loc="left")
        fig.legend(handles=[Patch(color=STATUS_COLOURS[c], label=STATUS_NAMES[c])
                            for c in present],
                   loc="outside upper right", ncol=len(present), fontsize=8, frameon=False)
        if title:
            fig.suptitle(title, x=0.01, ha="left", fontsize=10)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def layer_extremes(g: Tensor, granularity: str = "channel",
                   pieces=RELU_PIECES) -> tuple[Tensor, Tensor, np.ndarray]:
    """One batch's contribution to the status of one layer.

    Args:
        g: pre-activation ``(N, C, *spatial)``.
        granularity: ``"channel"`` or ``"position"`` (see :func:`activation_status`).
        pieces: the activation's pieces (:mod:`~jumpstart.core.activations`).

    Returns:
        ``(unit_max, unit_min, point_codes)``: per unit the max and min over
        this batch (``(C,)``, or ``(C * S,)`` with ``"position"``), and per
        sample its status code at this layer (``int8 (N,)``, Definition 2).
        A NaN or inf anywhere in ``g`` is in ``unit_max`` or ``unit_min``.

    With ``"channel"`` and more than one position, a CPU tensor in standard
    or channels-last layout is reduced in one pass by the margin deficits'
    fused kernel (:func:`~jumpstart.core.extremes.margin_extremes`; the same
    values as ``amax``/``amin``); elsewhere by PyTorch reductions.
    """
    n, c = g.shape[:2]
    gf = g.reshape(n, c, -1)  # a view for conv pre-activations in either layout
    found = margin_extremes(gf) if granularity == "channel" and gf.shape[2] > 1 else None
    if found is not None:
        bmax, bmin, pmax, pmin = found[2].split([c, c, n, n])
        return bmax, bmin, status_codes(pmax, pmin, pieces)
    mx_nc, mn_nc = gf.amax(dim=2), gf.amin(dim=2)
    if granularity == "position":
        units = g.reshape(g.shape[0], -1)
        bmax, bmin = units.amax(dim=0), units.amin(dim=0)
    else:
        bmax, bmin = mx_nc.amax(dim=0), mn_nc.amin(dim=0)
    return bmax, bmin, status_codes(mx_nc.amax(dim=1), mn_nc.amin(dim=1), pieces)


def input_batches(data, batch_size: int) -> Iterable[Tensor]:
    """The input batches of ``data``: a tensor ``(N, ...)`` split into
    ``batch_size`` rows, or an iterable's ``x`` / ``(x, y, ...)`` items.

    Raises:
        ValueError: an empty tensor, or items that are not tensors.
    """
    if isinstance(data, Tensor):
        if data.dim() < 1 or data.shape[0] == 0:
            raise ValueError(f"data must hold at least one sample; got shape {tuple(data.shape)}")
        yield from data.split(batch_size)
        return
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, Tensor):
            raise ValueError(f"data must yield tensors or (x, y, ...) tuples; got {type(x).__name__}")
        yield x


@contextmanager
def evaluating(model: nn.Module):
    """A measuring pass: ``model`` in eval mode under ``torch.no_grad()``,
    its training flag restored afterwards (also after an error). Yields the
    device of its parameters (CPU when it has none)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield device
    finally:
        model.train(was_training)


class NonFiniteError(ValueError):
    """A pre-activation holds NaN or inf: dead / linear status is undefined there."""


def undefined_ratios() -> dict[str, float]:
    """:meth:`ActivationStatus.ratios` of a net whose status is undefined (a
    diverged net with non-finite pre-activations): every ratio NaN, stored as
    JSON null."""
    return dict.fromkeys(RATIOS, math.nan)


def status_ratios(model: nn.Module, data, **options) -> dict[str, float]:
    """:func:`activation_status` ratios, or :func:`undefined_ratios` when a
    pre-activation is non-finite (a diverged net). ``options`` as there."""
    try:
        return activation_status(model, data, **options).ratios()
    except NonFiniteError:
        return undefined_ratios()


def activation_status(
    model: nn.Module,
    data,
    *,
    batch_size: int = 256,
    activations: Iterable[type] | None = None,
    layers=None,
    granularity: str = "channel",
    unit_dim: int | dict[str, int] | None = None,
) -> ActivationStatus:
    """Dead / linear / nonlinear status of units and points over ``data``.

    Runs ``model`` in eval mode under ``torch.no_grad()`` (its training flag is
    restored afterwards), hooking pre-activations exactly as
    :class:`~jumpstart.Jumpstart` does. A unit is dead if its pre-activation
    is ``<= 0`` for every sample and position, linear if ``> 0`` for every one,
    nonlinear otherwise (CPAIOR Definition 1); a point at a layer likewise over
    the layer's units and positions (Definition 2).

    ``granularity`` is that of :func:`~jumpstart.core.deficits.margin_deficits`:
    with ``"position"`` (the CPAIOR Keras MOONS code) each spatial position of
    a channel is its own unit, so a layer of ``C`` channels and ``S``
    positions has ``C * S`` unit statuses, ordered as the columns of
    ``g.reshape(N, C * S)``. Points stay samples under either granularity: a
    sample is dead at a layer if all its (sample, position) pairs are dead
    (every channel ``<= 0`` at every position), linear if every value is
    ``> 0``, so ``point_status`` keeps shape ``(N, L)``.

    Args:
        model: any ``nn.Module``; inputs are moved to its parameters' device.
        data: a tensor of inputs ``(N, ...)``, or an iterable (e.g. a
            DataLoader) yielding ``x`` or ``(x, y, ...)`` batches.
        batch_size: samples per forward when ``data`` is a tensor. 256: a
            larger batch's conv pre-activations (64 MB at 1024 x 16 x 32 x 32
            float32) are above glibc's mmap threshold, so every op's output is
            freshly mapped and page-faulted; 1024 took twice as long as 256
            on a 30 x 16 conv net on CIFAR images here.
        activations, layers, unit_dim: which pre-activations to read and
            where their units are (see ``Jumpstart``).
        granularity: ``"channel"`` or ``"position"``, see above.

    Returns:
        :class:`ActivationStatus`.

    Raises:
        NonFiniteError (a ValueError): a pre-activation holds NaN or inf (the
            message names the layer); the status is then undefined.
        ValueError: empty data, ``batch_size < 1``, unknown ``granularity``, no
            activation found, or batches of different layer structure (with
            ``"position"``, also a layer whose number of positions changes
            between batches).
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    check_granularity(granularity)
    unit_max: list[Tensor] = []
    unit_min: list[Tensor] = []
    abs_sum: list[Tensor] = []
    abs_count: list[int] = []
    point_codes: list[list[np.ndarray]] = []
    names: list[str] = []
    batch: list[tuple[str, Tensor]] = []

    def tap(name: str, g: Tensor) -> None:
        batch.append((name, g))

    hooks = PreActivationHooks(model, tap, activations=activations, layers=layers,
                               unit_dim=unit_dim)
    try:
        with evaluating(model) as device:
            for x in input_batches(data, batch_size):
                batch.clear()
                model(x.to(device))
                if not batch:
                    raise ValueError("the forward pass reached no hooked activation")
                if not names:
                    names = [n for n, _ in batch]
                elif [n for n, _ in batch] != names:
                    raise ValueError("batches took different paths through the model's layers")
                codes = []
                for i, (name, g) in enumerate(batch):
                    seen = hooks.seen[name]
                    bmax, bmin, point = layer_extremes(g, granularity, seen.pieces)
                    if not bool(torch.isfinite(bmax).all() & torch.isfinite(bmin).all()):
                        raise NonFiniteError(
                            f"layer {name}: pre-activations hold NaN or inf, so the status "
                            "is undefined (non-finite inputs or weights: a diverged net?)")
                    size = unit_abs_sum(seen.post(g.float()))
                    if len(unit_max) <= i:
                        unit_max.append(bmax)
                        unit_min.append(bmin)
                        abs_sum.append(size.double())
                        abs_count.append(0)
                    elif unit_max[i].shape != bmax.shape:
                        raise ValueError(
                            f"layer {name} has {unit_max[i].numel()} units in one batch and "
                            f"{bmax.numel()} in another; granularity 'position' needs inputs "
                            "of one spatial size"
                        )
                    else:
                        unit_max[i] = torch.maximum(unit_max[i], bmax)
                        unit_min[i] = torch.minimum(unit_min[i], bmin)
                        abs_sum[i] += size.double()
                    abs_count[i] += g.numel() // g.shape[1]
                    codes.append(point)
                point_codes.append(codes)
    finally:
        hooks.remove()
    if not point_codes:
        raise ValueError("data holds no batch")
    return ActivationStatus(
        layer_names=names,
        unit_status=[status_codes(mx, mn, hooks.seen[n].pieces)
                     for n, mx, mn in zip(names, unit_max, unit_min)],
        point_status=np.concatenate([np.stack(c, axis=1) for c in point_codes], axis=0),
        unit_abs_mean=[(a / count).cpu().numpy() for a, count in zip(abs_sum, abs_count)],
    )
