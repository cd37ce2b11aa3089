"""The CPAIOR Keras MOONS network: conv (2, 1) layers with bottom "same" padding."""

import pytest
import torch
from torch import nn

from jumpstart import Jumpstart
from jumpstart.models import MoonsConv


@pytest.mark.parametrize("depth, width", [(1, 1), (3, 4), (5, 2)])
def test_shape_and_parameter_count(depth, width):
    m = MoonsConv(depth, width)
    assert m(torch.randn(7, 2)).shape == (7, 1)
    # first layer 1*width*2 + width, then width*width*2 + width each, output 2*width + 1
    expected = (2 * width + width) + (depth - 1) * (2 * width * width + width) + (2 * width + 1)
    assert sum(p.numel() for p in m.parameters()) == expected
    assert len(m.convs) == len(m.activations) == depth
    assert all(isinstance(a, nn.ReLU) for a in m.activations)


def test_glorot_bounds_and_zero_biases():
    m = MoonsConv(2, 3)
    # Keras fan-in/out of a (2, 1) kernel: 2 * C_in and 2 * width.
    assert m.convs[0].weight.abs().max() <= (6 / (2 + 6)) ** 0.5
    assert m.convs[1].weight.abs().max() <= (6 / (6 + 6)) ** 0.5
    assert all(torch.count_nonzero(l.bias) == 0 for l in [*m.convs, m.output])
    assert all(torch.count_nonzero(p) == 0 for p in MoonsConv(2, 3, init="zero").parameters())


def test_bottom_padding_by_hand():
    w0, w1, b, u0, u1, c = 2.0, -3.0, 0.5, 1.5, -2.0, 0.25
    m = MoonsConv(1, 1)
    with torch.no_grad():
        m.convs[0].weight.copy_(torch.tensor([w0, w1]).view(1, 1, 2, 1))
        m.convs[0].bias.fill_(b)
        m.output.weight.copy_(torch.tensor([[u0, u1]]))
        m.output.bias.fill_(c)
    seen = []
    m.activations[0].register_forward_pre_hook(lambda mod, a: seen.append(a[0]))
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7]])
    y = m(x)
    x0, x1 = x[:, 0], x[:, 1]
    p0 = w0 * x0 + w1 * x1 + b  # rows (0, 1)
    p1 = w0 * x1 + b  # row 1 and the zero row below it
    assert seen[0].shape == (3, 1, 2, 1)
    assert torch.allclose(seen[0][:, 0, 0, 0], p0)
    assert torch.allclose(seen[0][:, 0, 1, 0], p1)
    assert torch.allclose(y[:, 0], u0 * torch.relu(p0) + u1 * torch.relu(p1) + c)


@pytest.mark.parametrize("granularity, units, points", [("position", 6, 10), ("channel", 3, 5)])
def test_jumpstart_deficit_shapes(granularity, units, points):
    m = MoonsConv(4, 3)
    js = Jumpstart(m, granularity=granularity)
    m(torch.randn(5, 2))
    layers = js.deficits()
    assert len(layers) == 4
    for layer in layers:
        d = layer.deficits
        assert d.unit_pos.shape == d.unit_neg.shape == (units,)
        assert d.point_pos.shape == d.point_neg.shape == (points,)
    assert js.penalty() >= 0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"depth": 0}, "depth"), ({"width": 0}, "width"), ({"depth": 2.0}, "depth"),
    ({"init": "he"}, "unknown init"),
])
def test_bad_arguments_raise(kwargs, fragment):
    args = {"depth": 2, "width": 2, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        MoonsConv(args.pop("depth"), args.pop("width"), **args)


def test_bad_input_shape_raises():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        MoonsConv(1, 2)(torch.randn(4, 3))
