"""Exact compression: remove the units that are dead on a data set
(:func:`prune_dead`) and report parameters and multiply-adds before and
after (:class:`CompressionReport`)."""

from __future__ import annotations

import copy
import math
import textwrap
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from ..core.hooks import HIDDEN_ACTIVATIONS
from ..core.status import DEAD, LINEAR, activation_status
from ..optim import zero_state
from .graph import UnitGraph, eval_logits, model_device
from .layers import NORMS, WEIGHTED, hidden_layers, known_model
from .units import prune_units, silence_units


@dataclass
class CompressionReport:
    """What :func:`prune_dead` removed.

    Attributes:
        layers: one dict per weighted module (hidden layers and the output):
            ``name``, ``units_before``, ``units_after``, ``params_before``,
            ``params_after``, ``macs_before``, ``macs_after`` (multiply-adds
            per sample, BatchNorm not counted).
        max_logit_diff: the largest ``|logits_before - logits_after|`` over the data set.
        max_logit: the largest ``|logits_before|`` (for the relative difference).
        emptied: names of hidden layers left without units (dense: width 0;
            conv: one silenced unit), including those only an emptied layer
            read; on the dependency-graph path, groups left with one (dead) unit.
        skipped: dependency-graph path: group (root layer name) -> why it was
            not pruned (its channels pass through a LayerNorm, layer scale or
            attention split; or its removal moved the logits and was undone).
        folded: hidden layer name -> linear (always-active) units folded into
            the next layer (:func:`fold_linear`), counted apart from the dead
            units (``units_after`` includes both).
    """

    layers: list[dict]
    max_logit_diff: float
    max_logit: float
    emptied: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    folded: dict[str, int] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        """Parameters and multiply-adds before and after, summed, and the share removed."""
        out = {}
        for what in ("params", "macs"):
            before = sum(r[f"{what}_before"] for r in self.layers)
            after = sum(r[f"{what}_after"] for r in self.layers)
            out.update({f"{what}_before": before, f"{what}_after": after,
                        f"{what}_removed": 1 - after / before if before else math.nan})
        return out

    @property
    def relative_diff(self) -> float:
        """``max_logit_diff / max(max_logit, 1)``."""
        return self.max_logit_diff / max(self.max_logit, 1.0)

    def figure(self, *, title: str = "Units removed per layer", only_changed: bool = True):
        """A bar chart of units per layer before and after (one bar pair
        per weighted layer, input to output; BatchNorm rows left out), the
        units removed written beside each, and the totals in the title.

        Args:
            title: first line of the title.
            only_changed: show only layers that lost units (all when none did).

        Returns:
            The matplotlib ``Figure`` (about 7 in wide, 0.22 in per layer).
        """
        import matplotlib.pyplot as plt

        rows = [r for r in self.layers if r["macs_before"] > 0]  # BatchNorm rows have none
        shown = [r for r in rows if r["units_after"] < r["units_before"]] if only_changed else rows
        shown = shown or rows
        fig, ax = plt.subplots(figsize=(7, 1.9 + 0.22 * len(shown)), layout="constrained")
        y = np.arange(len(shown))
        before = [r["units_before"] for r in shown]
        after = [r["units_after"] for r in shown]
        ax.barh(y, before, color="#cccccc", label="before")
        ax.barh(y, after, color="#1f77b4", label="after")
        for i, (b, a) in enumerate(zip(before, after)):
            if b > a:
                ax.text(b, i, f" -{b - a}", va="center", fontsize=8)
        ax.set_yticks(y, [r["name"] for r in shown], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("units (output channels / features)")
        ax.set_xlim(0, max(before) * 1.15)
        t = self.totals()
        ax.set_title(f"{textwrap.fill(title, 75)}\nparameters -{t['params_removed']:.1%}, multiply-adds "
                     f"-{t['macs_removed']:.1%}, max |logit change| {self.max_logit_diff:.1e}",
                     fontsize=9)
        fig.legend(loc="outside lower center", ncols=2, fontsize=8)
        return fig

    def to_frame(self):
        """The per-layer table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.layers)


def _costs(model: nn.Module, x: Tensor, own_norm: dict[int, nn.Module] | None
           ) -> dict[str, tuple[int, int, int]]:
    """Per weighted module: (units, parameters, multiply-adds per sample)
    measured on one forward of ``x``; a module in ``own_norm`` (id -> its
    BatchNorm) counts that BatchNorm's affine parameters, and with
    ``own_norm=None`` every BatchNorm is a row of its own (units,
    parameters, 0 multiply-adds)."""
    names = {id(m): n for n, m in model.named_modules()}
    out: dict[str, tuple[int, int, int]] = {}
    handles = []
    norms = own_norm is None
    own_norm = own_norm or {}

    def hook(module, inputs, output):
        if isinstance(module, NORMS):
            out[names[id(module)]] = (module.num_features,
                                      sum(p.numel() for p in module.parameters()), 0)
            return
        per_sample = output[0].numel()
        fan = module.weight[0].numel() if module.weight.shape[0] else 0
        norm = own_norm.get(id(module))
        out[names[id(module)]] = (int(module.weight.shape[0]),
                                  sum(p.numel() for p in module.parameters(recurse=False))
                                  + (sum(p.numel() for p in norm.parameters()) if norm else 0),
                                  int(per_sample * fan))

    try:
        for m in model.modules():
            if isinstance(m, WEIGHTED) or (norms and isinstance(m, NORMS)):
                handles.append(m.register_forward_hook(hook))
        with torch.no_grad():
            model(x[:1].to(model_device(model)))
    finally:
        for h in handles:
            h.remove()
    return out


def prune_dead(model: nn.Module, data: Tensor, *, batch_size: int = 1024, inplace: bool = False,
               optimizer=None, tolerance: float = 1e-5, fold: bool = False
               ) -> tuple[nn.Module, CompressionReport]:
    """Remove every hidden unit dead on ``data`` (exact compression).

    The toolkit's nets and ``nn.Sequential`` chains
    (:func:`~jumpstart.surgery.layers.known_model`): dead is
    :func:`~jumpstart.activation_status`'s definition (pre-activation
    ``<= 0`` on every sample and position, in eval mode); a dead ReLU unit
    outputs 0 on all of ``data``, so removing it (:func:`prune_units`) leaves
    the logits there unchanged up to float rounding. A layer whose units are
    all dead is emptied (dense: width 0; conv: one silenced unit), and in a
    plain chain (a net without residual connections, whose layers each read
    only the one before) every layer before an emptied one is emptied too,
    since nothing reads it any more. Only ReLU layers are pruned (a GELU unit
    with ``g <= 0`` does not output a constant) and layers a residual
    connection ties are left whole.

    Any other model (a torchvision or timm net) goes through Torch-Pruning's
    dependency graph (:class:`~jumpstart.surgery.graph.UnitGraph`): a unit is
    a root layer's output channel together with every channel coupled to it
    (BatchNorm entries, residual adds, concatenations, depthwise convs), and
    it is removed only when every layer reading the group sees exactly 0 at
    it on all of ``data`` (a residual-stream channel: every branch writing it
    is dead), so the removal is exact whatever the activation. A group whose
    channels pass through a LayerNorm, a layer scale or attention's q/k/v is
    never touched (listed in ``report.skipped``); a group keeps at least one
    unit (listed in ``report.emptied`` when all were dead); each group's
    removal is checked on the first 64 samples and undone if the logits moved
    beyond ``tolerance`` (listed in ``report.skipped``). Both paths are
    exact on ``data`` only: a unit dead there may be live elsewhere.

    Args:
        model: the network.
        data: inputs ``(N, ...)`` the pruned model must reproduce.
        batch_size: samples per forward.
        inplace: prune ``model`` itself (else a deep copy; ``model`` is left as it was).
        optimizer: ``model``'s optimizer; needs ``inplace``. The pruned
            parameters replace the old ones in it with the survivors' state
            (Adam moments, momentum: :func:`jumpstart.optim.move_state`).
        tolerance: the graph path's per-group check, relative to ``max(1, max |logit|)``.
        fold: on the known path, then fold stably active (linear) units
            into the next layer where exact (:func:`fold_linear`).

    Returns:
        ``(pruned_model, report)``: the pruned model (eval mode) and a
        :class:`CompressionReport`.

    Raises:
        ValueError: empty data; an optimizer without ``inplace``; non-finite
            pre-activations (:class:`~jumpstart.core.status.NonFiniteError`);
            a model outside the toolkit traced with no Torch-Pruning
            (``ImportError``).
    """
    if not isinstance(data, Tensor) or data.dim() < 1 or data.shape[0] == 0:
        raise ValueError("data must be a tensor of at least one sample")
    if optimizer is not None and not inplace:
        raise ValueError("an optimizer belongs to the model's own parameters: pass "
                         "inplace=True with it")
    pruned = (model if inplace else copy.deepcopy(model)).eval()
    graph = None if known_model(pruned) else UnitGraph(pruned, data[:2])
    before_logits = eval_logits(pruned, data, batch_size)
    layers = hidden_layers(pruned) if graph is None else None
    own_norm = None if layers is None else {
        id(l.module): l.norm for l in layers if l.norm is not None}
    before = _costs(pruned, data, own_norm)
    folded: dict[str, int] = {}
    if graph is None:
        emptied, skipped = _prune_known(pruned, layers, data, batch_size, optimizer), {}
        if fold:
            folded = fold_linear(pruned, data, batch_size=batch_size, optimizer=optimizer)
    else:
        emptied, skipped = _prune_graph(graph, data, batch_size, optimizer, tolerance)
    after_logits = eval_logits(pruned, data, batch_size)
    after = _costs(pruned, data, own_norm)
    rows = [{"name": n, "units_before": u0, "units_after": after[n][0],
             "params_before": p0, "params_after": after[n][1],
             "macs_before": m0, "macs_after": after[n][2]}
            for n, (u0, p0, m0) in before.items()]
    report = CompressionReport(
        layers=rows,
        max_logit_diff=float((after_logits - before_logits).abs().max()),
        max_logit=float(before_logits.abs().max()),
        emptied=emptied, skipped=skipped, folded=folded)
    return pruned, report


def _prune_known(pruned: nn.Module, layers: list, data: Tensor, batch_size: int,
                 optimizer) -> list[str]:
    by_act = {l.activation_name: l for l in layers}
    status = activation_status(pruned, data, batch_size=batch_size,
                               layers=None, activations=HIDDEN_ACTIVATIONS)
    dead: dict[str, np.ndarray] = {}
    for name, codes in zip(status.layer_names, status.unit_status):
        if name in by_act and isinstance(by_act[name].activation, nn.ReLU):
            dead[name] = np.flatnonzero(codes == DEAD)
    plain = all(l.resizable for l in layers) and all(
        a.readers[0].module is b.module for a, b in zip(layers, layers[1:]))
    targets = {l.name: dead.get(l.activation_name, np.array([], dtype=np.int64))
               for l in layers if l.resizable}
    if plain:
        empty = [i for i, l in enumerate(layers) if len(targets[l.name]) == l.width]
        for layer in layers[:max(empty) if empty else 0]:
            targets[layer.name] = np.arange(layer.width)
    emptied = []
    for layer in layers:
        units = targets.get(layer.name)
        if units is None or not len(units):
            continue
        if len(units) == layer.width:
            emptied.append(layer.name)
            if isinstance(layer.module, nn.Conv2d):
                silence_units(layer, units[:1])
                units = units[1:]
        if len(units):
            prune_units(layer, units, optimizer=optimizer)
    return emptied


def _prune_graph(graph: UnitGraph, data: Tensor, batch_size: int, optimizer,
                 tolerance: float) -> tuple[list[str], dict[str, str]]:
    dead = graph.dead(data, batch_size=batch_size)
    check = data[:64]
    reference = graph.logits(check)  # every kept removal is checked against the original
    emptied, skipped = [], {}
    for group in graph.groups:
        if group.refusal is not None:
            skipped[group.name] = group.refusal
            continue
        units = dead[group.name]
        if len(units) == group.width:
            emptied.append(group.name)
            units = units[1:]
        why = graph.remove(group, units, check=(check, reference), optimizer=optimizer,
                           tolerance=tolerance)
        if why is not None:
            skipped[group.name] = why
    return emptied, skipped


@torch.no_grad()
def fold_linear(model: nn.Module, data: Tensor, *, batch_size: int = 1024, optimizer=None,
                rtol: float = 1e-6) -> dict[str, int]:
    """Fold stably active units into the next layer where it is exact
    (Serra, Kumar, Ramalingam, "Lossless compression of deep neural
    networks", CPAIOR 2020: its stably active units; the paper is not in
    ``../shared/papers``, so this follows its idea, not a checked
    section), in place, input to output.

    A ReLU unit active (pre-activation ``> 0``) on every sample of ``data``
    is linear there: ``h_i = w_i . x + b_i``. When the incoming weights
    ``W_S`` ``(|S|, n)`` of a layer's stably active units ``S`` have rank
    ``r < |S|`` (more such units than independent directions, e.g. 3 of
    them reading a 2-feature input, or a layer whose inputs lost dead units),
    ``|S| - r`` of them are combinations of a basis ``B`` (column-pivoted QR
    of ``W_S^T``): ``w_i = sum_j a_ij w_j``, so
    ``h_i = sum_j a_ij h_j + (b_i - sum_j a_ij b_j)`` wherever the units are
    active; the reader's weights ``W'[:, j] += a_ij W'[:, i]`` and bias
    ``b' += W'[:, i] c_i`` take them over and unit ``i`` is removed
    (:func:`prune_units`). Exact on ``data`` up to float rounding (the
    fit's residual ``|w_i - sum_j a_ij w_j|`` must be ``<= rtol |w_i|``).

    Only dense hidden layers of the toolkit's nets and ``nn.Sequential``
    chains: ``nn.Linear`` with ReLU, no BatchNorm, read by one ``nn.Linear``
    with a bias (a conv reader would read the constant ``c_i`` through zero
    padding at the border, which is not exact; left out).

    Args:
        model: a model :func:`~jumpstart.surgery.layers.known_model` knows.
        data: ``(N, ...)`` inputs on which the units are stably active.
        batch_size: samples per forward.
        optimizer: if given, the survivors keep their state; the reader's
            columns and bias that took over folded units have it zeroed.
        rtol: relative tolerance of the rank and the fit.

    Returns:
        Hidden layer name -> units folded (layers with none left out).

    Raises:
        ValueError: a model :func:`~jumpstart.surgery.layers.known_model`
            does not know (from :func:`hidden_layers`); non-finite
            pre-activations (:class:`~jumpstart.core.status.NonFiniteError`).
    """
    folded: dict[str, int] = {}
    # one status pass: folding a layer leaves every pre-activation on data as it was
    status = activation_status(model, data, batch_size=batch_size,
                               activations=HIDDEN_ACTIVATIONS)
    for layer in hidden_layers(model):
        reader = layer.readers[0] if len(layer.readers) == 1 else None
        if (not isinstance(layer.module, nn.Linear) or not isinstance(layer.activation, nn.ReLU)
                or layer.norm is not None or not layer.resizable or reader is None
                or not isinstance(reader.module, nn.Linear) or reader.module.bias is None
                or (reader.group, reader.copies, reader.norm) != (1, 1, None)
                or layer.width < 2):
            continue
        codes = status.unit_status[status.layer_names.index(layer.activation_name)]
        stable = np.flatnonzero(codes == LINEAR)
        if len(stable) < 2:
            continue
        w = layer.module.weight.double()
        ws = w[stable]
        _, r, pivots = scipy.linalg.qr(ws.T.cpu().numpy(), pivoting=True, mode="economic")
        diag = np.abs(np.diag(r))
        rank = int((diag > rtol * max(diag.max(initial=0.0), 1e-30)).sum())
        if rank >= len(stable):
            continue
        basis = torch.as_tensor(stable[pivots[:rank]], device=w.device)
        extra = torch.as_tensor(stable[pivots[rank:]], device=w.device)
        alpha = torch.linalg.lstsq(w[basis].T, w[extra].T).solution.T  # (|extra|, rank)
        fit = (alpha @ w[basis] - w[extra]).norm(dim=1)
        ok = fit <= rtol * w[extra].norm(dim=1).clamp_min(1e-30)
        extra, alpha = extra[ok], alpha[ok]
        if not len(extra):
            continue
        b = layer.module.bias.double() if layer.module.bias is not None else w.new_zeros(len(w))
        const = b[extra] - alpha @ b[basis]  # (|extra|,)
        rw = reader.module.weight
        read = rw[:, extra].double()  # (out, |extra|)
        rw[:, basis] += (read @ alpha).to(rw)
        reader.module.bias += (read @ const).to(rw)
        if optimizer is not None:
            zero_state(optimizer, rw, (slice(None), basis))
            zero_state(optimizer, reader.module.bias, slice(None))
        prune_units(layer, extra.cpu(), optimizer=optimizer)
        folded[layer.name] = len(extra)
    return folded
