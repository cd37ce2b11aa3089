"""Unit operations: re-draw, silence, absorb, add and remove units of one
hidden layer (:class:`~jumpstart.surgery.layers.HiddenLayer`), keeping an
optimizer consistent (the package docstring says how)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..optim import move_state, zero_state
from .layers import HiddenLayer, Reader

#: weight distributions to re-draw from: ``"glorot"`` (Glorot/Xavier uniform:
#: the toolkit's default init and ReDo's official code), ``"kaiming"``
#: (Kaiming normal, fan-in, ReLU gain: the toolkit's other init),
#: ``"kaiming_uniform"`` (uniform with the Kaiming bound ``sqrt(6 / fan_in)``:
#: Continual Backprop's code)
INITS = ("glorot", "kaiming", "kaiming_uniform")

Touched = list[tuple[Tensor, object]]


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
