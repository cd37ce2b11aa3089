"""The training contract: hooks with a context, optimizer-state surgery, model
replacement, optimizers and schedules as run options, routing that never ignores."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import cifar_batch

from jumpstart import Jumpstart, activation_status
from jumpstart.core.options import Option, int_at_least
from jumpstart.data import moons
from jumpstart.experiments import load, load_sweep, run_sweep
from jumpstart.experiments.config import group_key
from jumpstart.models import Rectangular
from jumpstart.optim import MemberAdam, check_optimizer, zero_state
from jumpstart.techniques import TECHNIQUES, Technique, make_technique, register
from jumpstart.train import TRAINERS, fit, route
from jumpstart.train.group import train_group
from jumpstart.train.loop import task_loss


class Counting(Technique):
    """A technique with a hook the stacks and populations never call: it must
    run in the single-run loop only (a subclass of a stack-capable technique
    does not inherit the capability)."""

    name = "counting-probe"
    options = {"probe_k": Option(1, *int_at_least(1))}
    calls: list = []

    def after_step(self, ctx):
        Counting.calls.append((ctx.step, ctx.epoch, self.config["probe_k"]))


class SubBaseline(type(make_technique("baseline"))):
    """Inherits from the baseline (stacks and population) and adds a hook."""

    name = "sub-baseline-probe"

    def after_step(self, ctx):
        pass


@pytest.fixture
def probes():
    for cls in (Counting, SubBaseline):
        register(cls)
    Counting.calls.clear()
    yield
    for cls in (Counting, SubBaseline):
        TECHNIQUES.pop(cls.name, None)


def _config(technique, **extra):
    options = {"lam": 1e-3} if "jumpstart" in technique else {}
    return {"dataset": "moons", "model": "rectangular", "depth": 3, "width": 4,
            "technique": technique, "epochs": 5, "lr": 0.01, "batch_size": "full",
            "curve_every": 1, "seed": 1, **options, **extra}


def _nr_config(folder):
    """nr rejuvenates NR's VGG only: a width-1 VGG-19 on a tiny CIFAR folder,
    rejuvenated after epoch 2 (5 epochs in all)."""
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        cifar_batch(folder / f"data_batch_{i}", 6, 10, rng)
    cifar_batch(folder / "test_batch", 6, 10, rng)
    return _config("nr", dataset="cifar10", data_dir=str(folder), model="vgg", depth=19,
                   width=1, batch_size=10, epochs=3, nr_max_epochs=2)


EXPECTED_ROUTES = {"baseline": "stacks", "jumpstart": "stacks", "batchnorm": "population",
                   "skip": "population", "gelu": "population",
                   "redo": "single", "cbp": "single", "diversify": "single", "nr": "single",
                   "counting-probe": "single", "sub-baseline-probe": "single"}


@pytest.mark.usefixtures("probes")
@pytest.mark.parametrize("name", sorted(set(TECHNIQUES) | set(EXPECTED_ROUTES)))
def test_every_technique_through_every_trainer(name, tmp_path):
    """Every registered technique, through every trainer: the trainer either
    runs it with the single-run loop's trajectory (loss curve to 1e-4 over 5
    epochs) or refuses it with a message naming the missing capability;
    routing picks the first that runs it."""
    config = _nr_config(tmp_path) if name == "nr" else _config(name)
    if name in EXPECTED_ROUTES:
        assert route(config) == EXPECTED_ROUTES[name]
    (_, single_metrics, single_curves, _), = train_group([config], trainer="single")
    ran = []
    for trainer in TRAINERS:
        try:
            (_, metrics, curves, _), = train_group([config], trainer=trainer)
        except ValueError as exc:
            assert f"trainer '{trainer}' refuses the run" in str(exc)
            assert trainer not in TECHNIQUES[name].supports
            continue
        ran.append(trainer)
        assert curves["epoch"] == [1, 2, 3, 4, 5]
        for a, b in zip(curves["loss"], single_curves["loss"]):
            assert a == pytest.approx(b, abs=1e-4)
        assert metrics["widths"] == single_metrics["widths"]
        assert name == "nr" or metrics["widths"] == [4, 4, 4, 1]
    assert ran[0] == route(config) and "single" in ran
    if name == "counting-probe":  # once per step, in both single-run loops
        assert [c[0] for c in Counting.calls] == [1, 2, 3, 4, 5] * 2


@pytest.mark.usefixtures("probes")
def test_late_registered_technique_is_a_grid_axis(tmp_path):
    path = tmp_path / "late.toml"
    path.write_text('name = "late"\n[fixed]\ndataset = "moons"\nepochs = 3\ndepth = 2\n'
                    'width = 3\ntechnique = "counting-probe"\n[grid]\nprobe_k = [1, 2]\n')
    sweep = load_sweep(path)
    assert [r["probe_k"] for r in sweep.runs] == [1, 2]
    assert group_key(sweep.runs[0]) == group_key(sweep.runs[1])  # one group
    counts = run_sweep(sweep, tmp_path / "r.db", workers=1, progress=False)
    assert counts["done"] == 2
    assert sorted(load(tmp_path / "r.db")["probe_k"]) == [1, 2]
    assert sorted({k for _, _, k in Counting.calls}) == [1, 2]
    assert len(Counting.calls) == 6  # 3 full-batch epochs per run


def _adam_state_after_one_step(optimizer, w, g):
    w.grad = g.clone()
    optimizer.step()


@pytest.mark.parametrize("kind", ["adam", "adamw", "member", "sgd"])
def test_zero_state_zeroes_exactly_the_chosen_entries(kind):
    """After one step with gradient g: Adam's m = (1 - 0.9) g, v = (1 - 0.999) g^2
    (by hand); SGD's momentum buffer = g. Zeroing column 1 and row 0 leaves every
    other entry as it was."""
    w = nn.Parameter(torch.zeros(3, 4))
    g = torch.arange(1.0, 13.0).view(3, 4)
    if kind == "member":
        opt = MemberAdam([w], 0.01)
        opt.step([g])
    else:
        opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "sgd": lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9)}[kind]([w], lr=0.01)
        _adam_state_after_one_step(opt, w, g)
    state = opt.state[w]
    if kind == "sgd":
        expected = {"momentum_buffer": g}
    else:
        expected = {"exp_avg": 0.1 * g, "exp_avg_sq": 0.001 * g * g}
    for name, value in expected.items():
        assert torch.allclose(state[name], value)
    names = zero_state(opt, w, (slice(None), 1))
    names += zero_state(opt, w, 0)
    assert sorted(set(names)) == sorted(expected)
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[:, 1] = False
    keep[0] = False
    for name, value in expected.items():
        assert torch.equal(state[name][keep], value[keep])
        assert (state[name][~keep] == 0).all()
    if kind in ("adam", "adamw"):
        assert float(state["step"]) == 1.0  # the step count is kept
    with pytest.raises(ValueError, match="not one of the optimizer's parameters"):
        zero_state(opt, nn.Parameter(torch.zeros(2)), 0)


def test_member_adam_state_is_per_member():
    w = nn.Parameter(torch.zeros(2, 3, 4))  # (P, W, F)
    opt = MemberAdam([w], [torch.tensor([0.1, 0.2]).view(2, 1, 1)])
    opt.step([torch.ones(2, 3, 4)])
    zero_state(opt, w, (1, [0, 2]))  # member 1, units 0 and 2
    m = opt.state[w]["exp_avg"]
    assert torch.allclose(m[0], torch.full((3, 4), 0.1))
    assert torch.allclose(m[1, 1], torch.full((4,), 0.1))
    assert (m[1, [0, 2]] == 0).all()


class Widen(Technique):
    """After step 3, continue with the net widened by 2 units per layer: old
    weights copied, new units' incoming weights freshly drawn and their
    outgoing weights zero (same function)."""

    name = "widen-probe"
    seen: dict = {}

    def after_step(self, ctx):
        if ctx.step != 3:
            return
        old = ctx.model
        new = Rectangular(old.depth, old.width + 2, 2, 1)
        with torch.no_grad():
            for a, b in zip([*new.linears, new.output], [*old.linears, old.output]):
                a.weight[: b.out_features, : b.in_features] = b.weight
                a.weight[:, b.in_features:] = 0  # reads the previous layer's new units
                a.bias[: b.out_features] = b.bias
            new.output.bias.copy_(old.output.bias)
        Widen.seen = {"old": old, "new": new,
                      "start": {k: v.clone() for k, v in new.state_dict().items()},
                      "old_state": {k: v.clone() for k, v in old.state_dict().items()}}
        ctx.replace_model(new)


def test_technique_that_widens_the_model_mid_run():
    data = moons()
    model = Rectangular(3, 3, 2, 1)
    tech = Widen()
    out = {}

    class Check(Technique):
        name = "check-probe"

        def after_step(self, ctx):
            if ctx.step == 4:  # first hook call with the new model
                out["params"] = {id(p) for g in ctx.optimizer.param_groups for p in g["params"]}
                out["model"] = ctx.model

    from jumpstart.techniques import Combined
    result = fit(model, data, epochs=6, technique=Combined([tech, Check()]))
    new = Widen.seen["new"]
    assert out["model"] is new and result.model is new
    assert out["params"] == {id(p) for p in new.parameters()}  # exactly the new set
    for k, v in new.state_dict().items():  # every new tensor trained on
        assert not torch.equal(v, Widen.seen["start"][k]), k
    for k, v, in Widen.seen["old"].state_dict().items():  # the old net no longer moves
        assert torch.equal(v, Widen.seen["old_state"][k]), k
    assert result.metrics()["widths"] == [5, 5, 5, 1]
    assert result.epochs == 6


def test_sgd_momentum_and_milestones_match_torch_step_by_step():
    """fit with SGD + Nesterov momentum + weight decay + a step schedule equals
    torch.optim.SGD + MultiStepLR stepped once per epoch on the same batches."""
    data = moons()
    options = dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=1e-3,
                   lr_milestones=[2, 3], lr_gamma=0.5)
    torch.manual_seed(0)
    ours = Rectangular(3, 4, 2, 1)
    theirs = Rectangular(3, 4, 2, 1)
    theirs.load_state_dict(ours.state_dict())
    fit(ours, data, lr=0.05, epochs=4, batch_size=32, seed=7, **options)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 3], gamma=0.5)
    gen = torch.Generator().manual_seed(7)
    n = data.x_train.shape[0]
    lrs = []
    for _ in range(4):
        theirs.train()
        order = torch.randperm(n, generator=gen)
        lrs.append(opt.param_groups[0]["lr"])
        for lo in range(0, n, 32):
            idx = order[lo:lo + 32]
            loss = task_loss(theirs(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
    assert lrs == [0.05, 0.05, 0.025, 0.0125]
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a, b, atol=1e-7)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"optimizer": "rmsprop"}, "optimizer must be one of adam, adamw, sgd"),
    ({"momentum": 0.9}, "momentum and nesterov apply to optimizer sgd"),
    ({"optimizer": "sgd", "nesterov": True}, "nesterov needs momentum > 0"),
    ({"lr_milestones": [5, 2]}, "strictly increasing"),
    ({"lr_gamma": 0}, r"lr_gamma must be a number in \(0, 1\]"),
])
def test_bad_optimizer_options_are_refused_before_training(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_optimizer(**kwargs)
    with pytest.raises(ValueError, match=fragment):
        fit(Rectangular(2, 2, 2, 1), moons(), epochs=1, **kwargs)


def test_population_trainers_refuse_what_they_cannot_run():
    """A non-Adam optimizer or a schedule goes to the single-run loop."""
    for extra in ({"optimizer": "sgd", "momentum": 0.9}, {"lr_milestones": [2]},
                  {"weight_decay": 1e-4}):
        config = _config("batchnorm", **extra)
        assert route(config) == "single"
        with pytest.raises(ValueError, match="plain Adam only"):
            train_group([config], trainer="population")
        assert route(_config("jumpstart", **extra)) == "single"


def test_defaults_on_a_gelu_net():
    """activation_status and Jumpstart hook GELU nets with their defaults."""
    torch.manual_seed(0)
    net = Rectangular(3, 4, 2, 1, activation="gelu")
    x = torch.randn(16, 2)
    status = activation_status(net, x)
    assert status.num_layers == 3 and [len(u) for u in status.unit_status] == [4, 4, 4]
    js = Jumpstart(net)
    net.train()
    net(x)
    assert len(js.deficits()) == 3 and math.isfinite(float(js.penalty().detach()))
    js.remove()


def test_constraints_are_a_sweepable_technique_option(tmp_path):
    """An ablation axis over constraint subsets; the stacks honour the subset
    (same loss curve as the single-run loop)."""
    path = tmp_path / "abl.toml"
    path.write_text('name = "abl"\n[fixed]\ndataset = "moons"\nepochs = 5\ndepth = 3\n'
                    'width = 4\ntechnique = "jumpstart"\ncurve_every = 1\n[jumpstart]\n'
                    'lam = 0.01\n[grid]\nconstraints = [["unit+", "unit-"], ["point+"]]\n')
    runs = load_sweep(path).runs
    assert [r["constraints"] for r in runs] == [["unit+", "unit-"], ["point+"]]
    for config in runs:
        assert route(config) == "stacks"
        (_, _, stacked, _), = train_group([config], trainer="stacks")
        (_, _, single, _), = train_group([config], trainer="single")
        assert stacked["loss"] == pytest.approx(single["loss"], abs=1e-6)
        assert stacked["penalty"] == pytest.approx(single["penalty"], rel=1e-4)
    (_, _, a, _), = train_group([runs[0]], trainer="single")
    (_, _, b, _), = train_group([runs[1]], trainer="single")
    assert a["penalty"] != pytest.approx(b["penalty"])  # the subset matters


def test_store_keeps_every_curve_metric_and_migrates_old_curves(tmp_path):
    import sqlite3

    from jumpstart.experiments import ResultsStore

    db = tmp_path / "r.db"
    legacy = sqlite3.connect(db)  # a database written before curve_values
    legacy.executescript("CREATE TABLE curves (key TEXT NOT NULL, epoch INTEGER NOT NULL, "
                         "loss REAL, penalty REAL, train_acc REAL, val_acc REAL, "
                         "PRIMARY KEY (key, epoch));"
                         "INSERT INTO curves VALUES ('old', 10, 0.5, 0.0, 0.75, 0.5);")
    legacy.close()
    with ResultsStore(db) as store:
        store.record("new", "s", {"depth": 1}, "done", metrics={"diverged": False},
                     curves={"epoch": [1, 2], "loss": [0.7, 0.6], "test_acc": [0.5, 0.25],
                             "dormant": [None, 0.125]})
        frame = store.curves()
    old = frame[frame["key"] == "old"].iloc[0]
    assert (old["epoch"], old["loss"], old["train_acc"], old["val_acc"]) == (10, 0.5, 0.75, 0.5)
    new = frame[frame["key"] == "new"]
    assert new["test_acc"].tolist() == [0.5, 0.25]
    assert math.isnan(new["dormant"].iloc[0]) and new["dormant"].iloc[1] == 0.125


def test_cli_trains_with_sgd_and_a_schedule(capsys):
    import json

    from jumpstart.cli import main

    assert main(["train", "--depth", "2", "--width", "3", "--epochs", "3", "--technique",
                 "baseline", "--optimizer", "sgd", "--momentum", "0.9",
                 "--lr-milestones", "1,2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["optimizer"] == "sgd" and out["momentum"] == 0.9
    assert out["lr_milestones"] == [1, 2] and out["epochs"] == 3
    assert main(["train", "--depth", "2", "--width", "3", "--momentum", "0.9"]) == 2
    assert "momentum and nesterov apply to optimizer sgd" in capsys.readouterr().err


def test_status_metric_imports_without_lightning():
    import subprocess
    import sys

    code = ("import sys; sys.modules['lightning'] = None\n"
            "from jumpstart.integrations import ActivationStatusMetric\n"
            "print(ActivationStatusMetric.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ActivationStatusMetric"


class _Replace(Technique):
    """Replaces the model by a copy in hook ``hook`` at epoch 2 (after_epoch)
    or at the first step of epoch 3 (after_step, full batch)."""

    name = "replace-probe"

    def __init__(self, hook, shift):
        super().__init__()
        self.hook, self.shift = hook, shift

    def _maybe(self, ctx, hook, epoch):
        if hook == self.hook and ctx.epoch == epoch and not getattr(self, "done", False):
            self.done = True
            import copy
            ctx.replace_model(copy.deepcopy(ctx.model), shift_schedule=self.shift)

    def after_step(self, ctx):
        self._maybe(ctx, "after_step", 3)

    def after_epoch(self, ctx):
        lrs.append(ctx.optimizer.param_groups[0]["lr"])
        self._maybe(ctx, "after_epoch", 2)


lrs: list = []


@pytest.mark.parametrize("hook, shift, drop", [
    (None, False, 4),            # milestone 3: epochs 1-3 at lr 1, then 0.1
    ("after_epoch", False, 4),   # replaced after epoch 2: the schedule goes on
    ("after_epoch", True, 6),    # restarts after epoch 2: 3 more epochs at lr 1
    ("after_step", True, 6),     # replaced in epoch 3 (2 done): drop at 2 + 3 + 1
])
def test_schedule_after_a_model_replacement(hook, shift, drop):
    lrs.clear()
    tech = _Replace(hook, shift) if hook else _Replace("never", False)
    fit(Rectangular(2, 3, 2, 1), moons(), lr=1.0, epochs=8, optimizer="sgd",
        lr_milestones=[3], lr_gamma=0.1, technique=tech)
    assert lrs == pytest.approx([1.0] * (drop - 1) + [0.1] * (9 - drop))


def test_activations_in_loss_are_those_of_the_current_forward():
    seen = []

    class Probe(Technique):
        name = "activations-probe"
        needs_activations = True

        def loss(self, ctx):
            g = ctx.activations[0][1]
            seen.append(torch.equal(g, ctx.model.linears[0](ctx.batch[0]).detach()))
            return None

    fit(Rectangular(2, 3, 2, 1), moons(), epochs=3, technique=Probe())
    assert seen == [True, True, True]


def test_logged_names_cannot_overwrite_the_trainers_metrics():
    class Liar(Technique):
        name = "liar-probe"

        def after_epoch(self, ctx):
            ctx.log("val_acc", -1.0)

    with pytest.raises(ValueError, match=r"logged \['val_acc'\]"):
        fit(Rectangular(2, 3, 2, 1), moons(), epochs=1, technique=Liar())


def test_register_refuses_option_names_that_are_run_keys():
    class Clash(Technique):
        name = "clash-probe"
        options = {"weight_decay": Option(0.0, lambda v: True, "anything")}

    with pytest.raises(ValueError, match=r"option\(s\) \['weight_decay'\] are run keys"):
        register(Clash)
    assert "clash-probe" not in TECHNIQUES


def test_populations_refuse_position_granularity_and_stacks_refuse_lam_in_options():
    from jumpstart.train.stacks import Member, train_stacked

    config = _config("jumpstart", granularity="position", dataset="iris")
    assert route(config) == "single"
    with pytest.raises(ValueError, match="granularity 'channel'"):
        train_group([config], trainer="population")
    with pytest.raises(ValueError, match="lam per member"):
        train_stacked([Member(3, 0, 0.1, 2)], epochs=1, jumpstart={"lam": 0.5})


def test_zero_state_refuses_a_0_dim_parameter():
    w = nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.Adam([w])
    with pytest.raises(ValueError, match="0-dim"):
        zero_state(opt, w, ())


def test_run_keys_of_older_stores_are_kept():
    """A Jumpstart run at the default constraints has the key it had before
    constraints became an option (computed here by hand: the old config)."""
    from jumpstart.experiments import run_key

    old = {"dataset": "moons", "depth": 2, "width": 3, "technique": "jumpstart", "lam": 1e-4}
    assert run_key({**old, "constraints": ["unit+", "unit-", "point+", "point-"]}) == \
        run_key(old)
    assert run_key({**old, "constraints": ["unit+"]}) != run_key(old)


def _same(a, b):
    return (a is None or (isinstance(a, float) and math.isnan(a))) and \
        (b is None or (isinstance(b, float) and math.isnan(b))) or a == pytest.approx(b)


@pytest.mark.parametrize("dataset", ["iris", "moons"])  # population trainer, stacks
def test_a_diverged_member_is_stored_as_its_single_run_reports_it(tmp_path, dataset):
    """lr 1e30 diverges: the stored metrics (NaN as JSON null) equal train_run's."""
    import sqlite3

    from jumpstart.train import train_run

    path = tmp_path / "div.toml"
    path.write_text(f'name = "div"\n[fixed]\ndataset = "{dataset}"\nepochs = 5\ndepth = 3\n'
                    'width = 3\ntechnique = "baseline"\ncurve_every = 1\n[grid]\n'
                    'lr = [0.01, 1e30]\n')
    db = tmp_path / "r.db"
    counts = run_sweep(load_sweep(path), db, workers=1, progress=False)
    assert counts["diverged"] == 1 and counts["done"] == 1
    row = load(db).set_index("lr").loc[1e30]
    single = train_run(dataset=dataset, depth=3, width=3, technique="baseline", lr=1e30,
                       epochs=5).metrics()
    assert single["diverged"] and row["diverged"]
    for key in ("train_acc", "best_train_acc", "val_acc", "best_val_acc", "final_loss"):
        assert _same(row[key], single[key]), key
    assert row["epochs_done"] == single["epochs"]
    for key, value in single["status"].items():
        assert _same(row[key], value), key
    with sqlite3.connect(db) as con:  # strict JSON everywhere
        assert con.execute("SELECT COUNT(*) FROM runs WHERE json_valid(metrics) = 0 "
                           "OR json_valid(config) = 0").fetchone()[0] == 0


def test_status_of_non_finite_pre_activations_is_an_error_naming_the_layer():
    from jumpstart.core.status import NonFiniteError

    x = torch.randn(8, 2)
    x[3, 1] = math.nan
    net = Rectangular(2, 3, 2, 1)
    with pytest.raises(NonFiniteError, match="layer activations.0: pre-activations hold NaN"):
        activation_status(net, x)


@pytest.mark.parametrize("a, b", [({"lam": 1}, {"lam": 1.0}), ({"lr": 1}, {"lr": 1.0}),
                                  ({"margin": 2}, {"margin": 2.0}),
                                  ({"weight_decay": 0}, {"weight_decay": 0.0})])
def test_integer_and_float_spellings_are_one_run(a, b):
    from jumpstart.experiments import run_key

    base = {"dataset": "moons", "depth": 2, "width": 3, "technique": "jumpstart"}
    assert run_key({**base, **a}) == run_key({**base, **b})
    assert run_key({**base, "depth": 2}) != run_key({**base, "depth": 3})


def test_a_run_belongs_to_every_sweep_that_asked_for_it(tmp_path):
    text = ('name = "{name}"\n[fixed]\ndataset = "moons"\nepochs = 2\ndepth = 2\n'
            'technique = "jumpstart"\n[jumpstart]\nlam = {lam}\n[grid]\nwidth = [2, 3]\n')
    db = tmp_path / "r.db"
    (tmp_path / "a.toml").write_text(text.format(name="a", lam="1"))
    (tmp_path / "b.toml").write_text(text.format(name="b", lam="1.0"))
    assert run_sweep(load_sweep(tmp_path / "a.toml"), db, workers=1, progress=False)["done"] == 2
    again = run_sweep(load_sweep(tmp_path / "b.toml"), db, workers=1, progress=False)
    assert again["skipped"] == 2 and again["done"] == 0  # lam 1 and 1.0: the same runs
    assert len(load(db, sweep="b")) == 2 and len(load(db, sweep="a")) == 2
    assert len(load(db)) == 2


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_lam_lr_margin_are_refused_before_training(bad, tmp_path):
    with pytest.raises(ValueError, match="lam must be a number >= 0"):
        make_technique("jumpstart", lam=bad)
    with pytest.raises(ValueError, match="margin must be"):
        Jumpstart(Rectangular(2, 2, 2, 1), margin=bad)
    with pytest.raises(ValueError, match="lr must be finite"):
        fit(Rectangular(2, 2, 2, 1), moons(), lr=bad, epochs=1)
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\n[fixed]\ndataset = "moons"\ndepth = 2\nwidth = 2\n'
                    f'technique = "jumpstart"\n[jumpstart]\nlam = {"inf" if bad > 0 else "nan"}\n')
    with pytest.raises(ValueError, match="lam must be a number >= 0"):
        load_sweep(path)


def test_bad_stores_and_output_folders_fail_before_any_work(tmp_path, capsys):
    import os
    import sqlite3

    from jumpstart.cli import main
    from jumpstart.experiments import ResultsStore

    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        for i in range(200):
            store.record(f"k{i}", "s", {"i": i, "pad": "x" * 200}, "done", metrics={"a": i})
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    with open(db, "r+b") as f:  # a garbage page in the middle
        f.seek(size // 2)
        f.write(os.urandom(4096))
    with pytest.raises(ValueError, match="corrupt"):
        ResultsStore(db)
    with pytest.raises(ValueError, match="is a directory"):
        ResultsStore(tmp_path)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["train", "--depth", "2", "--width", "2", "--out", str(a_file)]) == 2
    assert f"--out {a_file} is a file, not a folder" in capsys.readouterr().err
    assert main(["sweep", "moons-quick", "--db", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("name, content, fragment", [
    ("trunc.tsv.gz", "truncate", "truncated file"),
    ("notgz.tsv.gz", b"not gzip at all", "is named .gz but is not a gzip file"),
    ("empty.tsv", b"", "empty file (no header row)"),
    ("header.tsv", b"a\tb\ttarget\n", "a header row and no data rows"),
    ("text.tsv", b"a\ttarget\n1\tx\n2\ty\n", "target column 'target' must hold integer class "
                                                 "ids; it holds text (e.g. 'x')"),
])
def test_broken_table_files_name_the_file(tmp_path, name, content, fragment, capsys):
    import gzip

    from jumpstart.cli import main
    from jumpstart.data import tabular

    path = tmp_path / name
    if content == "truncate":
        whole = gzip.compress(b"a\ttarget\n" + b"".join(b"%d\t%d\n" % (i, i % 2)
                                                          for i in range(2000)))
        path.write_bytes(whole[: len(whole) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        tabular(path)
    assert fragment in str(err.value) and str(path) in str(err.value)
    assert main(["train", "--dataset", str(path), "--depth", "2", "--width", "2"]) == 2
    assert fragment in capsys.readouterr().err


def test_a_truncated_idx_file_names_the_file(tmp_path):
    import gzip

    from jumpstart.data.images import read_idx

    whole = gzip.compress(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big")
                          * 2 + bytes(range(256)) * 40)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=f"truncated file {path}"):
        read_idx(path, "images")


def test_a_diverged_single_run_in_a_group_stores_undefined_status():
    (_, metrics, _, _), = train_group([_config("baseline", lr=1e30)], trainer="single")
    assert metrics["diverged"]
    assert all(math.isnan(v) for v in metrics["status"].values())


def test_reserved_run_keys_cover_every_sweep_key():
    from jumpstart.experiments.config import CHECKS
    from jumpstart.techniques import RESERVED_KEYS

    assert set(CHECKS) <= RESERVED_KEYS
