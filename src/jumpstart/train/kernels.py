"""Fused CPU kernels (Numba) for the population stacks' Jumpstart penalty.

A stacked layer's penalty needs four reductions of its pre-activation ``g``
(unit max/min over samples, point max/min over units, each with its arg
index) and, in backward, four scatters of their gradients. As separate PyTorch
ops these cost about as much as the layer's three batched matmuls on a CPU
(strided reductions with indices, a padding offset per point reduction). Here
each is one pass over ``g``: :func:`layer_extremes` in forward,
:func:`add_penalty_grad` in backward (tie-break ``"single"`` or ``"average"``).

Semantics are those of ``torch.max``/``torch.min`` along a dim with
tie-break ``"single"``: strict comparisons, so the first extreme element wins,
as in :func:`jumpstart.core.margin_deficits`. NaN never wins a comparison here
(``torch.max`` would return it); a member whose pre-activations hold NaN has a
NaN task loss and is stopped as diverged anyway.

Layout: ``g`` is ``(P, R, N, W)`` for ``P`` members, ``R`` rows per point
(1 dense, 2 for the MOONS conv net's positions), ``N`` points and ``W``
(padded) units; member ``p`` has ``widths[p]`` real units. Unit extremes are
``(P, R, W)`` (per unit of each row position, over the ``N`` points); point
extremes are ``(P, R * N)`` (per point row, over the real units).
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)



@_jit
def _member_extremes(g, width, u_val, u_idx, p_val, p_idx):  # pragma: no cover
    """Extremes of one member's ``g`` ``(R, N, W)``: unit max/min ``(2, R, W)``
    over the points (padded units: value 0, index 0) and point max/min
    ``(2, R * N)`` over the ``width`` real units, with arg indices."""
    rows, n_points, _ = g.shape
    for r in range(rows):
        u_val[:, r, :] = 0.0
        u_idx[:, r, :] = 0
        for w in range(width):
            u_val[0, r, w] = g[r, 0, w]
            u_val[1, r, w] = g[r, 0, w]
        for n in range(n_points):
            hi = g[r, n, 0]
            lo = hi
            i_hi = 0
            i_lo = 0
            for w in range(width):
                v = g[r, n, w]
                if v > u_val[0, r, w]:
                    u_val[0, r, w] = v
                    u_idx[0, r, w] = n
                if v < u_val[1, r, w]:
                    u_val[1, r, w] = v
                    u_idx[1, r, w] = n
                if v > hi:
                    hi = v
                    i_hi = w
                if v < lo:
                    lo = v
                    i_lo = w
            k = r * n_points + n
            p_val[0, k] = hi
            p_idx[0, k] = i_hi
            p_val[1, k] = lo
            p_idx[1, k] = i_lo


@_jit
def _member_penalty_grad(dg, g, average, width, u_val, u_idx, u_coef, p_val, p_idx,
                         p_coef):  # pragma: no cover
    """Add one member's penalty gradient to its ``dg`` ``(R, N, W)`` in the
    order unit max, unit min, point max, point min (as four ``scatter_add_``
    calls would): each gradient goes to its extreme element (tie-break
    ``"single"``) or, when ``average``, is split evenly over the elements of
    ``g`` equal to the extreme. ``u_coef`` is ``(2, R * W)``, the rest as in
    :func:`_member_extremes`."""
    rows, n_points, wmax = dg.shape
    for r in range(rows):
        for k in range(2):
            for w in range(width):
                c = u_coef[k, r * wmax + w]
                if not average:
                    dg[r, u_idx[k, r, w], w] += c
                    continue
                ties = 0
                for n in range(n_points):
                    ties += g[r, n, w] == u_val[k, r, w]
                share = c / np.float32(ties)
                for n in range(n_points):
                    if g[r, n, w] == u_val[k, r, w]:
                        dg[r, n, w] += share
    for k in range(2):
        for r in range(rows):
            for n in range(n_points):
                j = r * n_points + n
                c = p_coef[k, j]
                if not average:
                    dg[r, n, p_idx[k, j]] += c
                    continue
                ties = 0
                for w in range(width):
                    ties += g[r, n, w] == p_val[k, j]
                share = c / np.float32(ties)
                for w in range(width):
                    if g[r, n, w] == p_val[k, j]:
                        dg[r, n, w] += share


@_jit
def layer_extremes(g, widths, layer, u_val, u_idx, p_val, p_idx):  # pragma: no cover
    """Write layer ``layer``'s extremes into stacked buffers.

    Args:
        g: ``(P, R, N, W)`` float32 pre-activations.
        widths: ``(P,)`` int64, real units per member.
        layer: index into the buffers' layer dim.
        u_val, u_idx: ``(2, L, P, R, W)``: ``[0]`` unit max, ``[1]`` unit min
            over the points, values and point indices; padded units get value
            0 and index 0 (they are masked out of the penalty).
        p_val, p_idx: ``(2, L, P, R * N)``: point max/min over real units,
            values and unit indices.
    """
    for p in range(g.shape[0]):
        _member_extremes(g[p], widths[p], u_val[:, layer, p], u_idx[:, layer, p],
                         p_val[:, layer, p], p_idx[:, layer, p])


@_jit
def add_penalty_grad(dg, g, average, widths, layer, u_val, u_idx, u_coef, p_val, p_idx,
                     p_coef):  # pragma: no cover
    """Add d penalty / d extremes of layer ``layer`` to ``dg`` ``(P, R, N, W)``
    (in place) at the extreme elements, or split over ties of ``g`` (same
    shape) when ``average``; ``u_val``/``u_idx`` ``(2, L, P, R, W)``,
    ``u_coef`` ``(2, L, P, R * W)``, ``p_*`` ``(2, L, P, R * N)`` (see
    :func:`layer_extremes`)."""
    for p in range(dg.shape[0]):
        _member_penalty_grad(dg[p], g[p], average, widths[p], u_val[:, layer, p],
                             u_idx[:, layer, p], u_coef[:, layer, p], p_val[:, layer, p],
                             p_idx[:, layer, p], p_coef[:, layer, p])
