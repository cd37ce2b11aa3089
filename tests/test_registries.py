"""The run options, the model registry and the report registry: each one
definition that every layer reads."""

import math

import pytest
from torch import nn

from jumpstart.experiments import load_sweep, run_key
from jumpstart.experiments.config import BASE_DEFAULTS, CHECKS
from jumpstart.models.registry import MODEL_FAMILIES, register_model
from jumpstart.techniques import RESERVED_KEYS
from jumpstart.train import route, train_run
from jumpstart.train.run_options import KEYED, RUN_OPTIONS, parse_run


def test_every_layer_reads_the_run_options():
    from jumpstart.cli import _RUN

    assert set(CHECKS) == set(RUN_OPTIONS) <= RESERVED_KEYS
    assert _RUN == {k: o.default for k, o in RUN_OPTIONS.items()}
    assert BASE_DEFAULTS == {k: RUN_OPTIONS[k].default for k in
                             ("model", "epochs", "lr", "batch_size", "curve_every", "seed")}


def test_a_run_records_the_config_a_sweep_stores(tmp_path):
    """train_run's record is the sweep's run config: the same run key."""
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[fixed]\ndataset = "moons"\ndepth = 2\nwidth = 3\n'
                    'epochs = 3\n[jumpstart]\nlam = 0.001\n[grid]\n'
                    'technique = ["jumpstart"]\n')
    config, = load_sweep(path).runs
    run = train_run(dataset="moons", depth=2, width=3, epochs=3, technique="jumpstart",
                    lam=0.001)
    assert set(run.config) == set(config) and run_key(run.config) == run_key(config)
    assert set(KEYED) <= set(config)


@pytest.mark.parametrize("config, message", [
    ({"depth": 2}, "run config needs width"),
    ({"depth": 2, "width": 3, "epochs": 0}, "epochs must be an integer >= 1; got 0"),
    ({"depth": 2, "width": 3, "lam": 1.0}, r"option\(s\) \['lam'\]"),  # baseline takes none
    ({"depth": 2, "width": 2.5}, "width must be an integer >= 1 for model rectangular"),
    ({"depth": 2, "width": 3, "model": "moons_conv", "dataset": "iris"},
     "model moons_conv takes the moons data set only"),
])
def test_parse_run_refuses_before_any_work(config, message):
    with pytest.raises(ValueError, match=message):
        parse_run(config)


@pytest.fixture
def family():
    """A user's model family in one registration: a 2-layer MLP of width units."""
    @register_model("tiny_mlp", supports={"population"}, text="a test family")
    def tiny_mlp(r):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(r.shape), r.width), nn.ReLU(),
                             nn.Linear(r.width, r.out_features))

    try:
        yield "tiny_mlp"
    finally:
        del MODEL_FAMILIES["tiny_mlp"]


def test_a_registered_family_trains_and_routes(family, tmp_path):
    run = train_run(dataset="moons", model=family, depth=1, width=5, epochs=2)
    # 2 -> 5 -> 1: (2*5 + 5) + (5 + 1)
    assert run.metrics()["params_at_init"] == 21 and run.status is not None
    config = {"dataset": "moons", "model": family, "depth": 1, "width": 5}
    assert route(config) == "population"  # it declares population support
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\n[fixed]\ndataset = "moons"\nmodel = "{family}"\n'
                    'depth = 1\nwidth = 5\n[grid]\ntechnique = ["baseline"]\n')
    assert load_sweep(path).runs[0]["model"] == family


def test_register_model_refuses_a_taken_name_and_unknown_capabilities():
    with pytest.raises(ValueError, match="already registered"):
        register_model("conv", text="x")(lambda r: None)
    with pytest.raises(ValueError, match="unknown capabilities"):
        register_model("new_family", text="x", supports={"surgery"})


def test_a_registered_report_runs_when_it_applies(tmp_path):
    from jumpstart.experiments.report import write_report
    from jumpstart.experiments.reports import REPORTS, register_report
    from jumpstart.experiments.store import ResultsStore

    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        for lr in (0.01, 0.001):
            config = {"dataset": "moons", "depth": 2, "width": 3, "technique": "baseline",
                      "lr": lr, "seed": 0}
            store.record(run_key(config), "s", config, "done",
                         metrics={"best_train_acc": 0.9, "best_val_acc": 0.8,
                                  "unit_dead_ratio": 0.0, "unit_linear_ratio": 0.0})

    @register_report("lr_count", applies=lambda runs: runs["lr"].nunique() > 1, text="test")
    def lr_count(job):
        path = job.out / "lr_count.txt"
        path.write_text(str(job.runs["lr"].nunique()))
        return [path]

    try:
        paths = write_report(db, tmp_path / "out")
    finally:
        del REPORTS["lr_count"]
    names = [p.name for p in paths]
    # the grid report applies too (a depth x width x technique grid): both ran
    assert names[:4] == ["fig2_moons.png", "trainable_depth.csv", "trainable_depth.md",
                         "unit_status_heatmaps.png"] and names[4:] == ["lr_count.txt"]
    assert (tmp_path / "out" / "lr_count.txt").read_text() == "2"
