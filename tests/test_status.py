"""Activation status (CPAIOR Definitions 1 and 2) on a hand-built net."""

import numpy as np
import pytest
import torch
from torch import nn

from jumpstart import activation_status
from jumpstart.core.status import DEAD, LINEAR, NONLINEAR


def hand_net() -> nn.Sequential:
    """g1 = [x, -x, 1]; g2 = [-h1[2], h1[0] - .5]; g3 = [2 * h2[1]].

    On x in {-1, 1, 2}: g1 rows [-1, 1, 1], [1, -1, 1], [2, -2, 1];
    g2 rows [-1, -.5], [-1, .5], [-1, 1.5]; g3 = [0, 1, 3].
    """
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU(),
                        nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        for lin, w, b in (
            (net[0], [[1.0], [-1.0], [0.0]], [0.0, 0.0, 1.0]),
            (net[2], [[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]], [0.0, -0.5]),
            (net[4], [[0.0, 2.0]], [0.0]),
            (net[6], [[1.0]], [0.0]),
        ):
            lin.weight.copy_(torch.tensor(w))
            lin.bias.copy_(torch.tensor(b))
    return net


X = torch.tensor([[-1.0], [1.0], [2.0]])


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_hand_built_net(batch_size):
    s = activation_status(hand_net(), X, batch_size=batch_size)
    assert [u.tolist() for u in s.unit_status] == [
        [NONLINEAR, NONLINEAR, LINEAR], [DEAD, NONLINEAR], [NONLINEAR]]
    assert s.point_status.tolist() == [
        [NONLINEAR, DEAD, DEAD], [NONLINEAR, NONLINEAR, LINEAR], [NONLINEAR, NONLINEAR, LINEAR]]
    assert s.unit_dead_ratio == pytest.approx(1 / 6)
    assert s.unit_linear_ratio == pytest.approx(1 / 6)
    assert s.unit_nonlinear_ratio == pytest.approx(4 / 6)
    assert s.point_dead_ratio == pytest.approx(1 / 3)
    assert s.point_linear_ratio == 0.0
    assert s.point_nonlinear_ratio == 0.0
    assert s.layer_point_dead_ratio == pytest.approx(2 / 9)
    assert s.layer_point_linear_ratio == pytest.approx(2 / 9)
    assert s.layer_point_nonlinear_ratio == pytest.approx(5 / 9)
    # x=-1 is dead down to layer 3: no cell gets gradient; the others keep all 3.
    assert s.point_efficiency == pytest.approx(2 / 3)


def test_point_efficiency_counts_cells_below_deepest_dead_layer():
    from jumpstart.core.status import ActivationStatus

    ps = np.array([[DEAD, NONLINEAR, NONLINEAR, NONLINEAR],   # loses layer 1: 3/4
                   [NONLINEAR, NONLINEAR, DEAD, LINEAR],      # loses layers 1-3: 1/4
                   [LINEAR, LINEAR, LINEAR, LINEAR]], dtype=np.int8)  # keeps 4/4
    s = ActivationStatus([f"l{i}" for i in range(4)], [np.array([NONLINEAR])] * 4, ps)
    assert s.point_efficiency == pytest.approx((0.75 + 0.25 + 1.0) / 3)
    assert s.point_linear_ratio == pytest.approx(1 / 3)


def test_dataloader_and_mode_restored():
    net = hand_net()
    net.train()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, torch.zeros(3)), batch_size=2)
    s = activation_status(net, loader)
    assert net.training
    assert s.point_status.shape == (3, 3)
    assert s.unit_dead_ratio == pytest.approx(1 / 6)


def test_conv_units_reduce_over_positions():
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.zero_()
    net = nn.Sequential(conv, nn.ReLU())
    # sample 0 all positive, sample 1 mixed: channel 0 nonlinear, channel 1 nonlinear;
    # sample 0 at the layer: channel 0 > 0 everywhere, channel 1 <= 0: nonlinear.
    x = torch.tensor([[[[1.0, 2.0]]], [[[-1.0, 3.0]]]])
    s = activation_status(net, x)
    assert s.unit_status[0].tolist() == [NONLINEAR, NONLINEAR]
    x_pos = torch.tensor([[[[1.0, 2.0]]], [[[0.5, 3.0]]]])
    s = activation_status(net, x_pos)
    assert s.unit_status[0].tolist() == [LINEAR, DEAD]
    assert s.point_status[:, 0].tolist() == [NONLINEAR, NONLINEAR]


def test_to_frame_and_plot(tmp_path):
    s = activation_status(hand_net(), X)
    df = s.to_frame()
    assert list(df["units"]) == [3, 2, 1]
    assert list(df["dead_units"]) == [0, 1, 0]
    assert list(df["linear_units"]) == [1, 0, 0]
    assert df["dead_points"].tolist() == pytest.approx([0, 1 / 3, 1 / 3])
    path = s.plot(tmp_path / "status.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors():
    with pytest.raises(ValueError, match="no activation found in Linear"):
        activation_status(nn.Linear(1, 1), X)
    with pytest.raises(ValueError, match="at least one sample"):
        activation_status(hand_net(), torch.zeros(0, 1))
    with pytest.raises(ValueError, match="batch_size"):
        activation_status(hand_net(), X, batch_size=0)


def _conv_net(channels_last: bool) -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(3 * 25, 2))
    with torch.no_grad():
        net[2].bias.copy_(torch.tensor([-50.0, 50.0, 0.0]))  # a dead and a linear channel
    return net.to(memory_format=torch.channels_last) if channels_last else net


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch_size", [3, 256])
def test_conv_status_matches_the_definition_computed_by_hand(channels_last, batch_size):
    """The fused-kernel reduction (CPU conv pre-activations, either layout) gives
    the statuses and post-activation sizes of Definitions 1 and 2 computed from
    the pre-activations directly."""
    net = _conv_net(channels_last)
    x = torch.randn(7, 2, 5, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    s = activation_status(net, x, batch_size=batch_size)
    with torch.no_grad():
        g1 = net[0](x)
        g2 = net[2](torch.relu(g1))
    for layer, g in enumerate((g1, g2)):
        umax, umin = g.amax(dim=(0, 2, 3)), g.amin(dim=(0, 2, 3))
        expect = np.where(umax <= 0, DEAD, np.where(umin > 0, LINEAR, NONLINEAR))
        assert s.unit_status[layer].tolist() == expect.tolist()
        pmax, pmin = g.amax(dim=(1, 2, 3)), g.amin(dim=(1, 2, 3))
        points = np.where(pmax <= 0, DEAD, np.where(pmin > 0, LINEAR, NONLINEAR))
        assert s.point_status[:, layer].tolist() == points.tolist()
        mean_abs = torch.relu(g).mean(dim=(0, 2, 3))
        np.testing.assert_allclose(s.unit_abs_mean[layer], mean_abs.numpy(), rtol=1e-5)
    assert s.unit_status[1].tolist()[:2] == [DEAD, LINEAR]


@pytest.mark.parametrize("value", [float("nan"), -float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_non_finite_conv_pre_activation_makes_the_status_undefined(value, channels_last):
    from jumpstart.core.status import NonFiniteError

    net = _conv_net(channels_last)
    x = torch.randn(4, 2, 5, 5)
    x[2, 1, 3, 4] = value  # reaches a 3x3 patch of every channel of the first layer
    with pytest.raises(NonFiniteError, match="layer 1: pre-activations hold NaN or inf"):
        activation_status(net, x)
