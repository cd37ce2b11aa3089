"""The Jumpstart regularizer: hooks, aggregation (CPAIOR eq. (7)), errors."""

import math

import pytest
import torch
from torch import nn

from jumpstart import Jumpstart
from jumpstart.core.deficits import Deficits, margin_deficits
from jumpstart.core.regularizer import aggregate
from jumpstart.models import Rectangular

T = torch.tensor
LAYERS = [
    Deficits(T([0.0, 2.0]), T([1.0, 0.0]), T([1.0, 0.0, 3.0]), T([0.0, 2.0, 0.0])),
    Deficits(T([4.0]), T([0.0]), T([0.0, 0.0, 1.0]), T([1.0, 1.0, 1.0])),
]
ALL = ("unit+", "unit-", "point+", "point-")
# Worked by hand. s = 0.5, all constraints: unit terms [.5, 1, 2] (sum 3.5),
# point terms [.5, 1, 1.5, .5, .5, 1] (sum 5), squares 5.25 + 5.
# ("unit+",): unit terms .5 * [0, 2, 4] = [0, 1, 2].
# ("unit+", "point-"): units [0, 1, 2], points .5 * [0, 2, 0, 1, 1, 1].
# s = 0.25, all: units [.75, .5, 1] (sum 2.25), points [.25, 1.5, .75, .75, .75, 1] (sum 5).
CASES = [
    (ALL, 0.5, "balanced", 3.5 / 3 + 5 / 6),
    (ALL, 0.5, "sum", 8.5),
    (ALL, 0.5, "mean", 8.5 / 9),
    (ALL, 0.5, "sq", 10.25),
    (ALL, 0.5, "l2", math.sqrt(10.25)),
    (("unit+",), 0.5, "balanced", 1.0),
    (("unit+",), 0.5, "sum", 3.0),
    (("unit+",), 0.5, "mean", 1.0),
    (("unit+",), 0.5, "sq", 5.0),
    (("unit+",), 0.5, "l2", math.sqrt(5.0)),
    (("unit+", "point-"), 0.5, "balanced", 1.0 + 2.5 / 6),
    (("unit+", "point-"), 0.5, "sum", 5.5),
    (("unit+", "point-"), 0.5, "mean", 5.5 / 9),
    (("unit+", "point-"), 0.5, "sq", 6.75),
    (("unit+", "point-"), 0.5, "l2", math.sqrt(6.75)),
    (("point+", "point-"), 0.5, "balanced", 5 / 6),
    (("point+", "point-"), 0.5, "sum", 5.0),
    (("unit-",), 0.5, "sq", 0.25),
    (ALL, 0.25, "balanced", 2.25 / 3 + 5 / 6),
    (ALL, 0.25, "sum", 7.25),
    (ALL, 1.0, "sum", 6.0 + 5.0),  # positives only, full weight: 0+2+4 + 1+0+3+0+0+1
]


@pytest.mark.parametrize("constraints, s, aggregation, expected", CASES)
def test_aggregate_by_hand(constraints, s, aggregation, expected):
    got = aggregate(LAYERS, aggregation=aggregation, sign_balance=s, constraints=constraints)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected)


def test_l2_of_all_satisfied_has_zero_gradient():
    z = torch.zeros(3, requires_grad=True)
    aggregate([Deficits(z[:1], z[:1], z, z)], aggregation="l2").backward()
    assert torch.equal(z.grad, torch.zeros(3))


def _pre_activations(model: Rectangular, x):
    gs = []
    for lin in model.linears:
        g = lin(x)
        gs.append(g)
        x = torch.relu(g)
    return gs


@pytest.mark.parametrize("aggregation", ["balanced", "sum", "mean", "l2", "sq"])
@pytest.mark.parametrize("tie_break", ["single", "average"])
def test_parameter_gradients_equal_naive_formula(aggregation, tie_break):
    model = Rectangular(4, 3, 2, 1).double()
    x = torch.randn(10, 2, dtype=torch.float64)
    if tie_break == "average":
        x = torch.cat([x, x[:3]])  # duplicate rows: tied extremes in every unit
    js = Jumpstart(model, aggregation=aggregation, tie_break=tie_break, margin=0.5)
    model(x)
    got = js.penalty()
    ours = torch.autograd.grad(got, list(model.parameters()), allow_unused=True)
    naive_layers = []
    for g in _pre_activations(model, x):
        if tie_break == "average":
            ext = g.amax(0), g.amin(0), g.amax(1), g.amin(1)
        else:
            ext = g.max(0).values, g.min(0).values, g.max(1).values, g.min(1).values
        naive_layers.append(Deficits(torch.relu(0.5 - ext[0]), torch.relu(0.5 + ext[1]),
                                     torch.relu(0.5 - ext[2]), torch.relu(0.5 + ext[3])))
    penalty = aggregate(naive_layers, aggregation=aggregation)
    ref = torch.autograd.grad(penalty, list(model.parameters()), allow_unused=True)
    assert got.item() == pytest.approx(penalty.item())
    for a, b in zip(ours, ref):
        if b is None:  # the output layer is not penalized
            assert a is None
        else:
            assert torch.allclose(a, b)


class Twice(nn.Module):
    """One ReLU module called twice per forward."""

    def __init__(self):
        super().__init__()
        self.lin1, self.lin2, self.out = nn.Linear(2, 3), nn.Linear(3, 3), nn.Linear(3, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.out(self.act(self.lin2(self.act(self.lin1(x)))))


def test_reused_activation_counts_once_per_call():
    model = Twice()
    x = torch.randn(5, 2)
    js = Jumpstart(model)
    model(x)
    layers = js.deficits()
    assert [l.name for l in layers] == ["act", "act#1"]
    g1 = model.lin1(x)
    g2 = model.lin2(torch.relu(g1))
    for layer, g in zip(layers, (g1, g2)):
        for got, want in zip(layer.deficits, margin_deficits(g)):
            assert torch.allclose(got, want)
    model(x)  # a second forward starts a new pass: still two layers
    assert len(js.deficits()) == 2


def test_eval_and_no_grad_forwards_collect_nothing():
    model = Rectangular(3, 2, 2, 1)
    js = Jumpstart(model)
    with pytest.raises(RuntimeError, match="no pre-activations"):
        js.penalty()
    model.eval()
    model(torch.randn(4, 2))
    with pytest.raises(RuntimeError):
        js.penalty()
    model.train()
    x = torch.randn(6, 2)
    model(x)
    before = js.penalty().item()
    model.eval()
    model(torch.randn(7, 2) * 5)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 2) * 5)
    assert js.penalty().item() == before
    assert js.deficits()[0].deficits.point_pos.shape == (6,)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1, self.lin2, self.out = nn.Linear(2, 4), nn.Linear(4, 4), nn.Linear(4, 1)

    def forward(self, x):
        return self.out(torch.relu(self.lin2(torch.relu(self.lin1(x)))))


def test_functional_activations_are_captured_without_layers():
    model = Functional()
    with pytest.raises(ValueError, match="no activation module of type \\(ReLU\\)"):
        Jumpstart(model, activations=(nn.ReLU,))
    x = torch.randn(5, 2)
    auto = Jumpstart(model)  # functional relus found in the forward
    listed = Jumpstart(model, layers=[model.lin1, model.lin2])
    model(x)
    assert [l.name for l in auto.deficits()] == ["relu()", "relu()#1"]
    assert [l.name for l in listed.deficits()] == ["lin1", "lin2"]
    g1 = model.lin1(x)
    g2 = model.lin2(torch.relu(g1))
    for layers in (auto.deficits(), listed.deficits()):
        for layer, g in zip(layers, (g1, g2)):
            for a, b in zip(layer.deficits, margin_deficits(g)):
                assert torch.allclose(a, b)
    assert auto.penalty().item() == pytest.approx(listed.penalty().item())
    model(x)  # later forwards keep the mode on: same layers
    assert [l.name for l in auto.deficits()] == ["relu()", "relu()#1"]


def test_logits_are_never_penalized():
    model = Functional()
    js = Jumpstart(model, layers=[model.lin1, model.out])
    with pytest.raises(ValueError, match="logits"):
        model(torch.randn(3, 2))
    js.remove()


def test_remove_and_context_manager_detach_hooks():
    model = Rectangular(2, 2, 2, 1)
    with Jumpstart(model) as js:
        model(torch.randn(3, 2))
        assert js.penalty() >= 0
    assert not any(m._forward_pre_hooks for m in model.modules())
    with pytest.raises(RuntimeError):
        js.penalty()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"aggregation": "l1"}, "'l1'"),
    ({"constraints": ("unit+", "units")}, "'units'"),
    ({"constraints": ()}, "constraints"),
    ({"tie_break": "random"}, "'random'"),
    ({"margin": 0}, "margin"),
    ({"margin": -0.5}, "-0.5"),
    ({"sign_balance": 1.5}, "1.5"),
    ({"sign_balance": -0.1}, "-0.1"),
    ({"activations": (nn.GELU,)}, "GELU"),
    ({"layers": [nn.Linear(2, 2)]}, "not a submodule"),
])
def test_bad_options_raise_value_error(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace("+", r"\+")):
        Jumpstart(Rectangular(2, 2, 2, 1), **kwargs)


def test_error_message_lists_allowed_values():
    with pytest.raises(ValueError, match="balanced, sum, mean, l2, sq"):
        Jumpstart(Rectangular(2, 2, 2, 1), aggregation="max")


def test_penalty_on_conv_pre_activations_reduces_space():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    x = torch.randn(4, 1, 4, 4)
    js = Jumpstart(model, aggregation="sum")
    model(x)
    d = js.deficits()[0].deficits
    assert d.unit_pos.shape == (3,) and d.point_pos.shape == (4,)
    assert js.penalty().item() == pytest.approx(
        aggregate([margin_deficits(model[0](x))], aggregation="sum").item(), rel=1e-6)


def test_a_listed_layer_feeding_a_sum_keeps_the_other_summands_gradient():
    """``layers=[conv2]`` where conv2's output is added to a residual: the sum's
    backward hands one gradient tensor to both summands, so the deficits'
    gradient must not be written into it (the residual path would carry it
    too). Gradients equal an independent dense computation."""

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 1)

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            return self.fc((self.conv2(h) + h).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model, x = Residual(), torch.randn(4, 2, 5, 5)
    js = Jumpstart(model, layers=[model.conv2], margin=5.0)  # every constraint violated
    (model(x).sum() + js.penalty()).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    js.remove()
    h = torch.relu(model.conv1(x))
    g = model.conv2(h)
    out = model.fc((g + h).mean(dim=(2, 3)))
    (out.sum() + aggregate([margin_deficits(g, 5.0)])).backward()
    for a, p in zip(got, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)
