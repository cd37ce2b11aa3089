"""Unit surgery: re-draw, silence, add and remove hidden units of a network.

The operations ReDo and Continual Backprop recycle units with
(``../shared/papers/recycling.md``), and the exact pruning of dead units
(:func:`prune_dead`). A *hidden layer* here is a weighted module
(``nn.Linear`` or ``nn.Conv2d``) whose outputs (units: rows of its weight,
output channels) go through an optional BatchNorm and an activation and are
read by the next weighted module(s), its *readers*. :func:`hidden_layers`
finds them in the toolkit's nets (:class:`~jumpstart.models.Rectangular`
dense and conv, with or without BatchNorm, :class:`~jumpstart.models.MoonsConv`,
the ResNet family's convs inside a block) and in plain ``nn.Sequential``
chains of Linear/Conv2d (+ BatchNorm) + activation; the output layer is never
a hidden layer.

Every operation says which entries it touches and returns them as
``(parameter, index)`` pairs; given an ``optimizer`` it keeps the optimizer
consistent: in-place operations zero the state of the touched entries
(:func:`jumpstart.optim.zero_state`: Adam moments, momentum; a scalar step
count is kept), operations that change a shape move the survivors' state to
the new parameters and give new entries fresh (zero) state
(:func:`jumpstart.optim.move_state`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn

from .core.hooks import HIDDEN_ACTIVATIONS
from .optim import move_state, zero_state

#: weight distributions to re-draw from: ``"glorot"`` (Glorot/Xavier uniform:
#: the toolkit's default init and ReDo's official code), ``"kaiming"``
#: (Kaiming normal, fan-in, ReLU gain: the toolkit's other init),
#: ``"kaiming_uniform"`` (uniform with the Kaiming bound ``sqrt(6 / fan_in)``:
#: Continual Backprop's code)
INITS = ("glorot", "kaiming", "kaiming_uniform")
WEIGHTED = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
#: modules a plain ``nn.Sequential`` chain may hold between an activation and
#: the next weighted layer without mixing units
PASS_THROUGH = (nn.Dropout, nn.Identity, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d)

Touched = list[tuple[Tensor, object]]


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
    from .models import MoonsConv, Rectangular, ResNet

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


def _check_units(layer: HiddenLayer, units) -> Tensor:
    units = torch.as_tensor(units, dtype=torch.long).flatten()
    if len(units) and (units.min() < 0 or units.max() >= layer.width):
        raise ValueError(f"layer {layer.name}: units must be in [0, {layer.width}); "
                         f"got {units.tolist()}")
    if len(units.unique()) != len(units):
        raise ValueError(f"layer {layer.name}: units must not repeat; got {units.tolist()}")
    return units


def draw(shape: tuple[int, ...], init: str, *, generator: torch.Generator | None = None,
         dtype=torch.float32) -> Tensor:
    """A fresh weight tensor of ``shape`` from ``init`` (one of :data:`INITS`);
    fan-in and fan-out are those of a whole layer of that shape.

    Raises:
        ValueError: unknown ``init``.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    w = torch.empty(shape, dtype=dtype)
    if init == "glorot":
        nn.init.xavier_uniform_(w, generator=generator)
    elif init == "kaiming":
        nn.init.kaiming_normal_(w, nonlinearity="relu", generator=generator)
    else:
        nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=generator)
    return w


def _reset(optimizer, touched: Touched) -> Touched:
    if optimizer is not None:
        for param, index in touched:
            zero_state(optimizer, param, index)
    return touched


@torch.no_grad()
def reinit_units(layer: HiddenLayer, units, *, init: str = "glorot", optimizer=None,
                 generator: torch.Generator | None = None) -> Touched:
    """Re-draw the incoming weights of ``units`` (ReDo step 1; CBP's replacement).

    Rows ``units`` of ``layer.module.weight`` are taken from a fresh draw of
    the whole weight (so the distribution is the layer's initial one, fan-in
    and fan-out of the full layer), their bias entries set to 0, and with a
    BatchNorm its scale and shift of those units set to 1 and 0 and its
    running mean and variance to 0 and 1.

    Args:
        layer: from :func:`hidden_layers`.
        units: unit indices ``(K,)``.
        init: one of :data:`INITS`.
        optimizer: if given, the state of every touched entry is zeroed.
        generator: random source of the draw.

    Returns:
        The touched entries: ``(weight, units)``, ``(bias, units)`` and the
        BatchNorm's ``(weight, units)``, ``(bias, units)`` where they exist.

    Raises:
        ValueError: a unit out of range or repeated; unknown ``init``.
    """
    units = _check_units(layer, units)
    w = layer.module.weight
    fresh = draw(tuple(w.shape), init, generator=generator, dtype=w.dtype)
    w[units] = fresh[units].to(w.device)
    touched: Touched = [(w, units)]
    if layer.module.bias is not None:
        layer.module.bias[units] = 0
        touched.append((layer.module.bias, units))
    if layer.norm is not None:
        layer.norm.weight[units] = 1
        layer.norm.bias[units] = 0
        layer.norm.running_mean[units] = 0
        layer.norm.running_var[units] = 1
        touched += [(layer.norm.weight, units), (layer.norm.bias, units)]
    return _reset(optimizer, touched)


@torch.no_grad()
def zero_outgoing(layer: HiddenLayer, units, *, optimizer=None) -> Touched:
    """Set to 0 the readers' weights that read ``units`` (ReDo step 2).

    A residual connection that adds the units elsewhere is not a reader and
    still carries them (:class:`~jumpstart.models.Rectangular` with ``skip``).

    Args:
        layer: from :func:`hidden_layers`.
        units: unit indices ``(K,)``.
        optimizer: if given, the state of every touched entry is zeroed.

    Returns:
        The touched entries: ``(reader.weight, (slice(None), columns))`` per reader.

    Raises:
        ValueError: a unit out of range or repeated.
    """
    units = _check_units(layer, units)
    touched: Touched = []
    for reader in layer.readers:
        cols = reader.columns(units, layer.width)
        reader.module.weight[:, cols] = 0
        touched.append((reader.module.weight, (slice(None), cols)))
    return _reset(optimizer, touched)


@torch.no_grad()
def absorb(layer: HiddenLayer, units, values: Tensor) -> Touched:
    """Keep the readers' outputs where they were when ``units``, at constant
    outputs ``values``, stop being read: the contribution
    ``c = sum over the units' columns of w_next * value`` is added to the
    reader's bias, or, for a reader without a bias whose output a BatchNorm
    normalizes, subtracted from that BatchNorm's running mean (in training
    mode the batch statistics re-centre it anyway). CBP's replacement;
    :func:`prune_units`. Exact for linear readers and for conv readers away
    from zero padding (at the border a padded conv reads zeros, not the
    constant).

    Args:
        layer: from :func:`hidden_layers`.
        units: unit indices ``(K,)``.
        values: ``(K,)`` each unit's output value (after the activation).

    Returns:
        The touched entries: ``(reader.bias, slice(None))`` per reader with a bias.

    Raises:
        ValueError: a unit out of range or repeated; ``values`` not of shape
            ``(K,)``; a reader with neither a bias nor a BatchNorm while a
            value is not 0.
    """
    units = _check_units(layer, units)
    values = torch.as_tensor(values, dtype=torch.float32).flatten()
    if values.shape != units.shape:
        raise ValueError(f"values must have one entry per unit ({len(units)}); "
                         f"got shape {tuple(values.shape)}")
    touched: Touched = []
    if not bool((values != 0).any()):
        return touched
    for reader in layer.readers:
        if reader.module.bias is None and reader.norm is None:
            raise ValueError(f"layer {layer.name}: a reader has no bias (and no BatchNorm) to "
                             "absorb the removed units' constant output")
        w = reader.module.weight
        cols = reader.columns(units, layer.width)
        per_col = values.repeat_interleave(reader.group).repeat(reader.copies).to(w)
        read = w[:, cols].reshape(w.shape[0], len(cols), -1).sum(-1)  # sum a conv kernel
        if reader.module.bias is not None:
            reader.module.bias += read @ per_col
            touched.append((reader.module.bias, slice(None)))
        else:
            reader.norm.running_mean -= (read @ per_col).to(reader.norm.running_mean)
    return touched


def outgoing_weight_sum(layer: HiddenLayer) -> Tensor:
    """``(W,)``: per unit, the sum of ``|w|`` over every reader weight that
    reads it (all output rows, columns and kernel positions): CBP's
    ``sum_k |w_ki|``."""
    total = torch.zeros(layer.width, device=layer.module.weight.device)
    for r in layer.readers:
        w = r.module.weight.detach().abs()
        per_col = w.sum(dim=[d for d in range(w.dim()) if d != 1])
        total += per_col.reshape(r.copies, layer.width, r.group).sum((0, 2))
    return total


def _replace(module: nn.Module, name: str, value: Tensor, optimizer, dim: int,
             src: Tensor, dst: Tensor) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(value.to(old), requires_grad=old.requires_grad)
        if optimizer is not None:
            move_state(optimizer, old, new, dim=dim, src=src, dst=dst)
    else:
        new = value.to(old)
    setattr(module, name, new)


def _resize_units(layer: HiddenLayer, keep: Tensor, add: int, init: str, optimizer,
                  generator) -> None:
    """Keep units ``keep`` (in that order) and append ``add`` new ones."""
    module = layer.module
    width = layer.width
    new_width = len(keep) + add
    span = torch.arange(len(keep))
    w = module.weight
    shape = (new_width, *w.shape[1:])
    rows = draw(shape, init, generator=generator, dtype=w.dtype)[len(keep):] if add else w[:0]
    _replace(module, "weight", torch.cat([w[keep], rows.to(w)]), optimizer, 0, keep, span)
    if module.bias is not None:
        _replace(module, "bias", torch.cat([module.bias[keep], module.bias.new_zeros(add)]),
                 optimizer, 0, keep, span)
    if isinstance(module, nn.Linear):
        module.out_features = new_width
    else:
        module.out_channels = new_width
    if layer.norm is not None:
        norm = layer.norm
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0),
                           ("running_var", 1.0)):
            old = getattr(norm, name)
            _replace(norm, name, torch.cat([old[keep], old.new_full((add,), fill)]),
                     optimizer, 0, keep, span)
        norm.num_features = new_width
    for reader in layer.readers:
        rw = reader.module.weight
        src = reader.columns(keep, width)
        dst = Reader(reader.module, reader.group, reader.copies).columns(span, new_width)
        fresh = rw.new_zeros((rw.shape[0], new_width * reader.group * reader.copies,
                              *rw.shape[2:]))
        fresh[:, dst] = rw[:, src]
        _replace(reader.module, "weight", fresh, optimizer, 1, src, dst)
        if isinstance(reader.module, nn.Linear):
            reader.module.in_features = fresh.shape[1]
        else:
            reader.module.in_channels = fresh.shape[1]


def _check_resizable(layer: HiddenLayer) -> None:
    if not layer.resizable:
        raise ValueError(f"layer {layer.name}: its width is tied (a residual connection, or "
                         "a rejuvenated net's pooled halves); it cannot be widened or pruned")


@torch.no_grad()
def widen(layer: HiddenLayer, k: int, *, init: str = "glorot", optimizer=None,
          generator: torch.Generator | None = None) -> Touched:
    """Add ``k`` units at the end of ``layer``: incoming weights drawn from
    ``init`` (rows of a fresh draw at the new width), bias 0, BatchNorm scale
    1 and shift 0 (running mean 0, variance 1), and zero outgoing weights, so
    the network computes the same function (the new units are read with
    weight 0).

    The layer's and its readers' parameters are replaced by larger ones (the
    module attributes ``out_features`` / ``in_features``, ``out_channels`` /
    ``in_channels``, ``num_features`` follow); given an ``optimizer``, they
    replace the old ones in it, old entries keep their state and new entries
    start at zero (:func:`jumpstart.optim.move_state`).

    Returns:
        The new entries: ``(weight, new rows)`` of the layer and
        ``(reader.weight, (slice(None), new columns))`` per reader.

    Raises:
        ValueError: ``k`` not an integer >= 1; unknown ``init``; a layer whose
            width a residual connection ties.
    """
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    _check_resizable(layer)
    width = layer.width
    _resize_units(layer, torch.arange(width), k, init, optimizer, generator)
    new = torch.arange(width, width + k)
    return [(layer.module.weight, new),
            *((r.module.weight, (slice(None), r.columns(new, width + k))) for r in layer.readers)]


@torch.no_grad()
def prune_units(layer: HiddenLayer, units, *, values=None, optimizer=None) -> Touched:
    """Remove ``units`` from ``layer``; the survivors keep their order.

    The removed units' rows (weights, bias, BatchNorm entries) and the
    readers' columns that read them go; with ``values`` (each removed unit's
    constant output), the readers' biases absorb them first (:func:`absorb`),
    so the network computes the same logits wherever those units output those
    constants. A unit dead on a data set outputs ReLU(g) = 0 there, so
    removing dead ReLU units needs no ``values`` and leaves the logits on
    that data set unchanged. A dense layer may be pruned to width 0; a conv
    layer keeps at least one unit (PyTorch has no zero-channel conv).

    Given an ``optimizer``, the new parameters replace the old ones in it
    with the survivors' state (:func:`jumpstart.optim.move_state`).

    Returns:
        The touched entries: the readers' biases when ``values`` were absorbed.

    Raises:
        ValueError: a unit out of range or repeated; a conv layer left without
            units; a layer whose width a residual connection ties; bad ``values``.
    """
    units = _check_units(layer, units)
    _check_resizable(layer)
    gone = set(units.tolist())
    keep = torch.tensor([u for u in range(layer.width) if u not in gone], dtype=torch.long)
    if not len(keep) and isinstance(layer.module, nn.Conv2d):
        raise ValueError(f"layer {layer.name}: a conv layer keeps at least one unit "
                         "(use silence_units)")
    touched = absorb(layer, units, values) if values is not None else []
    _resize_units(layer, keep, 0, "glorot", optimizer, None)
    return touched


@torch.no_grad()
def silence_units(layer: HiddenLayer, units) -> Touched:
    """Make ``units`` output exactly 0 for every input: incoming weights and
    bias 0, BatchNorm scale and shift 0 (the activation of 0 is 0 for ReLU
    and GELU). Used for a conv layer emptied by :func:`prune_dead`.

    Returns:
        The touched entries.

    Raises:
        ValueError: a unit out of range or repeated.
    """
    units = _check_units(layer, units)
    m = layer.module
    touched: Touched = []
    for p in (m.weight, m.bias, *((layer.norm.weight, layer.norm.bias) if layer.norm else ())):
        if p is not None:
            p[units] = 0
            touched.append((p, units))
    return touched


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
    import copy

    from .core.status import DEAD, activation_status

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


__all__ = ["INITS", "CompressionReport", "HiddenLayer", "Reader", "absorb", "draw",
           "hidden_layers", "layer_outputs", "outgoing_weight_sum", "prune_dead", "prune_units", "reinit_units", "silence_units",
           "widen", "zero_outgoing"]
