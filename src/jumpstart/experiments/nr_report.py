"""The report of a Neural Rejuvenation comparison (runs with technique
``nr`` beside others on the same model family): accuracy, parameters before
and after rejuvenation, when it fired, utilization curves, unit status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .reports import ReportInput, has_technique, register_report, varies_init
from .selection import markdown_table

#: the per-run columns the comparison takes the median of over seeds
MEDIANS = ("best_acc", "final_acc", "params_before", "params_after", "effective_after",
           "rejuvenation_epoch", "utilization_at_rejuvenation", "unit_dead_ratio",
           "unit_linear_ratio")
#: the accuracy columns that also get their range over seeds (``_min``, ``_max``)
RANGES = ("best_acc", "final_acc")


def _label(row) -> str:
    mode = row.get("nr_mode")
    return f"{row['technique']}[{mode}]" if "nr" in row["technique"].split("+") else row["technique"]


def nr_table(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per technique (``nr`` split by ``nr_mode``): medians over
    seeds of the best and final held-out accuracy (``val_acc``; also their
    smallest and largest over seeds, ``best_acc_min`` ... ``final_acc_max``), parameters
    before and after rejuvenation (all, and those a forward uses:
    :func:`~jumpstart.models.split.effective_params`), the epoch rejuvenation
    fired, the utilization then, the dead and linear unit ratios of the final
    net; ``capped`` (runs whose rejuvenation the epoch cap fired) and
    ``seeds``. The parameter counts are what each run recorded
    (``params_at_init``, ``params``, ``effective_params``); columns a
    technique or an older store lacks are NaN (undefined), never 0."""
    rows = []
    for _, run in runs[runs["state"] != "failed"].iterrows():
        row = run.to_dict()
        curve = curves[curves["key"] == row["key"]].sort_values("epoch")
        before = row.get("params_at_init", np.nan)
        after, effective = row.get("params", np.nan), row.get("effective_params", np.nan)
        last = curve.iloc[-1] if len(curve) else pd.Series(dtype=float)
        fired = pd.notna(last.get("rejuvenation_epoch", np.nan))
        rows.append({
            "technique": _label(row), "best_acc": row["best_val_acc"],
            "final_acc": row["val_acc"], "params_before": before,
            "params_after": after if fired else np.nan,
            "effective_after": effective if fired else np.nan,
            "rejuvenation_epoch": last.get("rejuvenation_epoch", np.nan),
            "utilization_at_rejuvenation": last.get("rejuvenation_u", np.nan),
            "capped": bool(fired and last["nr_capped"] == 1),
            "unit_dead_ratio": row.get("unit_dead_ratio", np.nan),
            "unit_linear_ratio": row.get("unit_linear_ratio", np.nan)})
    table = pd.DataFrame(rows)
    groups = table.groupby("technique", sort=False)
    med = groups[list(MEDIANS)].median()
    for col in RANGES:
        med.insert(med.columns.get_loc(col) + 1, f"{col}_min", groups[col].min())
        med.insert(med.columns.get_loc(col) + 2, f"{col}_max", groups[col].max())
    med["capped"] = groups["capped"].sum()
    med["seeds"] = groups.size()
    return med.reset_index()


@register_report("nr", applies=lambda runs: not varies_init(runs) and has_technique(runs, "nr"),
                 text="Neural Rejuvenation beside other techniques: accuracy, parameters, "
                      "utilization curves")
def write_nr_report(job: ReportInput) -> list[Path]:
    """For runs with technique ``nr`` (one init): ``nr_comparison.csv/.md`` (:func:`nr_table`) and ``nr_curves.png``
    (held-out accuracy per epoch, median over seeds per technique; the
    utilization of every ``nr`` run per epoch, a dot where it rejuvenated).
    Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, out = job.runs, job.out
    curves = job.store.curves(runs["key"])
    table = nr_table(runs, curves)
    paths = [out / "nr_comparison.csv", out / "nr_comparison.md", out / "nr_curves.png"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(
        "Neural Rejuvenation beside the other techniques, median over seeds: best and final "
        "held-out accuracy (val_acc; with their smallest and largest over the seeds, _min "
        "and _max), parameters of the net before and after rejuvenation "
        "(all; and those a forward uses, the split halves' cross blocks left out), the epoch "
        "rejuvenation fired and the utilization then (capped: runs where the epoch cap fired "
        "it, not the target), dead and linear unit ratios of the final net on the training "
        "set.\n\n" + markdown_table(table, floatfmt=".3g"))
    labelled = runs.assign(label=[_label(r) for r in runs.to_dict("records")])
    per_run = curves.merge(labelled[["key", "label", "seed"]], on="key")
    fig, (acc, util) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for label, part in per_run.groupby("label", sort=False):
        med = part.groupby("epoch")["val_acc"].median()
        line, = acc.plot(med.index, med.values, label=label, marker=".")
        if "utilization" in part and part["utilization"].notna().any():
            for (_, seed), one in part.groupby(["key", "seed"]):
                util.plot(one["epoch"], one["utilization"], alpha=0.8, color=line.get_color(),
                          label=f"{label}, seed {seed}")
                epoch = one["rejuvenation_epoch"].dropna() if "rejuvenation_epoch" in one else []
                if len(epoch):
                    util.plot([epoch.iloc[-1]], [one["rejuvenation_u"].dropna().iloc[-1]], "o",
                              color=line.get_color())
    acc.set(xlabel="epoch", ylabel="held-out accuracy (median over seeds)")
    acc.legend(fontsize=8)
    util.set(xlabel="epoch", ylabel="utilization u",
             title="nr runs, one line per seed (dot: rejuvenation)")
    if util.lines:
        util.legend(fontsize=7)
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths
