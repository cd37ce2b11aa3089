"""Margin deficits (CPAIOR eqs. (9)-(12)) against hand-worked numbers and autograd."""

import pytest
import torch

from jumpstart.core.deficits import margin_deficits


def test_dense_deficits_by_hand():
    g = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.2, -3.0]])
    d = margin_deficits(g, margin=1.0)
    # unit max [2, .2, .5] -> relu(1 - max); unit min [.3, -1, -3] -> relu(1 + min)
    assert torch.allclose(d.unit_pos, torch.tensor([0.0, 0.8, 0.5]))
    assert torch.allclose(d.unit_neg, torch.tensor([1.3, 0.0, 0.0]))
    # point max [2, .3], point min [-1, -3]
    assert torch.allclose(d.point_pos, torch.tensor([0.0, 0.7]))
    assert torch.allclose(d.point_neg, torch.tensor([0.0, 0.0]))


CONV = torch.tensor([
    [[[1.0, -2.0], [0.5, 3.0]], [[-0.5, -0.5], [-0.1, -4.0]]],
    [[[0.2, 0.1], [0.3, 0.4]], [[0.6, 0.7], [-0.2, 0.9]]],
])  # (N=2, C=2, H=2, W=2)


@pytest.mark.parametrize("margin, expected", [
    # unit max per channel (over batch, H, W) = [3, .9]; unit min = [-2, -4]
    # point max per sample (over C, H, W) = [3, .9]; point min = [-4, -.2]
    (1.0, ([0.0, 0.1], [0.0, 0.0], [0.0, 0.1], [0.0, 0.8])),
    (2.0, ([0.0, 1.1], [0.0, 0.0], [0.0, 1.1], [0.0, 1.8])),
])
def test_conv_deficits_reduce_over_batch_and_space(margin, expected):
    d = margin_deficits(CONV, margin=margin)
    for got, want in zip(d, expected):
        assert torch.allclose(got, torch.tensor(want), atol=1e-6)


def _naive(g, margin, tie_break):
    """Deficits through plain autograd: amax/amin split ties evenly (average);
    max/min along one flattened dim sends the gradient to one element (single)."""
    n, c = g.shape[:2]
    units = g.transpose(0, 1).reshape(c, -1)
    points = g.reshape(n, -1)
    if tie_break == "average":
        ext = (units.amax(1), units.amin(1), points.amax(1), points.amin(1))
    else:
        ext = (units.max(1).values, units.min(1).values, points.max(1).values, points.min(1).values)
    return (torch.relu(margin - ext[0]), torch.relu(margin + ext[1]),
            torch.relu(margin - ext[2]), torch.relu(margin + ext[3]))


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 4, 4), (3, 2, 7)])
@pytest.mark.parametrize("tie_break", ["single", "average"])
def test_gradient_equals_naive_autograd(shape, tie_break):
    g = (torch.randn(*shape, dtype=torch.float64) * 0.8).requires_grad_()
    weights = [torch.rand(shape[1]), torch.rand(shape[1]), torch.rand(shape[0]), torch.rand(shape[0])]
    ours = margin_deficits(g, 0.7, tie_break)
    ref = _naive(g, 0.7, tie_break)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b)
    grad_ours, = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ours)), g)
    grad_ref, = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ref)), g)
    assert torch.allclose(grad_ours, grad_ref)


def test_average_tie_break_splits_gradient_over_ties():
    # unit 0 reaches its max 0.5 at two samples: each gets half of d xi+/d max = -1.
    g = torch.tensor([[0.5, -2.0], [0.5, -3.0], [0.1, 2.0]], requires_grad=True)
    d = margin_deficits(g, 1.0, "average")
    d.unit_pos[0].backward()
    assert torch.allclose(g.grad, torch.tensor([[-0.5, 0.0], [-0.5, 0.0], [0.0, 0.0]]))


def test_single_tie_break_sends_gradient_to_one_element():
    g = torch.tensor([[0.5, -2.0], [0.5, -3.0], [0.1, 2.0]], requires_grad=True)
    d = margin_deficits(g, 1.0, "single")
    d.unit_pos[0].backward()
    assert g.grad.count_nonzero() == 1 and g.grad.sum() == -1.0
    assert g.grad[:2, 0].sum() == -1.0  # at one of the two tied maxima


def test_satisfied_constraints_get_no_gradient():
    g = torch.tensor([[3.0, -3.0], [-3.0, 3.0]], requires_grad=True)
    d = margin_deficits(g, 1.0)
    assert all(t.sum() == 0 for t in d)
    sum(t.sum() for t in d).backward()
    assert g.grad.abs().sum() == 0


def test_single_tie_break_saves_no_pre_activation():
    """Only 2 * (2C + 2N) numbers are kept for backward, never g itself."""
    n, c, h, w = 16, 4, 8, 8
    g = torch.randn(n, c, h, w, requires_grad=True)
    x = g * 1.0  # a non-leaf, like a real pre-activation
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        margin_deficits(x)
    assert sum(saved) == 2 * (2 * c + 2 * n)


@pytest.mark.parametrize("kwargs, message", [
    ({"margin": 0.0}, "margin"),
    ({"margin": -1.0}, "margin"),
    ({"tie_break": "first"}, "tie_break"),
])
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        margin_deficits(torch.randn(3, 2), **kwargs)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        margin_deficits(torch.randn(5))
    with pytest.raises(ValueError, match="shape"):
        margin_deficits(torch.randn(0, 3))


class _Probe(torch.autograd.Function):
    """Identity whose backward records the gradient tensor it receives."""

    received: list = []

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        _Probe.received.append(grad)
        return grad


class _Act(torch.autograd.Function):
    """ReLU whose backward records the gradient tensor it sends."""

    sent: list = []

    @staticmethod
    def forward(ctx, g):
        ctx.save_for_backward(g > 0)
        return g.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        out = grad * ctx.saved_tensors[0]
        _Act.sent.append(out)
        return out


ACTIVATIONS = {
    "relu": torch.relu,
    "relu_": torch.relu_,
    "gelu": torch.nn.functional.gelu,
}


@pytest.mark.parametrize("shape, layout", [((6, 4), None), ((5, 3, 4, 4), None),
                                           ((5, 3, 4, 4), torch.channels_last), ((3, 2, 7), None)])
@pytest.mark.parametrize("tie_break", ["single", "average"])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("paths", ["both", "deficits", "task"])
def test_pass_through_gives_the_dense_gradients(shape, layout, tie_break, act, paths):
    """pass_through changes where the deficits' gradient is added, never what
    reaches the parameters, whichever of the two paths carries a gradient."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    if layout is not None:
        x = x.contiguous(memory_format=layout)
    w = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    view = (-1,) + (1,) * (len(shape) - 2)
    weights = [torch.rand(shape[1]), torch.rand(shape[1]), torch.rand(shape[0]), torch.rand(shape[0])]
    grads = []
    for through in (False, True):
        g = x * w.view(view)  # a non-leaf pre-activation, like a layer's output
        before = g.detach().clone()
        d = margin_deficits(g, 0.7, tie_break, pass_through=through)
        assert g._version == 0 and torch.equal(g.detach(), before)
        out = ACTIVATIONS[act](g)
        loss = 0.0
        if paths in ("both", "task"):
            loss = loss + (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype)
                           .view(out.shape)).sum()
        if paths in ("both", "deficits"):
            loss = loss + sum((v * t).sum() for v, t in zip(weights, d))
        grads.append(torch.autograd.grad(loss, w)[0])
    assert torch.allclose(grads[1], grads[0], rtol=1e-12, atol=1e-12)


def test_pass_through_adds_into_the_activation_gradient_in_place():
    """The producer of g receives the very tensor the activation's backward
    sent, with the deficits' gradient added at the extremes: no tensor of g's
    size is made. Without pass_through it receives a new one."""
    x = torch.randn(8, 3, 5, 5, requires_grad=True)
    for through, same in ((True, True), (False, False)):
        _Probe.received.clear()
        _Act.sent.clear()
        g = _Probe.apply(x)
        d = margin_deficits(g, 2.0, pass_through=through)
        loss = _Act.apply(g).sum() + sum(t.sum() for t in d)
        loss.backward()
        sent, received = _Act.sent[0], _Probe.received[0]
        assert (received.data_ptr() == sent.data_ptr()) is same
    # the deficits' share: received minus what the activation sent, at the 2C + 2N extremes
    extra = received - (x > 0).float()
    assert 0 < extra.count_nonzero() <= 2 * (3 + 8)


def test_pass_through_builds_a_graph_of_the_backward_when_asked():
    """create_graph: the gradient is made out of place and can be differentiated."""
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(6, 4, dtype=torch.float64)
    second = []
    for through in (False, True):
        g = x * w
        d = margin_deficits(g, 3.0, pass_through=through)
        loss = torch.nn.functional.gelu(g).sum() + sum(t.sum() for t in d)
        gw, = torch.autograd.grad(loss, w, create_graph=True)
        second.append(torch.autograd.grad(gw, w)[0])
    assert torch.allclose(second[0], second[1])


@pytest.mark.parametrize("through", [False, True])
@pytest.mark.parametrize("shape, unit_dim", [((4, 5, 6), -1), ((4, 5, 6), 2), ((3, 4, 4, 5), 3),
                                             ((3, 4, 5, 6), 2)])
def test_unit_dim_equals_the_moved_contiguous_tensor(shape, unit_dim, through):
    """Units along any axis: the deficits and the gradients are those of the
    tensor with that axis moved to dim 1 and copied."""
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64)
    w = torch.randn(shape[unit_dim], dtype=torch.float64, requires_grad=True)
    scale = w.view([-1 if i == unit_dim % len(shape) else 1 for i in range(len(shape))])
    weights = torch.rand(4, max(shape), dtype=torch.float64)
    out = []
    for moved in (False, True):
        g = x * scale
        h = g.movedim(unit_dim, 1).contiguous() if moved else g
        d = margin_deficits(h, 0.8, unit_dim=1 if moved else unit_dim, pass_through=through)
        task = torch.nn.functional.gelu(g).sum()
        loss = task + sum((wt[:len(t)] * t).sum() for wt, t in zip(weights, d))
        out.append((d, torch.autograd.grad(loss, w)[0]))
    (d, grad), (d_ref, grad_ref) = out
    assert [t.shape for t in d] == [(shape[unit_dim],)] * 2 + [(shape[0],)] * 2
    for a, b in zip(d, d_ref):
        assert torch.allclose(a, b)
    assert torch.allclose(grad, grad_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("unit_dim", [0, 3, -4, True, 1.0])
def test_bad_unit_dim_raises(unit_dim):
    with pytest.raises(ValueError, match="unit_dim"):
        margin_deficits(torch.randn(2, 3, 4), unit_dim=unit_dim)
