"""Fused CPU kernel (Numba): each (sample, channel) row's first maximum and
first minimum position over the spatial positions, in one pass over memory.

The margin deficits (CPAIOR 2022 eqs. (9)-(12), :mod:`jumpstart.core.deficits`)
reduce a conv pre-activation ``(N, C, *spatial)`` to per-(sample, channel)
extremes first. In PyTorch that is an ``amax`` and an ``amin`` over the
positions, then a gather of the extremes' rows and an ``argmin`` over them
for the positions: four passes, and on a channels-last or bfloat16 tensor
each runs at about 1.4 ns per element on this project's CPU (2 threads),
more than the layer's convolution. :func:`row_extremes` finds both extremes
and their first positions in one vectorized pass over the tensor's own
memory (channels-last or standard), reading bfloat16 and float16 as their
16-bit patterns, never converting them.

How: a float's bit pattern ``x`` (read as a signed integer) maps to the
integer ``key = (x ^ (sgn & mask)) - sgn`` (``sgn`` = -1 for a set sign bit,
else 0; ``mask`` all bits but the sign), which orders as the float does and
maps -0 and +0 to the same key. A position ``j`` is packed under the key
(``key * 2**32 + j`` for the minimum, ``+ (2**32 - 1 - j)`` for the
maximum), so a plain integer max/min, which the compiler vectorizes, finds
the extreme and, among ties, its first position: ``torch.max``/``min``'s
tie-break along a dim. NaN: a NaN with its sign bit clear orders above
+inf (found by the maximum), one with its sign bit set below -inf (found by
the minimum), so a row holding NaN has a NaN extreme, as with ``torch.amax``
and ``amin``, though not necessarily both.

The kernel runs on CPU tensors outside ``torch.compile`` only; every other
case gets ``None`` and the caller's PyTorch path (the same values).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

#: dtypes the kernel reads, as the signed integers of the same width
_BITS = {torch.float32: (torch.int32, 31), torch.bfloat16: (torch.int16, 15),
         torch.float16: (torch.int16, 15)}
_LOW = 0xFFFFFFFF

#: the kernel has two drivers: parallel over samples (``prange``), and serial
#: on the calling thread for one thread. With one thread the parallel driver
#: still hands its loop to an OpenMP worker thread, which waits for a core
#: whenever the machine is busy (another sweep worker, PyTorch's own threads):
#: on this project's 2-core VM with one core taken, 1 call in 10 on a
#: (128, 16, 32, 32) bfloat16 layer took 8 ms instead of 0.4 ms.
_parallel = numba.njit(cache=True, nogil=True, boundscheck=False, parallel=True)
_serial = numba.njit(cache=True, nogil=True, boundscheck=False)


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _key(x, shift, mask):  # pragma: no cover - compiled
    sgn = np.int64(x) >> shift
    return ((np.int64(x) ^ (sgn & mask)) - sgn) << 32


#: elements a channels-last sample's loop takes per step: ``BLOCK // C``
#: positions of all ``C`` channels (at least one position), so a layer of few
#: channels still runs long vector loops (with 8 channels one position per
#: step ran 2.6x slower than the standard layout's loop)
BLOCK = 64


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _sample_last(a, shift, mask, hi, lo):  # pragma: no cover - compiled
    """One sample ``a`` ``(S, C)`` C-contiguous (a channels-last tensor's
    memory): its rows' packed extremes into ``hi``/``lo`` ``(C,)``.

    The memory is read in steps of ``P = BLOCK // C`` positions (``P * C``
    consecutive elements, lane ``m`` holding channel ``m % C`` of position
    ``step * P + m // C``), each lane its own running extreme, vectorized over
    the lanes; the positions left over (``S % P``) go to lanes ``0..C-1``;
    then each channel's ``P`` lanes are folded. The packed position keeps the
    first position among ties through the folds."""
    s, c = a.shape
    p = max(1, BLOCK // c)
    width, steps = p * c, s // p
    flat = a.reshape(s * c)
    top = np.full(width, np.iinfo(np.int64).min, np.int64)
    bottom = np.full(width, np.iinfo(np.int64).max, np.int64)
    lane = np.arange(width) // c  # each lane's position within a step
    for step in range(steps):
        base, first = step * width, step * p
        for m in range(width):
            key = _key(flat[base + m], shift, mask)
            j = first + lane[m]
            top[m] = max(top[m], key + (_LOW - j))
            bottom[m] = min(bottom[m], key + j)
    for j in range(steps * p, s):
        row = a[j]
        for k in range(c):
            key = _key(row[k], shift, mask)
            top[k] = max(top[k], key + (_LOW - j))
            bottom[k] = min(bottom[k], key + j)
    for k in range(c):
        t, b = top[k], bottom[k]
        for q in range(1, p):
            t = max(t, top[q * c + k])
            b = min(b, bottom[q * c + k])
        hi[k] = t
        lo[k] = b


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _sample_first(a, shift, mask, hi, lo):  # pragma: no cover - compiled
    """One sample ``a`` ``(C, S)`` C-contiguous (a standard tensor's memory):
    its rows' packed extremes into ``hi``/``lo`` ``(C,)``, a vectorized
    reduction along each row."""
    c, s = a.shape
    for k in range(c):
        row = a[k]
        top = np.iinfo(np.int64).min
        bottom = np.iinfo(np.int64).max
        for j in range(s):
            key = _key(row[j], shift, mask)
            top = max(top, key + np.int64(_LOW - j))
            bottom = min(bottom, key + j)
        hi[k] = top
        lo[k] = bottom


@_parallel
def _extremes_parallel(a, last, shift, mask, found, bits):  # pragma: no cover - compiled
    """``a`` ``(N, S, C)`` (``last``) or ``(N, C, S)``: each sample's rows on
    its own thread, then :func:`_pick`."""
    n, c = a.shape[0], a.shape[2] if last else a.shape[1]
    hi, lo = np.empty((n, c), np.int64), np.empty((n, c), np.int64)
    for i in numba.prange(n):
        if last:
            _sample_last(a[i], shift, mask, hi[i], lo[i])
        else:
            _sample_first(a[i], shift, mask, hi[i], lo[i])
    _pick(a, last, hi, lo, found[0], found[1], bits)


@_serial
def _extremes_serial(a, last, shift, mask, found, bits):  # pragma: no cover - compiled
    """:func:`_extremes_parallel` on the calling thread. A copy, not the same
    function compiled a second time without ``parallel``: Numba's on-disk cache
    names its entries by function and signature only, so two builds of one
    function would load each other's code."""
    n, c = a.shape[0], a.shape[2] if last else a.shape[1]
    hi, lo = np.empty((n, c), np.int64), np.empty((n, c), np.int64)
    for i in range(n):
        if last:
            _sample_last(a[i], shift, mask, hi[i], lo[i])
        else:
            _sample_first(a[i], shift, mask, hi[i], lo[i])
    _pick(a, last, hi, lo, found[0], found[1], bits)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _pick(a, last, hi, lo, flat, mem, bits):  # pragma: no cover - compiled
    """From the rows' packed extremes ``hi``/``lo`` ``(N, C)``: each unit's
    (over samples, first sample among ties) and each point's (over channels,
    first channel) maximum and minimum, as flat indices into the ``(N, C,
    S)`` view (``flat``), into ``a``'s memory (``mem``), and their bits."""
    n, c = hi.shape
    s = a.shape[1] if last else a.shape[2]
    for e in range(2 * (c + n)):
        unit = e < 2 * c
        minimum = (e % (2 * c) >= c) if unit else ((e - 2 * c) >= n)
        k = e % c if unit else -1
        i = -1 if unit else (e - 2 * c) % n
        table = lo if minimum else hi
        best = table[0, k] if unit else table[i, 0]
        if unit:
            i = 0
            for r in range(1, n):
                v = table[r, k]
                if (v >> 32) < (best >> 32) if minimum else (v >> 32) > (best >> 32):
                    best, i = v, r
        else:
            k = 0
            for r in range(1, c):
                v = table[i, r]
                if (v >> 32) < (best >> 32) if minimum else (v >> 32) > (best >> 32):
                    best, k = v, r
        j = (best & _LOW) if minimum else _LOW - (best & _LOW)
        flat[e] = (i * c + k) * s + j
        if last:
            mem[e] = (i * s + j) * c + k
            bits[e] = a[i, j, k]
        else:
            mem[e] = flat[e]
            bits[e] = a[i, k, j]


def margin_extremes(gf: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """The extremes inside the margin deficits, by the fused kernel.

    Each unit's maximum and minimum over samples and positions and each
    point's over channels and positions (CPAIOR 2022 eqs. (9)-(12), granularity
    ``"channel"``), with the position of each: the first sample (unit) or
    channel (point) whose row holds the extreme, then the first position in
    that row; the tie-break of ``torch.max``/``torch.min`` along a dim, applied
    first to the rows' extremes and then within the row, as
    :func:`jumpstart.core.margin_deficits` does (-0 equals +0).

    Args:
        gf: ``(N, C, S)``, ``S >= 2`` positions per (sample, channel) row,
            float32, bfloat16 or float16, on CPU, laid out as a channels-last
            tensor (strides ``(S*C, 1, C)``) or a standard one (``(C*S, S, 1)``).

    Returns:
        ``(flat, mem, values)``, each ``(2 C + 2 N,)`` in the order [unit
        maxima (C), unit minima (C), point maxima (N), point minima (N)]:
        ``flat`` (int64) the index into ``gf.reshape(-1)`` (row-major ``(N,
        C, S)``), ``mem`` (int64) the offset in ``gf``'s memory from its
        first element, ``values`` the extremes (``gf``'s dtype, its exact
        elements). ``None`` where the kernel does not apply (another device,
        dtype or layout, ``S < 2``, or inside ``torch.compile``): use PyTorch
        ops then. Raises nothing.

    Threads: as many as PyTorch's ``torch.get_num_threads()`` (at most the
    samples ``N``); on one, the serial driver on the calling thread. PyTorch's
    thread count is the same after the call as before.
    """
    if (torch.compiler.is_compiling() or gf.device.type != "cpu" or gf.dim() != 3
            or gf.dtype not in _BITS or not 2 <= gf.shape[2] <= _LOW):
        return None
    n, c, s = gf.shape
    as_int, shift = _BITS[gf.dtype]
    mask = (1 << shift) - 1
    if gf.stride() == (s * c, 1, c) or (c == 1 and gf.is_contiguous()):
        last, a = True, gf.detach().transpose(1, 2)
    elif gf.is_contiguous():
        last, a = False, gf.detach()
    else:
        return None
    torch_threads = torch.get_num_threads()
    threads = min(torch_threads, numba.config.NUMBA_NUM_THREADS, n)
    if threads > 1 and numba.get_num_threads() != threads:
        numba.set_num_threads(threads)
        # Numba's OpenMP layer shares PyTorch's OpenMP runtime: starting its
        # pool sets that runtime's thread count to all cores (seen here: a
        # sweep worker's 1 thread became 2, two workers then ran 4 threads on 2
        # cores); PyTorch's own count is put back
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    kernel = _extremes_parallel if threads > 1 else _extremes_serial
    k = 2 * (c + n)
    found, bits = torch.empty(2, k, dtype=torch.int64), torch.empty(k, dtype=as_int)
    kernel(a.view(as_int).numpy(), last, shift, mask, found.numpy(), bits.numpy())
    return found[0], found[1], bits.view(gf.dtype)
