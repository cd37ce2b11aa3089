"""Unit surgery on real model zoos (torchvision, timm): exact removal of
dead units planted by hand, and ReDo / Continual Backprop recycling, through
Torch-Pruning's dependency graph.

Planting: for a unit group, every BatchNorm that writes its channels gets
scale 0 and shift -1 at the planted units (the ReLU after each outputs 0),
or, with no BatchNorm, the root layer's rows 0 and bias -100 (GELU(-100) is
exactly 0 in float32). Planted are the first and the last *simple* group
(one layer and its readers) of each model and, for the residual and dense
nets, one group coupled beyond one layer (a residual stream written by the
stem and two blocks; a concatenated feature map read by several layers).
The logits of the pruned copy are compared with the untouched original's.

Needs torchvision, timm and torch-pruning: ``make test-zoo``.
"""

import warnings

import pytest
import torch
from torch import nn

try:
    import timm
    import torchvision.models as tvm
except Exception:  # noqa: BLE001 - absent, or not importable beside this torch
    pytest.skip("torchvision and timm not importable here (make test-zoo)",
                allow_module_level=True)
pytest.importorskip("torch_pruning")

from jumpstart.data import Dataset  # noqa: E402
from jumpstart.surgery import UnitGraph, prune_dead  # noqa: E402
from jumpstart.techniques import make_technique  # noqa: E402
from jumpstart.train import fit  # noqa: E402

#: name -> (constructor, input size, a coupled group's root to plant, or None)
MODELS = {
    "tv:resnet18": (lambda: tvm.resnet18(num_classes=10), 64, "conv1"),
    "tv:resnet50": (lambda: tvm.resnet50(num_classes=10), 64, "conv1"),
    "tv:vgg11_bn": (lambda: tvm.vgg11_bn(num_classes=10), 32, None),
    "tv:mobilenet_v2": (lambda: tvm.mobilenet_v2(num_classes=10), 64, None),
    "tv:densenet121": (lambda: tvm.densenet121(num_classes=10), 64,
                       "features.denseblock1.denselayer1.conv2"),
    "timm:resnet18": (lambda: timm.create_model("resnet18", num_classes=10), 64, "conv1"),
    "timm:convnext_atto": (lambda: timm.create_model("convnext_atto", num_classes=10), 64, None),
    "timm:vit_tiny": (lambda: timm.create_model("vit_tiny_patch16_224", num_classes=10), 224,
                      None),
}


def _plant(model: nn.Module, graph: UnitGraph, coupled: str | None) -> dict[str, list[int]]:
    simple = [g for g in graph.groups if g.simple]
    chosen = [simple[0], simple[-1]]
    if coupled is not None:
        chosen.append(next(g for g in graph.groups if g.name == coupled))
    planted = {}
    with torch.no_grad():
        for g in chosen:
            units = [0, g.width // 2]
            norms = [(m, p[(u == units[0]) | (u == units[1])]) for _, m, p, u in g.writers
                     if isinstance(m, nn.BatchNorm2d)]
            for bn, positions in norms:  # a unit's entry (offset in a concatenation)
                bn.weight[positions] = 0
                bn.bias[positions] = -1.0
            if not norms:
                g.root.weight[units] = 0
                g.root.bias[units] = -100.0
            planted[g.name] = units
    return planted


@pytest.mark.parametrize("name", list(MODELS))
def test_prune_dead_removes_planted_units_exactly(name):
    build, size, coupled = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(6, 3, size, size)
    planted = _plant(model, UnitGraph(model, x[:2]), coupled)
    with torch.no_grad():
        before = model(x)
    pruned, report = prune_dead(model, x)
    rows = {r["name"]: r for r in report.layers}
    for root, units in planted.items():
        assert rows[root]["units_after"] <= rows[root]["units_before"] - len(units), root
    with torch.no_grad():
        after = pruned(x)
    assert (after - before).abs().max() <= 1e-5 * max(1.0, before.abs().max())
    totals = report.totals()
    assert totals["params_after"] < totals["params_before"]
    assert totals["macs_after"] < totals["macs_before"]
    assert not any("undone" in why for why in report.skipped.values()), report.skipped


def test_in_place_pruning_of_a_resnet_carries_adam_state():
    torch.manual_seed(1)
    model = tvm.resnet18(num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(4, 3, 64, 64)
    model(x).logsumexp(1).mean().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        model.layer2[0].bn1.weight[[3, 9]] = 0
        model.layer2[0].bn1.bias[[3, 9]] = -1.0
    w, reader = model.layer2[0].conv1.weight, model.layer2[0].conv2.weight
    avg, avg_reader = opt.state[w]["exp_avg"].clone(), opt.state[reader]["exp_avg"].clone()
    _, report = prune_dead(model, x, inplace=True, optimizer=opt)
    kept = [c for c in range(128) if c not in (3, 9)]
    w2, reader2 = model.layer2[0].conv1.weight, model.layer2[0].conv2.weight
    assert w2.shape[0] <= 126
    if w2.shape[0] == 126:  # no unit dead by chance in this layer
        assert torch.equal(opt.state[w2]["exp_avg"], avg[kept])
        assert torch.equal(opt.state[reader2]["exp_avg"], avg_reader[:, kept])
    opt.step()


@pytest.mark.parametrize("technique", ["redo", "cbp"])
@pytest.mark.parametrize("name", list(MODELS))
def test_recycling_touches_simple_layers_and_never_coupled_ones(technique, name):
    build, size, _ = MODELS[name]
    torch.manual_seed(2)
    model = build()
    x, y = torch.randn(8, 3, size, size), torch.randint(0, 10, (8,))
    graph = UnitGraph(model, x[:2])
    simple = [g.root for g in graph.groups if g.simple]
    coupled = [g.root for g in graph.groups if not g.simple]
    before = {id(m): m.weight.detach().clone() for m in simple + coupled}
    options = ({"redo_every": 1, "redo_tau": 1e9} if technique == "redo"
               else {"cbp_rho": 1.0, "cbp_maturity": 0})
    tech = make_technique(technique, **options)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = fit(model, Dataset("toy", x, y, x[:4], y[:4], num_classes=10),
                     technique=tech, lr=1e-30, epochs=1, batch_size=4, precision="32")
    assert not result.diverged
    assert any("skipped" in str(w.message) for w in seen)  # the coupled layers, named
    recycled = {id(layer.module) for layer in tech.layers}
    assert recycled <= {id(m) for m in simple}
    # DenseNet's simple layers are read by a bias-free conv writing into a concatenation:
    # CBP has no bias or BatchNorm to absorb a replaced unit's mean and skips them all
    assert bool(recycled) != (name == "tv:densenet121" and technique == "cbp")
    # lr 1e-30 moves no float32 weight away from its value (a zeroed weight may become
    # +-1e-30): what changed, the technique re-drew
    changed = [not torch.equal(m.weight, before[id(m)]) for m in simple if id(m) in recycled]
    assert sum(changed) >= (len(recycled) + 1) // 2 if recycled else not changed
    # a layer not recycled (coupled, or a simple layer CBP cannot absorb into) is never
    # re-drawn; where it reads a recycled unit its weights are set to 0 (the outgoing reset)
    for m in simple + coupled:
        if id(m) not in recycled:
            w = m.weight.detach()
            assert ((w == before[id(m)]) | (w.abs() <= 1e-20)).all()
