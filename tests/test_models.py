"""Rectangular dense nets."""

import pytest
import torch
from torch import nn

from jumpstart.models import Rectangular


def test_parameter_count_and_layout():
    m = Rectangular(5, 3, 2, 1)
    # first layer 2*3+3, four 3x3 layers 4*(9+3), output 3+1
    assert sum(p.numel() for p in m.parameters()) == 9 + 4 * 12 + 4
    assert sum(isinstance(x, nn.ReLU) for x in m.modules()) == 5
    assert m(torch.randn(7, 2)).shape == (7, 1)


def test_glorot_bounds_and_zero_biases():
    m = Rectangular(3, 4, 6, 2)
    bound = (6 / (6 + 4)) ** 0.5
    assert m.linears[0].weight.abs().max() <= bound
    assert all(torch.count_nonzero(l.bias) == 0 for l in [*m.linears, m.output])
    z = Rectangular(2, 3, 2, 1, init="zero")
    assert all(torch.count_nonzero(p) == 0 for p in z.parameters())


def test_batchnorm_sits_before_activation():
    m = Rectangular(2, 3, 2, 1, norm="batch")
    assert isinstance(m.norms[0], nn.BatchNorm1d)
    seen = []
    m.activations[0].register_forward_pre_hook(lambda mod, a: seen.append(a[0]))
    x = torch.randn(8, 2)
    m(x)
    # the activation sees post-BN values: per-unit mean ~0 in training mode
    assert torch.allclose(seen[0].mean(0), torch.zeros(3), atol=1e-5)


def test_skip_adds_block_input():
    m = Rectangular(3, 2, 2, 1, skip=1)
    seen = []
    for act in m.activations:
        act.register_forward_pre_hook(lambda mod, a: seen.append(a[0]))
    x = torch.randn(4, 2)
    m(x)
    h1 = torch.relu(seen[0])
    assert torch.allclose(seen[1], m.linears[1](h1) + h1)


def test_gelu_and_errors():
    assert isinstance(Rectangular(2, 2, 2, 1, activation="gelu").activations[0], nn.GELU)
    for kwargs, frag in (({"depth": 0}, "depth"), ({"width": -1}, "width"),
                         ({"activation": "tanh"}, "tanh"), ({"norm": "layer"}, "layer"),
                         ({"skip": 0}, "skip"), ({"init": "he"}, "unknown init")):
        args = {"depth": 2, "width": 2, "in_features": 2, "out_features": 1, **kwargs}
        with pytest.raises(ValueError, match=frag):
            Rectangular(args.pop("depth"), args.pop("width"), args.pop("in_features"),
                        args.pop("out_features"), **args)
