"""Margin deficits of one pre-activation tensor (CPAIOR 2022, eqs. (9)-(12)).

For a hidden layer with pre-activation ``g`` of shape ``(N, C)`` (dense) or
``(N, C, *spatial)`` (conv) and margin ``m > 0``:

======================  ===============================  ===========
deficit                 formula                          paper
======================  ===============================  ===========
unit positive ``xi+``   ``relu(m - max_{n,s} g[n, c, s])``  eq. (9)
unit negative ``xi-``   ``relu(m + min_{n,s} g[n, c, s])``  eq. (10)
point positive ``psi+`` ``relu(m - max_{c,s} g[n, c, s])``  eq. (11)
point negative ``psi-`` ``relu(m + min_{c,s} g[n, c, s])``  eq. (12)
======================  ===============================  ===========

Eqs. (10) and (12) are printed as ``max{0, -1 - min g}`` in the paper; that
expression is positive exactly when constraints (4)/(6) (``min g <= -1``) hold,
so it is a sign typo. The deficit of ``min g <= -m`` is ``relu(m + min g)``.

The gradient of a max or min reaches only the extreme element(s), so the
custom autograd function here saves only the flat indices of the extremes
(tie-break ``"single"``), never the pre-activation itself: the regularizer adds
``2 * (C + N)`` integers per layer to what autograd keeps for backward
(``"average"``: one byte per element of ``g``, its tie bits). Neither keeps a
view of ``g``, so an in-place activation (``nn.ReLU(inplace=True)``) after the
hook is safe, and no shape depends on the data, so ``torch.compile`` traces
it without a graph break. The spatial dimensions are reduced once to per-(sample, channel) extremes; the
unit and point reductions then run on that small ``(N, C)`` tensor.

On CPU (eager, float32, bfloat16 or float16, standard or channels-last
layout, tie-break ``"single"``) the extremes and their positions come from
one fused Numba kernel (:func:`jumpstart.core.extremes.margin_extremes`), one
pass over ``g``'s own memory, in place of four PyTorch passes (an ``amax``,
an ``amin``, a row gather and an ``argmin``; about 5.5 ms against 0.3 ms for
a ``(128, 16, 32, 32)`` channels-last bfloat16 layer on 2 threads). Values,
positions and gradients are the same as on the PyTorch path, which runs
everywhere else (CUDA, ``torch.compile``, other layouts and dtypes,
``"average"``).

In backward, the ``2 (C + N)`` coefficients would make a dense gradient of
``g``'s size, mostly zeros, that autograd then adds to the gradient ``g``
gets from the activation: two more passes over memory the size of ``g`` per
layer, the largest part of the regularizer's cost on small-channel nets.
With ``pass_through`` (what :class:`~jumpstart.core.regularizer.Jumpstart`
uses on activation inputs) ``g`` is routed through the deficits' node, and
its backward writes the coefficients into the activation's gradient in
place: nothing of ``g``'s size is made (see :func:`margin_deficits`).

Granularity: CPAIOR Sec. 3, last paragraph, takes a conv unit's
pre-activation as a matrix and its max/min over all positions; that is
``"channel"`` (the default, also the CPAIOR PyTorch and IEEE code): a unit is a
channel and a point a sample, as in the table above. The CPAIOR Keras code
(MOONS, MNIST; ``shared/papers/jumpstart-experiments.md``, "MOONS") made each
spatial position its own unit and point; that is ``"position"``: with ``S``
the product of the spatial sizes, a unit is a (channel, position) pair reduced
over the batch only, and a point a (sample, position) pair reduced over the
channels only. For dense ``(N, C)`` tensors the two coincide.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.grad_mode import _unsafe_preserve_version_counter

from .extremes import margin_extremes

TIE_BREAKS = ("single", "average")
GRANULARITIES = ("channel", "position")


def check_granularity(granularity: str) -> None:
    """Raise ``ValueError`` naming ``granularity`` and the allowed values if it is unknown."""
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"unknown granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}"
        )


class Deficits(NamedTuple):
    """The four deficit vectors of one layer.

    Shapes are for granularity ``"channel"``; with ``"position"`` the unit
    vectors have ``C * S`` entries and the point vectors ``N * S`` (see
    :func:`margin_deficits`).

    Attributes:
        unit_pos: ``xi+``, shape ``(C,)``, eq. (9).
        unit_neg: ``xi-``, shape ``(C,)``, eq. (10).
        point_pos: ``psi+``, shape ``(N,)``, eq. (11).
        point_neg: ``psi-``, shape ``(N,)``, eq. (12).
    """

    unit_pos: Tensor
    unit_neg: Tensor
    point_pos: Tensor
    point_neg: Tensor


_LAYOUTS: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}


def _layout(n: int, c: int, dtype: torch.dtype, device: torch.device):
    """Constant vectors for a ``(N, C)`` extremes layout, cached per shape.

    The four extremes are laid out as one vector ``[unit max (C), unit min
    (C), point max (N), point min (N)]``. Returns ``sign`` (-1 for the maxima,
    +1 for the minima: deficit ``= relu(m + sign * extreme)``, so ``sign`` is
    each deficit's slope in its extreme where violated, and ``sign * row`` has
    its arg-min at a maximum's position and at a minimum's), ``stride`` and
    ``offset`` turning an arg-max/min along dim 0 (units) or dim 1 (points)
    into a flat index into ``(N, C)``. A traced forward (``torch.compile``)
    builds them in its graph and caches nothing: a tensor made while tracing,
    possibly of a symbolic size, must not outlive its graph.
    """
    if torch.compiler.is_compiling():
        return _layout_vectors(n, c, dtype, device)
    key = (n, c, dtype, device)
    if key not in _LAYOUTS:
        if len(_LAYOUTS) > 256:
            _LAYOUTS.clear()
        _LAYOUTS[key] = _layout_vectors(n, c, dtype, device)
    return _LAYOUTS[key]


def _layout_vectors(n: int, c: int, dtype: torch.dtype, device: torch.device):
    ones_c = torch.ones(c, dtype=torch.long, device=device)
    ones_n = torch.ones(n, dtype=torch.long, device=device)
    cols = torch.arange(c, device=device)
    rows_c = torch.arange(n, device=device) * c
    sign = torch.cat([-ones_c, ones_c, -ones_n, ones_n]).to(dtype)
    stride = torch.cat([ones_c * c, ones_c * c, ones_n, ones_n])
    offset = torch.cat([cols, cols, rows_c, rows_c])
    return sign, stride, offset


def _moved(t: Tensor, source: int, destination: int) -> Tensor:
    return t if source == destination else t.movedim(source, destination)


def _flat_rows(t: Tensor) -> bool:
    """Whether ``t``'s batch and channel dims may be merged by a view (a
    standard layout, in eager). A traced graph (``torch.compile``) gets
    ``False``: inductor picks its own layouts (channels-last around
    convolutions), and such a view pins the traced one (with it, inductor kept
    each conv-ReLU layer's gradient in NCHW for the in-place add, then
    transposed it whole for the convolution's backward)."""
    return not torch.compiler.is_compiling() and t.is_contiguous()


def _writable(grad: Tensor | None) -> bool:
    """Whether an incoming gradient may take the deficits' gradient in place:
    dense, not a view, and no graph being built of the backward itself."""
    return (grad is not None and not torch.is_grad_enabled() and grad._base is None
            and (grad.is_contiguous() or grad.is_contiguous(memory_format=torch.channels_last)))


def _reduced(gf: Tensor, margin: float, average: bool, sign: Tensor, stride: Tensor,
             offset: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The deficits of ``gf`` ``(N, C, S)`` by PyTorch reductions (where the
    fused kernel does not apply), and what their backward needs: the flat
    index of each extreme (``"single"``), or the tie bits and tie counts
    (``"average"``)."""
    n, c, spatial = gf.shape
    if spatial == 1:
        mx = mn = gf.view(n, c) if gf.is_contiguous() else gf[:, :, 0]
    else:  # values only: a reduction with indices is several times slower
        mx, mn = gf.amax(dim=2), gf.amin(dim=2)
    # maxima of [mx, -mn]: the units' (dim 1) and the points' (dim 2) maxima
    # and minima at once, each with its first position
    both = torch.stack([mx, mn.neg()])  # (2, N, C)
    (u_ext, u_at), (p_ext, p_at) = both.max(dim=1), both.max(dim=2)
    extremes = torch.cat([u_ext.view(-1), p_ext.view(-1)])  # [max, -min, max, -min]
    deficit = torch.rsub(extremes, margin).relu_()
    if average:
        shapes = ((1, c, 1), (1, c, 1), (n, 1, 1), (n, 1, 1))
        bits = torch.zeros(gf.shape, dtype=torch.uint8, device=gf.device)
        counts = []
        values = (u_ext[0], -u_ext[1], p_ext[0], -p_ext[1])  # unit max, min, point max, min
        for k, (ext, shape) in enumerate(zip(values, shapes)):
            ties = gf == ext.view(shape)
            counts.append(ties.sum(dim=(0, 2) if shape[0] == 1 else (1, 2)))
            bits |= ties.to(torch.uint8) << k
        return deficit, (bits, torch.cat(counts).to(gf.dtype))
    # flat index into (N, C) of each extreme's (sample, channel) ...
    flat = torch.cat([u_at.view(-1), p_at.view(-1)]) * stride + offset
    if spatial > 1:  # ... then its position, in the extreme's row of positions
        # (2C + 2N, S): a gather of rows, gf is not copied
        rows = gf.view(n * c, spatial).index_select(0, flat) if _flat_rows(gf) \
            else gf[flat // c, flat % c]
        # rows * sign: a maximum's row negated, so both kinds are argmins
        flat = flat.mul_(spatial).add_(rows.mul_(sign.view(-1, 1)).argmin(1))
    return deficit, (flat,)


class _MarginDeficits(torch.autograd.Function):
    """Custom autograd for :func:`margin_deficits` with a sparse backward.

    Nothing it saves is a view of ``g`` (an in-place activation after it may
    overwrite ``g``), and no shape depends on the data (``torch.compile``
    traces it in one graph): ``"single"`` saves the flat index of each of the
    ``2 (C + N)`` extremes, ``"average"`` one byte per element of ``g`` (four
    tie bits) and the number of ties of each extreme.

    With ``through``, ``g`` itself is also an output (marked modified, its
    values untouched): its later uses reach ``g``'s producer through this
    node, whose backward adds the deficits' gradient into the gradient they
    send (in place where that tensor is dense and no graph of the backward is
    being built) instead of a new dense tensor of ``g``'s size.
    """

    @staticmethod
    def forward(ctx, g: Tensor, margin: float, average: bool, through: bool,  # type: ignore[override]
                unit_dim: int):
        gm = _moved(g, unit_dim, 1)  # a view: (N, C, *rest)
        n, c = gm.shape[0], gm.shape[1]
        gf = gm.reshape(n, c, -1)  # a view wherever the rest dims merge (any layout's convs)
        spatial = gf.shape[2]
        sign, stride, offset = _layout(n, c, g.dtype, g.device)
        ctx.g_shape, ctx.sizes, ctx.average, ctx.through = gm.shape, (c, c, n, n), average, through
        ctx.unit_dim, ctx.strides = unit_dim, None
        ctx.set_materialize_grads(False)
        # the fused kernel: the extremes and their positions in one pass over g
        found = margin_extremes(gf) if spatial > 1 and not average else None
        if found is not None:
            flat, mem, values = found
            deficit = values.mul_(sign).add_(margin).relu_()  # relu(m - max), relu(m + min)
            # mem: the offsets in g's memory, kept where they are not flat's (channels-last)
            saved = (flat, *(() if gm.is_contiguous() else (mem,)))
            ctx.strides = gm.stride()  # mem's layout
        else:
            deficit, saved = _reduced(gf, margin, average, sign, stride, offset)
        # d deficit / d extreme: sign where the constraint is violated, else 0.
        ctx.save_for_backward(sign * (deficit > 0), *saved)
        if through:
            ctx.mark_dirty(g)
            return (g, *deficit.split(ctx.sizes))
        return deficit.split(ctx.sizes)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        incoming, grads = (grads[0], grads[1:]) if ctx.through else (None, grads)
        nothing = (None, None, None, None)
        dim = ctx.unit_dim
        if all(x is None for x in grads):  # no gradient reached the deficits
            return (incoming, *nothing)
        saved = ctx.saved_tensors  # once: a checkpoint unpacks each saved tensor once
        slope = saved[0]
        coef = torch.cat([x if x is not None else slope.new_zeros(k)
                          for x, k in zip(grads, ctx.sizes)]) * slope
        if not ctx.average:
            flat = saved[1]  # into g's (N, C, *rest) view, row-major
            if _writable(incoming):  # no tensor of g's size is allocated
                if ctx.strides is not None and _moved(incoming, dim, 1).stride() == ctx.strides:
                    # laid out as g was: the kernel's memory offsets
                    incoming.as_strided((incoming.numel(),), (1,)).index_add_(
                        0, saved[-1], coef)  # mem, or flat where they are the same
                elif dim == 1 and _flat_rows(incoming):
                    incoming.view(-1).index_add_(0, flat, coef)
                else:
                    _moved(incoming, dim, 1).index_put_(
                        torch.unravel_index(flat, ctx.g_shape), coef, accumulate=True)
                return (incoming, *nothing)
            grad = _moved(coef.new_zeros(ctx.g_shape).view(-1).index_add_(0, flat, coef)
                          .view(ctx.g_shape), 1, dim)
            return (grad if incoming is None else grad + incoming, *nothing)
        _, bits, counts = saved
        n, c = ctx.g_shape[0], ctx.g_shape[1]
        shapes = ((1, c, 1), (1, c, 1), (n, 1, 1), (n, 1, 1))
        # a violated constraint's extremes are tied at least once (count >= 1)
        share = (coef / counts.clamp(min=1)).split(ctx.sizes)
        grad = coef.new_zeros(bits.shape)
        for k, (sh, shape) in enumerate(zip(share, shapes)):
            grad += ((bits >> k) & 1).to(grad.dtype) * sh.view(shape)
        grad = _moved(grad.view(ctx.g_shape), 1, dim)
        if incoming is None:
            return (grad, *nothing)
        return (incoming.add_(grad) if _writable(incoming) else grad + incoming, *nothing)


def _position_deficits(g: Tensor, margin: float, average: bool) -> Deficits:
    """Deficits with granularity ``"position"`` through plain autograd ops.

    ``max``/``min`` along a dim save only their indices for backward
    (``"single"``); ``amax``/``amin`` split the gradient over ties (``"average"``).
    """
    n, c = g.shape[0], g.shape[1]
    gf = g.reshape(n, c, -1)
    units = gf.reshape(n, -1)  # (N, C*S): column c*S + s is unit (c, s)
    if average:
        ext = units.amax(0), units.amin(0), gf.amax(1), gf.amin(1)
    else:
        ext = units.max(0)[0], units.min(0)[0], gf.max(1)[0], gf.min(1)[0]
    u_max, u_min, p_max, p_min = (e.reshape(-1) for e in ext)  # points: index n*S + s
    return Deficits(
        torch.relu(margin - u_max), torch.relu(margin + u_min),
        torch.relu(margin - p_max), torch.relu(margin + p_min),
    )


def member_deficits(g: Tensor, margin: float = 1.0, tie_break: str = "single") -> Deficits:
    """Deficits of a population's pre-activation, one set per member.

    Population training stacks ``P`` independent networks; a hidden layer's
    pre-activation then has shape ``(P, N, C, *spatial)``. Each member gets the
    ``"channel"`` deficits of :func:`margin_deficits` on its own slice
    ``g[p]`` (CPAIOR eqs. (9)-(12)), through plain autograd ops (``max``/``min``
    along a dim send the gradient to one element: ``"single"``; ``amax``/
    ``amin`` split it over ties: ``"average"``).

    Returns:
        :class:`Deficits` with unit vectors of shape ``(P, C)`` and point
        vectors of shape ``(P, N)``.

    Raises:
        ValueError: ``g`` has fewer than 3 dims or is empty, ``margin <= 0``,
            or ``tie_break`` is unknown.
    """
    if g.dim() < 3 or g.numel() == 0:
        raise ValueError(f"a population pre-activation has shape (P, N, C, *spatial); "
                         f"got shape {tuple(g.shape)}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0; got {margin!r}")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r}; allowed: {', '.join(TIE_BREAKS)}")
    p, n, c = g.shape[:3]
    points = g.reshape(p, n, -1)  # (P, N, C*S)
    units = g.reshape(p, n, c, -1).transpose(1, 2).reshape(p, c, -1)  # (P, C, N*S)
    if tie_break == "average":
        ext = units.amax(2), units.amin(2), points.amax(2), points.amin(2)
    else:
        ext = units.max(2)[0], units.min(2)[0], points.max(2)[0], points.min(2)[0]
    m = float(margin)
    return Deficits(torch.relu(m - ext[0]), torch.relu(m + ext[1]),
                    torch.relu(m - ext[2]), torch.relu(m + ext[3]))


def margin_deficits(
    g: Tensor, margin: float = 1.0, tie_break: str = "single", granularity: str = "channel",
    *, unit_dim: int = 1, pass_through: bool = False,
) -> Deficits:
    """Unit and point margin deficits of one hidden layer's pre-activation.

    Implements eqs. (9)-(12) of the CPAIOR 2022 paper (see the module docstring
    for the sign of (10) and (12)). For conv tensors ``g`` of shape
    ``(N, C, *spatial)``, ``S = prod(spatial)``, ``granularity`` says what the
    max/min runs over:

    - ``"channel"``: units are the ``C`` channels, each reduced over batch and
      positions; points are the ``N`` samples, each reduced over channels and
      positions (CPAIOR Sec. 3, last paragraph);
    - ``"position"``: units are the ``C * S`` (channel, position) pairs, each
      reduced over the batch only, ordered as the columns of
      ``g.reshape(N, C * S)``; points are the ``N * S`` (sample, position)
      pairs, each reduced over the channels only, sample-major (index
      ``n * S + s``). This is what the authors' Keras MOONS code ran
      (``shared/papers/jumpstart-experiments.md``, "MOONS").

    For dense ``(N, C)`` tensors (``S = 1``) both give the same deficits.
    The units' axis is ``unit_dim`` (dim 0 is always the points'): a
    transformer's ``(N, T, D)`` pre-activation with ``unit_dim=-1`` is read as
    ``g.movedim(-1, 1)``, ``(N, D, T)``, without a copy.

    Args:
        g: pre-activation, shape ``(N, C)`` or ``(N, C, *spatial)``, ``N >= 1``.
        margin: ``m > 0``, in pre-activation units.
        tie_break: ``"single"`` sends the whole gradient of a max/min to one
            extreme element (saves only indices for backward); ``"average"``
            splits it evenly over all tied extremes (saves one byte per
            element of ``g`` for backward: which extremes it ties).
        granularity: ``"channel"`` or ``"position"``, see above.
        unit_dim: the axis of ``g`` whose entries are the units, not 0;
            negative counts from the end. Shapes below are for ``g`` with its
            unit axis moved to dim 1.
        pass_through: route ``g``'s later uses through the deficits' autograd
            node, so that its backward adds the deficits' sparse gradient into
            the gradient those uses send to ``g`` (in place), instead of
            allocating a dense gradient of ``g``'s size that autograd then
            adds. Values and gradients are the same either way; only the
            cost differs. ``g`` keeps its values and version counter, and
            becomes an output of the deficits' node (call this before ``g``'s
            other uses: an activation hook's pre-activation). A dense
            gradient is used anyway where ``g`` is a leaf or a view, or with
            granularity ``"position"``. Only for a ``g`` whose every later use
            sends it a gradient tensor of its own (an activation's input; not
            a tensor whose next op is an addition, whose backward sends one
            tensor to both summands).

    Returns:
        :class:`Deficits` with ``unit_pos``/``unit_neg`` of shape ``(C,)``
        (``(C * S,)`` for ``"position"``) and ``point_pos``/``point_neg`` of
        shape ``(N,)`` (``(N * S,)`` for ``"position"``), in ``g``'s dtype, all
        ``>= 0`` and differentiable with respect to ``g``.

    Raises:
        ValueError: ``g`` has fewer than 2 dims or is empty, ``margin <= 0``,
            ``unit_dim`` is 0 or outside ``g``'s dims, or ``tie_break`` or
            ``granularity`` is unknown (the message names the value and the
            allowed ones).
    """
    if g.dim() < 2 or g.numel() == 0:
        raise ValueError(
            f"pre-activation must have shape (N, C) or (N, C, *spatial) with N, C >= 1; "
            f"got shape {tuple(g.shape)}"
        )
    if isinstance(unit_dim, bool) or not isinstance(unit_dim, int) \
            or not -g.dim() <= unit_dim < g.dim() or unit_dim % g.dim() == 0:
        raise ValueError(f"unit_dim must be an axis of the {g.dim()}-dim pre-activation other "
                         f"than 0 (the points'); got {unit_dim!r}")
    unit_dim %= g.dim()
    if not margin > 0:
        raise ValueError(f"margin must be > 0; got {margin!r}")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r}; allowed: {', '.join(TIE_BREAKS)}")
    check_granularity(granularity)
    average = tie_break == "average"
    if granularity == "position" and g.numel() > g.shape[0] * g.shape[unit_dim]:  # S > 1
        return _position_deficits(_moved(g, unit_dim, 1), float(margin), average)
    if pass_through and not g.is_leaf and g._base is None:
        with _unsafe_preserve_version_counter(g):  # g's values are not modified
            return Deficits(*_MarginDeficits.apply(g, float(margin), average, True,
                                                   unit_dim)[1:])
    return Deficits(*_MarginDeficits.apply(g, float(margin), average, False, unit_dim))
