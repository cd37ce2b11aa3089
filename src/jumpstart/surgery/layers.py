"""Layer discovery for unit surgery: the hidden layers of a model, each a
weighted module with its optional BatchNorm, activation and readers
(:func:`hidden_layers`), and their outputs on one forward
(:func:`layer_outputs`)."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from ..core.hooks import HIDDEN_ACTIVATIONS
from ..models import MoonsConv, Rectangular, ResNet

WEIGHTED = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
#: modules a plain ``nn.Sequential`` chain may hold between an activation and
#: the next weighted layer without mixing units
PASS_THROUGH = (nn.Dropout, nn.Identity, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class Reader:
    """A weighted module that reads a hidden layer's units.

    Unit ``u`` of a layer of ``W`` units is read by the input columns (dim 1
    of ``module.weight``) ``c * W * group + u * group + j`` for
    ``c < copies``, ``j < group``: ``group = H * W`` positions for a conv
    layer read through a flatten, ``copies = 2`` for the max+avg pooling head.
    ``norm`` is the BatchNorm that normalizes the reader's output, if any.
    ``split``: a max+avg head of a net Neural Rejuvenation grew, which pools
    its ``split`` old units and its new ones apart (features ``[max_old,
    avg_old, max_new, avg_new]``): unit ``u < split`` is read by columns
    ``u`` and ``split + u``, unit ``u >= split`` by ``split + u`` and
    ``W + u``.
    """

    module: nn.Module
    group: int = 1
    copies: int = 1
    norm: nn.Module | None = None
    split: int | None = None

    def columns(self, units: Tensor, width: int) -> Tensor:
        """The input columns ``(len(units) * group * copies,)`` reading ``units``."""
        if self.split is not None:
            new = (units >= self.split).long()
            return torch.cat([units + self.split * new,
                              units + self.split + (width - self.split) * new])
        per = (units[:, None] * self.group
               + torch.arange(self.group, device=units.device)).flatten()
        return torch.cat([per + c * width * self.group for c in range(self.copies)])


@dataclass
class HiddenLayer:
    """One hidden layer's units and where they are computed and read.

    Attributes:
        name: qualified name of ``module`` in the model.
        module: ``nn.Linear`` or ``nn.Conv2d``; unit ``i`` is row ``i`` of its
            weight (its incoming weights) and entry ``i`` of its bias.
        activation: the activation module applied to the units; ``None`` for
            a layer found through the dependency graph (an activation module
            may serve several layers there, or be a function), whose units'
            outputs are then read at the input of its first reader.
        readers: the modules reading the units (their outgoing weights).
        norm: a BatchNorm between ``module`` and ``activation``, or ``None``.
        resizable: ``False`` when a residual connection ties the layer's width,
            or the layer is pooled in halves (a rejuvenated max+avg net's
            last; :func:`widen` and :func:`prune_units` refuse it).
    """

    name: str
    module: nn.Module
    activation: nn.Module | None
    readers: tuple[Reader, ...]
    norm: nn.Module | None = None
    resizable: bool = True
    activation_name: str = field(default="", repr=False)

    @property
    def width(self) -> int:
        """Number of units."""
        return int(self.module.weight.shape[0])

    def watch(self, fn) -> object:
        """Call ``fn(module, h)`` on every forward with the units' outputs
        ``h`` ``(N, C, *spatial)`` (units at dim 1; a linear layer's
        ``(..., C)`` input flattened to ``(N', C)``), detached: the
        activation's output, or for a graph-found layer the first reader's
        input (after any pooling between them: ReDo and CBP then score the
        pooled outputs, zero exactly where the units are). Returns the hook
        handle (``.remove()`` it)."""
        if self.activation is not None:
            return self.activation.register_forward_hook(
                lambda m, i, out: fn(m, out.detach()))
        reader = self.readers[0].module

        def pre(m, inputs):
            h = inputs[0].detach()
            fn(m, h if isinstance(m, _ConvNd) else h.reshape(-1, h.shape[-1]))
        return reader.register_forward_pre_hook(pre)


def known_model(model: nn.Module) -> bool:
    """Whether :func:`hidden_layers` finds ``model``'s layers by hand (the
    toolkit's nets, plain ``nn.Sequential`` chains) rather than through the
    dependency graph (:mod:`jumpstart.surgery.graph`)."""
    return isinstance(model, (Rectangular, MoonsConv, ResNet, nn.Sequential))


def hidden_layers(model: nn.Module, example_inputs: Tensor | None = None) -> list[HiddenLayer]:
    """The hidden layers of ``model`` that surgery can operate on, input to output.

    The toolkit's nets and ``nn.Sequential`` chains (:func:`known_model`)
    are read by hand (exact, no example needed). Any other model is traced
    through Torch-Pruning's dependency graph on ``example_inputs``
    (:class:`~jumpstart.surgery.graph.UnitGraph`); its hidden layers are
    the unit groups a :class:`HiddenLayer` can describe
    (:attr:`~jumpstart.surgery.graph.UnitGroup.simple`: one conv or linear
    layer, at most one BatchNorm, its readers reading each unit at one input
    channel). Every other group (a residual stream, a concatenation, a
    depthwise conv, a LayerNorm, attention's q/k/v) is skipped with a
    ``UserWarning`` that names it: recycling there would corrupt coupled
    channels.

    Args:
        model: the network.
        example_inputs: ``(N, ...)`` a batch the model takes; needed only for
            a model :func:`known_model` does not know.

    Raises:
        ValueError: a model outside :func:`known_model` without
            ``example_inputs``, or one activation module serving several layers
            of a known model (its calls cannot be told apart by module).
        ImportError: such a model without Torch-Pruning installed.
    """
    if not known_model(model):
        if example_inputs is None:
            raise ValueError(f"{type(model).__name__} is not one of the toolkit's nets: its "
                             "layers are found by tracing it; pass example_inputs (a batch)")
        return _graph_layers(model, example_inputs)
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(model, Rectangular):
        found = _rectangular(model)
    elif isinstance(model, MoonsConv):
        found = [(conv, None, act, nxt)
                 for conv, act, nxt in zip(model.convs, model.activations,
                                           [*model.convs[1:], model.output])]
    elif isinstance(model, ResNet):
        found = [(block.convs[i], block.norms[i], block.activations[i], block.convs[i + 1])
                 for block in model.blocks for i in range(len(block.convs) - 1)]
    else:
        found = _sequential(model)
    tied = isinstance(model, Rectangular) and model.skip is not None
    calls = Counter(id(f[2]) for f in found)
    shared = sorted({names[id(f[2])] for f in found if calls[id(f[2])] > 1})
    if shared:
        raise ValueError(f"surgery needs one activation module per hidden layer; "
                         f"{', '.join(shared)} serve(s) several layers (give each layer its own)")
    norms = {id(f[0]): f[1] for f in found if isinstance(f[1], NORMS)}
    layers = []
    for module, norm, act, reader in found:
        width = module.weight.shape[0]
        if not isinstance(reader, Reader):
            reader = _reader(reader, width)
        reader = replace(reader, norm=norms.get(id(reader.module)))
        layers.append(HiddenLayer(names[id(module)], module, act, (reader,),
                                  norm if isinstance(norm, NORMS) else None,
                                  not (tied or reader.split is not None), names[id(act)]))
    return layers


def layers_of(model: nn.Module, example_inputs: Tensor | None = None
              ) -> list[HiddenLayer] | None:
    """:func:`hidden_layers` for a technique that recycles units: a known
    model's layers at once; any other model's from ``example_inputs``
    (traced), or ``None`` when none are given yet (a technique then asks
    again with its first training batch).

    Args:
        model: the network.
        example_inputs: ``(N, ...)`` inputs; the first two are traced.

    Raises:
        ImportError, ValueError: as :func:`hidden_layers`.
    """
    if known_model(model):
        return hidden_layers(model)
    return None if example_inputs is None else hidden_layers(model, example_inputs[:2])


def _graph_layers(model: nn.Module, example_inputs: Tensor) -> list[HiddenLayer]:
    from .graph import UnitGraph

    graph = UnitGraph(model, example_inputs)
    layers, skipped = [], []
    for g in graph.groups:
        if not g.simple:
            skipped.append(g.name)
            continue
        norms = [m for _, m, _, _ in g.writers if isinstance(m, NORMS)]
        readers = tuple(Reader(m, norm=graph.norm_after(m)) for _, m, _, _ in g.readers)
        layers.append(HiddenLayer(g.name, g.root, None, readers, norms[0] if norms else None))
    if skipped:
        warnings.warn(f"{type(model).__name__}: {len(skipped)} layer(s) skipped, their units "
                      f"coupled beyond one layer and its readers (residual streams, "
                      f"concatenations, depthwise convs, norms over channels, attention): "
                      f"{', '.join(skipped)}", UserWarning, stacklevel=3)
    return layers


def _reader(module: nn.Module, width: int, copies: int = 1) -> Reader:
    fan = module.weight.shape[1]
    if fan % (width * copies):
        raise ValueError(f"{type(module).__name__} reads {fan} inputs, not a multiple of the "
                         f"{width} units before it")
    return Reader(module, fan // (width * copies), copies)


def _rectangular(model) -> list:
    layers = list(zip(model.linears, model.norms, model.activations, model.linears[1:]))
    last = model.linears[-1]
    copies = 2 if model.kind == "conv" and model.head == "maxavg" else 1
    head = replace(_reader(model.output, last.weight.shape[0], copies), split=model.pool_split)
    return [*layers, (last, model.norms[-1], model.activations[-1], head)]


def _sequential(model: nn.Sequential) -> list:
    mods = list(model)
    found = []
    for i, m in enumerate(mods):
        if not isinstance(m, WEIGHTED):
            continue
        j = i + 1
        norm = mods[j] if j < len(mods) and isinstance(mods[j], NORMS) else None
        j += norm is not None
        if not (j < len(mods) and isinstance(mods[j], HIDDEN_ACTIVATIONS)):
            continue
        act = mods[j]
        j += 1
        while j < len(mods) and isinstance(mods[j], PASS_THROUGH):
            j += 1
        if j < len(mods) and isinstance(mods[j], WEIGHTED):
            found.append((m, norm, act, mods[j]))
    return found


def layer_outputs(model: nn.Module, layers: list[HiddenLayer], x: Tensor) -> list[Tensor]:
    """The outputs (after the activation) of ``layers`` on one no-grad forward
    of ``x`` in the model's current mode: one ``(N, C, *spatial)`` tensor per
    layer (the first call of what :meth:`HiddenLayer.watch` watches)."""
    seen: dict[int, Tensor] = {}
    handles = []
    try:
        for i, layer in enumerate(layers):
            handles.append(layer.watch(lambda m, h, i=i: seen.setdefault(i, h)))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [seen[i] for i in range(len(layers))]
