"""Report of an initialization comparison (runs that differ in ``init``): the
decorrelated-initialization experiment of the diversification issue, our
protocol for Kovalenko et al.'s one confirmed number ("about 40% relative
increase in test accuracy during the first 5 epochs")."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..data import chance_level
from .reports import ReportInput, register_report, varies_init
from .selection import markdown_table

#: epochs whose held-out accuracy the report shows, besides the last
EARLY_EPOCHS = (1, 2, 3, 4, 5)
#: the reference initialization of the relative gains
REFERENCE = "glorot"
#: accuracies whose range over seeds the report gives beside the median
RANGED = ("acc@1", "acc@end")


def held_out_metric(curves: pd.DataFrame) -> str:
    """``test_acc`` when the curves have a test part, else ``val_acc`` (the
    image sets here hold out one part only)."""
    return "test_acc" if "test_acc" in curves and curves["test_acc"].notna().any() else "val_acc"


def init_table(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Held-out accuracy per (dataset, depth, width, init) at the epochs of
    :data:`EARLY_EPOCHS` and the last, median over seeds, and the relative
    gain over :data:`REFERENCE` at each (``(acc - acc_ref) / acc_ref``).

    Returns:
        One row per (dataset, depth, width, init): ``acc@E`` and
        ``gain@E`` for each early epoch ``E``, ``acc@end``, ``gain@end``,
        the range over seeds of the first and the last
        (``acc@1_min``/``_max``, ``acc@end_min``/``_max``), ``seeds``.
    """
    metric = held_out_metric(curves)
    ok = runs[runs["state"] != "failed"]
    last = curves.groupby("key")["epoch"].transform("max")
    rows = []
    for key, part in curves.groupby("key"):
        row = {"key": key}
        for e in EARLY_EPOCHS:
            hit = part[part["epoch"] == e]
            row[f"acc@{e}"] = float(hit[metric].iloc[0]) if len(hit) else float("nan")
        row["acc@end"] = float(part.loc[last[part.index] == part["epoch"], metric].iloc[0])
        rows.append(row)
    per_run = ok[["key", "dataset", "depth", "width", "init", "seed"]].merge(pd.DataFrame(rows),
                                                                          on="key")
    cols = [f"acc@{e}" for e in EARLY_EPOCHS] + ["acc@end"]
    ranges = {f"{c}_{f}": (c, f) for c in RANGED for f in ("min", "max")}
    table = per_run.groupby(["dataset", "depth", "width", "init"], as_index=False).agg(
        **{c: (c, "median") for c in cols}, **ranges, seeds=("seed", "size"))
    ref = table[table["init"] == REFERENCE].set_index(["dataset", "depth", "width"])[cols]
    for c in cols:
        base = table.set_index(["dataset", "depth", "width"]).index.map(
            lambda i, c=c: ref[c].get(i, float("nan")))
        table[c.replace("acc", "gain")] = (table[c] - base.values) / base.values
    return table


#: what a run measured at init (run option ``init_diversity``,
#: :func:`jumpstart.train.run.init_diversity`), as the report names it
DIVERSITY = {"init_weight_corr_mean": "weight_corr_mean", "init_act_corr_mean": "act_corr_mean",
             "init_constant_units": "constant_units"}


def init_diversity(runs: pd.DataFrame) -> pd.DataFrame:
    """Diversity of the nets at initialization (before any step) as each run
    recorded it (run option ``init_diversity``), median over seeds per
    (dataset, depth, width, init): ``weight_corr_mean``, ``act_corr_mean``
    (averaged over the hidden layers), ``constant_units`` (summed over them).
    Runs that did not record it (older stores, ``init_diversity`` off) give
    NaN: undefined, not measured here."""
    ok = runs[runs["state"] != "failed"]
    cols = {k: (ok[k] if k in ok else pd.Series(float("nan"), index=ok.index))
            for k in DIVERSITY}
    frame = ok[["dataset", "depth", "width", "init"]].assign(
        **{name: pd.to_numeric(cols[k], errors="coerce") for k, name in DIVERSITY.items()})
    return frame.groupby(["dataset", "depth", "width", "init"], as_index=False).median()


@register_report("init", applies=varies_init,
                 text="initialization comparison: held-out accuracy early and at the end, "
                      "gain over glorot, diversity at init")
def write_init_report(job: ReportInput) -> list[Path]:
    """For runs that differ in ``init``: ``init_comparison.md/.csv``
    (:func:`init_table` joined with :func:`init_diversity`) and ``init_curves.png`` (held-out accuracy per
    epoch, a row of panels per data set, one panel per depth x width, one
    line per init: the median over seeds, a band from the lowest to the
    highest seed, a dashed line at the data set's chance level). Returns the
    paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, out = job.runs, job.out
    curves = job.store.curves(runs["key"])
    table = init_table(runs, curves).merge(init_diversity(runs),
                                           on=["dataset", "depth", "width", "init"])
    paths = [out / "init_comparison.csv", out / "init_comparison.md", out / "init_curves.png"]
    table.to_csv(paths[0], index=False)
    metric = held_out_metric(curves)
    shown_table = table.assign(**{f"{c} range": [f"{a:.3f}-{b:.3f}" for a, b in zip(
        table[f"{c}_min"], table[f"{c}_max"])] for c in RANGED})
    shown = ["dataset", "depth", "width", "init", "acc@1", "acc@1 range", "acc@5", "acc@end",
             "acc@end range", "gain@1", "gain@2", "gain@3", "gain@4", "gain@5", "gain@end",
             "weight_corr_mean", "act_corr_mean", "constant_units", "seeds"]
    chances = {d: chance_level(d) for d in dict.fromkeys(table["dataset"])}
    sets = ", ".join(f"{d} (chance {c:g})" if c else d for d, c in chances.items())
    epochs = ", ".join(map(str, sorted(runs["epochs"].dropna().astype(int).unique())))
    paths[1].write_text(
        f"Data: {sets}; epochs {epochs}; seeds per row in `seeds`.\n\n"
        f"Held-out accuracy ({metric}) at epochs 1-5 and at the end, median over seeds, and "
        f"the relative gain over {REFERENCE} init; diversity of the nets at init (mean "
        "|correlation| between weight rows and between unit activations, constant units).\n\n"
        + markdown_table(shown_table[shown]))
    datasets = list(dict.fromkeys(table["dataset"]))
    shapes = list(dict.fromkeys(zip(table["depth"], table["width"])))
    fig, axes = plt.subplots(len(datasets), len(shapes), figsize=(3.2 * len(shapes),
                             2.8 * len(datasets)), squeeze=False, layout="constrained")
    per_run = curves.merge(runs[["key", "dataset", "depth", "width", "init"]], on="key")
    for row, dataset in zip(axes, datasets):  # one row per data set, one panel per net
        for ax, (depth, width) in zip(row, shapes):
            part = per_run[(per_run["dataset"] == dataset) & (per_run["depth"] == depth)
                           & (per_run["width"] == width)]
            for init, sub in part.groupby("init"):
                by_epoch = sub.groupby("epoch")[metric]
                med, low, high = by_epoch.median(), by_epoch.min(), by_epoch.max()
                (line,) = ax.plot(med.index, med.values, label=init, marker=".")
                ax.fill_between(low.index, low.values, high.values, color=line.get_color(),
                                alpha=0.15, linewidth=0)
            if chances[dataset] is not None:
                ax.axhline(chances[dataset], color="grey", linestyle="--", linewidth=0.8)
            ax.set_title(f"{dataset}, {depth} x {width}", fontsize=9)
            ax.set_xlabel("epoch")
        row[0].set_ylabel(f"{metric} (median)")
    axes[0][0].legend(fontsize=8)
    seeds = ", ".join(map(str, sorted(table["seeds"].unique())))
    fig.suptitle(f"median over seeds ({seeds} per line), band: lowest to highest seed; "
                 "dashed: chance", fontsize=9)
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths
