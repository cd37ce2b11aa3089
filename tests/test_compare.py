"""`jumpstart compare`: comparison files, the report's aggregation against a
hand-made store, option selection on validation only, and a tiny end-to-end run."""

import math
from pathlib import Path

import numpy as np
import pandas as pd

import pytest
import torch

from jumpstart.cli import main
from jumpstart.data import load_dataset
from jumpstart.experiments import load
from jumpstart.experiments.compare import load_comparison
from jumpstart.experiments.comparison_report import write_comparison_report
from jumpstart.experiments.config import SweepError, run_key
from jumpstart.experiments.store import ResultsStore
from jumpstart.train.run_options import RUN_OPTIONS

# two conv cells on mnist-5k (runs trained alone, so the cost column is defined)
HAND = """
name = "hand"
description = "hand-made"
[technique.baseline]
[technique.jumpstart]
grid = { lam = [0.1, 1.0] }
[benchmark.cells]
problem = ["depth", "width"]
success = 0.65
fixed = { dataset = "mnist-5k", model = "conv", epochs = 2, batch_size = 128, test_split = 0.5 }
grid = { depth = [1, 2], width = [3], seed = [0, 1] }
"""

# (depth, technique, lam) -> per seed (best_val_acc, best_val_test_acc, unit_dead_ratio)
VALUES = {
    (1, "baseline", None): [(0.5, 0.4, 0.2), (0.7, 0.6, 0.4)],
    (1, "jumpstart", 0.1): [(0.8, 0.6, 0.0), (0.8, 0.6, 0.0)],
    (1, "jumpstart", 1.0): [(0.7, 0.9, 0.0), (0.7, 0.9, 0.0)],  # best test, lower validation
    (2, "baseline", None): [(0.9, 0.8, 0.6), (0.9, 0.8, 0.6)],
    (2, "jumpstart", 0.1): [(0.6, 0.7, 0.1), None],  # seed 1 failed
    (2, "jumpstart", 1.0): [(0.85, 0.75, 0.1), (0.85, 0.75, 0.1)],
}


def _hand_store(tmp_path):
    path = tmp_path / "hand.toml"
    path.write_text(HAND)
    comparison = load_comparison(path)
    (bench,) = comparison.benchmarks
    db = tmp_path / "hand.db"
    with ResultsStore(db) as store:
        for config in bench.sweep.runs:
            value = VALUES[(config["depth"], config["technique"], config.get("lam"))][config["seed"]]
            if value is None:
                store.record(run_key(config), "compare-cells", config, "failed", metrics=None,
                             error="boom")
                continue
            val, test, dead = value
            seconds = 10.0 if config["technique"] == "baseline" else 12.0
            metrics = {"best_val_acc": val, "best_val_test_acc": test, "epochs": 2,
                       "status": {"unit_dead_ratio": dead, "unit_linear_ratio": 0.0}}
            store.record(run_key(config), "compare-cells", config, "done", metrics=metrics,
                         seconds=seconds)
    return comparison, db


def test_report_aggregates_a_hand_made_store(tmp_path):
    comparison, db = _hand_store(tmp_path)
    paths = write_comparison_report(comparison, db, tmp_path / "out")
    assert [p.name for p in paths] == ["comparison.csv", "comparison.md", "comparison.png",
                                       "comparison_problems.csv"]
    table = pd.read_csv(paths[0]).set_index("technique")
    base, js = table.loc["baseline"], table.loc["jumpstart"]
    # selected per cell on validation: depth 1 lam 0.1 (val 0.8 > 0.7), depth 2 lam 1 (0.85 > 0.6)
    assert js["chosen"] == "lam=0.1 (1), lam=1 (1)"
    # test accuracy: medians over seeds, then the mean over the two cells
    assert base["test_acc"] == pytest.approx((0.5 + 0.8) / 2)
    assert js["test_acc"] == pytest.approx((0.6 + 0.75) / 2)
    # worst per cell: 0.5 (baseline), 0.75 (jumpstart); best: 0.6, 0.8
    assert base["trainability"] == pytest.approx(0.5) and js["trainability"] == pytest.approx(0.5)
    assert base["convergence"] == pytest.approx((0.5 - 0.6) / 2)
    assert js["convergence"] == pytest.approx((0.75 - 0.8) / 2)
    assert base["vs_jumpstart"] == "1/0/1" and pd.isna(js["vs_jumpstart"])
    # two problems: no interval (fewer than MIN_PROBLEMS); Wilcoxon on 2 pairs of
    # opposite signs: W = 1 of a null distribution {0, 1, 2, 3}, two-sided p = 1
    assert pd.isna(base["ci_low"]) and pd.isna(js["ci_high"])
    assert base["p_vs_jumpstart"] == pytest.approx(1.0) and pd.isna(js["p_vs_jumpstart"])
    assert str(base["seeds"]) == "2" and str(js["seeds"]) == "2"
    assert base["dead_units"] == pytest.approx((0.3 + 0.6) / 2)
    # validation medians 0.6 and 0.9 (baseline), 0.8 and 0.85 (jumpstart) against 0.65
    assert base["trained"] == "1/2" and js["trained"] == "2/2"
    # 12 s against 10 s for 2 epochs each (the failed run left out)
    assert js["cost"] == pytest.approx(1.2) and base["cost"] == pytest.approx(1.0)
    assert (base["runs"], base["failed"], js["runs"], js["failed"]) == (4, 0, 8, 1)
    # (cell, seed) pairs, baseline - Jumpstart: depth 1 -0.2 and 0 (a draw), depth 2 +0.05
    # twice; the signed ranks of the non-zero three (3 against 1.5 + 1.5) balance: p = 1
    assert base["vs_jumpstart_seeds"] == "2/1/1"
    assert base["p_seeds"] == pytest.approx(1.0)
    text = paths[1].read_text()
    assert "| baseline | 1/0/1 (p=1) |" in text and "lam in {0.1, 1}" in text
    # both p columns of the benchmark's own table in two significant digits, not 3 decimals
    assert "| 1/0/1 | 1 | 2/1/1 | 1 |" in text
    assert "| baseline | 0.650 |" in text
    assert paths[2].read_bytes()[:4] == b"\x89PNG"


def test_report_pairs_each_seed_and_gives_seed_ranges(tmp_path, figures):
    comparison, db = _hand_store(tmp_path)
    paths = write_comparison_report(comparison, db, tmp_path / "out")
    base = pd.read_csv(paths[0]).set_index("technique").loc["baseline"]
    # baseline - jumpstart (chosen: lam 0.1 at depth 1, lam 1 at depth 2) per (depth, seed):
    # 0.4 - 0.6 = -0.2, 0.6 - 0.6 = 0 (draw), 0.8 - 0.75 = +0.05 twice -> 2/1/1;
    # |d| ranks 1.5, 1.5, 3: W+ = W- = 3, the null mean, so p = 1
    assert base["vs_jumpstart_seeds"] == "2/1/1"
    assert base["p_seeds"] == pytest.approx(1.0)
    problems = pd.read_csv(paths[3]).set_index(["problem", "technique"])
    row = problems.loc[("depth=1 width=3", "baseline")]
    assert (row["seeds"], row["median"], row["min"], row["max"]) == (2, 0.5, 0.4, 0.6)
    row = problems.loc[("depth=2 width=3", "jumpstart")]  # the chosen lam 1, not lam 0.1
    assert (row["config"], row["seeds"], row["median"]) == ("lam=1", 2, 0.75)
    text = paths[1].read_text()
    assert "| depth=1 width=3 | 0.500 [0.400-0.600] | 0.600 [0.600-0.600] |" in text
    assert "| baseline | 2/1/1 (p=1) |" in text
    (ax,) = figures["comparison.png"].axes  # two problems: fewer than MIN_PROBLEMS
    assert ax.get_title() == "cells\n(no interval: 2 problems)"


def test_the_test_split_never_chooses(tmp_path):
    comparison, db = _hand_store(tmp_path)
    # the setting with the best test accuracy (lam 1 at depth 1: 0.9) was never chosen
    table = pd.read_csv(write_comparison_report(comparison, db, tmp_path / "o")[0])
    assert table.set_index("technique").loc["jumpstart", "test_acc"] < (0.9 + 0.75) / 2


def test_a_technique_whose_runs_all_failed_is_left_out_with_why(tmp_path):
    comparison, db = _hand_store(tmp_path)
    with ResultsStore(db) as store:
        store._db.execute("UPDATE runs SET state = 'failed', metrics = NULL, "
                          "error = 'Traceback\nValueError: no such head' "
                          "WHERE config LIKE '%jumpstart%'")
        store._db.commit()
    text = write_comparison_report(comparison, db, tmp_path / "o")[1].read_text()
    assert "Left out: jumpstart (8 failed runs: ValueError: no such head)." in text


def test_a_technique_without_runs_is_undefined_not_zero(tmp_path):
    comparison, db = _hand_store(tmp_path)
    with ResultsStore(db) as store:  # only the baseline left
        store._db.execute("DELETE FROM runs WHERE config LIKE '%jumpstart%'")
        store._db.commit()
    table = pd.read_csv(write_comparison_report(comparison, db, tmp_path / "o")[0])
    js = table.set_index("technique").loc["jumpstart"]
    assert js["runs"] == 0 and math.isnan(js["test_acc"]) and math.isnan(js["cost"])


@pytest.mark.parametrize("text, fragment", [
    ('[technique.a]\ntechnique = "baseline"\n[technique.b]\ntechnique = "baseline"\n'
     '[benchmark.m]\nproblem = ["depth"]\nfixed = { dataset = "moons", width = 2 }\n'
     'grid = { depth = [1] }\n', "give the same run"),
    ('[technique.jumpstart]\ngrid = { lam = [0.1, 1.0, 10.0] }\n[benchmark.m]\n'
     'problem = ["depth"]\nfixed = { dataset = "moons", width = 2 }\ngrid = { depth = [1] }\n',
     "at most 2"),
    ('[technique.baseline]\n[benchmark.m]\nproblem = "depth"\n', "problem must be"),
    ('[technique.baseline]\n[benchmark.m]\nproblem = ["depth"]\nfixed = { dataset = "moons", '
     'width = 2 }\ngrid = { depth = [0] }\n', "depth must be"),
    ('[technique.baseline]\nbogus = 1\n', "unknown key(s) ['bogus']"),
])
def test_bad_comparison_files_are_refused_before_any_run(tmp_path, text, fragment):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(SweepError, match=None) as info:
        load_comparison(path)
    assert fragment in str(info.value)


def test_unknown_benchmark_or_technique_names_the_known_ones():
    with pytest.raises(SweepError, match="known: uci-paper"):
        load_comparison(benchmarks=["cifar"])
    with pytest.raises(SweepError, match="unknown technique"):
        load_comparison(techniques=["jumpstart", "dropout"])


def test_the_shipped_comparison_gives_every_technique_the_same_budget():
    comparison = load_comparison(benchmarks=["uci-demo"])
    (bench,) = comparison.benchmarks
    per = pd.Series(bench.labels).value_counts()
    tables = 3  # iris, wine-recognition, haberman; one learning rate, one seed
    assert set(per) <= {tables, 2 * tables}
    assert set(per.index) == set(comparison.techniques)
    configs = {run_key(c): c for c in bench.sweep.runs}
    redo = [c for k, c in configs.items() if bench.labels[k] == "redo"]
    assert {c["redo_every"] for c in redo} == {50}  # the benchmark's scaled option
    init = [c for k, c in configs.items() if bench.labels[k] == "decorrelated-init"]
    assert {c["init"] for c in init} == {"decorrelated"} and {c["technique"] for c in init} == {
        "baseline"}


def test_a_file_of_techniques_takes_the_shipped_benchmark_and_its_own_replaces_it(tmp_path):
    """A file that only fixes settings names a shipped benchmark and gets its
    protocol (the same runs as the default file's at that setting); a
    benchmark table of its own replaces the shipped one whole."""
    techniques = '[technique.jumpstart]\nfixed = { aggregation = "balanced", lam = 0.1 }\n'
    path = tmp_path / "fixed.toml"
    path.write_text('benchmarks = ["uci-demo"]\n' + techniques)
    (bench,) = load_comparison(path).benchmarks
    shipped = load_comparison(benchmarks=["uci-demo"], techniques=["jumpstart"]).benchmarks[0]
    at_lam = {run_key(c) for c in shipped.sweep.runs if c["lam"] == 0.1}
    assert {run_key(c) for c in bench.sweep.runs} == at_lam and len(at_lam) == 3
    assert bench.description == shipped.description
    path.write_text('benchmarks = ["uci-demo"]\n' + techniques + '[benchmark.uci-demo]\n'
                    'problem = ["depth"]\nfixed = { dataset = "moons", width = 2 }\n'
                    'grid = { depth = [1, 2] }\n')
    (own,) = load_comparison(path).benchmarks
    assert [(c["dataset"], c["depth"], c["epochs"]) for c in own.sweep.runs] == [
        ("moons", 1, RUN_OPTIONS["epochs"].default), ("moons", 2, RUN_OPTIONS["epochs"].default)]


def test_data_dir_reaches_the_table_benchmarks_only(tmp_path):
    """--data-dir is a folder of tables: an image benchmark keeps reading the
    shared data folder (it once got the tables' folder and failed)."""
    tables = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"
    if not tables.is_dir():
        pytest.skip("needs ../shared/data/uci")
    comparison = load_comparison(benchmarks=["uci-demo", "mnist-5k-cpu"],
                                 techniques=["baseline"], data_dir=tables)
    folders = {b.name: {c.get("data_dir") for c in b.sweep.runs} for b in comparison.benchmarks}
    assert folders == {"uci-demo": {str(tables.resolve())}, "mnist-5k-cpu": {None}}


def test_test_split_is_stratified_and_disjoint():
    full = load_dataset("moons")
    data = load_dataset("moons", test_split=0.5)
    assert len(data.y_val) + len(data.y_test) == len(full.y_val)
    joined = torch.cat([data.x_val, data.x_test])
    assert sorted(map(tuple, joined.tolist())) == sorted(map(tuple, full.x_val.tolist()))
    counts = np.bincount(full.y_val.numpy())
    test_counts = np.bincount(data.y_test.numpy(), minlength=2)
    assert all(abs(t - c / 2) <= 1 for t, c in zip(test_counts, counts))
    assert data.split == {"test_split": 0.5}
    with pytest.raises(ValueError, match="already has a test part"):
        load_dataset("moons", test_split=0.5).with_test_split(0.5)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        full.with_test_split(1.0)


TINY = """
name = "tiny"
description = "two techniques, two tiny benchmarks"
benchmarks = ["moons", "iris"]
[technique.baseline]
[technique.jumpstart]
fixed = { aggregation = "balanced" }
grid = { lam = [0.1, 1.0] }
[benchmark.moons]
problem = ["depth", "width"]
success = 0.6
fixed = { dataset = "moons", model = "rectangular", epochs = 30, batch_size = "full", curve_every = 10, test_split = 0.5 }
grid = { depth = [1, 2], width = [3], seed = [0] }
[benchmark.iris]
problem = ["dataset"]
fixed = { model = "rectangular", depth = 2, width = 4, epochs = 30, batch_size = "full", curve_every = 10 }
grid = { dataset = ["iris"], seed = [0] }
"""


def test_compare_end_to_end_and_resumes(tmp_path, capsys):
    path, db, out = tmp_path / "tiny.toml", tmp_path / "c.db", tmp_path / "out"
    path.write_text(TINY)
    argv = ["compare", "--comparison", str(path), "--db", str(db), "--out", str(out),
            "--workers", "1"]
    assert main(argv + ["--report-only"]) == 2 and not db.exists()  # no store to read
    assert "no such file" in capsys.readouterr().err
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "moons: 6 runs, 0 already" in printed and "iris: 3 runs, 0 already" in printed
    table = pd.read_csv(out / "comparison.csv")
    assert len(table) == 4 and set(table["benchmark"]) == {"moons", "iris"}
    # the report's jumpstart accuracy on moons against its own reading of the store
    runs = load(db, sweep="compare-moons")
    js = runs[runs["technique"] == "jumpstart"]
    chosen = js.sort_values("best_val_acc", ascending=False, kind="stable").groupby("depth").head(1)
    row = table[(table["benchmark"] == "moons") & (table["technique"] == "jumpstart")].iloc[0]
    assert row["test_acc"] == pytest.approx(chosen["best_val_test_acc"].mean())
    assert main(argv) == 0  # resumed: nothing trained again
    assert "moons: 6 runs, 6 already" in capsys.readouterr().out
    (out / "comparison.csv").unlink()
    assert main(argv + ["--report-only"]) == 0  # the report again, no sweep started
    assert "already" not in capsys.readouterr().out
    assert pd.read_csv(out / "comparison.csv").equals(table)


def test_compare_refuses_bad_names_before_any_run(tmp_path, capsys):
    db = tmp_path / "c.db"
    assert main(["compare", "--db", str(db), "--benchmarks", "nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err and not db.exists()


def test_the_cifar_benchmark_counts_a_cell_trained_as_the_preset_report_does():
    from jumpstart.experiments.report import CIFAR_SUCCESS

    (bench,) = load_comparison(benchmarks=["cifar10-10k-cpu"]).benchmarks
    assert bench.success == CIFAR_SUCCESS == 0.2  # twice chance on 10 classes


@pytest.mark.parametrize("chance, grey", [(0.65, True), (0.55, False)])
def test_the_figure_shows_intervals_and_greys_a_benchmark_at_chance(tmp_path, figures,
                                                                    monkeypatch, chance, grey):
    """Intervals with the minimum lowered to the hand store's two problems: a
    resample's mean is one of the two values or their midpoint, so the
    percentile interval runs from one value to the other (baseline 0.5-0.8,
    Jumpstart 0.6-0.75): no lower end above 0.65, so that benchmark is
    greyed; 0.6 > 0.55 is not."""
    from jumpstart.experiments import comparison_report

    monkeypatch.setattr(comparison_report, "MIN_PROBLEMS", 2)
    _, db = _hand_store(tmp_path)
    path = tmp_path / "chance.toml"
    path.write_text(HAND.replace("success = 0.65", f"success = 0.65\nchance = {chance}"))
    comparison = load_comparison(path)
    write_comparison_report(comparison, db, tmp_path / "out")
    (ax,) = figures["comparison.png"].axes
    assert ax.get_title() == "cells" + ("\n(no technique above chance)" if grey else "")
    assert (ax.get_facecolor()[:3] == (0.88, 0.88, 0.88)) == grey
    assert ax.get_xlabel() == f"test accuracy (chance {chance:g})"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["baseline", "jumpstart"]
    assert sorted(t.get_text() for t in ax.texts) == ["0.65", "0.68"]
    bars = [seg for c in ax.collections for seg in c.get_segments()]
    spans = sorted((round(s[0][0], 3), round(s[1][0], 3)) for s in bars if s[0][1] == s[1][1])
    assert spans == [(0.5, 0.8), (0.6, 0.75)]
    (ticks,) = [line for line in ax.get_lines() if line.get_gid() == "problems"]
    # per problem, the median over seeds: baseline 0.5 (depth 1), 0.8; jumpstart 0.6, 0.75
    ticked = sorted(zip(ticks.get_ydata(), ticks.get_xdata()))
    assert np.allclose(ticked, [(0, 0.5), (0, 0.8), (1, 0.6), (1, 0.75)])
    text = (tmp_path / "out" / "comparison.md").read_text()
    assert f"- cells: chance {chance:g}; " + ("no technique is above it" if grey else
                                             "some technique is above it") in text
    assert "| baseline | 0.650 [0.500, 0.800] |" in text
