"""The sweep report (CPAIOR 2022 Fig. 2 heatmaps, trainable-depth table)."""

import re

import numpy as np
import pytest

from jumpstart.cli import main
from jumpstart.experiments import ResultsStore, run_key
from jumpstart.experiments.report import RESNET50_TOP1, write_report

PNG = b"\x89PNG\r\n\x1a\n"
# (technique, width, depth) -> best_train_acc per run, None = failed; the
# medians over the non-failed runs are in the comments (threshold 0.9).
ACC = {
    ("baseline", 2, 2): [1.0, 0.75],     # 0.875: max >= 0.9 but median not
    ("baseline", 2, 5): [0.75, 0.625],   # 0.6875
    ("baseline", 2, 10): [0.5, 0.5],     # 0.5 -> width 2 baseline: no depth trains
    ("jumpstart", 2, 2): [1.0, 1.0],     # 1.0 (second run diverged, counted as usual)
    ("jumpstart", 2, 5): [0.9, None],    # 0.9: failed run left out, threshold inclusive
    ("jumpstart", 2, 10): [0.625, 0.5],  # 0.5625
    ("baseline", 3, 2): [1.0, 0.875],    # 0.9375: min < 0.9 but median not
    ("baseline", 3, 5): [0.5, 1.0],      # 0.75
    ("baseline", 3, 10): [0.5, 0.5],     # 0.5
    ("jumpstart", 3, 2): [1.0, 1.0],     # 1.0
    ("jumpstart", 3, 5): [0.75, 0.75],   # 0.75
    ("jumpstart", 3, 10): [1.0, 0.9375, 0.5],  # median 0.9375 (mean 0.8125); 3rd run lam 1e-3
}
# per seed (seed 0 = each cell's first run, seed 1 the rest; by hand from ACC):
# baseline w2: seed 0 trains depth 2 (1.0), seed 1 none; jumpstart w2: 5 (0.9)
# and 2 (seed 1's depth-5 run failed, its depth 10 is 0.5); baseline w3: 2 and
# 5 (0.5, 1.0 at depth 5); jumpstart w3: 10 and 2 (seed 1 at depth 10: median
# of 0.9375 and 0.5 = 0.71875)
CSV = """width,technique,trainable_depth,trainable_cells,cells,seed_depths
2,baseline,,0,3,"2, -"
2,jumpstart,5,2,3,"5, 2"
3,baseline,2,1,3,"2, 5"
3,jumpstart,10,2,3,"10, 2"
"""


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        for (technique, width, depth), accs in ACC.items():
            for i, acc in enumerate(accs):
                config = {"dataset": "moons", "model": "rectangular", "depth": depth,
                          "width": width, "technique": technique, "epochs": 10, "lr": 0.01,
                          "seed": min(i, 1), "batch_size": "full", "curve_every": 5}
                if technique == "jumpstart":
                    config.update(lam=1e-3 if i == 2 else 1e-4, aggregation="sq")
                if acc is None:
                    store.record(run_key(config), "moons", config, "failed", metrics=None,
                                 error="boom")
                    continue
                state = "diverged" if (technique, width, depth, i) == ("jumpstart", 2, 2, 1) \
                    else "done"
                metrics = {"best_train_acc": acc, "best_val_acc": acc - 0.0625,
                           "train_acc": acc, "val_acc": acc, "diverged": state == "diverged",
                           "status": {"unit_dead_ratio": 1 - acc, "unit_linear_ratio": 0.25}}
                store.record(run_key(config), "moons", config, state, metrics=metrics)
    return path


def test_writes_figures_and_trainable_depth_table(db, tmp_path):
    out = tmp_path / "report" / "nested"
    paths = write_report(db, out)
    assert [p.name for p in paths] == ["fig2_moons.png", "trainable_depth.csv",
                                       "trainable_depth.md", "unit_status_heatmaps.png"]
    assert all(p.parent == out and p.is_file() for p in paths)
    for name in ("fig2_moons.png", "unit_status_heatmaps.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert (out / "trainable_depth.csv").read_text() == CSV
    md = (out / "trainable_depth.md").read_text()
    assert ">= 0.9" in md and "median" in md
    assert ("| width | baseline depth | baseline per seed | baseline cells | jumpstart depth "
            "| jumpstart per seed | jumpstart cells |") in md
    assert "| 2 | - | 2, - | 0/3 | 5 | 5, 2 | 2/3 |" in md
    assert "| 3 | 2 | 2, 5 | 1/3 | 10 | 10, 2 | 2/3 |" in md


def _panels(fig) -> dict:
    """Panel title -> the heatmap's cell values (widths x depths; NaN = grey)."""
    return {ax.get_title(): np.ma.filled(ax.images[0].get_array().astype(float), np.nan)
            for ax in fig.axes if ax.get_visible() and ax.images}


def test_grid_figures_are_drawn_from_the_cell_medians(db, tmp_path, figures):
    write_report(db, tmp_path)
    fig2 = figures["fig2_moons.png"]
    panels = _panels(fig2)
    # rows widths 2, 3; columns depths 2, 5, 10; medians as in ACC's comments
    assert panels["train, baseline"] == pytest.approx(
        np.array([[0.875, 0.6875, 0.5], [0.9375, 0.75, 0.5]]))
    assert panels["train, jumpstart"] == pytest.approx(
        np.array([[1.0, 0.9, 0.5625], [1.0, 0.75, 0.9375]]))
    # best_val_acc = best_train_acc - 0.0625 in every run
    assert panels["validation, jumpstart"] == pytest.approx(panels["train, jumpstart"] - 0.0625)
    ax = next(a for a in fig2.axes if a.get_title() == "train, baseline")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("depth", "width")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "5", "10"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "3"]
    bar = [a for a in fig2.axes if not a.get_title()]
    assert [a.get_ylabel() for a in bar] == ["best accuracy (0.5: chance)"]
    # the failed run leaves jumpstart (2, 5) one seed; every other cell has 2
    assert fig2._suptitle.get_text() == "Best accuracy, median over 1-2 seeds (CPAIOR 2022 Fig. 2)"
    status = _panels(figures["unit_status_heatmaps.png"])
    assert status["dead units, baseline"] == pytest.approx(1 - panels["train, baseline"])
    assert status["linear units, jumpstart"] == pytest.approx(np.full((2, 3), 0.25))


def test_threshold_and_sweep_filter(db, tmp_path):
    write_report(db, tmp_path, sweep="moons", threshold=0.75)
    lines = (tmp_path / "trainable_depth.csv").read_text().splitlines()
    # medians >= 0.75: baseline w2 {2}, jumpstart w2 {2, 5}, baseline w3 {2, 5},
    # jumpstart w3 {2, 5, 10}; per seed (0; 1): baseline w2 5 (0.75); 2 (0.75),
    # jumpstart w2 5; 2, baseline w3 2; 5, jumpstart w3 10; 5 (0.71875 at depth 10)
    assert lines[1:] == ['2,baseline,2,1,3,"5, 2"', '2,jumpstart,5,2,3,"5, 2"',
                         '3,baseline,5,2,3,"2, 5"', '3,jumpstart,10,3,3,"10, 5"']


@pytest.mark.parametrize("kwargs, fragment", [
    ({"sweep": "mnist"}, "no runs in sweep 'mnist'"),
    ({"threshold": 0}, "threshold must be a number in (0, 1]"),
])
def test_bad_input(db, tmp_path, kwargs, fragment):
    with pytest.raises(ValueError, match="^" + re.escape(fragment)):
        write_report(db, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_empty_or_missing_db(tmp_path):
    ResultsStore(tmp_path / "empty.db").close()
    with pytest.raises(ValueError, match="no runs in"):
        write_report(tmp_path / "empty.db", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not found"):
        write_report(tmp_path / "missing.db", tmp_path / "out")


def test_cli_report(db, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(db), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out / 'fig2_moons.png'}" in text.splitlines()
    assert "| 3 | 2 | 2, 5 | 1/3 | 10 | 10, 2 | 2/3 |" in text
    assert (out / "trainable_depth.csv").read_text() == CSV


@pytest.mark.parametrize("name, fragment", [("missing.db", "not found"),
                                            ("empty.db", "no runs in")])
def test_cli_report_errors(tmp_path, capsys, name, fragment):
    ResultsStore(tmp_path / "empty.db").close()
    assert main(["report", str(tmp_path / name), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("jumpstart: error:") and fragment in err


def test_table1_mnist_by_hand(tmp_path, figures):
    """CPAIOR Table 1 from a hand-made MNIST store: best accuracies, successful
    models (best val > 0.5), cells where each technique is best (ties count twice)."""
    # (technique, width, depth) -> (best_train_acc, best_val_acc)
    cells = {("baseline", 2, 4): (0.99, 0.97), ("jumpstart", 2, 4): (0.995, 0.97),
             ("baseline", 2, 28): (0.11, 0.11), ("jumpstart", 2, 28): (0.9, 0.88),
             ("baseline", 8, 4): (0.999, 0.985), ("jumpstart", 8, 4): (0.98, 0.95)}
    db = tmp_path / "m.db"
    with ResultsStore(db) as store:
        for (technique, width, depth), (tr, va) in cells.items():
            config = {"dataset": "mnist-5k", "model": "conv", "depth": depth, "width": width,
                      "technique": technique, "epochs": 3, "lr": 0.001, "seed": 0,
                      "batch_size": 128, "curve_every": 1}
            store.record(run_key(config), "mnist", config, "done",
                         metrics={"best_train_acc": tr, "best_val_acc": va, "diverged": False,
                                  "status": {"unit_dead_ratio": 0.0, "unit_linear_ratio": 0.0}})
    out = tmp_path / "rep"
    paths = write_report(db, out)
    assert {p.name for p in paths} == {"table1_mnist.csv", "table1_mnist.md", "mnist_heatmaps.png"}
    import pandas as pd

    t = pd.read_csv(out / "table1_mnist.csv").set_index("technique")
    assert t.loc["baseline", "best_train_acc"] == 0.999 and t.loc["jumpstart", "best_val_acc"] == 0.97
    assert t.loc["baseline", "successful"] == 2 and t.loc["jumpstart", "successful"] == 3
    assert t.loc["baseline", "best_cells"] == 2 and t.loc["jumpstart", "best_cells"] == 2
    assert "| jumpstart | 0.9950 | 0.9700 | 3/3 | 2 |" in (out / "table1_mnist.md").read_text()
    heat = figures["mnist_heatmaps.png"]
    panels = _panels(heat)  # widths 2, 8 x depths 4, 28; (8, 28) was not run: grey
    assert np.array_equal(panels["validation, baseline"],
                          np.array([[0.97, 0.11], [0.985, np.nan]]), equal_nan=True)
    assert np.array_equal(panels["train, jumpstart"],
                          np.array([[0.995, 0.9], [0.98, np.nan]]), equal_nan=True)
    assert [a.get_ylabel() for a in heat.axes if not a.get_title()] == [
        "best accuracy (0.1: chance)"]
    assert heat._suptitle.get_text() == "MNIST: best accuracy, one seed (CPAIOR 2022 Table 1)"


def test_imagenet_table_by_hand(tmp_path, figures):
    """Medians over seeds per (technique, width), the gap to torchvision's
    ResNet-50 top-1 (0.7613), failed runs left out; curves figure written."""
    # (technique, seed, state) -> (best_val_acc, val_acc, dead ratio)
    runs = {("jumpstart", 0, "done"): (0.70, 0.69, 0.10),
            ("jumpstart", 1, "done"): (0.74, 0.73, 0.30),
            ("jumpstart", 2, "failed"): None,
            ("batchnorm+skip", 0, "done"): (0.76, 0.75, 0.0)}
    db = tmp_path / "i.db"
    with ResultsStore(db) as store:
        for (technique, seed, state), values in runs.items():
            config = {"dataset": "imagenet", "model": "resnet", "depth": 50, "width": 2,
                      "technique": technique, "epochs": 2, "lr": 3e-5, "seed": seed,
                      "batch_size": 256, "curve_every": 1}
            if values is None:
                store.record(run_key(config), "imagenet", config, state, metrics=None,
                             error="boom")
                continue
            best, final, dead = values
            store.record(run_key(config), "imagenet", config, state,
                         metrics={"best_val_acc": best, "val_acc": final, "epochs": 2,
                                  "params": 1000, "diverged": False,
                                  "status": {"unit_dead_ratio": dead, "unit_linear_ratio": 0.0}},
                         curves={"epoch": [1, 2], "loss": [2.0, 1.0], "penalty": [0.0, 0.0],
                                 "train_acc": [0.5, 0.6], "val_acc": [best - 0.1, final]})
    out = tmp_path / "rep"
    paths = write_report(db, out)
    assert [p.name for p in paths] == ["imagenet_results.csv", "imagenet_results.md",
                                       "imagenet_curves.png"]
    import pandas as pd

    t = pd.read_csv(out / "imagenet_results.csv").set_index("technique")
    js = t.loc["jumpstart"]
    assert js["runs"] == 2 and js["best_val_acc"] == pytest.approx(0.72)
    assert js["val_acc"] == pytest.approx(0.71) and js["unit_dead_ratio"] == pytest.approx(0.2)
    assert js["gap_to_reference"] == pytest.approx(0.72 - 0.7613)
    assert t.loc["batchnorm+skip", "gap_to_reference"] == pytest.approx(-0.0013)
    assert "| jumpstart | 2 | 0.7200 | 0.7100 | -0.0413 | 1,000 | 2 | 0.200 | 0.000 | 2 |" in (
        out / "imagenet_results.md").read_text()
    (ax,) = figures["imagenet_curves.png"].axes
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    # one line per run that did not fail (its val_acc curve), and the reference
    assert lines == {"jumpstart w2 s0": [0.6, 0.69], "jumpstart w2 s1": [0.64, 0.73],
                     "batchnorm+skip w2 s0": [0.66, 0.75],
                     "torchvision ResNet-50": [RESNET50_TOP1, RESNET50_TOP1]}
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "validation top-1")
    assert ax.get_legend() is not None


def test_by_splits_a_technique_into_variants(db, tmp_path, capsys):
    """--by lam: the third jumpstart run of (3, 10) (lam 1e-3, acc 0.5) becomes its
    own technique; the lam-1e-4 runs of that cell give median (1.0 + 0.9375) / 2."""
    assert main(["report", str(db), "--out", str(tmp_path), "--by", "lam"]) == 0
    lines = (tmp_path / "trainable_depth.csv").read_text().splitlines()
    # per seed: the lam 1e-4 variant's seed 1 at depth 10 is one run (0.9375)
    assert lines[1:] == ['2,baseline,,0,3,"2, -"', '2,jumpstart[0.0001],5,2,3,"5, 2"',
                         '3,baseline,2,1,3,"2, 5"', '3,jumpstart[0.0001],10,2,3,"10, 10"',
                         "3,jumpstart[0.001],,0,1,-"]
    with pytest.raises(ValueError, match="no run has the config key"):
        write_report(db, tmp_path / "out", by=["div_kind"])


def test_cifar_table_best_setting_per_cell_and_largest_trained_depth():
    """CPAIOR Fig. 3 as a table, by hand: a cell's value is the best lam's
    median over seeds; a cell trains above 0.2."""
    import pandas as pd

    from jumpstart.experiments.report import cifar_table

    rows = []
    # baseline: depth 10 trains (0.3), depth 20 does not (0.1); width 4 only
    for depth, acc in ((10, 0.3), (20, 0.1)):
        rows.append(dict(technique="baseline", depth=depth, width=4, seed=0, lam=None,
                         best_val_acc=acc, params=100 * depth, state="done"))
    # jumpstart: depth 20 lam 0.1 seeds (0.25, 0.35) -> 0.30, lam 1 (0.5, failed) -> 0.5
    for lam, seed, acc, state in ((0.1, 0, 0.25, "done"), (0.1, 1, 0.35, "done"),
                                  (1.0, 0, 0.5, "done"), (1.0, 1, 0.9, "failed")):
        rows.append(dict(technique="jumpstart", depth=20, width=4, seed=seed, lam=lam,
                         best_val_acc=acc, params=2000, state=state))
    rows.append(dict(technique="jumpstart", depth=20, width=8, seed=0, lam=0.1,
                     best_val_acc=0.15, params=8000, state="done"))
    runs = pd.DataFrame(rows)
    runs.attrs["config_keys"] = ["technique", "depth", "width", "seed", "lam"]
    table = cifar_table(runs).set_index("technique")
    assert table.loc["baseline", "best_val_acc"] == pytest.approx(0.3)
    assert table.loc["baseline", "largest_depth"] == "w4: 10"
    assert (table.loc["baseline", "trained"], table.loc["baseline", "cells"]) == (1, 2)
    js = table.loc["jumpstart"]
    assert js["best_val_acc"] == pytest.approx(0.5)  # lam 1's one finished seed
    assert (js["depth"], js["width"], js["params"]) == (20, 4, 2000)
    assert js["largest_depth"] == "w4: 20, w8: -" and (js["trained"], js["cells"]) == (1, 2)


def test_cifar_report_cells_with_seed_ranges_heatmaps_and_scatter(tmp_path, figures):
    """A hand-made CIFAR store (3 seeds per cell, a held-out test part): the
    per-cell table holds median [min-max] over seeds of each accuracy, and the
    figures are drawn from those numbers (annotations, labels, log axis)."""
    import pandas as pd

    # (technique, depth, width) -> best_val_acc of seeds 0, 1, 2; the other
    # metrics are offsets of it: best train +0.1, final val -0.02, test -0.01
    cells = {("baseline", 10, 8): (0.25, 0.35, 0.30), ("baseline", 20, 8): (0.10, 0.10, 0.12),
             ("jumpstart", 10, 8): (0.40, 0.30, 0.35), ("jumpstart", 20, 8): (0.31, 0.20, 0.27)}
    db = tmp_path / "c.db"
    with ResultsStore(db) as store:
        for (technique, depth, width), accs in cells.items():
            for seed, acc in enumerate(accs):
                config = {"dataset": "cifar10-10k", "model": "conv", "depth": depth,
                          "width": width, "technique": technique, "epochs": 30, "lr": 0.001,
                          "seed": seed, "batch_size": 128, "test_split": 0.5}
                store.record(run_key(config), "fig3", config, "done", metrics={
                    "best_train_acc": acc + 0.1, "best_val_acc": acc, "val_acc": acc - 0.02,
                    "test_acc": acc, "best_val_test_acc": acc - 0.01, "diverged": False,
                    "params": 1000 * depth, "status": {"unit_dead_ratio": 0.0}})
    out = tmp_path / "rep"
    paths = write_report(db, out)
    assert [p.name for p in paths] == ["cifar_grid.csv", "cifar_grid.md", "cifar_cells.csv",
                                       "cifar_heatmaps.png", "cifar_accuracy_vs_params.png"]
    c = pd.read_csv(out / "cifar_cells.csv").set_index(["technique", "depth", "width"])
    js = c.loc[("jumpstart", 20, 8)]
    assert (js["best_val_acc"], js["best_val_acc_min"], js["best_val_acc_max"]) == \
        pytest.approx((0.27, 0.20, 0.31))
    assert (js["val_acc"], js["best_val_test_acc_max"], js["seeds"]) == \
        pytest.approx((0.25, 0.30, 3))
    text = (out / "cifar_grid.md").read_text()
    assert "Chance accuracy 0.1; epochs 30" in text
    assert "| jumpstart | 20 | 8 | 20,000 | 3 | 0.370 [0.300-0.410] | 0.270 [0.200-0.310] | " \
           "0.250 [0.180-0.290] | 0.260 [0.190-0.300] |" in text

    # paired by (depth, width, seed): baseline minus jumpstart best val
    # -0.15, +0.05, -0.05 (depth 10) and -0.21, -0.10, -0.15 (depth 20)
    from jumpstart.experiments.statistics import paired_test

    base = [0.25, 0.35, 0.30, 0.10, 0.10, 0.12]
    js_ = [0.40, 0.30, 0.35, 0.31, 0.20, 0.27]
    p = paired_test(base, js_)[0]
    assert f"| baseline | 6 | 1/0/5 | -0.102 | {p:.2g} |" in text

    heat = figures["cifar_heatmaps.png"]
    assert heat.get_suptitle() == "CIFAR: best accuracy per cell, median over 3 seeds (chance 0.1)"
    titled = {ax.get_title(): ax for ax in heat.axes if ax.get_title()}
    assert set(titled) == {"best train, baseline", "best train, jumpstart",
                           "best validation, baseline", "best validation, jumpstart"}
    val_js = titled["best validation, jumpstart"]
    assert sorted(t.get_text() for t in val_js.texts) == ["0.27", "0.35"]
    assert [t.get_text() for t in val_js.get_xticklabels()] == ["10", "20"]
    bar = [ax for ax in heat.axes if not ax.get_title()]
    assert [ax.get_ylabel() for ax in bar] == ["best accuracy (0.1: chance)"]

    scatter = figures["cifar_accuracy_vs_params.png"]
    train, val = scatter.axes[:2]
    assert (train.get_ylabel(), val.get_ylabel()) == ("best train accuracy",
                                                      "best validation accuracy")
    assert val.get_xscale() == "log" and val.get_xlabel() == "parameters (log scale)"
    assert sorted(t.get_text() for t in val.texts) == ["w8"] * 4
    labels = val.get_legend_handles_labels()[1]
    assert labels == ["baseline, depth 10", "baseline, depth 20", "jumpstart, depth 10",
                      "jumpstart, depth 20"]
    points = {(round(x), round(y, 3)) for line in val.get_lines()
              for x, y in zip(*line.get_data()) if len(line.get_xdata()) == 1}
    assert (20000, 0.27) in points and (10000, 0.30) in points


def test_heatmaps_wrap_many_techniques_into_rows(tmp_path, figures):
    """Ten techniques: each metric takes three rows of at most four panels,
    the two panels left over hidden, every technique drawn once per metric."""
    import pandas as pd

    from jumpstart.experiments.report import _heatmaps

    names = [f"t{i}" for i in range(10)]
    index = pd.MultiIndex.from_product([names, [2, 4], [10, 20]],
                                       names=["technique", "width", "depth"])
    values = pd.Series(np.arange(len(index), dtype=float) / len(index), index=index)
    _heatmaps(tmp_path / "h.png", [("train", values), ("validation", values)], names,
              0.0, 1.0, "title", "accuracy")
    fig = figures["h.png"]
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(shown) == 20 and fig.get_size_inches()[0] < 14
    assert [ax.get_title() for ax in shown[:5]] == [f"train, t{i}" for i in range(5)]
    assert sum(1 for ax in fig.axes if not ax.get_visible()) == 4
    t9 = next(ax for ax in shown if ax.get_title() == "validation, t9")
    grid = t9.get_images()[0].get_array()
    assert grid[1, 0] == pytest.approx(values[("t9", 4, 10)])  # width 4 (row 1), depth 10
