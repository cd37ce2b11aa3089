"""Unit surgery (jumpstart.surgery), by hand on small nets: exactly the chosen
entries change, the function is kept where promised, the optimizer follows."""

import pytest
import torch
from torch import nn

from jumpstart.core.status import DEAD, activation_status
from jumpstart.models import MoonsConv, Rectangular, resnet18
from jumpstart.surgery import (absorb, draw, hidden_layers, outgoing_weight_sum, prune_dead,
                               prune_units, reinit_units, widen, zero_outgoing)


def three_layer(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(),
                         nn.Linear(3, 2))


def adam_after_one_step(model, x):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(x).pow(2).sum().backward()
    opt.step()
    return opt


def test_hidden_layers_of_each_family():
    net = three_layer()
    seq = hidden_layers(net)
    assert [(l.name, l.width, l.activation_name) for l in seq] == [("0", 4, "1"), ("2", 3, "3")]
    assert seq[0].readers[0].module is net[2] and seq[1].readers[0].module is net[4]
    rect = hidden_layers(Rectangular(3, 5, 2, 3))
    assert [l.name for l in rect] == ["linears.0", "linears.1", "linears.2"]
    conv = hidden_layers(Rectangular(2, 3, 1, 4, kind="conv", head="flatten", input_size=(4, 5)))
    assert (conv[-1].readers[0].group, conv[-1].readers[0].copies) == (20, 1)
    maxavg = hidden_layers(Rectangular(2, 3, 1, 4, kind="conv", head="maxavg"))
    assert (maxavg[-1].readers[0].group, maxavg[-1].readers[0].copies) == (1, 2)
    moons = hidden_layers(MoonsConv(3, 4))
    assert (moons[-1].readers[0].group, len(moons)) == (2, 3)
    res = hidden_layers(resnet18(num_classes=3))
    assert len(res) == 8 and all(l.norm is not None for l in res)  # one per basic block
    assert not hidden_layers(Rectangular(4, 3, 2, 2, skip=2))[0].resizable
    with pytest.raises(ValueError, match="pass example_inputs"):
        hidden_layers(nn.LSTM(2, 3))


def test_reader_columns_by_hand():
    layer = hidden_layers(Rectangular(1, 3, 1, 2, kind="conv", head="maxavg"))[0]
    # max features 0..2 then avg features 3..5: unit 1 is read at columns 1 and 4
    assert layer.readers[0].columns(torch.tensor([1]), 3).tolist() == [1, 4]
    flat = hidden_layers(MoonsConv(1, 3))[0]
    # flatten of (N, 3, 2, 1): unit 2 is columns 4, 5
    assert flat.readers[0].columns(torch.tensor([2, 0]), 3).tolist() == [4, 5, 0, 1]


def test_reinit_touches_only_the_chosen_rows_and_zeroes_their_state():
    net = three_layer()
    x = torch.randn(8, 2)
    opt = adam_after_one_step(net, x)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    moments = opt.state[net[0].weight]["exp_avg"].clone()
    layer = hidden_layers(net)[0]
    gen = torch.Generator().manual_seed(5)
    touched = reinit_units(layer, [1, 3], init="glorot", optimizer=opt, generator=gen)
    expected = torch.empty(4, 2)
    nn.init.xavier_uniform_(expected, generator=torch.Generator().manual_seed(5))
    w = net[0].weight.detach()
    assert torch.equal(w[[1, 3]], expected[[1, 3]])
    assert torch.equal(w[[0, 2]], before["0.weight"][[0, 2]])
    assert net[0].bias[[1, 3]].tolist() == [0, 0]
    assert torch.equal(net[0].bias[[0, 2]], before["0.bias"][[0, 2]])
    for key in ("2.weight", "2.bias", "4.weight", "4.bias"):
        assert torch.equal(net.state_dict()[key], before[key])
    state = opt.state[net[0].weight]
    assert state["exp_avg"][[1, 3]].abs().sum() == 0 and state["exp_avg_sq"][[1, 3]].abs().sum() == 0
    assert torch.equal(state["exp_avg"][[0, 2]], moments[[0, 2]])
    assert float(state["step"]) == 1  # the step count is kept
    assert [tuple(p.shape) for p, _ in touched] == [(4, 2), (4,)]


def test_zero_outgoing_silences_exactly_those_units():
    net = three_layer()
    x = torch.randn(16, 2)
    opt = adam_after_one_step(net, x)
    before = net[2].weight.detach().clone()
    zero_outgoing(hidden_layers(net)[0], [0, 2], optimizer=opt)
    w = net[2].weight.detach()
    assert w[:, [0, 2]].abs().sum() == 0 and torch.equal(w[:, [1, 3]], before[:, [1, 3]])
    assert opt.state[net[2].weight]["exp_avg"][:, [0, 2]].abs().sum() == 0
    # the output equals the net with those units' outputs masked to 0
    h = torch.relu(net[0](x))
    h[:, [0, 2]] = 0
    with torch.no_grad():
        manual = net[4](torch.relu(nn.functional.linear(h, before, net[2].bias)))
        assert torch.allclose(net(x), manual, atol=1e-6)


@pytest.mark.parametrize("make", [
    three_layer,
    lambda: Rectangular(3, 4, 2, 3),
    lambda: Rectangular(3, 4, 2, 3, norm="batch"),
    lambda: Rectangular(2, 3, 1, 4, kind="conv", head="flatten", input_size=(4, 4)),
    lambda: Rectangular(2, 3, 1, 4, kind="conv", head="maxavg"),
    lambda: MoonsConv(3, 4),
])
def test_widen_keeps_the_function(make):
    torch.manual_seed(0)
    net = make().eval()
    x = torch.randn(6, 2) if not isinstance(net, Rectangular) or net.kind == "dense" else \
        torch.randn(6, 1, 4, 4)
    with torch.no_grad():
        before = net(x)
    layer = hidden_layers(net)[0]
    width = layer.width
    widen(layer, 3)
    assert layer.width == width + 3
    # the same function in exact arithmetic; bitwise equality is up to the kernels'
    # vectorization at the new width (BatchNorm1d at 7 features against 4 moved one
    # output by one ulp, 6e-8, on an AMD EPYC), so: equal to float32 rounding
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, rtol=1e-6, atol=1e-7)


def test_widen_moves_the_optimizer_state():
    net = three_layer()
    x = torch.randn(8, 2)
    opt = adam_after_one_step(net, x)
    old_w, old_next = net[0].weight, net[2].weight
    m_w = opt.state[old_w]["exp_avg"].clone()
    m_next = opt.state[old_next]["exp_avg"].clone()
    new = widen(hidden_layers(net)[0], 2, optimizer=opt)
    assert net[0].weight.shape == (6, 2) and net[2].weight.shape == (3, 6)
    assert net[0].out_features == 6 and net[2].in_features == 6
    params = opt.param_groups[0]["params"]
    assert any(p is net[0].weight for p in params) and not any(p is old_w for p in params)
    state = opt.state[net[0].weight]
    assert torch.equal(state["exp_avg"][:4], m_w) and state["exp_avg"][4:].abs().sum() == 0
    assert torch.equal(opt.state[net[2].weight]["exp_avg"][:, :4], m_next)
    assert net[2].weight[:, 4:].abs().sum() == 0
    assert [tuple(p.shape) for p, _ in new] == [(6, 2), (3, 6)]
    opt.zero_grad()
    net(x).pow(2).sum().backward()
    opt.step()  # the optimizer runs on the new parameters
    assert net[2].weight[:, 4:].abs().sum() > 0


def test_prune_units_absorbs_constant_outputs():
    net = three_layer()
    with torch.no_grad():  # unit 1 of layer 0 outputs the constant 0.7, unit 3 is dead
        net[0].weight[1] = 0
        net[0].bias[1] = 0.7
        net[0].weight[3] = 0
        net[0].bias[3] = -1.0
    x = torch.randn(32, 2)
    with torch.no_grad():
        before = net(x)
        expected_bias = net[2].bias + net[2].weight[:, 1] * 0.7
    prune_units(hidden_layers(net)[0], [1, 3], values=[0.7, 0.0])
    assert net[0].weight.shape == (2, 2) and net[2].weight.shape == (3, 2)
    assert torch.allclose(net[2].bias, expected_bias)
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-6)


def test_absorb_through_a_flatten_reader_sums_the_positions():
    net = MoonsConv(2, 3)
    layer = hidden_layers(net)[-1]
    w = net.output.weight.detach().clone()  # (1, 6): unit u at columns 2u, 2u+1
    b = net.output.bias.detach().clone()
    absorb(layer, [2], [0.5])
    assert torch.allclose(net.output.bias, b + 0.5 * (w[0, 4] + w[0, 5]))


def test_outgoing_weight_sum_by_hand():
    net = three_layer()
    layer = hidden_layers(net)[0]
    assert torch.allclose(outgoing_weight_sum(layer), net[2].weight.detach().abs().sum(0))
    moons = MoonsConv(2, 3)
    last = hidden_layers(moons)[-1]
    w = moons.output.weight.detach().abs()[0]
    assert torch.allclose(outgoing_weight_sum(last), w.view(3, 2).sum(1))


def test_unit_checks():
    layer = hidden_layers(three_layer())[0]
    with pytest.raises(ValueError, match=r"units must be in \[0, 4\)"):
        reinit_units(layer, [4])
    with pytest.raises(ValueError, match="must not repeat"):
        zero_outgoing(layer, [1, 1])
    with pytest.raises(ValueError, match="unknown init"):
        draw((3, 3), "he")
    with pytest.raises(ValueError, match="residual connection"):
        widen(hidden_layers(Rectangular(4, 3, 2, 2, skip=2))[1], 1)
    with pytest.raises(ValueError, match="k must be"):
        widen(layer, 0)


def _planted(depth=3, width=4, dead=None):
    torch.manual_seed(3)
    net = Rectangular(depth, width, 2, 3)
    with torch.no_grad():
        for layer in net.linears:  # positive weights and biases: no unit dead by chance
            layer.weight.copy_(0.5 + 0.1 * torch.randn_like(layer.weight))
            layer.bias.fill_(0.1)
        for i, units in (dead or {}).items():
            net.linears[i].weight[units] = 0
            net.linears[i].bias[units] = -1.0
    return net


def test_prune_dead_removes_exactly_the_planted_units():
    net = _planted(dead={0: [2], 2: [0, 3]})
    x = torch.randn(200, 2)
    status = activation_status(net, x)
    assert [list((u == DEAD).nonzero()[0]) for u in status.unit_status] == [[2], [], [0, 3]]
    pruned, report = prune_dead(net, x)
    assert [l.out_features for l in pruned.linears] == [3, 4, 2]
    # parameters by hand: (2*4+4) + (4*4+4) + (4*4+4) + (4*3+3) = 67 before;
    # (2*3+3) + (3*4+4) + (4*2+2) + (2*3+3) = 44 after
    totals = report.totals()
    assert (totals["params_before"], totals["params_after"]) == (67, 44)
    assert totals["macs_before"] == 2 * 4 + 4 * 4 + 4 * 4 + 4 * 3
    assert report.relative_diff <= 1e-5 and report.emptied == []
    with torch.no_grad():
        assert torch.allclose(pruned(x), net(x), atol=1e-5)
    assert [l.out_features for l in net.linears] == [4, 4, 4]  # the input model is untouched


def test_prune_dead_empties_a_dead_layer_and_everything_before_it():
    net = _planted(dead={1: [0, 1, 2, 3]})
    x = torch.randn(100, 2)
    pruned, report = prune_dead(net, x)
    assert [l.out_features for l in pruned.linears] == [0, 0, 4]
    assert report.emptied == ["linears.0", "linears.1"]
    with torch.no_grad():
        assert torch.allclose(pruned(x), net(x), atol=1e-6)


def test_prune_dead_conv_keeps_one_silenced_unit():
    torch.manual_seed(0)
    net = Rectangular(2, 3, 1, 2, kind="conv", head="maxavg")
    with torch.no_grad():
        net.linears[1].weight.zero_()
        net.linears[1].bias.fill_(-1.0)
    x = torch.randn(20, 1, 5, 5)
    pruned, report = prune_dead(net, x)
    assert [l.out_channels for l in pruned.linears] == [1, 1]
    with torch.no_grad():
        assert torch.allclose(pruned(x), net(x), atol=1e-6)
    assert report.totals()["params_after"] < report.totals()["params_before"]


def test_resnet_block_convs_widen_and_prune_with_batchnorm():
    torch.manual_seed(0)
    net = resnet18(num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    layer = hidden_layers(net)[0]  # conv 1 of the first basic block, then BN and ReLU
    widen(layer, 4)
    assert layer.norm.num_features == 68 and layer.readers[0].module.in_channels == 68
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-5)
        layer.norm.weight[[1, 5]] = 0  # channels 1 and 5: BN outputs -1 everywhere, dead
        layer.norm.bias[[1, 5]] = -1.0
        planted = net(x)
    status = activation_status(net, x)
    codes = status.unit_status[status.layer_names.index(layer.activation_name)]
    assert codes[1] == DEAD and codes[5] == DEAD  # and any dead by chance on 2 images
    pruned, report = prune_dead(net, x)
    first = hidden_layers(pruned)[0]
    assert first.width == 68 - int((codes == DEAD).sum())
    assert report.layers[1]["units_after"] == first.width
    with torch.no_grad():
        assert torch.allclose(pruned(x), planted, atol=1e-5)


def test_absorb_into_a_batchnorm_reader_keeps_eval_logits():
    torch.manual_seed(1)
    net = Rectangular(2, 3, 2, 2, norm="batch").eval()
    layer = hidden_layers(net)[0]
    with torch.no_grad():  # unit 1 outputs ReLU(beta) = 0.7 whatever the input
        net.linears[0].weight[1] = 0
        layer.norm.bias[1] = 0.7
        layer.norm.running_mean[1] = 0
    x = torch.randn(16, 2)
    with torch.no_grad():
        before = net(x)
        mean_before = layer.readers[0].norm.running_mean.clone()
    assert net.linears[1].bias is None  # BN layers carry no bias: the BN's mean moves
    w = net.linears[1].weight.detach().clone()
    absorb(layer, [1], [0.7])
    zero_outgoing(layer, [1])
    assert torch.allclose(layer.readers[0].norm.running_mean, mean_before - 0.7 * w[:, 1])
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-5)


def test_one_activation_module_for_several_layers_is_refused():
    act = nn.ReLU()
    net = nn.Sequential(nn.Linear(2, 3), act, nn.Linear(3, 3), act, nn.Linear(3, 1))
    with pytest.raises(ValueError, match="one activation module per hidden layer; 1 serve"):
        hidden_layers(net)


def test_decorrelated_init_of_width_one_stays_finite():
    net = Rectangular(3, 1, 2, 1, init="decorrelated")
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_fold_linear_folds_a_dependent_always_active_unit_by_hand():
    """Three units reading two features, all active on [0, 1]^2:
    g2 = g0 + g1 - 1.5 (w2 = w0 + w1, b2 = b0 + b1 - 1.5), so one folds."""
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        net[0].bias.copy_(torch.tensor([1.0, 1.0, 0.5]))
        net[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]))
        net[2].bias.zero_()
    x = torch.rand(50, 2)
    with torch.no_grad():
        before = net(x)
    pruned, report = prune_dead(net, x, fold=True)
    assert report.folded == {"0": 1} and pruned[0].out_features == 2
    with torch.no_grad():
        assert torch.allclose(pruned(x), before, atol=1e-5)
        # by hand at x = (0.25, 0.5): g = (1.25, 1.5, 1.25); logits (1*1.25 + 2*1.5 + 3*1.25,
        # 1.5 - 1.25) = (8.0, 0.25)
        assert pruned(torch.tensor([[0.25, 0.5]]))[0].tolist() == pytest.approx([8.0, 0.25])
    assert prune_dead(net, x)[1].folded == {}  # not folded unless asked


def test_fold_linear_leaves_independent_units():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3))
        net[0].bias.fill_(1.0)
    x = torch.rand(20, 3)
    assert prune_dead(net, x, fold=True)[1].folded == {}  # rank 3 = 3 active units
