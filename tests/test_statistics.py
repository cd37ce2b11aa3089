"""Intervals and paired tests of the comparison report, against numbers
worked out by hand (exact bootstrap and signed-rank distributions)."""

import math

import numpy as np
import pandas as pd
import pytest

from jumpstart.experiments.statistics import bootstrap_interval, paired_record, paired_test
from jumpstart.experiments.selection import key_metrics


def test_bootstrap_interval_of_a_small_sample_by_hand():
    # resampling [0, 0, 0, 1]: the mean is k/4 with k ~ Binomial(4, 1/4);
    # P(k = 0) = 0.316 > 0.025 and P(k <= 2) = 0.949 < 0.975 < P(k <= 3) = 0.996
    assert bootstrap_interval([0, 0, 0, 1]) == pytest.approx((0.0, 0.75))
    # two values: the resampled mean is one of them or their midpoint
    assert bootstrap_interval([0.2, 0.6]) == pytest.approx((0.2, 0.6))


def test_bootstrap_interval_covers_the_mean_of_a_normal_sample():
    x = np.random.default_rng(1).normal(0.5, 0.1, 400)
    low, high = bootstrap_interval(x)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # the normal-theory half width
    assert low < x.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_interval_undefined_or_degenerate():
    assert all(math.isnan(v) for v in bootstrap_interval([0.7]))
    assert all(math.isnan(v) for v in bootstrap_interval([math.nan, 0.3]))
    assert bootstrap_interval([0.4, 0.4, 0.4]) == (0.4, 0.4)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([0, 1], level=95)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval([0, 1], resamples=10)


def test_paired_test_exact_signed_rank_by_hand():
    # 5 positive differences: W- = 0 has probability 1/32, two-sided 2/32
    p, n = paired_test([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert (p, n) == (pytest.approx(0.0625), 5)
    # one negative difference of rank 1: P(W- <= 1) = 2/32, two-sided 4/32; a draw dropped
    p, n = paired_test([-1, 2, 3, 4, 5, 0.5], [0, 0, 0, 0, 0, 0.5])
    assert (p, n) == (pytest.approx(0.125), 5)
    # NaN pairs dropped, all draws undefined
    p, n = paired_test([0.3, math.nan], [0.3, 0.1])
    assert math.isnan(p) and n == 0
    with pytest.raises(ValueError, match="one length"):
        paired_test([1, 2], [1])


def test_trainability_does_not_depend_on_the_other_techniques_reported():
    """The reference is the paper's five techniques: adding a technique that
    is worse than all of them on a problem leaves the baseline's trainability."""
    rows = [("t1", "baseline", 0.5), ("t1", "jumpstart", 0.9),
            ("t2", "baseline", 0.6), ("t2", "jumpstart", 0.6)]
    extra = [("t1", "redo", 0.4), ("t2", "redo", 0.3)]

    def metrics(r):
        sel = pd.DataFrame(r, columns=["dataset", "technique", "test_acc"]).assign(
            unit_dead_ratio=0.0, unit_linear_ratio=0.0)
        return key_metrics(sel).set_index("technique")

    alone, more = metrics(rows), metrics(rows + extra)
    # t1: baseline is the worst of the five (0.5); t2: a tie at 0.6 is not above it
    assert alone.loc["baseline", "trainability"] == more.loc["baseline", "trainability"] == 0
    assert alone.loc["jumpstart", "trainability"] == more.loc["jumpstart", "trainability"] == 0.5
    assert more.loc["redo", "trainability"] == 0.0
    assert more.loc["redo", "convergence"] == pytest.approx(((0.4 - 0.9) + (0.3 - 0.6)) / 2)


def test_paired_record_counts_by_hand():
    # differences +0.1, 0 (a draw), -0.2, within DRAW (a draw); a NaN pair dropped
    assert paired_record([0.6, 0.5, 0.3, 0.4 + 1e-12, math.nan],
                         [0.5, 0.5, 0.5, 0.4, 0.1]) == (1, 2, 1)
    with pytest.raises(ValueError, match="one length"):
        paired_record([1, 2], [1])
