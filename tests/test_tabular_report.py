"""The tabular benchmark report: selection, key metrics, wins/draws/losses, files."""

import pandas as pd
import pytest

from jumpstart.cli import main
from jumpstart.experiments import ResultsStore, run_key
from jumpstart.experiments.selection import key_metrics, select, wins_draws_losses

# selected test accuracy and dead ratio per (dataset, technique), by hand
ACC = {"d1": {"A": 0.9, "B": 0.8, "C": 0.7},
       "d2": {"A": 0.6, "B": 0.6, "C": 0.6},
       "d3": {"A": 0.5, "B": 0.7, "C": 0.6}}
DEAD = {"A": [0.1, 0.3, 0.05], "B": [0.0, 0.0, 0.0], "C": [0.5, 0.25, 0.1]}


def selected_table():
    rows = []
    for i, (d, accs) in enumerate(ACC.items()):
        for t, acc in accs.items():
            rows.append({"dataset": d, "technique": t, "test_acc": acc,
                         "unit_dead_ratio": DEAD[t][i], "unit_linear_ratio": 0.1})
    return pd.DataFrame(rows)


def test_key_metrics_by_hand():
    km = key_metrics(selected_table()).set_index("technique")
    # trainability: strictly above the worst accuracy on the data set
    assert km.loc["A", "trainability"] == pytest.approx(1 / 3)   # d1 only
    assert km.loc["B", "trainability"] == pytest.approx(2 / 3)   # d1, d3
    assert km.loc["C", "trainability"] == pytest.approx(1 / 3)   # d3 only
    # convergence: mean of (accuracy - best accuracy there)
    assert km.loc["A", "convergence"] == pytest.approx((0 + 0 - 0.2) / 3)
    assert km.loc["B", "convergence"] == pytest.approx((-0.1 + 0 + 0) / 3)
    assert km.loc["C", "convergence"] == pytest.approx((-0.2 + 0 - 0.1) / 3)
    assert km.loc["A", "dead_unit_mean"] == pytest.approx(0.15)
    assert km.loc["A", "dead_unit_share_over_0.2"] == pytest.approx(1 / 3)
    assert km.loc["C", "dead_unit_share_over_0.2"] == pytest.approx(2 / 3)
    assert km.loc["B", "linear_unit_share_over_0.2"] == 0
    assert (km["datasets"] == 3).all()


def test_wins_draws_losses_by_hand():
    wdl = wins_draws_losses(selected_table())
    assert wdl.loc["A", "B"] == "1/1/1" and wdl.loc["B", "A"] == "1/1/1"
    assert wdl.loc["B", "C"] == "2/1/0" and wdl.loc["C", "B"] == "0/1/2"
    assert wdl.loc["A", "C"] == "1/1/1" and wdl.loc["A", "A"] == "-"


def _store(path):
    """Two data sets; technique t1 with two learning rates x 3 seeds, t2 one lr."""
    # (dataset, technique, lr) -> [(best_val_acc, best_val_test_acc, dead)] per seed
    runs = {
        ("d1", "baseline", 0.01): [(0.8, 0.70, 0.5), (0.6, 0.60, 0.5), (0.7, 0.65, 0.5)],
        ("d1", "baseline", 0.001): [(0.9, 0.50, 0.1), (0.5, 0.40, 0.1), (0.6, 0.45, 0.1)],
        ("d1", "jumpstart", 0.01): [(0.9, 0.85, 0.0), (0.95, 0.9, 0.0), (None, None, None)],
        ("d2", "baseline", 0.01): [(0.5, 0.5, 0.9)] * 3,
        ("d2", "jumpstart", 0.01): [(0.75, 0.8, 0.0)] * 3,
    }
    with ResultsStore(path) as store:
        for (d, t, lr), seeds in runs.items():
            for seed, (val, test, dead) in enumerate(seeds):
                config = {"dataset": d, "model": "rectangular", "depth": 50, "width": 4,
                          "technique": t, "epochs": 10, "lr": lr, "seed": seed,
                          "batch_size": "full", "curve_every": 5}
                if t == "jumpstart":
                    config["lam"] = 0.1
                if val is None:
                    store.record(run_key(config), "uci", config, "failed", metrics=None,
                                 error="boom")
                    continue
                metrics = {"best_val_acc": val, "best_val_test_acc": test, "test_acc": test,
                           "best_train_acc": 1.0, "train_acc": 1.0, "val_acc": val,
                           "diverged": False,
                           "status": {"unit_dead_ratio": dead, "unit_linear_ratio": 0.0,
                                      "point_efficiency": 1 - dead}}
                store.record(run_key(config), "uci", config, "done", metrics=metrics)


def test_selection_on_median_validation_and_report_files(tmp_path, capsys, figures):
    db = tmp_path / "r.db"
    _store(db)
    from jumpstart.experiments import load

    sel = select(load(db)).set_index(["dataset", "technique"])
    # baseline on d1: lr 0.01 has median val 0.7, lr 0.001 median 0.6 (its max 0.9
    # does not count); reported test accuracy is the median over its seeds, 0.65
    assert sel.loc[("d1", "baseline"), "config"] == "lr=0.01"
    assert sel.loc[("d1", "baseline"), "test_acc"] == pytest.approx(0.65)
    assert sel.loc[("d1", "baseline"), "unit_dead_ratio"] == pytest.approx(0.5)
    # the failed run is left out: median of 0.85 and 0.9
    assert sel.loc[("d1", "jumpstart"), "test_acc"] == pytest.approx(0.875)
    assert sel.loc[("d1", "jumpstart"), "seeds"] == 2
    out = tmp_path / "rep"
    assert main(["report", str(db), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"uci_results.csv", "uci_results.md", "key_metrics.csv", "key_metrics.md",
                     "wins_draws_losses.md", "uci_paired.png"}
    km = pd.read_csv(out / "key_metrics.csv").set_index("technique")
    assert km.loc["jumpstart", "convergence"] == 0 and km.loc["jumpstart", "trainability"] == 1
    assert km.loc["baseline", "convergence"] == pytest.approx(((0.65 - 0.875) + (0.5 - 0.8)) / 2)
    assert "| jumpstart | - | 2/0/0 |" not in (out / "wins_draws_losses.md").read_text()
    assert "| jumpstart | 2/0/0 | - |" in (out / "wins_draws_losses.md").read_text()
    # the paired plot: baseline's (jumpstart, baseline) test accuracy per data set
    (ax,) = [a for a in figures["uci_paired.png"].axes if a.get_visible()]
    assert ax.get_title() == "baseline: 0/0/2"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("jumpstart test accuracy",
                                                  "baseline test accuracy")
    points = sorted(map(tuple, ax.collections[0].get_offsets().round(4).tolist()))
    assert points == [(0.8, 0.5), (0.875, 0.65)]
    assert "trainability" in capsys.readouterr().out
