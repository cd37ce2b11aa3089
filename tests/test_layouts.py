"""Real-model patterns: unit axes of every layout, passes that bypass
``model(x)``, in-place activations, checkpointing, spent penalties."""

import shutil
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from jumpstart import Jumpstart, activation_status
from jumpstart.core.deficits import margin_deficits
from jumpstart.core.hooks import PreActivationHooks


class TokenMLP(nn.Module):
    """A transformer block's MLP on ``(N, T, D)``: units are the hidden features."""

    def __init__(self, d=3, hidden=5, classes=2):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.fc2(self.act(self.fc1(x))).mean(dim=1))


class ChannelsLast(nn.Module):
    """A ConvNeXt-style block: conv, permute to NHWC, Linear + ReLU on channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.pw = nn.Linear(4, 6)
        self.relu = nn.ReLU()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = self.conv(x).permute(0, 2, 3, 1)  # (N, H, W, 4)
        return self.head(self.relu(self.pw(h)).mean(dim=(1, 2)))


def test_token_units_are_the_last_dim():
    torch.manual_seed(0)
    model = TokenMLP()
    x = torch.randn(4, 7, 3)  # N = 4 samples, T = 7 tokens, D = 3
    js = Jumpstart(model)
    model(x)
    g = model.fc1(x)  # (4, 7, 5)
    (layer,) = js.deficits()
    d = layer.deficits
    # units: the 5 hidden features, each reduced over samples and tokens
    assert d.unit_pos.shape == (5,) and d.point_pos.shape == (4,)
    assert torch.allclose(d.unit_pos, torch.relu(1 - g.amax(dim=(0, 1))))
    assert torch.allclose(d.unit_neg, torch.relu(1 + g.amin(dim=(0, 1))))
    assert torch.allclose(d.point_pos, torch.relu(1 - g.amax(dim=(1, 2))))
    assert torch.allclose(d.point_neg, torch.relu(1 + g.amin(dim=(1, 2))))
    assert "act" in js.summary() and " 2 " in js.summary().splitlines()[1]
    h = js._hooks.seen["act"]
    assert (h.activation, h.unit_dim, h.units, h.shape, h.guessed) == ("GELU", 2, 5, (4, 7, 5),
                                                                      False)


def test_channels_last_units_and_status_equal_the_permuted_tensor():
    torch.manual_seed(1)
    model = ChannelsLast()
    x = torch.randn(5, 2, 3, 3)
    js = Jumpstart(model, tie_break="average")
    model(x)
    g = model.pw(model.conv(x).permute(0, 2, 3, 1))  # (5, 3, 3, 6): units are the 6
    want = margin_deficits(g.permute(0, 3, 1, 2).contiguous(), tie_break="average")
    for got, ref in zip(js.deficits()[0].deficits, want):
        assert torch.allclose(got, ref)
    # on the moved view (no copy) and on a contiguous copy: same gradients
    for tie_break in ("single", "average"):
        gp = g.detach().requires_grad_()
        grads = []
        for view in (gp.movedim(3, 1), gp.permute(0, 3, 1, 2).contiguous()):
            d = margin_deficits(view, tie_break=tie_break)
            weights = torch.arange(1.0, 1 + sum(v.numel() for v in d))
            grads.append(torch.autograd.grad(torch.cat(d) @ weights, gp)[0])
        assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1])
    status = activation_status(model, x)
    assert [u.size for u in status.unit_status] == [6]
    by_hand = np.where(g.amax(dim=(0, 1, 2)).detach() <= 0, 0,
                       np.where(g.amin(dim=(0, 1, 2)).detach() > 0, 1, 2))
    assert status.unit_status[0].tolist() == by_hand.tolist()
    point = g.detach().reshape(5, -1)
    assert status.point_status[:, 0].tolist() == np.where(
        point.amax(1) <= 0, 0, np.where(point.amin(1) > 0, 1, 2)).tolist()


def test_unit_dim_override_and_its_errors():
    model = TokenMLP()
    x = torch.randn(4, 7, 3)
    js = Jumpstart(model, unit_dim={"act": 1})  # tokens as units, on purpose
    model(x)
    assert js.deficits()[0].deficits.unit_pos.shape == (7,)
    js.remove()
    with pytest.raises(ValueError, match="not hooked: \\['nope'\\]"):
        Jumpstart(model, unit_dim={"nope": 1})
    with pytest.raises(ValueError, match="unit_dim must be an integer"):
        Jumpstart(model, unit_dim=1.5)
    js = Jumpstart(model, unit_dim=5)
    with pytest.raises(ValueError, match="unit_dim 5 is outside the 3 dims of layer act"):
        model(x)
    js.remove()


def test_a_tensor_no_producer_explains_is_marked_guessed():
    class Odd(nn.Module):  # ReLU on a 3-dim tensor that no layer produced
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x).sum(dim=(1, 2), keepdim=True)

    seen = []
    model = Odd()
    hooks = PreActivationHooks(model, lambda n, g: seen.append(g.shape))
    model(torch.zeros(2, 3, 4))
    assert hooks.seen["relu"].guessed and hooks.seen["relu"].unit_dim == 1
    assert "(guessed)" in hooks.summary()
    hooks.remove()


class Features(nn.Module):
    """timm-style: training code calls forward_head(forward_features(x))."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward_features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.forward_features(x))


def test_a_forward_that_bypasses_the_model_is_collected():
    torch.manual_seed(2)
    model = Features()
    js = Jumpstart(model)
    x = torch.randn(6, 3)
    out = model.head(model.forward_features(x))
    got = js.penalty()
    ref = Jumpstart(model)
    model(x)
    assert [d.name for d in js.deficits()] == ["body.1", "body.3"]
    assert got.item() == pytest.approx(ref.penalty().item())
    (out.sum() + got).backward()
    # a second bypassing step starts a fresh pass, named as the first
    model.head(model.forward_features(x * 2))
    assert [d.name for d in js.deficits()] == ["body.1", "body.3"]


def test_a_spent_penalty_is_never_returned_again():
    model = Features()
    js = Jumpstart(model)
    model(torch.randn(5, 3))
    p = js.penalty()
    assert js.penalty().item() == p.item()  # asking again before backward is fine
    p.backward()
    with pytest.raises(RuntimeError, match="already went through a backward"):
        js.penalty()
    with torch.no_grad():
        model(torch.randn(5, 3))  # collects nothing
    with pytest.raises(RuntimeError, match="already went through a backward"):
        js.penalty()
    model(torch.randn(5, 3))
    js.penalty().backward()


def test_a_training_pass_that_captures_nothing_leaves_no_earlier_penalty():
    model = Features()
    js = Jumpstart(model)
    model(torch.randn(5, 3))
    assert js.penalty().item() > 0  # not spent: no backward yet
    for p in model.body.parameters():
        p.requires_grad_(False)  # frozen body: its pre-activations need no gradient
    model(torch.randn(5, 3))  # a training forward with gradients (the head's)
    with pytest.raises(RuntimeError, match="captured no pre-activation"):
        js.penalty()  # before: the first pass's penalty came back
    with torch.no_grad():
        model(torch.randn(5, 3))  # not a training pass: nothing changes
    with pytest.raises(RuntimeError, match="captured no pre-activation"):
        js.penalty()
    for p in model.body.parameters():
        p.requires_grad_(True)
    model(torch.randn(5, 3))
    js.penalty().backward()


def test_average_tie_break_with_an_inplace_relu_equals_out_of_place():
    torch.manual_seed(3)
    grads = []
    for inplace in (False, True):
        torch.manual_seed(3)
        model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(inplace=inplace), nn.Conv2d(3, 3, 1),
                              nn.ReLU(inplace=inplace), nn.Flatten(), nn.Linear(3 * 4, 2))
        js = Jumpstart(model, tie_break="average")
        x = torch.randn(4, 2, 4, 4)
        x[1] = x[0]  # tied extremes
        out = model(x)
        (out.square().mean() + js.penalty()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b)


class Staged(nn.Module):
    def __init__(self, reentrant=None):
        super().__init__()
        self.stage1 = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Linear(5, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)
        self.reentrant = reentrant

    def forward(self, x):
        if self.reentrant is None:
            h = self.stage1(x)
        else:
            h = checkpoint(self.stage1, x, use_reentrant=self.reentrant)
        return self.head(self.stage2(h))


def _step(model, x):
    model.zero_grad()
    js = Jumpstart(model)
    out = model(x)
    p = js.penalty()
    (out.square().mean() + p).backward()
    js.remove()
    return p.item(), [q.grad.clone() for q in model.parameters()]


def test_non_reentrant_checkpointing_equals_no_checkpointing():
    torch.manual_seed(4)
    model = Staged()
    x = torch.randn(8, 3)
    plain = _step(model, x)
    model.reentrant = False
    ckpt = _step(model, x)
    assert ckpt[0] == pytest.approx(plain[0])
    for a, b in zip(ckpt[1], plain[1]):
        assert torch.allclose(a, b)


def test_reentrant_checkpointing_says_which_layers_it_leaves_out():
    model = Staged(reentrant=True)
    x = torch.randn(8, 3, requires_grad=True)
    js = Jumpstart(model)
    with pytest.warns(UserWarning, match="2 hooked layer\\(s\\) ran without gradients.*"
                                         "stage1.1, stage1.3.*use_reentrant=False"):
        model(x)
    assert [d.name for d in js.deficits()] == ["stage2.1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.eval()
        model(x)  # an eval forward warns nothing


def _one_layer(act, weight, bias):
    """x -> Linear(1, 2) with the given rows -> act -> Linear(2, 1)."""
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight).view(2, 1))
        lin.bias.copy_(torch.tensor(bias))
    return nn.Sequential(lin, act, nn.Linear(2, 1))


def test_relu6_saturation_and_leaky_negative_regions():
    from jumpstart.core.activations import LINEAR, NEGATIVE, NONLINEAR, SATURATED

    x = torch.tensor([[1.0], [2.0]])
    # unit 0: g = 5x + 3 in {8, 13}: above 6 everywhere; unit 1: g = x in {1, 2}
    s = activation_status(_one_layer(nn.ReLU6(), [5.0, 1.0], [3.0, 0.0]), x)
    assert s.unit_status[0].tolist() == [SATURATED, LINEAR]
    assert s.point_status[:, 0].tolist() == [NONLINEAR, NONLINEAR]  # pieces differ
    # unit 0: g = -x (negative piece, still passes gradient); unit 1: g = x - 1.5
    s = activation_status(_one_layer(nn.LeakyReLU(0.1), [-1.0, 1.0], [0.0, -1.5]), x)
    assert s.unit_status[0].tolist() == [NEGATIVE, NONLINEAR]
    assert s.unit_dead_ratio == 0.0
    df = s.to_frame()
    assert df["negative_units"].tolist() == [1] and df["dead_units"].tolist() == [0]


def test_activation_modules_are_matched_by_behaviour():
    class MyGELU(nn.Module):  # as timm's: not an nn.GELU
        def forward(self, x):
            return torch.nn.functional.gelu(x)

    class Gate(nn.Module):  # not an activation: left alone
        def forward(self, x):
            return x * torch.sigmoid(x) * 0.5

    model = nn.Sequential(nn.Linear(2, 3), MyGELU(), nn.Linear(3, 3), Gate(), nn.Linear(3, 1))
    js = Jumpstart(model)
    model(torch.randn(4, 2))
    assert [d.name for d in js.deficits()] == ["1"]
    assert js._hooks.seen["1"].activation == "MyGELU"


def test_unsupported_activations_are_listed_and_class_maps_are_not_penalized():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 3), nn.Conv2d(3, 4, 1)

        def forward(self, x):
            h = torch.nn.functional.elu(self.a(x))  # no regions: listed, not hooked
            maps = torch.relu(self.b(torch.relu(h)[:, :, None, None]))  # class maps
            return maps.mean(dim=(2, 3))

    model = Net()
    js = Jumpstart(model)
    with pytest.warns(UserWarning, match="seen but not hooked.*elu x1"):
        model(torch.randn(5, 2))
    assert [d.name for d in js.deficits()] == ["relu()"]  # the maps' relu is not hidden
    x = torch.randn(5, 2)
    model(x)  # later passes: the first relu still hooked, the maps' relu still not
    assert [d.name for d in js.deficits()] == ["relu()"]
    want = margin_deficits(torch.nn.functional.elu(model.a(x)))
    for got, ref in zip(js.deficits()[0].deficits, want):
        assert torch.allclose(got, ref)
    assert [n for n in activation_status(model, torch.randn(5, 2)).layer_names] == \
        ["relu()", "relu()#1"]  # status still shows both


class Reused(nn.Module):
    """One in-place ReLU module called twice, a residual sum."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.relu, self.fc = nn.ReLU(inplace=True), nn.Linear(8, 2)

    def forward(self, x):
        x = self.relu(self.c1(x))
        return self.fc((x + self.relu(self.c2(x))).mean(dim=(2, 3)))


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile's CPU backend needs a C++ compiler")
@pytest.mark.parametrize("make, backend", [(Reused, "inductor"), (lambda: __import__(
    "jumpstart.models.resnet", fromlist=["resnet18"]).resnet18(num_classes=3), "aot_eager")],
    ids=["reused-relu", "resnet18"])
def test_compiled_fullgraph_equals_eager(make, backend):
    # float64: in float32 the compiled model's own logits differ from eager by
    # ~3e-5 relative (inductor's numerics), and the penalty follows them.
    # resnet18 goes through dynamo's full-graph capture and AOT autograd (what
    # the hooks must survive) without inductor's C++ code generation: that
    # took 66 s of the suite's 256 s; the small net covers inductor itself.
    torch._dynamo.reset()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        net = make().double()
        js = Jumpstart(net)
        run = torch.compile(net, fullgraph=True, backend=backend) if compiled else net  # cold
        for _ in range(2):  # a second step reuses the graph and gets a fresh penalty
            net.zero_grad()
            out = run(x)
            p = js.penalty()
            (out.square().mean() + p).backward()
        results.append((p.item(), [q.grad.clone() for q in net.parameters()], len(js.deficits())))
        js.remove()
    (pe, ge, ne), (pc, gc, nc) = results
    assert ne == nc and pc == pytest.approx(pe, rel=1e-6)
    for a, b in zip(ge, gc):  # scale-aware: resnet18's gradients reach 1e4
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6 * float(a.abs().max()))


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_model_takes_a_new_batch_size():
    # a second batch size recompiles with a symbolic batch dim (an epoch's last,
    # smaller batch); the penalty's constant vectors are then built in the graph,
    # not cached from it (the cached ones broke dynamo: "Expected subgraph_vt ...")
    torch._dynamo.reset()
    xs = [torch.randn(n, 3, 8, 8, dtype=torch.float64) for n in (8, 5, 3)]
    penalties = []
    for compiled in (True, False):  # compiled first: no eager pass has run on these shapes
        torch.manual_seed(0)
        net = Reused().double()
        js = Jumpstart(net)
        run = torch.compile(net) if compiled else net
        for x in xs:
            out = run(x)
            p = js.penalty()
            (out.sum() + p).backward()
            penalties += [js.deficits()[0].deficits.point_pos.shape[0], p.item()]
        js.remove()
    compiled, eager = penalties[:6], penalties[6:]
    assert eager[0::2] == compiled[0::2] == [8, 5, 3]  # one point per sample
    assert compiled[1::2] == pytest.approx(eager[1::2], rel=1e-6)


class FunctionalOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.c(torch.nn.functional.relu(self.b(torch.nn.functional.relu(self.a(x)))))


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_functional_activations_raise_instead_of_a_stale_penalty():
    # a traced forward hooks activation modules only: F.relu is not captured there
    torch._dynamo.reset()
    net = FunctionalOnly()
    js = Jumpstart(net)
    x = torch.randn(6, 4)
    net(x)  # eager: both F.relu calls captured
    assert [d.name for d in js.deficits()] == ["relu()", "relu()#1"]
    torch.compile(net)(x)
    with pytest.raises(RuntimeError, match="layers="):
        js.penalty()  # before: the eager pass's penalty came back
    js.remove()


def test_each_functional_call_keeps_its_own_producer_and_parameters():
    """Two calls of one functional kind in one forward (names ``hardtanh()``
    and ``hardtanh()#1``): the second's unit axis follows its own producer
    (a Linear on tokens: the last dim), its pieces its own bounds."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 6)
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            h = nn.functional.hardtanh(self.conv(x), -1.0, 1.0)  # (N, 4, 5, 5): channels
            t = h.flatten(2).transpose(1, 2)  # (N, 25, 4) tokens
            t = nn.functional.hardtanh(self.fc(t), -2.0, 3.0)  # (N, 25, 6): last dim
            return self.head(t.mean(1))

    model = Net()
    js = Jumpstart(model)
    model(torch.randn(3, 3, 5, 5))
    first, second = js._hooks.seen["hardtanh()"], js._hooks.seen["hardtanh()#1"]
    assert (first.unit_dim, first.units) == (1, 4)
    assert (second.unit_dim, second.units, second.guessed) == (2, 6, False)
    assert [b for b, _ in first.pieces] == [-1.0, 1.0, float("inf")]
    assert [b for b, _ in second.pieces] == [-2.0, 3.0, float("inf")]
    g = torch.linspace(-4, 4, 9)
    assert torch.equal(second.post(g), g.clamp(-2.0, 3.0))
