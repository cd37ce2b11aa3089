"""Diversification (a reconstruction of Kovalenko et al. 2021): each penalty
against a direct formula (value and gradient), the diagnostics on hand-made
nets, the decorrelated init, the schedules."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from jumpstart import diversity
from jumpstart.core import correlation as C
from jumpstart.models import Rectangular
from jumpstart.techniques import TrainContext, make_technique


def _pearson_rows(w):
    rows = w - w.mean(1, keepdims=True)
    return np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in rows] for a in rows])


def test_weight_corr_against_the_direct_formula():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 6))
    r = _pearson_rows(w)
    direct = np.mean([r[i, j] ** 2 for i, j in itertools.permutations(range(5), 2)])
    assert float(C.weight_corr(torch.tensor(w))) == pytest.approx(direct, rel=1e-12)
    # by hand: proportional rows correlate 1, reversed rows -1
    pair = torch.tensor([[1.0, 2, 3, 4], [2.0, 4, 6, 8], [4.0, 3, 2, 1]])
    expected = torch.tensor([[1.0, 1, -1], [1, 1, -1], [-1, -1, 1]])
    assert torch.allclose(C.row_correlation(pair), expected, atol=1e-6)


def test_small_fan_in_uses_cosine_with_the_bias():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    b = torch.tensor([0.0, 0.0, 0.0])
    expected = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])
    assert torch.allclose(C.row_correlation(w, b), expected)
    # the bias counts: (1, 0, 1) and (1, 0, -1) are orthogonal
    assert float(C.row_correlation(w[:1].repeat(2, 1), torch.tensor([1.0, -1.0]))[0, 1]) == 0
    assert float(C.weight_corr(w, b)) == pytest.approx(2 / 6)  # pairs (0, 2) and (2, 0)


def test_decov_ncl_logdet_against_direct_formulas():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(7, 4))
    cov = np.cov(a, rowvar=False, bias=True)
    assert float(C.decov(torch.tensor(a))) == pytest.approx(
        0.5 * (np.sum(cov ** 2) - np.sum(np.diag(cov) ** 2)), rel=1e-12)
    spread = np.mean([np.mean((row - row.mean()) ** 2) for row in a])
    assert float(C.ncl(torch.tensor(a))) == pytest.approx(-spread, rel=1e-12)
    w = rng.normal(size=(3, 6))
    r = _pearson_rows(w)
    assert float(C.logdet(torch.tensor(w), eps=1e-4)) == pytest.approx(
        -np.linalg.slogdet(r + 1e-4 * np.eye(3))[1], rel=1e-10)


@pytest.mark.parametrize("penalty, shape", [
    (C.weight_corr, (4, 5)), (C.decov, (6, 3)), (C.ncl, (6, 3)), (C.logdet, (3, 6)),
    (lambda w: C.weight_corr(w[:, :2], w[:, 2]), (4, 3)),  # cosine with the bias
])
def test_penalty_gradients_match_finite_differences(penalty, shape):
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3),
                    requires_grad=True)
    assert torch.autograd.gradcheck(penalty, (x,))


def test_diversity_leaves_constant_units_apart():
    net = nn.Sequential(nn.Linear(1, 5), nn.ReLU(), nn.Linear(5, 1))
    with torch.no_grad():  # units x, 2x + 1, 10 - x, dead, constant 0.5 on x in [1, 5]
        net[0].weight.copy_(torch.tensor([[1.0], [2.0], [-1.0], [0.0], [0.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 1.0, 10.0, -1.0, 0.5]))
    x = torch.linspace(1, 5, 9)[:, None]
    d = diversity(net, x, batch_size=4)  # streamed over 3 batches
    assert d.constant_units == [2] and d.units == [5]
    assert d.act_corr_mean[0] == pytest.approx(1.0) and d.act_corr_max[0] == pytest.approx(1.0)
    rows = torch.cat([net[0].weight, net[0].bias[:, None]], 1).detach().double()
    cos = (rows / rows.norm(dim=1, keepdim=True)) @ (rows / rows.norm(dim=1, keepdim=True)).T
    off = cos[~torch.eye(5, dtype=torch.bool)].abs()
    assert d.weight_corr_mean[0] == pytest.approx(float(off.mean()))
    assert d.weight_corr_max[0] == pytest.approx(float(off.max()))
    frame = d.to_frame()
    assert list(frame["constant_units"]) == [2]


def test_diversity_of_a_conv_net_and_its_plot(tmp_path):
    torch.manual_seed(0)
    net = Rectangular(2, 3, 1, 2, kind="conv", head="maxavg")
    d = diversity(net, torch.randn(10, 1, 4, 4))
    assert d.layer_names == ["linears.0", "linears.1"] and d.units == [3, 3]
    assert all(0 <= v <= 1 for v in d.act_corr_mean if v == v)
    assert d.plot(tmp_path / "d.png").stat().st_size > 0


def _mean_sq_corr(model):
    return float(np.mean([float(C.weight_corr(l.weight.detach())) for l in model.linears]))


def test_decorrelated_init_lowers_correlation_and_keeps_the_scale():
    torch.manual_seed(4)
    glorot = Rectangular(3, 8, 10, 3)
    torch.manual_seed(4)
    decorrelated = Rectangular(3, 8, 10, 3, init="decorrelated")
    assert _mean_sq_corr(decorrelated) < 0.5 * _mean_sq_corr(glorot)
    for a, b in zip(glorot.linears, decorrelated.linears):
        assert float(b.weight.detach().std()) == pytest.approx(float(a.weight.detach().std()),
                                                               rel=1e-5)
    torch.manual_seed(4)
    again = Rectangular(3, 8, 10, 3, init="decorrelated")
    torch.manual_seed(5)
    other = Rectangular(3, 8, 10, 3, init="decorrelated")
    assert torch.equal(again.linears[0].weight, decorrelated.linears[0].weight)
    assert not torch.equal(other.linears[0].weight, decorrelated.linears[0].weight)
    orth = Rectangular(2, 4, 6, 2, init="orthogonal")
    w = orth.linears[0].weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(4), atol=1e-5)  # 4 orthonormal rows


def test_early_and_trigger_schedules_switch_when_they_should():
    from jumpstart.train import train_run

    run = train_run(dataset="moons", depth=3, width=3, technique="diversify",
                    div_schedule="early", div_epochs=2, epochs=5, lr=0.01)
    assert run.fit.history["div_on"] == [1, 1, 0, 0, 0]
    assert run.fit.history["penalty"][2:] == [0, 0, 0] and run.fit.history["penalty"][0] > 0
    net = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2, 3, 4, 5, 6]]).repeat(3, 1))  # |rho| = 1
    tech = make_technique("diversify", div_schedule="trigger", div_tau=0.5)
    ctx = TrainContext(net, None, epoch=1)
    tech.attach(ctx)
    assert tech.on
    with torch.no_grad():  # centred-orthogonal rows: |rho| = 0
        net[0].weight.copy_(torch.tensor([[1.0, -1, 0, 0, 0, 0], [0, 0, 1, -1, 0, 0],
                                          [0, 0, 0, 0, 1, -1]]))
    tech.after_epoch(ctx)
    assert ctx.logged["div_on"] == 1.0 and not tech.on
    assert ctx.logged["corr/0"] == pytest.approx(0.0, abs=1e-6)
    assert tech.loss(ctx) is None


def test_logdet_needs_a_narrow_layer():
    tech = make_technique("diversify", div_kind="logdet")
    with pytest.raises(ValueError, match="H <= D - 1"):
        tech.attach(TrainContext(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))))


def test_init_comparison_report(tmp_path, figures):
    from jumpstart.experiments import load, load_sweep, run_sweep
    from jumpstart.experiments.report import write_report
    from jumpstart.experiments.store import ResultsStore

    path = tmp_path / "i.toml"
    path.write_text('name = "inits"\n[fixed]\ndataset = "moons"\nmodel = "rectangular"\n'
                    'depth = 1\ntechnique = "baseline"\nepochs = 6\nlr = 0.01\n'
                    'curve_every = 1\ninit_diversity = true\n[grid]\nwidth = [4]\n'
                    'init = ["glorot", "decorrelated"]\nseed = [0, 1]\n')
    db = tmp_path / "r.db"
    run_sweep(load_sweep(path), db, workers=1, progress=False)
    paths = write_report(db, tmp_path / "out")
    assert [p.name for p in paths] == ["init_comparison.csv", "init_comparison.md",
                                       "init_curves.png"]
    import pandas as pd

    table = pd.read_csv(paths[0]).set_index("init")
    runs = load(db)
    with ResultsStore(db) as store:
        curves = store.curves(runs["key"]).merge(runs[["key", "init"]], on="key")
    at = {i: curves[(curves["init"] == i) & (curves["epoch"] == 3)]["val_acc"].median()
          for i in ("glorot", "decorrelated")}
    assert table.loc["decorrelated", "acc@3"] == pytest.approx(at["decorrelated"])
    assert table.loc["decorrelated", "gain@3"] == pytest.approx(
        (at["decorrelated"] - at["glorot"]) / at["glorot"])
    assert table.loc["glorot", "gain@3"] == 0
    (ax,) = figures["init_curves.png"].axes  # one data set, one net: one panel
    assert ax.get_title() == "moons, 1 x 4" and ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "val_acc (median)"
    lines = {line.get_label(): line for line in ax.get_lines() if line.get_linestyle() == "-"}
    assert sorted(lines) == ["decorrelated", "glorot"]
    (chance,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert list(chance.get_ydata()) == [0.5, 0.5]  # moons: two balanced classes
    bands = ax.collections
    assert len(bands) == 2
    for init, band in zip(("decorrelated", "glorot"), bands):  # lines in groupby order
        per_epoch = curves[curves["init"] == init].groupby("epoch")["val_acc"]
        med = per_epoch.median()  # each line: that init's median over seeds
        assert list(lines[init].get_xdata()) == list(med.index)
        assert list(lines[init].get_ydata()) == pytest.approx(list(med.values))
        # its band: from the lowest seed to the highest at each epoch
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(per_epoch.min().min())
        assert ys.max() == pytest.approx(per_epoch.max().max())
        by_seed = curves[(curves["init"] == init) & (curves["epoch"] == 1)]["val_acc"]
        assert table.loc[init, "acc@1_min"] == pytest.approx(by_seed.min())
        assert table.loc[init, "acc@1_max"] == pytest.approx(by_seed.max())
    assert "median over seeds (2 per line)" in figures["init_curves.png"].get_suptitle()
    # the nets at init: decorrelated rows are less correlated than Glorot's
    assert table.loc["decorrelated", "weight_corr_mean"] < table.loc["glorot", "weight_corr_mean"]


@pytest.mark.parametrize("kind", ["weight_corr", "logdet", "decov", "ncl"])
def test_penalty_under_bfloat16_autocast_is_the_float32_formula(kind):
    # the fast path runs the forward and the loss under bfloat16 autocast;
    # torch.logdet has no bfloat16 kernel (the runs failed before) and the
    # others would round correlations: every kind is computed in float32
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8, 2))
    tech = make_technique("diversify", div_kind=kind, div_lam=1.0)
    ctx = TrainContext(net, None, epoch=1)
    tech.attach(ctx)
    x = torch.randn(5, 2, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
        got = tech.loss(ctx)
    assert got.dtype == torch.float32 and len(tech.layers) == 2  # logdet: H 3, 2 < D 18, 27
    got = float(got.detach())
    if kind in ("weight_corr", "logdet"):  # on the float32 weights: the same numbers
        want = sum(getattr(C, kind)(m.weight, m.bias) for m in (net[0], net[2])) / 2
        assert got == pytest.approx(float(want), rel=1e-6)
    else:  # on the bfloat16 pre-activations, widened: the formula over them in float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            g1 = net[0](x)
            g2 = net[2](torch.relu(g1))
        obs = [torch.relu(g.float()).permute(0, 2, 3, 1).reshape(-1, g.shape[1]) for g in (g1, g2)]
        want = sum(getattr(C, kind)(o) for o in obs) / 2
        assert got == pytest.approx(float(want), rel=1e-5)
