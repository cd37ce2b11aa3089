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
``2 * (C + N)`` integers per layer to what autograd keeps for backward. The
spatial dimensions are reduced once to per-(sample, channel) extremes; the
unit and point reductions then run on that small ``(N, C)`` tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

TIE_BREAKS = ("single", "average")


class Deficits(NamedTuple):
    """The four deficit vectors of one layer.

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


def _extremes(gf: Tensor):
    """Extremes of ``gf`` (shape ``(N, C, S)``) and their flat indices.

    Returns the four extreme vectors (unit max/min of shape ``(C,)``, point
    max/min of shape ``(N,)``) and the four matching flat indices into ``gf``.
    """
    n, c, s = gf.shape
    if s == 1:
        g2 = gf.squeeze(2)
        mx_nc = mn_nc = g2
        arg_mx_s = arg_mn_s = None
    else:
        mx_nc, arg_mx_s = gf.max(dim=2)
        mn_nc, arg_mn_s = gf.min(dim=2)
    rows = torch.arange(n, device=gf.device)
    cols = torch.arange(c, device=gf.device)

    def flat(nn_idx: Tensor, cc_idx: Tensor, arg_s: Tensor | None) -> Tensor:
        base = nn_idx * c + cc_idx
        if arg_s is None:
            return base
        return base * s + arg_s[nn_idx, cc_idx]

    unit_max, unit_max_n = mx_nc.max(dim=0)
    unit_min, unit_min_n = mn_nc.min(dim=0)
    point_max, point_max_c = mx_nc.max(dim=1)
    point_min, point_min_c = mn_nc.min(dim=1)
    values = (unit_max, unit_min, point_max, point_min)
    indices = (
        flat(unit_max_n, cols, arg_mx_s),
        flat(unit_min_n, cols, arg_mn_s),
        flat(rows, point_max_c, arg_mx_s),
        flat(rows, point_min_c, arg_mn_s),
    )
    return values, indices


class _MarginDeficits(torch.autograd.Function):
    """Custom autograd for :func:`margin_deficits` with a sparse backward."""

    @staticmethod
    def forward(ctx, g: Tensor, margin: float, average: bool):  # type: ignore[override]
        gf = g.reshape(g.shape[0], g.shape[1], -1)
        (u_max, u_min, p_max, p_min), idx = _extremes(gf)
        xi_pos = torch.relu(margin - u_max)
        xi_neg = torch.relu(margin + u_min)
        psi_pos = torch.relu(margin - p_max)
        psi_neg = torch.relu(margin + p_min)
        # d deficit / d extreme: -1 for the positive deficits, +1 for the
        # negative ones, 0 where the constraint holds.
        signs = torch.cat([-(xi_pos > 0).to(g.dtype), (xi_neg > 0).to(g.dtype),
                           -(psi_pos > 0).to(g.dtype), (psi_neg > 0).to(g.dtype)])
        ctx.g_shape = g.shape
        ctx.sizes = (u_max.numel(), p_max.numel())
        ctx.average = average
        if average:
            ctx.save_for_backward(signs, gf, u_max, u_min, p_max, p_min)
        else:
            ctx.save_for_backward(signs, torch.cat(idx))
        return xi_pos, xi_neg, psi_pos, psi_neg

    @staticmethod
    def backward(ctx, g_xp, g_xn, g_pp, g_pn):  # type: ignore[override]
        coef = torch.cat([g_xp, g_xn, g_pp, g_pn]) * ctx.saved_tensors[0]
        if not ctx.average:
            index = ctx.saved_tensors[1]
            grad = coef.new_zeros(ctx.g_shape.numel())
            grad.index_add_(0, index, coef)
            return grad.view(ctx.g_shape), None, None
        _, gf, u_max, u_min, p_max, p_min = ctx.saved_tensors
        nc, np_ = ctx.sizes
        c_xp, c_xn, c_pp, c_pn = coef.split([nc, nc, np_, np_])
        grad = torch.zeros_like(gf)
        for ext, c, dims, shape in (
            (u_max, c_xp, (0, 2), (1, -1, 1)),
            (u_min, c_xn, (0, 2), (1, -1, 1)),
            (p_max, c_pp, (1, 2), (-1, 1, 1)),
            (p_min, c_pn, (1, 2), (-1, 1, 1)),
        ):
            ties = (gf == ext.view(shape)).to(gf.dtype)
            grad += ties * (c / ties.sum(dim=dims)).view(shape)
        return grad.view(ctx.g_shape), None, None


def margin_deficits(g: Tensor, margin: float = 1.0, tie_break: str = "single") -> Deficits:
    """Unit and point margin deficits of one hidden layer's pre-activation.

    Implements eqs. (9)-(12) of the CPAIOR 2022 paper (see the module docstring
    for the sign of (10) and (12)); for conv tensors the max/min also runs over
    the spatial positions (CPAIOR Sec. 3, last paragraph).

    Args:
        g: pre-activation, shape ``(N, C)`` or ``(N, C, *spatial)``, ``N >= 1``.
        margin: ``m > 0``, in pre-activation units.
        tie_break: ``"single"`` sends the whole gradient of a max/min to one
            extreme element (saves only indices for backward); ``"average"``
            splits it evenly over all tied extremes (saves ``g`` for backward).

    Returns:
        :class:`Deficits` with ``unit_pos``/``unit_neg`` of shape ``(C,)`` and
        ``point_pos``/``point_neg`` of shape ``(N,)``, in ``g``'s dtype, all
        ``>= 0`` and differentiable with respect to ``g``.

    Raises:
        ValueError: ``g`` has fewer than 2 dims or is empty, ``margin <= 0``,
            or ``tie_break`` is unknown.
    """
    if g.dim() < 2 or g.numel() == 0:
        raise ValueError(
            f"pre-activation must have shape (N, C) or (N, C, *spatial) with N, C >= 1; "
            f"got shape {tuple(g.shape)}"
        )
    if not margin > 0:
        raise ValueError(f"margin must be > 0; got {margin!r}")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r}; allowed: {', '.join(TIE_BREAKS)}")
    return Deficits(*_MarginDeficits.apply(g, float(margin), tie_break == "average"))
