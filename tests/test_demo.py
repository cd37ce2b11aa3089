"""The demo's headline over seeds, and its per-cell summary by hand."""

import pytest

from jumpstart.demo import _population, summarize


def test_summary_median_range_and_median_seed_by_hand():
    records = [{"lr": 0.01, "depth": 10, "technique": "jumpstart", "seed": s,
                "best_train_acc": acc, "best_val_acc": 0.5, "train_acc": final,
                "unit_dead_ratio": dead, "unit_linear_ratio": 0.0, "point_dead_ratio": 0.0}
               for s, acc, final, dead in ((0, 0.9, 0.8, 0.1), (1, 1.0, 1.0, 0.0),
                                           (2, 0.6, 0.5, 0.3), (3, 0.9, 0.9, 0.2))]
    row, = summarize(records)
    assert row["seeds"] == 4
    assert row["best_train_acc"] == pytest.approx(0.9)          # median of .6 .9 .9 1
    assert (row["best_train_acc_min"], row["best_train_acc_max"]) == (0.6, 1.0)
    assert row["train_acc"] == pytest.approx(0.85)              # median of .5 .8 .9 1
    assert row["unit_dead_ratio"] == pytest.approx(0.15)
    # sorted by (best train acc, seed): seeds 2, 0, 3, 1; the lower middle one is seed 0
    assert row["median_seed"] == 0


def test_headline_jumpstart_trains_the_deep_thin_net_the_baseline_does_not():
    """Depth 20 x width 3 on MOONS, Adam 0.01, 5 seeds in one population, 1500
    epochs (the demo runs 5000): Jumpstart's median best training accuracy is
    at least 0.9 and the baseline's at most 0.6. A refactor that moves the
    headline fails here."""
    cells = [(20, t, lam, s) for t, lam in (("baseline", 0.0), ("jumpstart", 1e-4))
             for s in range(5)]
    records = _population({"lr": 0.01, "width": 3, "epochs": 1500, "aggregation": "balanced",
                           "cells": cells})
    rows = {r["technique"]: r for r in summarize(records)}
    assert rows["jumpstart"]["best_train_acc"] >= 0.9
    assert rows["baseline"]["best_train_acc"] <= 0.6
