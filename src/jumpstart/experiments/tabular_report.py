"""The report of a tabular benchmark (IEEE Access 2025, UCI experiments;
shared/papers/jumpstart-experiments.md): per data set the selected
configuration of each technique (the protocol and the global metrics:
:mod:`jumpstart.experiments.selection`), key metrics, wins/draws/losses and a
paired per-table figure.
"""

from __future__ import annotations

from pathlib import Path

from .reports import ReportInput, depth_width_grid, has_test_part, image_sets, register_report
from .selection import (STATUS, coverage, key_metrics, markdown_table, select, techniques,
                        wins_draws_losses)


def _paired(path: Path, selected) -> None:
    """Paired per-table plot: one panel per technique against Jumpstart (or,
    without it, the first technique), one point per data set at (reference's
    test accuracy, the technique's), the diagonal where they are equal, and
    the technique's wins/draws/losses in the title; at most four panels a
    row, about 2 inches each, so the figure fits a page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = techniques(selected)
    reference = "jumpstart" if "jumpstart" in names else names[0]
    others = [t for t in names if t != reference] or [reference]
    acc = selected.pivot(index="dataset", columns="technique", values="test_acc")
    cols = min(4, len(others))
    rows = -(-len(others) // cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, sharex=True, sharey=True,
                             figsize=(0.6 + 1.9 * cols, 0.8 + 1.9 * rows), layout="constrained")
    record = wins_draws_losses(selected)
    for ax, t in zip(axes.flat, others):
        both = acc[[reference, t]].dropna()
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.scatter(both[reference], both[t], s=12, alpha=0.8)
        ax.set_title(f"{t}: {record.loc[t, reference]}" if t != reference else t, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        ax.set_ylabel(f"{t} test accuracy", fontsize=7)
    for ax in axes.flat[len(others):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(f"{reference} test accuracy", fontsize=7)
    fig.suptitle(f"Test accuracy per data set ({acc.shape[0]} data sets), each technique "
                 f"against {reference}; title: its wins/draws/losses", fontsize=8)
    fig.savefig(path, dpi=150)
    plt.close(fig)


@register_report("tabular", applies=lambda runs: (depth_width_grid(runs) and has_test_part(runs)
                                                 and not image_sets(runs)),
                 text="tabular benchmark (UCI): selected configurations, key metrics, "
                      "wins/draws/losses, paired per-table figure")
def write_tabular_report(job: ReportInput) -> list[Path]:
    """For a grid with a test part (not images): write ``uci_results.md/.csv``, ``key_metrics.md/.csv``,
    ``wins_draws_losses.md`` and ``uci_paired.png`` (:func:`_paired`) into ``out``.

    Raises:
        ValueError: no run that did not fail.
    """
    runs, out = job.runs, job.out
    selected = select(runs)
    if selected.empty:
        raise ValueError("no run that did not fail; nothing to report")
    selected["rank"] = selected.groupby("dataset")["test_acc"].rank(ascending=False,
                                                                      method="min").astype(int)
    cols = ["dataset", "technique", "test_acc", "rank", "val_acc", "config",
            *[s for s in STATUS if s in selected], "seeds"]
    table = selected[cols].sort_values(["dataset", "technique"],
                                       key=lambda s: s.map({t: i for i, t in enumerate(
                                           techniques(selected))}) if s.name == "technique"
                                       else s)
    km = key_metrics(selected)
    wdl = wins_draws_losses(selected)
    paths = [out / n for n in ("uci_results.csv", "uci_results.md", "key_metrics.csv",
                               "key_metrics.md", "wins_draws_losses.md", "uci_paired.png")]
    table.to_csv(paths[0], index=False)
    head = coverage(runs)
    paths[1].write_text(
        head + "Per data set and technique: the configuration selected on median validation "
        "accuracy, its median (over seeds) test accuracy at the epoch of best validation "
        "accuracy, rank within the data set (1 = best), and status ratios on the training "
        "set after training.\n\n" + markdown_table(table))
    km.to_csv(paths[2], index=False)
    paths[3].write_text(
        head + "Global metrics per technique (IEEE Access 2025; definitions in "
        "jumpstart.experiments.selection). Published for Jumpstart: dead 0.07, "
        "linear 0.12, trainability 1.0, convergence -0.03.\n\n" + markdown_table(km))
    wdl.index.name = "row vs column"
    paths[4].write_text(head + "Wins/draws/losses of the row technique against the column "
                        "technique, test accuracy per data set.\n\n" + markdown_table(wdl, index=True))
    _paired(paths[5], selected)
    return paths
