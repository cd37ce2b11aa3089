"""The fused extremes kernel against an independent formula, and the deficits
on the kernel path against the PyTorch path (values and gradients)."""

import itertools

import pytest
import torch

import jumpstart.core.deficits as deficits_module
from jumpstart.core.deficits import margin_deficits
from jumpstart.core.extremes import margin_extremes

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _expected(gf: torch.Tensor) -> tuple[list[int], list[float]]:
    """Flat indices and values by plain Python over the elements: a unit's
    extreme is the first (sample, position) in row-major order holding it, a
    point's the first (channel, position)."""
    n, c, s = gf.shape
    v = gf.float().tolist()
    # each unit's and each point's elements as (value, flat index), in tie-break order
    units = [[(v[i][k][j], (i * c + k) * s + j) for i in range(n) for j in range(s)]
             for k in range(c)]
    points = [[(v[i][k][j], (i * c + k) * s + j) for k in range(c) for j in range(s)]
              for i in range(n)]
    flat, values = [], []
    for group in (units, points):
        for pick in (max, min):  # maxima, then minima
            for cells in group:
                best = pick(x for x, _ in cells)
                x, f = next(t for t in cells if t[0] == best)
                flat.append(f), values.append(x)
    return flat, values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("threads", [1, 2])  # the serial and the parallel driver
# channels-last steps of BLOCK // C positions (64 elements): C 3 -> 21 positions a step,
# 12 positions = no full step; C 4 -> 16, 45 = 2 steps + 13 left; C 8 -> 8, 35 = 4 + 3
@pytest.mark.parametrize("shape", [(5, 3, 4, 3), (3, 4, 9, 5), (2, 8, 5, 7)])
def test_kernel_matches_the_first_extreme_by_hand(dtype, channels_last, ties, threads, shape,
                                                   monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    torch.manual_seed(0)
    g = torch.randn(shape)
    if ties:  # few distinct values: many tied extremes
        g = (g * 2).round() / 2
    g = g.to(dtype)
    if channels_last:
        g = g.contiguous(memory_format=torch.channels_last)
    gf = g.reshape(shape[0], shape[1], -1)
    flat, mem, values = margin_extremes(gf)
    want_flat, want_values = _expected(gf)
    assert flat.tolist() == want_flat
    assert values.dtype == dtype and values.float().tolist() == want_values
    # mem addresses the same elements in g's own memory
    memory = g.permute(0, 2, 3, 1).reshape(-1) if channels_last else g.reshape(-1)
    assert memory[mem].float().tolist() == want_values


@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_leaves_pytorch_thread_count_alone(threads):
    # Numba's OpenMP pool shares PyTorch's runtime: starting it (once per
    # process, so a fresh one here) set a 1-thread sweep worker to all cores
    import subprocess
    import sys

    code = ("import torch; from jumpstart.core.extremes import margin_extremes; "
            f"torch.set_num_threads({threads}); "
            "[margin_extremes(torch.randn(4, 3, 5).to(d)) for d in (torch.float32, torch.bfloat16)]; "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(threads)]


def test_negative_zero_ties_with_zero():
    # -0 before +0 in a row whose maximum is zero: the first one is the maximum
    gf = torch.tensor([[[-0.0, 0.0, -1.0]]])
    flat, _, values = margin_extremes(gf)
    assert flat.tolist() == [0, 2, 0, 2]
    assert values.tolist() == [0.0, -1.0, 0.0, -1.0]


def test_nan_is_an_extreme():
    gf = torch.tensor([[[1.0, float("nan"), -2.0]]])
    _, _, values = margin_extremes(gf)
    assert torch.isnan(values).any()


@pytest.mark.parametrize("gf", [
    torch.randn(2, 3, 1),  # one position
    torch.randn(2, 3, 4, dtype=torch.float64),  # no kernel for float64
    torch.randn(4, 2, 3).permute(1, 2, 0),  # neither layout (samples innermost)
])
def test_kernel_declines_what_it_does_not_read(gf):
    assert margin_extremes(gf) is None


def _run(g0, tie_break, through, unit_dim, kernel, monkeypatch):
    with monkeypatch.context() as m:
        if not kernel:
            m.setattr(deficits_module, "margin_extremes", lambda gf: None)
        g = g0.clone().requires_grad_()
        h = g * 1.0  # not a leaf: pass-through applies
        d = margin_deficits(h, 1.0, tie_break, unit_dim=unit_dim, pass_through=through)
        weights = [torch.arange(x.numel(), dtype=torch.float32).to(x.dtype) / 7 + 1 for x in d]
        (h.relu().sum() * 0.01 + sum((x * w).sum() for x, w in zip(d, weights))).backward()
        return [x.detach() for x in d], g.grad


@pytest.mark.parametrize("shape,channels_last,unit_dim", [
    ((8, 4, 5, 5), False, 1), ((8, 4, 5, 5), True, 1), ((6, 7, 3), False, 1),
    ((5, 9, 6), False, -1), ((3, 1, 4, 4), True, 1), ((4, 5, 2, 3, 3), False, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_deficits_on_the_kernel_path_equal_the_pytorch_path(shape, channels_last, unit_dim,
                                                           dtype, monkeypatch):
    torch.manual_seed(1)
    for ties, tie_break, through in itertools.product([False, True], ["single", "average"],
                                                      [False, True]):
        g0 = torch.randn(shape) * 1.5
        if ties:
            g0 = (g0 * 2).round() / 2
        g0 = g0.to(dtype)
        if channels_last:
            g0 = g0.contiguous(memory_format=torch.channels_last)
        fast = _run(g0, tie_break, through, unit_dim, True, monkeypatch)
        slow = _run(g0, tie_break, through, unit_dim, False, monkeypatch)
        for a, b in zip(fast[0], slow[0]):
            assert torch.equal(a, b), (ties, tie_break, through)
        assert torch.equal(fast[1], slow[1]), (ties, tie_break, through)


def test_deficits_on_the_kernel_path_equal_the_formula():
    # eqs. (9)-(12) with the extremes from amax/amin: relu(m - max), relu(m + min)
    torch.manual_seed(2)
    g = torch.randn(6, 3, 4, 4).bfloat16().contiguous(memory_format=torch.channels_last)
    d = margin_deficits(g.clone().requires_grad_() * 1.0, 0.5)
    m = 0.5
    assert torch.equal(d.unit_pos, torch.relu(m - g.amax(dim=(0, 2, 3))))
    assert torch.equal(d.unit_neg, torch.relu(m + g.amin(dim=(0, 2, 3))))
    assert torch.equal(d.point_pos, torch.relu(m - g.amax(dim=(1, 2, 3))))
    assert torch.equal(d.point_neg, torch.relu(m + g.amin(dim=(1, 2, 3))))
