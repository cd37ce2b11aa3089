"""Fused CPU kernels (Numba) for the population stacks.

Thousands of tiny nets are dominated by per-operation cost: a batched matmul
over members padded to the widest costs about 2 us per member per layer
whatever the member's width, and the Jumpstart penalty needs four strided
reductions with indices per layer (unit max/min over samples, point max/min
over units) and four scatters of their gradients. Here one call runs a whole
forward (:func:`dense_forward`) or backward (:func:`dense_backward`) of a
stack of dense nets, each member at its own width (padding costs nothing),
with ReLU, the extremes and the penalty gradient fused in. The MOONS conv
stack uses :func:`layer_extremes` and :func:`add_penalty_grad` per layer.

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


@_jit
def _linear_relu(h_in, w, b, win, width, wt, g, h_out):  # pragma: no cover
    """``g = h_in[:, :win] w[:width, :win]^T + b[:width]`` and ``h_out = relu(g)``
    (NaN propagates, as ``torch.relu``); ``wt`` is scratch for ``w``
    transposed, so the inner loop runs over contiguous output units."""
    for i in range(win):
        for o in range(width):
            wt[i, o] = w[o, i]
    for n in range(h_in.shape[0]):
        for o in range(width):
            g[n, o] = b[o]
        for i in range(win):
            a = h_in[n, i]
            for o in range(width):
                g[n, o] += a * wt[i, o]
        for o in range(width):
            v = g[n, o]
            h_out[n, o] = 0.0 if v <= 0.0 else v


@_jit
def dense_forward(x, w_in, b_in, w_hid, b_hid, w_out, b_out, widths, reg, extremes,
                  u_val, u_idx, p_val, p_idx, hs, gs, logits, scratch, wt):  # pragma: no cover
    """Forward pass of a stack of dense ReLU nets, each at its own width.

    Args:
        x: ``(P, N, F)`` inputs (a shared batch may have stride 0 on ``P``).
        w_in, b_in: ``(P, W, F)``, ``(P, W)``; w_hid, b_hid: ``(L - 1, P, W, W)``,
            ``(L - 1, P, W)``; w_out, b_out: ``(P, 1, W)``, ``(P, 1)``.
        widths: ``(P,)`` int64 real units per member.
        reg, extremes: when ``extremes``, the first ``reg`` members' per-layer
            extremes go to ``u_val``, ``u_idx`` ``(2, L, reg, 1, W)`` and
            ``p_val``, ``p_idx`` ``(2, L, reg, N)`` (see :func:`layer_extremes`).
        hs: ``(L, P, N, W)`` out: post-ReLU activations (padded entries untouched).
        gs: ``(L, P, N, W)`` out: pre-activations, or an empty array to skip.
        logits: ``(P, N)`` out.
        scratch: ``(N, W)``, wt: ``(max(F, W), W)`` scratch.
    """
    depth = hs.shape[0]
    features = x.shape[2]
    keep_g = gs.shape[0] > 0
    for p in range(x.shape[0]):
        width = widths[p]
        for layer in range(depth):
            if layer == 0:
                h_in, w, b, win = x[p], w_in[p], b_in[p], features
            else:
                h_in, w, b, win = hs[layer - 1, p], w_hid[layer - 1, p], b_hid[layer - 1, p], width
            g = gs[layer, p] if keep_g else scratch
            _linear_relu(h_in, w, b, win, width, wt, g, hs[layer, p])
            if extremes and p < reg:
                _member_extremes(g.reshape((1,) + g.shape), width, u_val[:, layer, p, :, :],
                                 u_idx[:, layer, p, :, :], p_val[:, layer, p],
                                 p_idx[:, layer, p])
        h = hs[depth - 1, p]
        for n in range(h.shape[0]):
            z = b_out[p, 0]
            for i in range(width):
                z += h[n, i] * w_out[p, 0, i]
            logits[p, n] = z


@_jit
def dense_backward(x, w_in, w_hid, w_out, widths, depths, hs, gs, dz, reg, penalty, average,
                   u_val, u_idx, u_coef, p_val, p_idx, p_coef, g_w_in, g_b_in, g_w_hid,
                   g_b_hid, g_w_out, g_b_out, dh, dh_prev):  # pragma: no cover
    """Backward pass of :func:`dense_forward`: gradients of the task loss
    (``dz`` ``(P, N)``: d loss / d logits) plus, when ``penalty``, the first
    ``reg`` members' penalty gradients (``u_coef`` ``(2, L, reg, W)``,
    ``p_coef`` ``(2, L, reg, N)``, added after the ReLU gradient as in
    :func:`_member_penalty_grad`; ``average`` needs the pre-activations
    ``gs`` of :func:`dense_forward`). Gradients are
    written (not accumulated) into ``g_*`` (shapes of the weights), zero for
    layers at or beyond ``depths[p]`` (pass-through layers, whose backward is
    the identity). ``dh``, ``dh_prev``: ``(N, W)`` scratch."""
    depth = hs.shape[0]
    features = x.shape[2]
    n_points = dz.shape[1]
    for p in range(x.shape[0]):
        width = widths[p]
        h = hs[depth - 1, p]
        g_b_out[p, 0] = 0.0
        g_w_out[p, 0, :width] = 0.0
        for n in range(n_points):
            d = dz[p, n]
            g_b_out[p, 0] += d
            for i in range(width):
                g_w_out[p, 0, i] += d * h[n, i]
                dh[n, i] = d * w_out[p, 0, i]
        for layer in range(depth - 1, -1, -1):
            h = hs[layer, p]
            for n in range(n_points):  # ReLU gradient, in place: dh becomes dg
                for o in range(width):
                    if not h[n, o] > 0.0:
                        dh[n, o] = 0.0
            if penalty and p < reg:
                g = gs[layer, p] if average else dh
                _member_penalty_grad(dh.reshape((1,) + dh.shape), g.reshape((1,) + g.shape),
                                     average, width, u_val[:, layer, p, :, :],
                                     u_idx[:, layer, p, :, :], u_coef[:, layer, p],
                                     p_val[:, layer, p], p_idx[:, layer, p], p_coef[:, layer, p])
            if layer == 0:
                h_prev, w, gw, gb, win = x[p], w_in[p], g_w_in[p], g_b_in[p], features
            else:
                h_prev, w, gw, gb, win = (hs[layer - 1, p], w_hid[layer - 1, p],
                                          g_w_hid[layer - 1, p], g_b_hid[layer - 1, p], width)
            gw[:width, :win] = 0.0
            gb[:width] = 0.0
            if layer >= depths[p]:  # pass-through: no gradient, dh passes unchanged
                continue
            if layer > 0:
                dh_prev[:, :win] = 0.0
            for n in range(n_points):
                for o in range(width):
                    d = dh[n, o]
                    gb[o] += d
                    for i in range(win):
                        gw[o, i] += d * h_prev[n, i]
                    if layer > 0:
                        for i in range(win):
                            dh_prev[n, i] += d * w[o, i]
            if layer > 0:
                dh[:, :width] = dh_prev[:, :width]
