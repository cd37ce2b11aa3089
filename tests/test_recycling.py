"""ReDo (redo) and Continual Backprop (cbp): scores, utilities, maturity and
the replacement accumulator, worked out by hand on tiny nets."""

import pytest
import torch
from torch import nn

from jumpstart.core.status import activation_status, dormant_scores
from jumpstart.techniques import TrainContext, make_technique


def test_dormant_scores_by_hand():
    # mean |h| = (0, 2, 2): layer mean 4/3, scores (0, 1.5, 1.5)
    assert dormant_scores(torch.tensor([0.0, 2.0, 2.0])).tolist() == pytest.approx([0, 1.5, 1.5])
    assert dormant_scores(torch.zeros(3)).tolist() == [0, 0, 0]  # all-zero layer: all dormant


def test_activation_status_reports_the_dormant_ratio_beside_dead():
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [0.0], [-1.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 0.1, 0.0]))
    status = activation_status(net, torch.tensor([[1.0], [2.0]]))
    # mean |h| = (1.5, 0.1, 0): layer mean 1.6/3, scores (2.8125, 0.1875, 0)
    assert status.dormant_scores()[0] == pytest.approx([2.8125, 0.1875, 0.0])
    assert status.unit_dead_ratio == pytest.approx(1 / 3)
    assert status.unit_dormant_ratio == pytest.approx(1 / 3)  # tau 0.1
    assert status.dormant_ratio(0.2) == pytest.approx(2 / 3)  # the weak unit counts too
    assert status.ratios()["unit_dormant_ratio"] == pytest.approx(1 / 3)
    assert status.to_frame()["dormant_units"].tolist() == [1]


def test_dormant_ratio_of_a_conv_layer_averages_batch_and_positions():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 0.05]).view(2, 1, 1, 1))
        net[0].bias.zero_()
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    status = activation_status(net, x)
    # channel means 2.5 and 0.125: layer mean 1.3125, scores 1.905 and 0.0952
    assert status.dormant_scores()[0] == pytest.approx([2.5 / 1.3125, 0.125 / 1.3125])
    assert status.unit_dormant_ratio == 0.5 and status.unit_dead_ratio == 0


def _net(*widths):
    """A ReLU chain 2 -> widths -> 2 (default 4, 3); module k's ReLU is k + 1."""
    torch.manual_seed(0)
    dims = [2, *(widths or (4, 3))]
    mods = [m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*mods, nn.Linear(dims[-1], 2))


def _stepped(net, x):
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net(x).pow(2).sum().backward()
    opt.step()
    return opt


def test_redo_recycles_the_dormant_units_as_the_official_code():
    net = _net(4)
    x = torch.randn(64, 2)
    opt = _stepped(net, x)
    with torch.no_grad():  # unit 1 dead (score 0), unit 3 weak, units 0 and 2 as drawn
        net[0].weight[1] = 0
        net[0].bias[1] = -1.0
        net[0].weight[3] = 0
        net[0].bias[3] = 1e-3
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bias_state = opt.state[net[0].bias]["exp_avg"].clone()
    redo = make_technique("redo", redo_every=10, redo_batch=64)
    ctx = TrainContext(net, opt, step=9, batch=(x, None))
    redo.attach(ctx)
    redo.after_step(ctx)  # step 9: remembers the batch, no reset
    assert torch.equal(net[0].weight, before["0.weight"])
    h = torch.relu(net[0](x)).abs().mean(0).detach()
    dormant = (dormant_scores(h) <= 0.1).nonzero().flatten().tolist()
    assert 1 in dormant and 3 in dormant
    ctx.step = 10
    redo.after_step(ctx)
    w = net[0].weight.detach()
    for u in range(4):
        changed = not torch.equal(w[u], before["0.weight"][u])
        assert changed == (u in dormant)
        assert bool((net[2].weight[:, u] == 0).all()) == (u in dormant)
    assert all(net[0].bias[u] == 0 for u in dormant)
    state = opt.state[net[0].weight]
    assert state["exp_avg"][dormant].abs().sum() == 0
    assert opt.state[net[2].weight]["exp_avg"][:, dormant].abs().sum() == 0
    assert torch.equal(opt.state[net[0].bias]["exp_avg"], bias_state)  # bias state kept
    assert float(state["step"]) == 1
    redo.after_epoch(ctx)
    assert set(ctx.logged) == {"dormant/0", "dormant"}


def test_redo_goes_through_the_layers_in_order():
    """Layer by layer, input to output (as the official code): a recycled
    unit's outgoing weights are 0 except in reader rows that are recycled
    themselves (re-drawn afterwards)."""
    net = _net(4, 3)
    x = torch.randn(64, 2)
    with torch.no_grad():
        net[0].weight[1] = 0
        net[0].bias[1] = -1.0
        net[2].weight[2] = 0
        net[2].bias[2] = -1.0
    redo = make_technique("redo", redo_every=1)
    ctx = TrainContext(net, _stepped(net, x), step=1, batch=(x, None))
    redo.attach(ctx)
    before = net[2].weight.detach().clone()
    redo.after_step(ctx)
    after = net[2].weight.detach()
    assert (net[4].weight[:, 2] == 0).all()
    redrawn = [r for r in range(3) if not torch.equal(after[r, [0, 2, 3]], before[r, [0, 2, 3]])]
    assert 2 in redrawn and after[2, 1] != 0  # re-drawn after layer 0 zeroed its column 1
    assert all(after[r, 1] == 0 for r in range(3) if r not in redrawn)


def _cbp_step(cbp, ctx, x):
    """One step's hook after a training forward of ``x`` (CBP's hooks watch
    it); returns the first layer's pre-activations."""
    ctx.model.train()
    ctx.model(x)
    cbp.after_step(ctx)
    with torch.no_grad():
        return ctx.model[0](x)


def test_cbp_utility_with_bias_correction_by_hand():
    net = _net()
    x = torch.randn(16, 2)
    opt = _stepped(net, x)
    cbp = make_technique("cbp", cbp_rho=0.0, cbp_maturity=1, cbp_eta=0.5)
    ctx = TrainContext(net, opt)
    cbp.attach(ctx)
    g0 = _cbp_step(cbp, ctx, x)
    h = torch.relu(g0).mean(0)
    contribution = h.abs() * net[2].weight.detach().abs().sum(0)
    state = cbp.state[0]
    assert state["util"] == pytest.approx((0.5 * contribution).tolist())
    _cbp_step(cbp, ctx, x)
    assert state["util"] == pytest.approx((0.75 * contribution).tolist())
    # bias corrected: 0.75 c / (1 - 0.5^2) = c
    corrected = state["util"] / (1 - 0.5 ** state["age"].double())
    assert corrected.float().tolist() == pytest.approx(contribution.tolist())
    assert state["age"].tolist() == [2, 2, 2, 2]


def test_cbp_replaces_the_lowest_mature_units_and_absorbs_their_mean():
    net = _net(4)
    x = torch.randn(16, 2)
    opt = _stepped(net, x)
    cbp = make_technique("cbp", cbp_rho=0.5, cbp_maturity=1, cbp_eta=0.5)
    ctx = TrainContext(net, opt)
    cbp.attach(ctx)
    _cbp_step(cbp, ctx, x)  # age 1: not mature (age > m), no debt
    assert cbp.state[0]["debt"] == 0
    before = {k: v.clone() for k, v in net.state_dict().items()}
    h = torch.relu(net[0](x)).mean(0).detach()
    contribution = h * net[2].weight.detach().abs().sum(0)
    lowest = contribution.argsort()[:2].tolist()  # 4 mature units x 0.5 = 2 replaced
    _cbp_step(cbp, ctx, x)
    w = net[0].weight.detach()
    replaced = [u for u in range(4) if not torch.equal(w[u], before["0.weight"][u])]
    assert sorted(replaced) == sorted(lowest)
    assert (net[2].weight[:, lowest] == 0).all()
    assert net[0].bias[lowest].abs().sum() == 0
    # the reader's bias absorbed w[:, i] * f_i, f bias-corrected = h here
    absorbed = before["2.bias"] + before["2.weight"][:, lowest] @ h[lowest]
    assert torch.allclose(net[2].bias, absorbed, atol=1e-6)
    assert cbp.state[0]["age"][lowest].tolist() == [0, 0]
    assert cbp.state[0]["util"][lowest].tolist() == [0, 0]
    assert cbp.state[0]["debt"] == 0
    assert opt.state[net[0].weight]["exp_avg"][lowest].abs().sum() == 0
    assert opt.state[net[0].bias]["exp_avg"][lowest].abs().sum() == 0
    assert opt.state[net[2].weight]["exp_avg"][:, lowest].abs().sum() == 0
    # next step: 2 mature units in layer 0 (the replaced are age 1): debt 1.0, one more
    _cbp_step(cbp, ctx, x)
    assert cbp.state[0]["debt"] == pytest.approx(0.0)
    assert cbp.state[0]["age"].tolist().count(0) == 1


def test_cbp_builds_no_debt_before_maturity():
    net = _net()
    x = torch.randn(8, 2)
    cbp = make_technique("cbp", cbp_rho=0.5, cbp_maturity=3)
    ctx = TrainContext(net, _stepped(net, x))
    cbp.attach(ctx)
    for _ in range(3):
        _cbp_step(cbp, ctx, x)
    assert cbp.state[0]["debt"] == 0 and cbp.replaced == 0
    _cbp_step(cbp, ctx, x)  # now 4 mature units: debt 2, two replaced (not 2 + 3 * 2)
    assert cbp.replaced == 2 + 1  # two in layer 0, one of three in layer 2 (debt 1.5)


def test_options_are_checked():
    with pytest.raises(ValueError, match="redo_tau must be a number >= 0"):
        make_technique("redo", redo_tau=-0.1)
    with pytest.raises(ValueError, match="cbp_eta must be a number in"):
        make_technique("cbp", cbp_eta=1.0)
    redo = make_technique("redo")
    redo.attach(TrainContext(nn.LSTM(2, 2)))
    assert redo.layers is None  # not a toolkit net: traced on its first training batch


def test_dormant_ratio_of_gelu_and_in_place_relu_layers():
    """The status applies each layer's own activation, out of place and
    without re-entering its hooks."""
    x = torch.tensor([[-1.0], [2.0]])
    gelu = nn.Sequential(nn.Linear(1, 2), nn.GELU(), nn.Linear(2, 1))
    relu = nn.Sequential(nn.Linear(1, 2), nn.ReLU(inplace=True), nn.Linear(2, 1))
    for net in (gelu, relu):
        with torch.no_grad():
            net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
            net[0].bias.zero_()
    s_gelu = activation_status(gelu, x).unit_abs_mean[0]
    g = torch.tensor([[-1.0, 1.0], [2.0, -2.0]])
    assert s_gelu == pytest.approx(nn.functional.gelu(g).abs().mean(0).tolist())
    status = activation_status(relu, x)
    assert status.unit_abs_mean[0] == pytest.approx([1.0, 0.5])
    assert status.unit_status[0].tolist() == [2, 2]  # both nonlinear: g kept intact
