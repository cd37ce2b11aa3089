"""Granularity "position": a unit per (channel, position), a point per (sample, position)."""

import pytest
import torch
from torch import nn

from jumpstart import Jumpstart, activation_status
from jumpstart.core.deficits import Deficits, margin_deficits
from jumpstart.core.regularizer import aggregate
from jumpstart.core.status import DEAD, LINEAR, NONLINEAR

# (N=2, C=2, S=2): G[n, c, s]
G = torch.tensor([
    [[1.0, -2.0], [0.5, 0.3]],
    [[0.2, 3.0], [-0.4, -1.5]],
])
# Units (c, s) in the order (0,0), (0,1), (1,0), (1,1), over the batch:
#   max [1, 3, .5, .3], min [.2, -2, -.4, -1.5]
# Points (n, s) in the order (0,0), (0,1), (1,0), (1,1), over the channels:
#   max [1, .3, .2, 3], min [.5, -2, -.4, -1.5]
# margin 1: pos = relu(1 - max), neg = relu(1 + min).
HAND = Deficits(
    torch.tensor([0.0, 0.0, 0.5, 0.7]), torch.tensor([1.2, 0.0, 0.6, 0.0]),
    torch.tensor([0.0, 0.7, 0.8, 0.0]), torch.tensor([1.5, 0.0, 0.6, 0.0]),
)


@pytest.mark.parametrize("shape", [(2, 2, 2), (2, 2, 2, 1), (2, 2, 1, 2)])
@pytest.mark.parametrize("tie_break", ["single", "average"])
def test_position_deficits_by_hand(shape, tie_break):
    d = margin_deficits(G.reshape(shape), 1.0, tie_break, granularity="position")
    for got, want in zip(d, HAND):
        assert torch.allclose(got, want)


def test_dense_granularities_agree():
    g = torch.randn(5, 3)
    for a, b in zip(margin_deficits(g, granularity="position"), margin_deficits(g)):
        assert torch.equal(a, b)


def _naive(g, margin, tie_break):
    """Units as rows of a (C*S, N) matrix, points as rows of a (N*S, C) one."""
    n, c = g.shape[:2]
    units = g.reshape(n, c, -1).permute(1, 2, 0).reshape(-1, n)
    points = g.reshape(n, c, -1).transpose(1, 2).reshape(-1, c)
    if tie_break == "average":
        ext = units.amax(1), units.amin(1), points.amax(1), points.amin(1)
    else:
        ext = units.max(1).values, units.min(1).values, points.max(1).values, points.min(1).values
    return (torch.relu(margin - ext[0]), torch.relu(margin + ext[1]),
            torch.relu(margin - ext[2]), torch.relu(margin + ext[3]))


@pytest.mark.parametrize("shape", [(6, 3, 2, 2), (4, 2, 5)])
@pytest.mark.parametrize("tie_break", ["single", "average"])
def test_gradient_equals_naive_autograd(shape, tie_break):
    g = torch.randn(*shape, dtype=torch.float64) * 0.8
    if tie_break == "average":  # tied extremes: repeated samples and repeated channels
        g = torch.cat([g, g[:2]], dim=0)
        g = torch.cat([g, g[:, :1]], dim=1)
    g.requires_grad_()
    ours = margin_deficits(g, 0.7, tie_break, granularity="position")
    ref = _naive(g, 0.7, tie_break)
    weights = [torch.rand(t.shape, dtype=torch.float64) for t in ref]
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and torch.allclose(a, b)
    grad_ours, = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ours)), g)
    grad_ref, = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ref)), g)
    assert torch.allclose(grad_ours, grad_ref)


def identity_conv_net() -> nn.Sequential:
    """A 1x1 conv with identity weights: its pre-activation is its input."""
    conv = nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        conv.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4, 1))


@pytest.mark.parametrize("aggregation, expected", [
    # unit terms .5 * [1.2, 0, 1.1, .7] (sum 1.5), point terms .5 * [1.5, .7, 1.4, 0] (sum 1.8)
    ("sum", 3.3),
    ("balanced", 1.5 / 4 + 1.8 / 4),
    ("sq", 0.25 * (1.44 + 1.21 + 0.49 + 2.25 + 0.49 + 1.96)),
])
def test_jumpstart_penalty_equals_aggregate_of_hand_deficits(aggregation, expected):
    net = identity_conv_net()
    js = Jumpstart(net, aggregation=aggregation, granularity="position")
    net(G.view(2, 2, 2, 1))
    d = js.deficits()[0].deficits
    assert d.unit_pos.shape == (4,) and d.point_pos.shape == (4,)
    assert js.penalty().item() == pytest.approx(aggregate([HAND], aggregation=aggregation).item())
    assert js.penalty().item() == pytest.approx(expected)


def sign_conv_net() -> nn.Sequential:
    """Channel 0 is ``x``, channel 1 is ``-x``, at every position."""
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.zero_()
    return nn.Sequential(conv, nn.ReLU())


# 3 samples x 2 positions, shape (N, 1, 1, 2).
X = torch.tensor([[1.0, 2.0], [-1.0, 3.0], [0.0, 1.0]]).view(3, 1, 1, 2)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_activation_status_position_units(batch_size):
    s = activation_status(sign_conv_net(), X, batch_size=batch_size, granularity="position")
    # (c, s): (0,0) x[:,0] = [1,-1,0] nonlinear; (0,1) x[:,1] = [2,3,1] linear;
    # (1,0) -x[:,0] nonlinear; (1,1) -x[:,1] = [-2,-3,-1] dead.
    assert s.unit_status[0].tolist() == [NONLINEAR, LINEAR, NONLINEAR, DEAD]
    frame = s.to_frame()
    assert frame.loc[0, ["units", "dead_units", "linear_units", "nonlinear_units"]].tolist() == [
        4, 1, 1, 2]
    # Points stay samples: sample 2 has the dead pair (2, s=0) (both channels 0)
    # but a channel > 0 at s=1, so it is nonlinear, not dead.
    assert s.point_status.tolist() == [[NONLINEAR], [NONLINEAR], [NONLINEAR]]
    channel = activation_status(sign_conv_net(), X, batch_size=batch_size)
    assert channel.unit_status[0].tolist() == [NONLINEAR, NONLINEAR]
    assert channel.point_status.tolist() == s.point_status.tolist()


def test_activation_status_position_needs_one_spatial_size():
    batches = [torch.randn(2, 1, 1, 2), torch.randn(2, 1, 1, 3)]
    activation_status(sign_conv_net(), batches)  # channel: any spatial size
    with pytest.raises(ValueError, match="spatial size"):
        activation_status(sign_conv_net(), batches, granularity="position")


@pytest.mark.parametrize("call", [
    lambda: margin_deficits(torch.randn(3, 2, 2), granularity="pixel"),
    lambda: Jumpstart(sign_conv_net(), granularity="pixel"),
    lambda: activation_status(sign_conv_net(), X, granularity="pixel"),
])
def test_bad_granularity_raises(call):
    with pytest.raises(ValueError, match="'pixel'.*channel, position"):
        call()
