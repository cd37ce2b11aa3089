"""Fused CPU kernels (Numba) for the population stacks.

Thousands of tiny nets cost per operation and per padded unit, not per useful
multiply: a batched matmul over members padded to the widest costs about
2 us per member and layer whatever the member's width, and the Jumpstart
penalty needs four strided reductions with indices per layer (unit max/min
over samples, point max/min over units) and four scatters of their gradients,
which as PyTorch ops cost about as much as the layer's matmuls.

- Dense stacks: :func:`dense_forward` and :func:`dense_backward` run a whole
  pass in one call, in a feature-major layout (activations ``(W, N)`` per
  member and layer, so the inner loops run over the points and vectorize),
  each member at its own width, with ReLU, the extremes and the penalty
  gradient fused in.
- The MOONS conv stack keeps batched matmuls, in the same feature-major
  layout, and calls :func:`layer_extremes` (forward) and
  :func:`add_penalty_grad` (backward) per layer: the same per-member kernels,
  once per row position.

The extremes are the max/min inside the margin deficits of CPAIOR 2022 eqs.
(9)-(12) (unit: over the samples; point: over the units), and the penalty
gradient is that of the aggregation of eq. (7) routed back through them. The
kernels raise nothing: the stacks validate shapes and options before calling.

Semantics are those of ``torch.max``/``torch.min`` along a dim with
tie-break ``"single"``: strict comparisons, so the first extreme element wins,
as in :func:`jumpstart.core.margin_deficits`. NaN never wins a comparison here
(``torch.max`` would return it); a member whose pre-activations hold NaN has a
NaN task loss and is stopped as diverged anyway.

One layout: ``g`` is ``(W, R * N)`` per member and layer for ``W`` (padded)
units, ``R`` rows per point (1 dense, 2 for the MOONS conv net's positions)
and ``N`` points; member ``p`` has ``widths[p]`` real units. Unit extremes are
``(R, W)`` per member (per unit of each row position, over the ``N`` points);
point extremes are ``(R * N,)`` (per point row, over the real units).
"""

from __future__ import annotations

import numba
import numpy as np

# the matmul loops may reassociate sums (vectorized reductions) and fuse
# multiply-adds, as BLAS does; NaN and inf keep their IEEE semantics
_fast = numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})
# helpers called once per member, layer and unit: inlined, so no call or
# array-view bookkeeping crosses a function boundary
_inner = numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"},
                    inline="always")


# Dense stacks in a feature-major layout: activations are ``(W, N)`` per member
# and layer, so the inner loops run over the points (contiguous, vectorized)
# and each member loops over its own real units only (padding costs nothing).


@_fast
def _transposed_extremes(g, width, u_val, u_idx, p_val, p_idx):  # pragma: no cover
    """Extremes of one layer of one member, ``g`` ``(W, N)`` feature-major: unit
    max/min ``(2, 1, W)`` over the points, with point indices (padded units:
    value 0, index 0), and point max/min ``(2, N)`` over the ``width`` real
    units, with unit indices; the first extreme wins."""
    n_points = g.shape[1]
    u_val[:, 0, :] = 0.0
    u_idx[:, 0, :] = 0
    for o in range(width):
        row = g[o]
        hi = row[0]
        lo = hi
        i_hi = 0
        i_lo = 0
        for n in range(n_points):
            v = row[n]
            if v > hi:
                hi = v
                i_hi = n
            if v < lo:
                lo = v
                i_lo = n
        u_val[0, 0, o] = hi
        u_idx[0, 0, o] = i_hi
        u_val[1, 0, o] = lo
        u_idx[1, 0, o] = i_lo
    for n in range(n_points):
        p_val[0, n] = g[0, n]
        p_idx[0, n] = 0
        p_val[1, n] = g[0, n]
        p_idx[1, n] = 0
    for o in range(1, width):
        row = g[o]
        for n in range(n_points):
            v = row[n]
            if v > p_val[0, n]:
                p_val[0, n] = v
                p_idx[0, n] = o
            if v < p_val[1, n]:
                p_val[1, n] = v
                p_idx[1, n] = o


@_inner
def _transposed_penalty_grad(dg, g, average, width, u_val, u_idx, u_coef, p_val, p_idx,
                             p_coef):  # pragma: no cover
    """Add one member's layer penalty gradient to ``dg`` ``(W, N)`` in the order
    unit max, unit min, point max, point min (as four ``scatter_add_`` calls
    would): each gradient goes to its extreme element (tie-break ``"single"``)
    or, when ``average``, is split evenly over the elements of ``g`` equal to
    the extreme. ``u_coef`` ``(2, W)``; point buffers ``(2, N)``; the other
    buffers as :func:`_transposed_extremes` writes them."""
    n_points = dg.shape[1]
    for k in range(2):
        for o in range(width):
            c = u_coef[k, o]
            if not average:
                dg[o, u_idx[k, 0, o]] += c
                continue
            ties = 0
            for n in range(n_points):
                ties += g[o, n] == u_val[k, 0, o]
            share = c / np.float32(ties)
            for n in range(n_points):
                if g[o, n] == u_val[k, 0, o]:
                    dg[o, n] += share
    for k in range(2):
        for n in range(n_points):
            c = p_coef[k, n]
            if not average:
                dg[p_idx[k, n], n] += c
                continue
            ties = 0
            for o in range(width):
                ties += g[o, n] == p_val[k, n]
            share = c / np.float32(ties)
            for o in range(width):
                if g[o, n] == p_val[k, n]:
                    dg[o, n] += share


@_fast
def layer_extremes(g, widths, layer, rows, u_val, u_idx, p_val, p_idx):  # pragma: no cover
    """Write layer ``layer``'s extremes into stacked buffers (the MOONS conv
    stack's per-layer call; the dense stacks fuse the same kernel into
    :func:`dense_forward`).

    Args:
        g: ``(P, W, R * N)`` float32 pre-activations, feature-major: columns
            ``r * N .. (r + 1) * N`` are row position ``r`` of the ``N`` points.
        widths: ``(P,)`` int64, real units per member.
        layer: index into the buffers' layer dim.
        rows: ``R``, row positions per point.
        u_val, u_idx: ``(2, L, P, R, W)``: ``[0]`` unit max, ``[1]`` unit min
            over the points, values and point indices; padded units get value
            0 and index 0 (they are masked out of the penalty).
        p_val, p_idx: ``(2, L, P, R * N)``: point max/min over real units,
            values and unit indices.
    """
    n_points = g.shape[2] // rows
    for p in range(g.shape[0]):
        for r in range(rows):
            lo, hi = r * n_points, (r + 1) * n_points
            _transposed_extremes(g[p, :, lo:hi], widths[p], u_val[:, layer, p, r:r + 1],
                                 u_idx[:, layer, p, r:r + 1], p_val[:, layer, p, lo:hi],
                                 p_idx[:, layer, p, lo:hi])


@_fast
def add_penalty_grad(dg, g, average, widths, layer, rows, u_val, u_idx, u_coef, p_val, p_idx,
                     p_coef):  # pragma: no cover
    """Add d penalty / d extremes of layer ``layer`` to ``dg`` ``(P, W, R * N)``
    (in place, feature-major as in :func:`layer_extremes`) at the extreme
    elements, or split over ties of ``g`` (same shape) when ``average``;
    ``u_coef`` ``(2, L, P, R * W)``, the other buffers as in :func:`layer_extremes`.
    Per row position: unit max, unit min, point max, point min."""
    n_points = dg.shape[2] // rows
    wmax = dg.shape[1]
    for p in range(dg.shape[0]):
        for r in range(rows):
            lo, hi = r * n_points, (r + 1) * n_points
            _transposed_penalty_grad(dg[p, :, lo:hi], g[p, :, lo:hi], average, widths[p],
                                     u_val[:, layer, p, r:r + 1], u_idx[:, layer, p, r:r + 1],
                                     u_coef[:, layer, p, r * wmax:(r + 1) * wmax],
                                     p_val[:, layer, p, lo:hi], p_idx[:, layer, p, lo:hi],
                                     p_coef[:, layer, p, lo:hi])


@_inner
def _accumulate(out, coef, rows, count):  # pragma: no cover
    """``out += sum(coef[k] * rows[k] for k < count)`` over the points, four
    rows per pass (each pass loads and stores ``out`` once)."""
    n_points = out.shape[0]
    k = 0
    while k + 4 <= count:
        c0, c1, c2, c3 = coef[k], coef[k + 1], coef[k + 2], coef[k + 3]
        r0, r1, r2, r3 = rows[k], rows[k + 1], rows[k + 2], rows[k + 3]
        for n in range(n_points):
            out[n] += c0 * r0[n] + c1 * r1[n] + c2 * r2[n] + c3 * r3[n]
        k += 4
    while k < count:
        c, r = coef[k], rows[k]
        for n in range(n_points):
            out[n] += c * r[n]
        k += 1


@_inner
def _dots(out, row, rows, count):  # pragma: no cover
    """``out[k] = row . rows[k]`` over the points for ``k < count``, four
    dot products per pass over ``row``."""
    n_points = row.shape[0]
    k = 0
    while k + 4 <= count:
        r0, r1, r2, r3 = rows[k], rows[k + 1], rows[k + 2], rows[k + 3]
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for n in range(n_points):
            v = row[n]
            a0 += v * r0[n]
            a1 += v * r1[n]
            a2 += v * r2[n]
            a3 += v * r3[n]
        out[k], out[k + 1], out[k + 2], out[k + 3] = a0, a1, a2, a3
        k += 4
    while k < count:
        r = rows[k]
        a = np.float32(0.0)
        for n in range(n_points):
            a += row[n] * r[n]
        out[k] = a
        k += 1


@_fast
def dense_forward(x, w_in, b_in, w_hid, b_hid, w_out, b_out, widths, reg, extremes,
                  u_val, u_idx, p_val, p_idx, hs, gs, logits, scratch):  # pragma: no cover
    """Forward pass of a stack of dense ReLU nets, each at its own width.

    Args:
        x: ``(P, F, N)`` inputs, feature-major.
        w_in, b_in: ``(P, W, F)``, ``(P, W)``; w_hid, b_hid: ``(L - 1, P, W, W)``,
            ``(L - 1, P, W)``; w_out, b_out: ``(P, 1, W)``, ``(P, 1)``.
        widths: ``(P,)`` int64 real units per member.
        reg, extremes: when ``extremes``, the first ``reg`` members' per-layer
            extremes go to ``u_val``, ``u_idx`` ``(2, L, reg, 1, W)`` and
            ``p_val``, ``p_idx`` ``(2, L, reg, N)`` (see :func:`layer_extremes`).
        hs: ``(L, P, W, N)`` out: post-ReLU activations, feature-major
            (padded rows untouched).
        gs: ``(L, P, W, N)`` out: pre-activations, or an empty array to skip.
        logits: ``(P, N)`` out.
        scratch: ``(W, N)``.
    """
    depth = hs.shape[0]
    n_points = x.shape[2]
    keep_g = gs.shape[0] > 0
    for p in range(x.shape[0]):
        width = widths[p]
        for layer in range(depth):
            if layer == 0:
                h_in, w, b, win = x[p], w_in[p], b_in[p], x.shape[1]
            else:
                h_in, w, b, win = hs[layer - 1, p], w_hid[layer - 1, p], b_hid[layer - 1, p], width
            g = gs[layer, p] if keep_g else scratch
            h_out = hs[layer, p]
            for o in range(width):
                row = g[o]
                bias = b[o]
                for n in range(n_points):
                    row[n] = bias
                _accumulate(row, w[o], h_in, win)
                out = h_out[o]
                for n in range(n_points):
                    v = row[n]
                    out[n] = 0.0 if v <= 0.0 else v  # NaN propagates, as torch.relu
            if extremes and p < reg:
                _transposed_extremes(g, width, u_val[:, layer, p], u_idx[:, layer, p],
                                     p_val[:, layer, p], p_idx[:, layer, p])
        h = hs[depth - 1, p]
        z = logits[p]
        for n in range(n_points):
            z[n] = b_out[p, 0]
        for i in range(width):
            c = w_out[p, 0, i]
            src = h[i]
            for n in range(n_points):
                z[n] += c * src[n]


@_fast
def dense_backward(x, w_in, w_hid, w_out, widths, depths, hs, gs, dz, reg, penalty, average,
                   u_val, u_idx, u_coef, p_val, p_idx, p_coef, g_w_in, g_b_in, g_w_hid,
                   g_b_hid, g_w_out, g_b_out, dh, dh_prev):  # pragma: no cover
    """Backward pass of :func:`dense_forward` (same layouts): gradients of the
    task loss (``dz`` ``(P, N)``: d loss / d logits) plus, when ``penalty``,
    the first ``reg`` members' penalty gradients (``u_coef`` ``(2, L, reg, W)``,
    ``p_coef`` ``(2, L, reg, N)``), added after the ReLU gradient as in
    :func:`_transposed_penalty_grad` (``average`` needs ``gs``). Gradients are
    written (not accumulated) into ``g_*`` (shapes of the weights), zero for
    layers at or beyond ``depths[p]`` (pass-through layers, whose backward is
    the identity). ``dh``, ``dh_prev``: ``(W, N)`` scratch."""
    depth = hs.shape[0]
    n_points = dz.shape[1]
    for p in range(x.shape[0]):
        width = widths[p]
        h = hs[depth - 1, p]
        d = dz[p]
        total = np.float32(0.0)
        for n in range(n_points):
            total += d[n]
        g_b_out[p, 0] = total
        for i in range(width):
            src = h[i]
            acc = np.float32(0.0)
            for n in range(n_points):
                acc += d[n] * src[n]
            g_w_out[p, 0, i] = acc
            c = w_out[p, 0, i]
            row = dh[i]
            for n in range(n_points):
                row[n] = c * d[n]
        for layer in range(depth - 1, -1, -1):
            h = hs[layer, p]
            for o in range(width):  # ReLU gradient, in place: dh becomes dg
                row, act = dh[o], h[o]
                for n in range(n_points):
                    if not act[n] > 0.0:
                        row[n] = 0.0
            if penalty and p < reg:
                g = gs[layer, p] if average else dh
                _transposed_penalty_grad(dh, g, average, width, u_val[:, layer, p],
                                         u_idx[:, layer, p], u_coef[:, layer, p],
                                         p_val[:, layer, p], p_idx[:, layer, p],
                                         p_coef[:, layer, p])
            if layer == 0:
                h_prev, w, gw, gb, win = x[p], w_in[p], g_w_in[p], g_b_in[p], x.shape[1]
            else:
                h_prev, w, gw, gb, win = (hs[layer - 1, p], w_hid[layer - 1, p],
                                          g_w_hid[layer - 1, p], g_b_hid[layer - 1, p], width)
            if layer >= depths[p]:  # pass-through: no gradient, dh passes unchanged
                gw[:width, :win] = 0.0
                gb[:width] = 0.0
                continue
            for o in range(width):
                row = dh[o]
                acc = np.float32(0.0)
                for n in range(n_points):
                    acc += row[n]
                gb[o] = acc
                _dots(gw[o], row, h_prev, win)
            if layer == 0:
                continue
            for i in range(win):
                out = dh_prev[i]
                out[:] = 0.0
                _accumulate(out, w[:, i], dh, width)
            dh, dh_prev = dh_prev, dh  # the layer below reads its gradient from dh
