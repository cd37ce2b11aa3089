"""Statistics of a comparison: intervals and paired tests over problems.

A benchmark's *problems* (tables, or depth x width cells) are the units: a
technique's value on a problem is the median over its seeds of the selected
setting's test accuracy (:func:`~jumpstart.experiments.selection.select`),
and two techniques are paired on the problems both have.

- :func:`bootstrap_interval`: percentile bootstrap interval of the mean over
  problems (``scipy.stats.bootstrap``; Efron and Tibshirani, "An Introduction
  to the Bootstrap", 1993, ch. 13);
- :func:`paired_record`: wins / draws / losses of paired differences;
- :func:`paired_test`: Wilcoxon signed-rank test of paired differences
  (``scipy.stats.wilcoxon``, two-sided; Wilcoxon, "Individual comparisons by
  ranking methods", 1945), differences within :data:`DRAW` counted as ties
  and dropped (Wilcoxon's own treatment of zeros).

An undefined result (fewer than two problems, every difference a tie) is NaN,
never a number that looks like one.
"""

from __future__ import annotations

import math

import numpy as np

#: two accuracies closer than this are a draw (the tabular protocol's DRAW)
DRAW = 1e-9
#: bootstrap resamples and confidence level of every interval the reports give
RESAMPLES = 10_000
LEVEL = 0.95


def bootstrap_interval(values, level: float = LEVEL, resamples: int = RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``.

    Args:
        values: 1-D, the per-problem accuracies (NaN entries dropped).
        level: confidence level in (0, 1).
        resamples: bootstrap resamples (>= 100).
        seed: of the resampling, so a report is reproducible.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than two values; the value
        itself twice when all values are equal.

    Raises:
        ValueError: ``level`` not in (0, 1) or ``resamples`` < 100.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100; got {resamples!r}")
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    from scipy.stats import bootstrap

    res = bootstrap((x,), np.mean, confidence_level=level, n_resamples=resamples,
                    method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_record(a, b) -> tuple[int, int, int]:
    """Wins, draws and losses of ``a`` against ``b`` over the pairs where
    neither is NaN: ``a - b`` above :data:`DRAW`, within it, below ``-DRAW``.

    Args:
        a, b: 1-D of equal length (array-like or pandas Series).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths.
    """
    d = _differences(a, b)
    return int((d > DRAW).sum()), int((np.abs(d) <= DRAW).sum()), int((d < -DRAW).sum())


def _differences(a, b) -> np.ndarray:
    """``a - b`` over the pairs where neither is NaN."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of one length; got {a.shape} and {b.shape}")
    return (a - b)[~(np.isnan(a) | np.isnan(b))]


def paired_test(a, b) -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` over paired problems.

    Args:
        a, b: 1-D of equal length, the two techniques' accuracies per problem;
            pairs with a NaN are dropped.

    Returns:
        ``(p, n)``: the p-value (exact for small ``n`` without tied ranks, as
        scipy chooses) and the number of pairs that are not draws; ``p`` is
        NaN when ``n`` is 0.

    Raises:
        ValueError: ``a`` and ``b`` of different lengths.
    """
    d = _differences(a, b)
    d = d[np.abs(d) > DRAW]
    if len(d) == 0:
        return math.nan, 0
    from scipy.stats import wilcoxon

    return float(wilcoxon(d, alternative="two-sided").pvalue), int(len(d))
