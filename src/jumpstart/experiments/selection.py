"""Selection and the global metrics shared by every report of benchmark runs
(the tabular report, the comparison, compression): which configuration of a
technique is reported on each data set, the key metrics, wins/draws/losses,
and the markdown tables.

Protocol. Per data set and technique, every configuration (all config keys
but ``seed``: learning rate, ``lam``, ...) is scored by the median over seeds
of its best validation accuracy; the best-scoring configuration is *selected*
(ties: the higher mean over seeds, then the first in sorted order) and reported by the medians over its seeds
of the test accuracy at the epoch of best validation accuracy
(``best_val_test_acc``) and of the status ratios on the training set. Failed
runs are left out of every median.

Global metrics per technique (``shared/DESIGN.md``, IEEE Access 2025, UCI experiments):

- ``trainability``: share of data sets where its accuracy is strictly above
  the worst accuracy of the *reference* techniques there;
- ``convergence``: mean over data sets of (its accuracy - the best accuracy
  of the reference techniques there), ``<= 0`` for a reference technique;
- ``dead_unit`` / ``linear_unit``: mean over data sets of the unit dead /
  linear ratio, and the share of data sets where that ratio exceeds 0.2.

The reference techniques are the paper's five (:data:`TECHNIQUE_ORDER`)
among those reported (all of them when none of the five is), so a
technique's trainability does not change with which other techniques a
report holds (the paper's pool was those five; with every technique as the
pool, one baseline's trainability read 0.375 in one report and 0.417 in
another).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .statistics import DRAW, paired_record

ACCURACY = "best_val_test_acc"
STATUS = ("unit_dead_ratio", "unit_linear_ratio", "unit_nonlinear_ratio",
          "layer_point_dead_ratio", "layer_point_linear_ratio", "layer_point_nonlinear_ratio",
          "point_dead_ratio", "point_efficiency")
#: config keys that do not make a configuration: the seed and the cell's own keys
NOT_HYPER = {"seed", "dataset", "technique"}
TECHNIQUE_ORDER = ("baseline", "jumpstart", "skip", "batchnorm", "gelu")


def left_out(runs) -> dict[str, str]:
    """Data sets asked for whose runs all failed, each with why: ``"N failed
    runs: <the error's last line>"`` (the first failed run's exception)."""
    out = {}
    for name, part in runs.groupby("dataset", sort=True):
        if (part["state"] == "failed").all():
            error = str(part["error"].dropna().iloc[0]) if part["error"].notna().any() else ""
            lines = [line for line in error.strip().splitlines() if line.strip()]
            out[str(name)] = f"{len(part)} failed runs: {lines[-1] if lines else 'no error text'}"
    return out


def coverage(runs) -> str:
    """One paragraph for the top of every table: how many data sets were
    asked for (appear in the runs), how many ran (at least one run that did
    not fail), each one left out with why (:func:`left_out`), and how many
    runs diverged."""
    asked = runs["dataset"].nunique()
    missing = left_out(runs)
    text = f"Data sets: {asked} asked for, {asked - len(missing)} ran"
    if missing:
        text += "; left out: " + "; ".join(f"{k} ({v})" for k, v in missing.items())
    diverged = int((runs["state"] == "diverged").sum())
    if diverged:
        text += (f". {diverged} diverged run(s): their accuracies are those of their last "
                 "finite epoch; an undefined status is left out of the medians")
    return text + ".\n\n"


def _hyper_columns(runs, config_keys: list[str]) -> list[str]:
    """Config columns that can vary a run's configuration (not the seed, data
    set or technique)."""
    return [c for c in config_keys if c in runs.columns and c not in NOT_HYPER]


def _configured(runs) -> pd.DataFrame:
    """The runs that did not fail, with a ``config`` column: the
    hyper-parameters their technique varies in, as text."""
    config_keys = runs.attrs.get("config_keys")
    if config_keys is None:
        raise ValueError("select() needs runs as jumpstart.experiments.load returns them "
                         "(frame.attrs['config_keys'] lists the config columns)")
    ok = runs[runs["state"] != "failed"].copy()
    ok["config"] = ""
    for _, part in ok.groupby("technique"):  # the keys this technique's runs vary in
        hyper = [c for c in _hyper_columns(part, config_keys) if part[c].nunique() > 1]
        ok.loc[part.index, "config"] = part.apply(
            lambda r: " ".join(f"{c}={r[c]:g}" if isinstance(r[c], float) else f"{c}={r[c]}"
                               for c in hyper), axis=1)
    return ok


def selected_runs(runs) -> pd.DataFrame:
    """The runs (one per seed) of :func:`select`'s configuration of each
    (dataset, technique): ``runs``' rows with a ``config`` column."""
    chosen = select(runs)[["dataset", "technique", "config"]]
    return _configured(runs).merge(chosen, on=["dataset", "technique", "config"])


def select(runs) -> pd.DataFrame:
    """The selected configuration per (dataset, technique), with median metrics.

    Args:
        runs: DataFrame of runs (:func:`~jumpstart.experiments.store.load`) with
            ``dataset``, ``technique``, ``seed``, ``state``, ``best_val_acc``,
            ``best_val_test_acc`` and the status ratio columns.

    Returns:
        One row per (dataset, technique): ``dataset``, ``technique``,
        ``config`` (the selected hyper-parameters as text, e.g.
        ``"lam=0.1 lr=0.01"``), ``val_acc`` and ``test_acc`` (medians over
        its seeds), the status medians, and ``seeds`` (runs that did not fail).
        Groups whose runs all failed are left out.

    Raises:
        ValueError: ``runs`` does not list its config keys (``attrs``).
    """
    ok = _configured(runs)
    status = [s for s in STATUS if s in ok]
    med = ok.groupby(["dataset", "technique", "config"], as_index=False).agg(
        val_acc=("best_val_acc", "median"), val_mean=("best_val_acc", "mean"),
        test_acc=(ACCURACY, "median"), **{s: (s, "median") for s in status},
        seeds=("seed", "size"))
    med = med.sort_values(["dataset", "technique", "val_acc", "val_mean", "config"],
                          ascending=[True, True, False, False, True], kind="stable")
    return med.groupby(["dataset", "technique"], as_index=False).head(1).reset_index(drop=True)


def techniques(selected) -> list[str]:
    """Techniques present in a table of runs, the paper's five first
    (baseline, jumpstart, skip, batchnorm, gelu), then the others sorted; the
    one order of every report."""
    present = set(selected["technique"])
    return [t for t in TECHNIQUE_ORDER if t in present] + sorted(present - set(TECHNIQUE_ORDER))


def key_metrics(selected) -> pd.DataFrame:
    """Trainability, Convergence, Dead units, Linear units per technique
    (definitions in the module docstring) from :func:`select`'s table.

    Only data sets where every technique has a selected run count, so each
    technique is measured on the same data sets.

    Returns:
        One row per technique: ``technique``, ``datasets``, ``trainability``,
        ``convergence``, ``dead_unit_mean``, ``dead_unit_share_over_0.2``,
        ``linear_unit_mean``, ``linear_unit_share_over_0.2``, ``mean_test_acc``.
    """
    acc = selected.pivot(index="dataset", columns="technique", values="test_acc").dropna()
    names = [t for t in techniques(selected) if t in acc.columns]
    reference = [t for t in TECHNIQUE_ORDER if t in acc.columns] or names
    worst, best = acc[reference].min(axis=1), acc[reference].max(axis=1)
    rows = []
    for t in names:
        sel = selected[(selected["technique"] == t) & selected["dataset"].isin(acc.index)]
        dead, linear = sel["unit_dead_ratio"], sel["unit_linear_ratio"]
        rows.append({
            "technique": t, "datasets": len(acc),
            "trainability": float((acc[t] > worst + DRAW).mean()),
            "convergence": float((acc[t] - best).mean()),
            "dead_unit_mean": float(dead.mean()), "dead_unit_share_over_0.2": float((dead > 0.2).mean()),
            "linear_unit_mean": float(linear.mean()),
            "linear_unit_share_over_0.2": float((linear > 0.2).mean()),
            "mean_test_acc": float(acc[t].mean()),
        })
    return pd.DataFrame(rows)


def wins_draws_losses(selected) -> pd.DataFrame:
    """Square table: entry (A, B) is ``"w/d/l"``, the data sets where A's test
    accuracy is above, equal to (within 1e-9), or below B's."""
    acc = selected.pivot(index="dataset", columns="technique", values="test_acc")
    names = techniques(selected)
    table = pd.DataFrame("", index=names, columns=names)
    for a in names:
        for b in names:
            if a == b:
                table.loc[a, b] = "-"
                continue
            table.loc[a, b] = "/".join(map(str, paired_record(acc[a], acc[b])))
    return table


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".3f", index: bool = False) -> str:
    """``frame`` as a Markdown table, floats formatted with ``floatfmt``."""
    cols = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in frame.iterrows():
        cells = [str(idx)] if index else []
        cells += [format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v)
                  for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
