"""Activation status as a torchmetrics ``Metric`` (CPAIOR 2022, Definitions 1
and 2), exact under data parallelism."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from ..core.deficits import check_granularity
from ..core.hooks import PreActivationHooks
from ..core.status import (ActivationStatus, evaluating, layer_extremes, status_codes,
                           unit_abs_sum)


class ActivationStatusMetric(Metric):
    """Dead / linear / nonlinear units and points of ``model`` over all the data
    given to :meth:`update`, on every process together.

    State: per update, every unit's max and min over the batch (reduced across
    processes by concatenation, then max / min in :meth:`compute`) and every
    sample's status code per layer (concatenated). So after synchronization
    the result equals :func:`jumpstart.activation_status` on the union of all
    processes' data.

    Example (in a ``LightningModule``)::

        self.status = ActivationStatusMetric(self.net)
        ...
        def validation_step(self, batch, i):
            self.status.update(batch[0])
        def on_validation_epoch_end(self):
            self.log_dict(self.status.compute()); self.status.reset()

    Args:
        model: the network; :meth:`update` runs it in eval mode without
            gradients (its training flag is restored).
        activations, layers, granularity: as :func:`jumpstart.activation_status`
            (default: every activation of a known kind, modules and functional).
        **kwargs: passed to ``torchmetrics.Metric``.

    Raises:
        ValueError: unknown ``granularity``; at ``update``, no hooked
            activation reached or a change of layer structure.
    """

    full_state_update = False

    def __init__(self, model: nn.Module, *, activations: Iterable[type] | None = None,
                 layers=None, granularity: str = "channel", **kwargs) -> None:
        super().__init__(**kwargs)
        check_granularity(granularity)
        self._model = [model]  # a list: not registered as a submodule of the metric
        self._activations = None if activations is None else tuple(activations)
        self._layers, self.granularity = layers, granularity
        self.pieces_per_layer: list = []
        self.layer_names: list[str] = []
        self.units_per_layer: list[int] = []
        self.channels_per_layer: list[int] = []
        self.add_state("unit_max", default=[], dist_reduce_fx="cat")
        self.add_state("unit_min", default=[], dist_reduce_fx="cat")
        self.add_state("point_codes", default=[], dist_reduce_fx="cat")
        self.add_state("abs_sum", default=[], dist_reduce_fx="cat")
        self.add_state("abs_count", default=[], dist_reduce_fx="cat")

    def update(self, x: Tensor) -> None:  # type: ignore[override]
        """Run the model on inputs ``x`` ``(N, ...)`` and record its pre-activations."""
        model = self._model[0]
        seen: list[tuple[str, Tensor]] = []
        hooks = PreActivationHooks(model, lambda name, g: seen.append((name, g)),
                                   activations=self._activations, layers=self._layers)
        try:
            with evaluating(model):
                model(x)
        finally:
            hooks.remove()
        if not seen:
            raise ValueError("the forward pass reached no hooked activation")
        names = [n for n, _ in seen]
        parts = [layer_extremes(g, self.granularity, hooks.seen[n].pieces) for n, g in seen]
        sizes = [p[0].numel() for p in parts]
        if not self.layer_names:
            self.layer_names, self.units_per_layer = names, sizes
            self.channels_per_layer = [g.shape[1] for _, g in seen]
            self.pieces_per_layer = [hooks.seen[n].pieces for n in names]
        elif names != self.layer_names or sizes != self.units_per_layer:
            raise ValueError("batches took different paths through the model's layers")
        self.unit_max.append(torch.cat([p[0].flatten().float() for p in parts]))
        self.unit_min.append(torch.cat([p[1].flatten().float() for p in parts]))
        self.abs_sum.append(torch.cat([unit_abs_sum(hooks.seen[n].post(g.float())).double()
                                       for n, g in seen]))
        self.abs_count.append(torch.tensor([g.numel() // g.shape[1] for _, g in seen],
                                           dtype=torch.float64, device=self.device))
        codes = np.stack([p[2] for p in parts], axis=1)  # (N, L)
        self.point_codes.append(torch.as_tensor(codes, device=self.device))

    def status(self) -> ActivationStatus:
        """The synchronized :class:`~jumpstart.ActivationStatus`."""
        def cat(state):
            return torch.cat(state) if isinstance(state, list) else state

        if not self.layer_names:
            raise ValueError("ActivationStatusMetric: no data; call update() first")
        units = sum(self.units_per_layer)
        mx = cat(self.unit_max).view(-1, units).amax(0)
        mn = cat(self.unit_min).view(-1, units).amin(0)
        bounds = np.cumsum([0, *self.units_per_layer])
        sums = cat(self.abs_sum).view(-1, sum(self.channels_per_layer)).sum(0)
        counts = cat(self.abs_count).view(-1, len(self.layer_names)).sum(0)
        means = sums.split(self.channels_per_layer)
        return ActivationStatus(
            layer_names=list(self.layer_names),
            unit_status=[status_codes(mx[a:b], mn[a:b], pieces) for a, b, pieces
                         in zip(bounds[:-1], bounds[1:], self.pieces_per_layer)],
            point_status=cat(self.point_codes).cpu().numpy().astype(np.int8),
            unit_abs_mean=[(m / c).cpu().numpy() for m, c in zip(means, counts)],
        )

    def compute(self) -> dict[str, float]:
        """The eleven ratios of :meth:`jumpstart.ActivationStatus.ratios`."""
        return self.status().ratios()
