"""Exact compression of a sweep's selected runs (``jumpstart compress --db
DB --sweep NAME``): every unit dead on the training part removed
(:func:`jumpstart.surgery.prune_dead`), per run the share of parameters and
multiply-adds saved and how far the logits moved."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..data import run_data_key
from ..surgery import prune_dead
from ..train import read_checkpoint, rebuild_model
from .store import ResultsStore, load
from .selection import selected_runs


def compress_selected(db: str | Path, *, sweep: str | None = None,
                      techniques: list[str] | None = None) -> pd.DataFrame:
    """Prune the dead units of the selected runs of a tabular sweep.

    The selected runs are those of the configuration chosen per data set and
    technique on validation accuracy (the one the tabular report shows), one
    per seed; their weights must be in the store (``save_weights = true``).
    Dead is measured on each run's training part (its own split).

    Args:
        db: results database.
        sweep: only this sweep's runs.
        techniques: only these techniques (default: all).

    Returns:
        One row per run: ``dataset``, ``technique``, ``seed``, ``key``,
        ``params_before``, ``params_after``, ``params_removed`` (share),
        ``macs_removed`` (share), ``max_logit_diff``, ``relative_diff``,
        ``emptied`` (hidden layers left without units).

    Raises:
        FileNotFoundError: ``db`` does not exist.
        KeyError: a selected run was stored without weights.
        ValueError: no selected run (of those techniques).
    """
    runs = selected_runs(load(db, sweep=sweep))
    if techniques is not None:
        runs = runs[runs["technique"].isin(techniques)]
    if runs.empty:
        raise ValueError(f"no selected runs in {db}"
                         + (f" for techniques {', '.join(techniques)}" if techniques else ""))
    rows, data = [], {}
    with ResultsStore(db) as store:
        for run in runs.sort_values(["dataset", "technique", "seed"]).itertuples():
            ckpt = read_checkpoint(store.weights(run.key)[2])
            key = run_data_key(ckpt["config"])
            model, data[key] = rebuild_model(ckpt, data.get(key))
            _, report = prune_dead(model, data[key].x_train)
            totals = report.totals()
            rows.append({"dataset": run.dataset, "technique": run.technique, "seed": run.seed,
                         "key": run.key, "params_before": totals["params_before"],
                         "params_after": totals["params_after"],
                         "params_removed": totals["params_removed"],
                         "macs_removed": totals["macs_removed"],
                         "max_logit_diff": report.max_logit_diff,
                         "relative_diff": report.relative_diff,
                         "emptied": len(report.emptied)})
    return pd.DataFrame(rows)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per technique: runs, median and max share of parameters removed,
    median share of multiply-adds removed, runs with an emptied layer, and
    the largest logit difference (absolute and relative) over its runs."""
    return frame.groupby("technique", sort=False).agg(
        runs=("key", "size"), params_removed_median=("params_removed", "median"),
        params_removed_max=("params_removed", "max"),
        macs_removed_median=("macs_removed", "median"),
        runs_with_emptied_layer=("emptied", lambda e: int((e > 0).sum())),
        max_logit_diff=("max_logit_diff", "max"),
        max_relative_diff=("relative_diff", "max")).reset_index()
