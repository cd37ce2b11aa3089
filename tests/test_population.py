"""Generic population training: each member equals its single run; tabular sweeps."""

import numpy as np
import pandas as pd
import pytest
import torch

from jumpstart.cli import main
from jumpstart.data import load_dataset, tabular
from jumpstart.experiments import load, load_sweep
from jumpstart.models import Rectangular
from jumpstart.techniques import make_technique
from jumpstart.train import train_run
from jumpstart.techniques import TrainContext
from jumpstart.train.population import PopulationNet, train_population as train_batched


@pytest.mark.parametrize("name, options", [
    ("baseline", {}), ("batchnorm", {}), ("skip", {}), ("gelu", {}), ("jumpstart", {"lam": 0.0}),
])
def test_members_match_single_runs(name, options):
    """Members with their own seed, split and learning rate; 5 epochs x 4
    minibatches = 20 steps, then 25 full-batch steps. (Jumpstart with lam > 0
    is checked step by step below: a max-based penalty sends its gradient to
    the extreme element, and Adam's first step, ``lr * g / (|g| + eps)``,
    leaves many biases equal up to rounding, so over many steps the batched
    and the single computation can resolve a near-tie differently and part.)"""
    seeds, lrs = [0, 1], [0.01, 0.003]
    datas = [tabular("wine-recognition", seed=s) for s in seeds]
    for batch_size, epochs in ((32, 5), (None, 25)):
        results = train_batched(datas, technique=make_technique(name, **options), depth=4,
                                width=3, seeds=seeds, lrs=lrs, epochs=epochs,
                                batch_size=batch_size)
        for r, seed, lr in zip(results, seeds, lrs):
            single = train_run(dataset="wine-recognition", depth=4, width=3, technique=name,
                               epochs=epochs, lr=lr, seed=seed, batch_size=batch_size, **options)
            ours, theirs = r.model.state_dict(), single.model.state_dict()
            assert ours.keys() == theirs.keys()
            for k in ours:
                assert torch.allclose(ours[k].double(), theirs[k].double(), rtol=1e-4,
                                      atol=1e-6), k
            fit = single.fit.metrics()
            for k in ("best_train_acc", "best_val_acc", "best_val_test_acc", "test_acc"):
                assert r.metrics[k] == pytest.approx(fit[k]), k
            assert r.metrics["status"] == pytest.approx(single.status.ratios())


@pytest.mark.parametrize("name", ["jumpstart", "jumpstart+batchnorm"])
@pytest.mark.parametrize("aggregation", ["balanced", "sum", "l2", "sq"])
@pytest.mark.parametrize("tie_break", ["single", "average"])
def test_population_loss_gradient_equals_each_members_own(name, aggregation, tie_break):
    """One step from identical weights: the gradient of the summed member losses
    (task + lam * P, per member) equals each net's own gradient."""
    tech = make_technique(name, lam=0.3, aggregation=aggregation, tie_break=tie_break)
    shape = tech.model_options({"activation": "relu", "norm": None, "skip": None})
    nets = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        net = Rectangular(5, 4, 3, 3, **shape)
        with torch.no_grad():  # non-zero biases: no exact ties at init
            for p in net.parameters():
                p.add_(0.1 * torch.randn_like(p))
        nets.append(net)
    pop = PopulationNet(nets).train()
    torch.manual_seed(9)
    x, y = torch.randn(3, 16, 3), torch.randint(0, 3, (3, 16))
    ctx = TrainContext(pop)
    tech.attach(ctx)
    logits = pop(x)
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y,
                                               reduction="none").mean(1) + tech.loss(ctx)
    losses.sum().backward()
    tech.detach(ctx)
    grads = PopulationNet(nets)  # same layout; its "weights" become the gradients
    with torch.no_grad():
        for q, source in zip(grads.parameters(), pop.parameters()):
            q.copy_(source.grad)
    for p, net in enumerate(nets):
        single = make_technique(name, lam=0.3, aggregation=aggregation, tie_break=tie_break)
        one = TrainContext(net)
        single.attach(one)
        loss = torch.nn.functional.cross_entropy(net(x[p]), y[p]) + single.loss(one)
        single.detach(one)
        assert losses[p].item() == pytest.approx(loss.item(), rel=1e-5)
        loss.backward()
        for (k, a), b in zip(grads.member(p).named_parameters(), net.parameters()):
            assert torch.allclose(a, b.grad, rtol=1e-4, atol=1e-6), k


def test_diverged_member_does_not_touch_the_others():
    datas = [tabular("iris", seed=0), tabular("iris", seed=1)]
    # lr 1e30 blows the first member up; the second must equal its single run
    results = train_batched(datas, technique=make_technique("baseline"), depth=3,
                            width=4, seeds=[0, 1], lrs=[1e30, 0.01], epochs=20)
    single = train_run(dataset="iris", depth=3, width=4, epochs=20, lr=0.01, seed=1)
    for a, b in zip(results[1].model.parameters(), single.model.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert results[1].metrics["diverged"] is False and results[0].metrics["diverged"] is True


def test_population_net_checks_architectures():
    with pytest.raises(ValueError, match="at least one"):
        PopulationNet([])
    with pytest.raises(ValueError, match="differ in architecture"):
        PopulationNet([Rectangular(3, 4, 2, 1), Rectangular(3, 5, 2, 1)])
    with pytest.raises(ValueError, match="equally many"):
        train_batched([tabular("iris")], technique=make_technique("baseline"), depth=2,
                      width=2, seeds=[0, 1], lrs=[0.1], epochs=1)
    with pytest.raises(ValueError, match="batch_size must be None or an integer >= 1; got -1"):
        train_batched([tabular("iris")], technique=make_technique("baseline"), depth=2,
                      width=2, seeds=[0], lrs=[0.1], epochs=1, batch_size=-1)
    with pytest.raises(ValueError, match="population training takes flat features"):
        train_batched([load_dataset("mnist-5k")], technique=make_technique("baseline"),
                      depth=2, width=2, seeds=[0], lrs=[0.1], epochs=1)


TABLE_SWEEP = """
name = "tab"
[fixed]
depth = 6
width = 3
epochs = 15
curve_every = 5
[jumpstart]
lam = 0.1
[grid]
dataset = ["*"]
technique = ["baseline", "jumpstart", "batchnorm+jumpstart"]
lr = [0.01, 0.003]
seed = [0, 1]
"""


def test_tiny_tabular_sweep_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "tables"
    folder.mkdir()
    for name, classes in (("two", 2), ("three", 3)):
        y = np.repeat(np.arange(classes), 20)
        x = rng.normal(size=(len(y), 3)) + y[:, None]
        pd.DataFrame({"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "target": y}).to_csv(
            folder / f"{name}.tsv", sep="\t", index=False)
    sweep_file = tmp_path / "tab.toml"
    sweep_file.write_text(TABLE_SWEEP)
    sweep = load_sweep(sweep_file, data_dir=folder)
    assert {r["dataset"] for r in sweep.runs} == {"three", "two"}
    assert len(sweep.runs) == 2 * 3 * 2 * 2
    db = tmp_path / "r.db"
    assert main(["sweep", str(sweep_file), "--db", str(db), "--data-dir", str(folder),
                 "--workers", "1"]) == 0
    frame = load(db)
    assert len(frame) == 24 and set(frame["state"]) == {"done"}
    assert frame["best_val_test_acc"].between(0, 1).all()
    assert frame.loc[frame["technique"] == "baseline", "lam"].isna().all()
    # a run equals the same run alone
    row = frame[(frame["dataset"] == "three") & (frame["technique"] == "jumpstart")
                & (frame["lr"] == 0.003) & (frame["seed"] == 1)].iloc[0]
    alone = train_run(dataset=str(folder / "three.tsv"), depth=6, width=3, epochs=15,
                      lr=0.003, seed=1, technique="jumpstart", lam=0.1).fit.metrics()
    assert row["best_val_test_acc"] == pytest.approx(alone["best_val_test_acc"])
    out = tmp_path / "rep"
    assert main(["report", str(db), "--out", str(out)]) == 0
    results = pd.read_csv(out / "uci_results.csv")
    assert len(results) == 6 and set(results["rank"]) <= {1, 2, 3}


def test_uci_presets_expand_over_the_shared_tables():
    paper = load_sweep("uci-paper")
    assert len({r["dataset"] for r in paper.runs}) == 24
    per_dataset = len(paper.runs) / 24
    # 6 techniques without lam x 2 lr x 3 seeds, and Jumpstart's 3 lam x 2 lr x 3 seeds
    assert per_dataset == 6 * 2 * 3 + 3 * 2 * 3
    assert {r["redo_every"] for r in paper.runs if r["technique"] == "redo"} == {100}
    assert {r["cbp_rho"] for r in paper.runs if r["technique"] == "cbp"} == {0.001}
    assert paper.save_weights
    assert all(r["depth"] == 50 and r["width"] == 4 for r in paper.runs)
    quick = load_sweep("uci-quick")
    assert len(quick.runs) == 15
