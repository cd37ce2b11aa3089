"""Running sweeps: results store, resume after a crash, failures, population training."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from jumpstart.experiments import ResultsStore, load, load_sweep, run_key, run_sweep
from jumpstart.train import train_run
from jumpstart.train.stacks import Member, train_stacked as train_population

TINY = """
name = "tiny"
[fixed]
dataset = "moons"
epochs = {epochs}
curve_every = 10
[jumpstart]
lam = 0.001
[grid]
depth = {depths}
width = [2, 3]
technique = ["baseline", "jumpstart"]
"""


def tiny(tmp_path, depths=(2, 3), epochs=20):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(epochs=epochs, depths=list(depths)))
    return path


@pytest.mark.parametrize("aggregation", ["balanced", "sum", "sq", "l2"])
def test_population_matches_single_runs_including_padded_width_and_depth(aggregation):
    # unregularized members (lam 0) placed before and between regularized ones; widths
    # 2, 3 and 4 are padded to 5 in both groups; depths 2 and 3 run through
    # pass-through layers up to depth 5
    members = [Member(width=3, seed=2, lam=0.0), Member(width=2, seed=3, lam=1e-3, depth=3),
               Member(width=4, seed=4, lam=0.0, depth=2), Member(width=5, seed=1, lam=1e-3),
               Member(width=4, seed=0, lam=1e-3, depth=2)]
    # 50 steps: the population's kernels round differently from the single run's
    # matmuls, and a near-tie of a max/min then parts the trajectories: with "sum",
    # the width-2 depth-3 member agrees to 2e-7 at step 50 and differs by 3e-4 at
    # step 100 (every other member and aggregation: <= 3e-6 at step 100)
    results = train_population(members, depth=5, epochs=50,
                               jumpstart={"aggregation": aggregation})
    for m, r in zip(members, results):
        depth = m.depth or 5
        assert r.model.depth == depth
        single = train_run(technique="jumpstart", depth=depth, width=m.width, lam=m.lam,
                           seed=m.seed, epochs=50, aggregation=aggregation)
        for a, b in zip(r.model.parameters(), single.model.parameters()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
        assert r.metrics["best_train_acc"] == pytest.approx(single.fit.metrics()["best_train_acc"])
        assert r.metrics["status"] == pytest.approx(single.status.ratios())


def test_population_average_tie_break_gradient_matches_core(monkeypatch):
    """Tie-break "average" splits a max/min gradient over exactly equal
    pre-activations, so a rounding difference in one step changes which elements
    tie in the next and trajectories part at once; the check is therefore the
    gradient of step 2 against the core regularizer's autograd at the same
    weights. Step 1 makes ties (rows of zero activations give g = b on many
    points), but a split over such rows reaches no parameter (their inputs are
    0 and the layer below blocks them), so this test does not tell "average"
    from "single"; it checks the whole gradient with the average path on."""
    import copy

    import jumpstart
    from jumpstart.data import DATASETS
    from jumpstart.models import Rectangular
    from jumpstart.optim import MemberAdam as Adam
    from jumpstart.train.stacks.layers import DenseStack

    members = [Member(width=4, seed=1, lam=0.0), Member(width=3, seed=0, lam=1e-2),
               Member(width=5, seed=2, lam=1e-2, depth=3)]
    opts = {"aggregation": "sum", "tie_break": "average"}
    seen = []
    step = Adam.step
    monkeypatch.setattr(Adam, "step", lambda self, grads: (
        seen.append(([p.clone() for p in self.params], [g.clone() for g in grads])),
        step(self, grads)))
    train_population(members, depth=4, epochs=2, jumpstart=opts)
    params, grads = seen[1]
    order = [1, 2, 0]  # the population stacks regularized members first
    nets = []
    for i in order:
        torch.manual_seed(members[i].seed)
        nets.append(Rectangular(members[i].depth or 4, members[i].width, 2, 1))
    stack = DenseStack(nets)
    for mine, theirs in zip(stack.params, params):
        mine.copy_(theirs)
    grad_stack = DenseStack([copy.deepcopy(net) for net in nets])
    for mine, theirs in zip(grad_stack.params, grads):
        mine.copy_(theirs)
    data = DATASETS["moons"]()
    ties = 0
    for p, i in enumerate(order):
        net, expected = stack.member(p), grad_stack.member(p)
        js = jumpstart.Jumpstart(net, **opts)
        logits = net(data.x_train)[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, data.y_train.float())
        (loss + members[i].lam * js.penalty()).backward()
        for a, b in zip(net.parameters(), expected.parameters()):
            assert torch.allclose(a.grad, b, rtol=1e-4, atol=1e-6)
        h = data.x_train
        for lin in net.linears:
            h = torch.relu(lin(h))
            ties += int((h.sum(1) == 0).sum())
    assert ties > 0  # some points have all-zero activations: their g = b ties


@pytest.mark.parametrize("aggregation", ["sq", "balanced"])
def test_moons_conv_population_matches_single_runs(aggregation):
    """The Keras MOONS formulation (kernel (2, 1), per-position deficits)."""
    members = [Member(width=2, seed=2, lam=0.0, depth=2), Member(width=3, seed=0, lam=1e-3),
               Member(width=4, seed=1, lam=1e-3, depth=3)]
    opts = {"aggregation": aggregation, "granularity": "position"}
    results = train_population(members, model="moons_conv", depth=4, epochs=100, jumpstart=opts)
    for m, r in zip(members, results):
        single = train_run(technique="jumpstart", model="moons_conv", depth=m.depth or 4,
                           width=m.width, lam=m.lam, seed=m.seed, epochs=100, **opts)
        for a, b in zip(r.model.parameters(), single.model.parameters()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
        assert r.metrics["status"] == pytest.approx(single.status.ratios())


def test_population_minibatches_match_single_run():
    members = [Member(width=3, seed=0, lam=1e-3), Member(width=4, seed=5, lam=0.0),
               Member(width=2, seed=1, lam=1e-3, depth=1)]
    results = train_population(members, depth=3, epochs=10, batch_size=16)
    for m, r in zip(members, results):
        single = train_run(technique="jumpstart", depth=m.depth or 3, width=m.width, lam=m.lam,
                           seed=m.seed, epochs=10, batch_size=16)
        for a, b in zip(r.model.parameters(), single.model.parameters()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_padded_units_stay_inert():
    results = train_population([Member(2, 0, 1e-2), Member(6, 1, 1e-2)], depth=4, epochs=30)
    # the narrow member's standalone copy has exactly 2 units per layer
    assert results[0].model.linears[1].weight.shape == (2, 2)
    assert results[0].metrics["status"]["unit_dead_ratio"] <= 1.0


def test_sweep_store_and_load_columns(tmp_path):
    db = tmp_path / "r.db"
    counts = run_sweep(load_sweep(tiny(tmp_path)), db, workers=1, progress=False)
    assert counts == {"total": 8, "skipped": 0, "done": 8, "diverged": 0, "failed": 0,
                      "elsewhere": 0}
    frame = load(db)
    assert len(frame) == 8
    for col in ("key", "state", "depth", "width", "technique", "lam", "lr", "seed", "epochs",
                "best_train_acc", "best_val_acc", "train_acc", "val_acc", "diverged",
                "unit_dead_ratio", "point_efficiency", "epochs_done"):
        assert col in frame.columns, col
    assert set(frame["state"]) == {"done"} and (frame["epochs_done"] == 20).all()
    with ResultsStore(db) as store:
        curves = store.curves()
    assert sorted(set(curves["epoch"])) == [10, 20]
    assert len(curves) == 16
    again = run_sweep(load_sweep(tiny(tmp_path)), db, workers=1, progress=False)
    assert again["skipped"] == 8 and again["done"] == 0


def test_failing_run_is_recorded_and_sweep_finishes(tmp_path, monkeypatch):
    import jumpstart.train.stacks.trainer as stacked

    real = stacked.train_stacked

    def flaky(members, **kw):
        if any(m.width == 3 and m.lam > 0 for m in members):
            raise RuntimeError("boom at width 3")
        return real(members, **kw)

    monkeypatch.setattr(stacked, "train_stacked", flaky)
    db = tmp_path / "r.db"
    counts = run_sweep(load_sweep(tiny(tmp_path)), db, workers=1, progress=False)
    assert counts["failed"] == 2 and counts["done"] == 6
    frame = load(db)
    failed = frame[frame["state"] == "failed"]
    assert set(failed["width"]) == {3} and set(failed["technique"]) == {"jumpstart"}
    assert all("boom at width 3" in e for e in failed["error"])


def test_resume_after_kill_loses_nothing_and_repeats_nothing(tmp_path):
    path = tiny(tmp_path, depths=(1, 2, 3, 4, 5, 6), epochs=100)
    db = tmp_path / "r.db"
    # the killed process's leases stop beating; the second call takes them over
    # after --lease-seconds (default 120 s)
    cmd = [sys.executable, "-m", "jumpstart.cli", "sweep", str(path), "--db", str(db),
           "--workers", "1", "--lease-seconds", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    recorded = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    recorded = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if recorded >= 4:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as con:
        before = dict(con.execute("SELECT key, finished_at FROM runs").fetchall())
    assert 4 <= len(before) < 24, "the kill should land mid-sweep"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with sqlite3.connect(db) as con:
        after = dict(con.execute("SELECT key, finished_at FROM runs").fetchall())
        n_rows = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    expected = {run_key(c) for c in load_sweep(path).runs}
    assert n_rows == 24 and set(after) == expected
    assert all(after[k] == t for k, t in before.items())  # finished runs not repeated


def test_ray_backend_matches_local(tmp_path):
    pytest.importorskip("ray")
    sweep = load_sweep(tiny(tmp_path))
    run_sweep(sweep, tmp_path / "local.db", workers=1, progress=False)
    counts = run_sweep(sweep, tmp_path / "ray.db", workers=2, backend="ray", progress=False)
    assert counts["done"] == 8
    cols = ["key", "best_train_acc", "best_val_acc", "train_acc", "unit_dead_ratio"]
    local = load(tmp_path / "local.db")[cols].sort_values("key").reset_index(drop=True)
    remote = load(tmp_path / "ray.db")[cols].sort_values("key").reset_index(drop=True)
    assert local.equals(remote)


def test_baseline_runs_join_the_jumpstart_population_of_their_lr(tmp_path):
    from jumpstart.train.run_options import parse_run
    from jumpstart.train.stacks import stack_parts

    configs = load_sweep(tiny(tmp_path)).runs  # depths 2, 3 x widths 2, 3 x 2 techniques
    configs = [c for c in configs if c["depth"] == 2]
    configs += [{**c, "lr": 0.001} for c in configs if c["technique"] == "baseline"]
    parts = stack_parts([parse_run(c) for c in configs])
    # lr 0.01: baseline and Jumpstart together; lr 0.001: the baselines alone
    assert sorted(sorted(r["technique"] for r in p) for p in parts) == [
        ["baseline", "baseline"], ["baseline", "baseline", "jumpstart", "jumpstart"]]


def test_stackable_runs_of_all_depths_share_groups_cut_by_cost(tmp_path):
    from jumpstart.experiments.sweep import EPOCH_COST, _cost, plan

    sweep = load_sweep(tiny(tmp_path, depths=(1, 2, 8)))  # 4 runs per depth, widths 2, 3
    # cost of a group: E + max depth * sum(width + 4), sum = 26 per depth:
    # {8} alone E + 208 is the floor; {1, 2} = E + 2 * 52 fits under it and saves
    # one epoch overhead; {2, 8} = E + 8 * 52 or {1, 2, 8} would exceed it
    groups = plan(sweep, set())
    assert [sorted({c["depth"] for c in g}) for g in groups] == [[8], [1, 2]]
    assert [_cost(g) for g in groups] == [EPOCH_COST + 208, EPOCH_COST + 104]
    # depths (1, 2, 3): {1, 2} = E + 104 exceeds {3} alone (E + 78): no merge
    sweep = load_sweep(tiny(tmp_path, depths=(1, 2, 3)))
    assert len(plan(sweep, set())) == 3


def test_runs_outside_the_stacks_keep_one_group_per_depth(tmp_path):
    from jumpstart.experiments.sweep import plan

    path = tmp_path / "bn.toml"
    path.write_text(TINY.format(epochs=5, depths=[2, 3]).replace(
        '["baseline", "jumpstart"]', '["batchnorm", "jumpstart"]'))
    groups = plan(load_sweep(path), set())
    kinds = sorted((sorted({c["technique"] for c in g}), sorted({c["depth"] for c in g}))
                   for g in groups)
    # batchnorm (no stack penalty) keeps one group per depth and never shares one
    # with the stackable Jumpstart runs
    assert [k for k in kinds if "batchnorm" in k[0]] == [(["batchnorm"], [2]),
                                                          (["batchnorm"], [3])]
    assert all(k[0] == ["jumpstart"] for k in kinds if "batchnorm" not in k[0])


def test_single_loop_runs_are_groups_of_one(tmp_path):
    from jumpstart.experiments.sweep import plan
    from jumpstart.train.route import route

    path = tmp_path / "redo.toml"
    path.write_text(TINY.format(epochs=5, depths=[2]).replace(
        '["baseline", "jumpstart"]', '["redo", "batchnorm"]'))
    sweep = load_sweep(path)
    assert sorted(route(c) for c in sweep.runs) == ["population", "population",
                                                    "single", "single"]
    groups = plan(sweep, set())
    # the two ReDo runs (single-run loop) are recorded each as it ends; the two
    # batchnorm runs (one population) stay together
    assert sorted((len(g), g[0]["technique"]) for g in groups) == [
        (1, "redo"), (1, "redo"), (2, "batchnorm")]


def test_population_needs_a_depth_for_every_member():
    with pytest.raises(ValueError, match="give depth, or a depth for every member"):
        train_population([Member(3, 0, 1e-3, depth=2), Member(3, 1)], epochs=1)
    results = train_population([Member(3, 0, 1e-3, depth=2), Member(2, 1, 0.0, depth=4)],
                               epochs=1)
    assert [r.model.depth for r in results] == [2, 4]


def test_a_process_pool_trains_the_groups(tmp_path):
    path = tmp_path / "pool.toml"
    path.write_text('name = "pool"\n[fixed]\ndataset = "moons"\nepochs = 5\nwidth = 3\n'
                    'technique = "redo"\nlr = 0.01\n[grid]\ndepth = [1, 2, 3]\n')
    counts = run_sweep(load_sweep(path), tmp_path / "r.db", workers=2, progress=False)
    assert counts["done"] == 3 and counts["failed"] == 0  # 3 groups on 2 spawned workers
    frame = load(tmp_path / "r.db")
    assert sorted(frame["depth"]) == [1, 2, 3] and (frame["state"] == "done").all()
