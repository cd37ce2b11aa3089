"""Exact compression: remove the units that are dead on a data set
(:func:`prune_dead`) and report parameters and multiply-adds before and
after (:class:`CompressionReport`)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..core.hooks import HIDDEN_ACTIVATIONS
from ..core.status import DEAD, activation_status
from .layers import WEIGHTED, hidden_layers
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
            conv: one silenced unit), including those only an emptied layer read.
    """

    layers: list[dict]
    max_logit_diff: float
    max_logit: float
    emptied: list[str]

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

    def to_frame(self):
        """The per-layer table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.layers)


def _costs(model: nn.Module, x: Tensor) -> dict[str, tuple[int, int, int]]:
    """Per weighted module: (units, parameters incl. a following BatchNorm's
    affine, multiply-adds per sample) measured on one forward of ``x``."""
    names = {id(m): n for n, m in model.named_modules()}
    out: dict[str, tuple[int, int, int]] = {}
    handles = []

    def hook(module, inputs, output):
        per_sample = output[0].numel()
        fan = module.weight[0].numel() if module.weight.shape[0] else 0
        out[names[id(module)]] = (int(module.weight.shape[0]),
                                  sum(p.numel() for p in module.parameters(recurse=False)),
                                  int(per_sample * fan))

    try:
        for m in model.modules():
            if isinstance(m, WEIGHTED):
                handles.append(m.register_forward_hook(hook))
        with torch.no_grad():
            model(x[:1].to(_device(model)))
    finally:
        for h in handles:
            h.remove()
    return out


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _logits(model: nn.Module, data: Tensor, batch_size: int = 1024) -> Tensor:
    device = _device(model)
    with torch.no_grad():
        return torch.cat([model(x.to(device)).cpu() for x in data.split(batch_size)])


def prune_dead(model: nn.Module, data: Tensor, *, batch_size: int = 1024
               ) -> tuple[nn.Module, CompressionReport]:
    """Remove every hidden unit dead on ``data`` (exact compression).

    Dead is :func:`~jumpstart.activation_status`'s definition (pre-activation
    ``<= 0`` on every sample and position, in eval mode); a dead ReLU unit
    outputs 0 on all of ``data``, so removing it (:func:`prune_units`) leaves
    the logits there unchanged up to float rounding. A layer whose units are
    all dead is emptied (dense: width 0; conv: one silenced unit), and in a
    plain chain (a net without residual connections, whose layers each read
    only the one before) every layer before an emptied one is emptied too,
    since nothing reads it any more. Only ReLU layers are pruned (a GELU unit
    with ``g <= 0`` does not output a constant) and layers a residual
    connection ties are left whole.

    Args:
        model: a model :func:`hidden_layers` knows; not modified (a deep copy
            is pruned).
        data: inputs ``(N, ...)`` the pruned model must reproduce.
        batch_size: samples per forward.

    Returns:
        ``(pruned_model, report)``: the pruned copy (eval mode) and a
        :class:`CompressionReport`.

    Raises:
        ValueError: a model family surgery does not know; empty data;
            non-finite pre-activations (:class:`~jumpstart.core.status.NonFiniteError`).
    """
    if not isinstance(data, Tensor) or data.dim() < 1 or data.shape[0] == 0:
        raise ValueError("data must be a tensor of at least one sample")
    layers = hidden_layers(model)
    pruned = copy.deepcopy(model).eval()
    model_was = model.training
    model.eval()
    try:
        before_logits = _logits(model, data, batch_size)
        before = _costs(model, data)
    finally:
        model.train(model_was)
    new_layers = hidden_layers(pruned)
    by_act = {l.activation_name: l for l in new_layers}
    status = activation_status(pruned, data, batch_size=batch_size,
                               layers=None, activations=HIDDEN_ACTIVATIONS)
    dead: dict[str, np.ndarray] = {}
    for name, codes in zip(status.layer_names, status.unit_status):
        if name in by_act and isinstance(by_act[name].activation, nn.ReLU):
            dead[name] = np.flatnonzero(codes == DEAD)
    plain = all(l.resizable for l in new_layers) and all(
        a.readers[0].module is b.module for a, b in zip(new_layers, new_layers[1:]))
    targets = {l.name: dead.get(l.activation_name, np.array([], dtype=np.int64))
               for l in new_layers if l.resizable}
    if plain:
        empty = [i for i, l in enumerate(new_layers) if len(targets[l.name]) == l.width]
        for layer in new_layers[:max(empty) if empty else 0]:
            targets[layer.name] = np.arange(layer.width)
    emptied = []
    for layer in new_layers:
        units = targets.get(layer.name)
        if units is None or not len(units):
            continue
        if len(units) == layer.width:
            emptied.append(layer.name)
            if isinstance(layer.module, nn.Conv2d):
                silence_units(layer, units[:1])
                units = units[1:]
        if len(units):
            prune_units(layer, units)
    after_logits = _logits(pruned, data, batch_size)
    after = _costs(pruned, data)
    rows = [{"name": n, "units_before": u0, "units_after": after[n][0],
             "params_before": p0, "params_after": after[n][1],
             "macs_before": m0, "macs_after": after[n][2]}
            for n, (u0, p0, m0) in before.items()]
    for layer in new_layers:  # BatchNorm parameters count with their layer
        if layer.norm is not None:
            row = next(r for r in rows if r["name"] == layer.name)
            before_norm = [l for l in layers if l.name == layer.name][0].norm
            row["params_before"] += sum(p.numel() for p in before_norm.parameters())
            row["params_after"] += sum(p.numel() for p in layer.norm.parameters())
    report = CompressionReport(
        layers=rows,
        max_logit_diff=float((after_logits - before_logits).abs().max()),
        max_logit=float(before_logits.abs().max()),
        emptied=emptied)
    return pruned, report

