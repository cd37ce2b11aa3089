"""Techniques: registry, combinations, and what each one changes."""

import pytest
import torch
from torch import nn

from jumpstart.core import Jumpstart, aggregate, margin_deficits, member_deficits
from jumpstart.models import Rectangular
from jumpstart.techniques import (TECHNIQUES, Combined, Technique, TrainContext, make_technique,
                                  register, technique_options)

PLAIN = {"activation": "relu", "norm": None, "skip": None}


def test_registry_names_and_unknowns():
    assert {"baseline", "jumpstart", "batchnorm", "skip", "gelu"} <= set(TECHNIQUES)
    with pytest.raises(ValueError, match="unknown or repeated technique in 'dropout'"):
        make_technique("dropout")
    with pytest.raises(ValueError, match="unknown or repeated"):
        make_technique("skip+skip")
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['lam'\]"):
        make_technique("batchnorm", lam=0.1)
    with pytest.raises(ValueError, match="skip_every must be an integer >= 1; got 0"):
        make_technique("skip", skip_every=0)


def test_register_rejects_taken_names_and_shared_options():
    class Again(Technique):
        name = "gelu"

    class Shares(Technique):
        name = "other"
        options = {"lam": TECHNIQUES["jumpstart"].options["lam"]}

    for cls in (Again, Shares):
        with pytest.raises(ValueError):
            register(cls)


@pytest.mark.parametrize("name, expected", [
    ("baseline", PLAIN),
    ("batchnorm", {**PLAIN, "norm": "batch"}),
    ("skip", {**PLAIN, "skip": 2}),
    ("gelu", {**PLAIN, "activation": "gelu"}),
    ("jumpstart", PLAIN),
    ("jumpstart+batchnorm", {**PLAIN, "norm": "batch"}),
    ("skip+gelu", {**PLAIN, "skip": 2, "activation": "gelu"}),
])
def test_model_options_change_only_their_own_setting(name, expected):
    given = dict(PLAIN)
    assert make_technique(name).model_options(given) == expected
    assert given == PLAIN  # not modified in place


def test_model_family_without_the_option_is_a_clear_error():
    with pytest.raises(ValueError, match="batchnorm' needs a model family with a 'norm'"):
        make_technique("batchnorm").model_options({})


def test_combination_options_and_loss():
    tech = make_technique("jumpstart+skip", lam=0.5, skip_every=3)
    assert isinstance(tech, Combined) and tech.name == "jumpstart+skip"
    assert tech.config["lam"] == 0.5 and tech.config["skip_every"] == 3
    assert set(technique_options("jumpstart+skip")) == {*TECHNIQUES["jumpstart"].options,
                                                        "skip_every"}
    torch.manual_seed(0)
    net = Rectangular(3, 4, 2, 1, **tech.model_options(PLAIN))
    ctx = TrainContext(net)
    tech.attach(ctx)
    net.train()
    net(torch.randn(8, 2))
    js = Jumpstart(net)
    net(torch.randn(8, 2))  # both collect the same pass from here on
    x = torch.randn(8, 2)
    net(x)
    assert torch.allclose(tech.loss(ctx), 0.5 * js.penalty())
    tech.detach(ctx)
    js.remove()
    assert make_technique("skip+gelu").loss(ctx) is None


def test_batchnorm_then_jumpstart_sees_post_bn_pre_activations():
    tech = make_technique("jumpstart+batchnorm", lam=1.0)
    torch.manual_seed(0)
    net = Rectangular(3, 5, 4, 2, **tech.model_options(PLAIN))
    assert all(isinstance(n, nn.BatchNorm1d) for n in net.norms)
    assert all(lin.bias is None for lin in net.linears)  # BN cancels a bias
    seen = []
    for act in net.activations:
        act.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    ctx = TrainContext(net)
    tech.attach(ctx)
    net.train()
    x = torch.randn(16, 4) * 10 + 3
    net(x)
    # post-BN: every unit has batch mean 0 and (biased) variance 1 (gamma 1, beta 0)
    for g in seen:
        assert torch.allclose(g.mean(0), torch.zeros(5), atol=1e-5)
        assert torch.allclose(g.var(0, unbiased=False), torch.ones(5), atol=1e-3)
    expected = aggregate([margin_deficits(g) for g in seen])
    assert torch.allclose(tech.loss(ctx), expected)
    tech.detach(ctx)


def test_jumpstart_hooks_gelu_nets():
    tech = make_technique("jumpstart+gelu", lam=1.0)
    net = Rectangular(4, 3, 2, 1, **tech.model_options(PLAIN))
    assert all(isinstance(a, nn.GELU) for a in net.activations)
    ctx = TrainContext(net)
    tech.attach(ctx)
    net.train()
    net(torch.randn(5, 2))
    assert len(tech.parts[0].regularizer.deficits()) == 4
    tech.detach(ctx)


def test_member_deficits_are_each_members_own():
    torch.manual_seed(0)
    g = torch.randn(3, 7, 4, 2)  # (P, N, C, S)
    d = member_deficits(g, margin=0.5)
    for p in range(3):
        own = margin_deficits(g[p], margin=0.5)
        for a, b in zip(d, own):
            assert torch.allclose(a[p], b)
    # per-member aggregation equals aggregating each member alone
    layers = [member_deficits(torch.randn(3, 6, 4)) for _ in range(2)]
    for agg in ("balanced", "sum", "mean", "l2", "sq"):
        per = aggregate(layers, aggregation=agg)
        assert per.shape == (3,)
        for p in range(3):
            alone = aggregate([type(d)(*(t[p] for t in d)) for d in layers], aggregation=agg)
            assert per[p].item() == pytest.approx(alone.item(), rel=1e-6)


def test_member_deficits_hand_example():
    # member 0: unit 0 max 2 min -1, unit 1 max 0.5 min 0.25; margin 1
    g = torch.tensor([[[2.0, 0.5], [-1.0, 0.25]]])  # (P=1, N=2, C=2)
    d = member_deficits(g)
    assert d.unit_pos.tolist() == [[0.0, 0.5]]     # relu(1 - max)
    assert d.unit_neg.tolist() == [[0.0, 1.25]]    # relu(1 + min)
    assert d.point_pos.tolist() == [[0.0, 0.75]]   # point 1: max 0.25
    assert d.point_neg.tolist() == [[1.5, 0.0]]    # point 0: min 0.5; point 1: min -1
    with pytest.raises(ValueError, match=r"\(P, N, C, \*spatial\)"):
        member_deficits(torch.zeros(2, 3))
