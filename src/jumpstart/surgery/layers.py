"""Layer discovery for unit surgery: the hidden layers of a model, each a
weighted module with its optional BatchNorm, activation and readers
(:func:`hidden_layers`), and their outputs on one forward
(:func:`layer_outputs`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

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
        activation: the activation module applied to the units.
        readers: the modules reading the units (their outgoing weights).
        norm: a BatchNorm between ``module`` and ``activation``, or ``None``.
        resizable: ``False`` when a residual connection ties the layer's width,
            or the layer is pooled in halves (a rejuvenated max+avg net's
            last; :func:`widen` and :func:`prune_units` refuse it).
    """

    name: str
    module: nn.Module
    activation: nn.Module
    readers: tuple[Reader, ...]
    norm: nn.Module | None = None
    resizable: bool = True
    activation_name: str = field(default="", repr=False)

    @property
    def width(self) -> int:
        """Number of units."""
        return int(self.module.weight.shape[0])


def hidden_layers(model: nn.Module) -> list[HiddenLayer]:
    """The hidden layers of ``model`` that surgery can operate on, input to output.

    Raises:
        ValueError: a model family surgery does not know (the message lists
            those it does), or one activation module serving several layers
            (its calls cannot be told apart by module).
    """
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
    elif isinstance(model, nn.Sequential):
        found = _sequential(model)
    else:
        raise ValueError(f"surgery knows Rectangular, MoonsConv, ResNet and nn.Sequential chains "
                         f"of Linear/Conv2d (+ BatchNorm) + activation; got {type(model).__name__}")
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
    layer (the first call of its activation module)."""
    seen: dict[int, Tensor] = {}
    handles = []

    def hook(module, inputs, output):
        seen.setdefault(id(module), output.detach())

    try:
        for layer in layers:
            handles.append(layer.activation.register_forward_hook(hook))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [seen[id(layer.activation)] for layer in layers]
