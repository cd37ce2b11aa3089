"""Reports of a sweep: figures and tables as files, named after the paper
figure they reproduce.

Depth x width x technique sweeps such as MOONS (CPAIOR 2022 Fig. 2) and
MNIST (Table 1), CIFAR (Fig. 3/4), ImageNet (IEEE Access 2025); tabular
benchmarks go to :mod:`~jumpstart.experiments.tabular_report`. A *cell* is one (technique, width, depth); its value is the median of a metric
over the cell's runs that did not fail (over seeds and any other varying
config key, e.g. ``lam``), NaN when every run of the cell failed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data import FOLDER_SETS, chance_level
from .statistics import paired_record, paired_test
from .store import ResultsStore, load
from . import init_report, nr_report, tabular_report  # noqa: F401  (they register their reports)
from .reports import (MNIST_SETS, ReportInput, depth_width_grid, has_test_part, image_sets, register_report,
                      reports_for)
from .selection import coverage
from .selection import techniques as _techniques

GRID = ("technique", "width", "depth")
#: most technique panels a heatmap row holds
HEATMAP_COLUMNS = 4


def _over_seeds(runs) -> str:
    """What a cell's value is over its seeds, for a figure's title: ``"one
    seed"``, ``"median over 3 seeds"`` or ``"median over 2-3 seeds"`` (runs
    that did not fail, per cell)."""
    counts = runs[runs["state"] != "failed"].groupby(list(GRID))["seed"].nunique()
    lo, hi = (int(counts.min()), int(counts.max())) if len(counts) else (0, 0)
    if hi <= 1:
        return "one seed"
    return f"median over {hi} seeds" if lo == hi else f"median over {lo}-{hi} seeds"


def _medians(runs, metric: str, by: tuple[str, ...] = GRID):
    """Series over the (technique, width, depth) cells that were run (or the
    groups of ``by``): median of ``metric`` over each one's runs that did not
    fail (NaN if all failed)."""
    value = runs[metric].where(runs["state"] != "failed")
    return runs.assign(value=value).groupby(list(by))["value"].median()


def _deepest(acc, threshold: float, by: list[str]):
    """Per group of ``by``, the largest depth whose ``acc`` (a Series indexed
    by :data:`GRID` and more) is ``>= threshold``, NaN where none is."""
    frame = acc.rename("acc").reset_index()
    return frame["depth"].where(frame["acc"] >= threshold).groupby(
        [frame[k] for k in by]).max()


def trainable_depth(runs, threshold: float = 0.9):
    """Per width and technique, how deep the nets still train (CPAIOR 2022 Fig. 2 claim).

    Args:
        runs: DataFrame of runs as :func:`~jumpstart.experiments.store.load` gives,
            with columns ``state``, ``technique``, ``width``, ``depth``, ``best_train_acc``.
        threshold: a cell is trainable when its median ``best_train_acc`` is
            ``>= threshold`` (inclusive).

    Returns:
        DataFrame with columns ``width``, ``technique``, ``trainable_depth``
        (largest trainable depth, ``<NA>`` if none), ``trainable_cells`` (how
        many depths at that width are trainable), ``cells`` (how many depths
        were run there, cells whose runs all failed included) and
        ``seed_depths``: the same largest depth for each seed alone (its runs'
        median per depth, failed runs left out), in seed order, ``"-"`` for a
        seed where none trains (e.g. ``"30, 40, -"``); sorted by width, then
        technique (baseline, jumpstart, others).
    """
    cells = _medians(runs, "best_train_acc")
    frame = cells.rename("acc").reset_index()
    table = frame.assign(trainable=frame["acc"] >= threshold).groupby(
        ["width", "technique"], as_index=False).agg(
        trainable_cells=("trainable", "sum"), cells=("depth", "size"))
    table.insert(2, "trainable_depth", _deepest(cells, threshold, ["width", "technique"])
                 .astype("Int64").values)
    per_seed = _deepest(_medians(runs, "best_train_acc", (*GRID, "seed")), threshold,
                        ["width", "technique", "seed"])
    listed = per_seed.groupby(level=["width", "technique"]).agg(
        lambda d: ", ".join("-" if pd.isna(v) else str(int(v)) for v in d))
    table["seed_depths"] = [listed.get((w, t), "") for w, t in zip(table["width"],
                                                                  table["technique"])]
    order = {t: i for i, t in enumerate(_techniques(runs))}
    return table.sort_values(["width", "technique"], key=lambda s: s.map(order) if
                             s.name == "technique" else s, ignore_index=True)


def _markdown(table, techniques: list[str], threshold: float) -> str:
    head = (f"Trainable depth: per width and technique, the largest depth whose median "
            f"(over seeds) best train accuracy is >= {threshold:g}, and how many of the "
            f"depths run at that width reach it (trainable/run); '-' where none does; "
            f"'per seed': the largest such depth of each seed alone, in seed order.")
    cols = ["width"] + [f"{t} {what}" for t in techniques
                        for what in ("depth", "per seed", "cells")]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    by = table.set_index(["width", "technique"])
    for width in sorted(table["width"].unique()):
        row = [str(width)]
        for t in techniques:
            if (width, t) not in by.index:
                row += ["", "", ""]
                continue
            r = by.loc[(width, t)]
            depth = r["trainable_depth"]
            row += ["-" if pd.isna(depth) else str(depth), r["seed_depths"],
                    f"{r['trainable_cells']}/{r['cells']}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _heatmaps(path: Path, panels: list[tuple[str, pd.Series]], techniques: list[str],
              vmin: float, vmax: float, title: str, label: str, annotate: bool = False) -> None:
    """One panel per (metric, technique): width (y) x depth (x), one colour
    scale labelled ``label``. Each metric takes a block of rows with at most
    :data:`HEATMAP_COLUMNS` techniques a row, so ten techniques do not make
    a figure ten panels wide.

    Args:
        panels: ``(name, values)`` per metric; ``values`` indexed by
            (technique, width, depth) (cells not in it are grey).
        annotate: write each cell's value in it (small grids).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = pd.concat([v for _, v in panels]).index
    depths = sorted(index.get_level_values("depth").unique())
    widths = sorted(index.get_level_values("width").unique())
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    panel = (max(3.0, 1.2 + (0.5 if annotate else 0.22) * len(depths)),
             max(2.2, 1.0 + (0.35 if annotate else 0.25) * len(widths)))
    cols = min(len(techniques), HEATMAP_COLUMNS)
    per = -(-len(techniques) // cols)  # rows of one metric
    fig, axes = plt.subplots(len(panels) * per, cols, squeeze=False, layout="constrained",
                             figsize=(panel[0] * cols + 1.2, panel[1] * len(panels) * per + 0.5))
    for i, (name, values) in enumerate(panels):
        block = list(axes[i * per:(i + 1) * per].flat)
        for j, ax in enumerate(block):
            ax.set_visible(j < len(techniques))
        for technique, ax in zip(techniques, block):
            grid = (values[technique].unstack("depth") if technique in values.index
                    .get_level_values("technique") else pd.DataFrame())
            grid = grid.reindex(index=widths, columns=depths).to_numpy(float)
            image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto",
                              cmap=cmap, vmin=vmin, vmax=vmax)
            if annotate:
                for (i, j), v in np.ndenumerate(grid):
                    if np.isfinite(v):
                        shade = image.cmap(image.norm(v))
                        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                                color="white" if sum(shade[:3]) < 1.5 else "black")
            ax.set_xticks(range(len(depths)), [str(d) for d in depths],
                          rotation=90 if len(depths) > 8 else 0, fontsize=7)
            ax.set_yticks(range(len(widths)), [str(w) for w in widths], fontsize=7)
            ax.set_xlabel("depth")
            ax.set_ylabel("width")
            ax.set_title(f"{name},\n{technique}" if len(technique) > 12 else f"{name}, {technique}",
                         fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.9, label=label)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


SUCCESS = 0.5  # CPAIOR Table 1: a model is successful when its best val accuracy exceeds it


def table1(runs) -> pd.DataFrame:
    """CPAIOR 2022 Table 1 from a depth x width x technique sweep on MNIST.

    Per technique: ``best_train_acc`` and ``best_val_acc`` (best over every
    cell, each cell the median over its runs of the best-epoch accuracy),
    ``successful`` (cells whose best validation accuracy is above 0.5),
    ``cells`` (cells run) and ``best_cells`` (cells where this technique's
    validation accuracy is the highest of all techniques; a tie counts for
    each tied technique).
    """
    val = _medians(runs, "best_val_acc").rename("val")
    train = _medians(runs, "best_train_acc").rename("train")
    cells = pd.concat([val, train], axis=1).reset_index()
    top = cells.groupby(["width", "depth"])["val"].transform("max")
    cells["best"] = cells["val"] >= top - 1e-12
    rows = []
    for t in _techniques(runs):
        c = cells[cells["technique"] == t]
        rows.append({"technique": t, "best_train_acc": c["train"].max(),
                     "best_val_acc": c["val"].max(),
                     "successful": int((c["val"] > SUCCESS).sum()), "cells": len(c),
                     "best_cells": int(c["best"].sum())})
    return pd.DataFrame(rows)


#: torchvision's ResNet-50 (BN, skips) ImageNet top-1, the IEEE Access 2025 reference
RESNET50_TOP1 = 0.7613


def imagenet_table(runs) -> pd.DataFrame:
    """Per technique and width multiplier of an ImageNet sweep (IEEE Access
    2025): ``best_val_acc`` (top-1 at the best epoch, median over seeds),
    ``val_acc`` (final), ``gap_to_reference`` (``best_val_acc`` minus
    torchvision's ResNet-50 top-1 0.7613), ``params``, ``epochs_done``,
    ``unit_dead_ratio`` and ``unit_linear_ratio`` (medians), ``runs``.
    Failed runs are left out."""
    ok = runs[runs["state"] != "failed"]
    rows = []
    for (t, w), part in ok.groupby(["technique", "width"], sort=True):
        best = float(part["best_val_acc"].median())
        rows.append({"technique": t, "width": w, "best_val_acc": best,
                     "val_acc": float(part["val_acc"].median()),
                     "gap_to_reference": best - RESNET50_TOP1,
                     "params": int(part["params"].median()) if "params" in part else None,
                     "epochs_done": int(part["epochs_done"].median()),
                     "unit_dead_ratio": float(part["unit_dead_ratio"].median()),
                     "unit_linear_ratio": float(part["unit_linear_ratio"].median()),
                     "runs": len(part)})
    return pd.DataFrame(rows)


@register_report("imagenet", applies=lambda runs: (depth_width_grid(runs)
                                                  and not has_test_part(runs)
                                                  and set(runs["dataset"]) <= set(FOLDER_SETS)),
                 text="ImageNet: top-1 table and validation curves (IEEE Access 2025)")
def _write_imagenet_report(job: ReportInput) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, out = job.runs, job.out
    curves = job.store.curves(runs["key"])

    paths = [out / "imagenet_results.csv", out / "imagenet_results.md", out / "imagenet_curves.png"]
    table = imagenet_table(runs)
    table.to_csv(paths[0], index=False)
    lines = ["IEEE Access 2025, ImageNet: top-1 validation accuracy (median over seeds) against "
             f"torchvision's standard ResNet-50 ({RESNET50_TOP1:.2%}).", "",
             "| technique | width | best val top-1 | final val top-1 | gap to reference | "
             "params | epochs | dead units | linear units | runs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.technique} | {r.width} | {r.best_val_acc:.4f} | {r.val_acc:.4f} | "
                     f"{r.gap_to_reference:+.4f} | {r.params:,} | {r.epochs_done} | "
                     f"{r.unit_dead_ratio:.3f} | {r.unit_linear_ratio:.3f} | {r.runs} |")
    paths[1].write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for r in runs[runs["state"] != "failed"].itertuples():
        c = curves[curves["key"] == r.key]
        ax.plot(c["epoch"], c["val_acc"], label=f"{r.technique} w{r.width} s{r.seed}")
    ax.axhline(RESNET50_TOP1, color="grey", ls="--", label="torchvision ResNet-50")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1")
    ax.legend(fontsize=8)
    ax.set_title("ImageNet (IEEE Access 2025)")
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths


@register_report("image", applies=lambda runs: depth_width_grid(runs) and image_sets(runs),
                 text="MNIST (CPAIOR Table 1 and heatmaps) or CIFAR (cells with seed "
                      "ranges, paired test, heatmaps, Fig. 3 scatter)")
def _write_image_report(job: ReportInput) -> list[Path]:
    runs, out = job.runs, job.out
    paths = []
    if set(runs["dataset"]) <= set(MNIST_SETS):
        table = table1(runs)
        paths += [out / "table1_mnist.csv", out / "table1_mnist.md", out / "mnist_heatmaps.png"]
        table.to_csv(paths[0], index=False)
        lines = ["CPAIOR 2022 Table 1: best train / validation accuracy over all depth x width "
                 "cells (median over seeds per cell), successful models (best validation "
                 f"accuracy > {SUCCESS}), cells where the technique is best.", "",
                 "| technique | best train acc | best val acc | successful | best cells |",
                 "|---|---|---|---|---|"]
        for r in table.itertuples():
            lines.append(f"| {r.technique} | {r.best_train_acc:.4f} | {r.best_val_acc:.4f} | "
                         f"{r.successful}/{r.cells} | {r.best_cells} |")
        paths[1].write_text(coverage(runs) + "\n".join(lines) + "\n")
        _heatmaps(paths[2], [("train", _medians(runs, "best_train_acc")),
                             ("validation", _medians(runs, "best_val_acc"))], _techniques(runs),
                  0.1, 1.0, f"MNIST: best accuracy, {_over_seeds(runs)} (CPAIOR 2022 Table 1)",
                  "best accuracy (0.1: chance)")
    if runs["dataset"].astype(str).str.startswith("cifar").any():
        cells = _cifar_cells(runs)
        table = cifar_table(runs, cells=cells)
        paths += [out / "cifar_grid.csv", out / "cifar_grid.md", out / "cifar_cells.csv",
                  out / "cifar_heatmaps.png", out / "cifar_accuracy_vs_params.png"]
        table.to_csv(paths[-5], index=False)
        cells.to_csv(paths[-3], index=False)
        paths[-4].write_text(coverage(runs) + _cifar_markdown(runs, table, cells))
        chance = _chance(runs)
        values = cells.set_index(list(GRID))
        top = max(0.2, float(np.ceil(10 * np.nanmax(values[["best_train_acc", "best_val_acc"]]
                                                  .to_numpy(float))) / 10))
        _heatmaps(paths[-2], [("best train", values["best_train_acc"]),
                              ("best validation", values["best_val_acc"])],
                  _techniques(runs), chance, top,
                  f"CIFAR: best accuracy per cell, {_over_seeds(runs)} (chance {chance:g})",
                  f"best accuracy ({chance:g}: chance)", annotate=True)
        _accuracy_vs_params(paths[-1], cells, chance)
    return paths


#: a CIFAR-10 cell trains when its best validation accuracy exceeds this (twice chance)
CIFAR_SUCCESS = 0.2
#: per CIFAR cell, each as median, min and max over the chosen setting's seeds
CELL_METRICS = {"best_train_acc": "best train", "best_val_acc": "best val",
                "val_acc": "final val", "best_val_test_acc": "held-out test at best val"}


def _chance(runs) -> float:
    """Chance accuracy of a CIFAR sweep (:func:`~jumpstart.data.chance_level`
    of its data set; the lowest where several)."""
    return min(chance_level(d) for d in runs["dataset"].astype(str).unique())


def _cifar_cells(runs) -> pd.DataFrame:
    """Per (technique, width, depth), the setting of the cell's other varying
    config keys (e.g. ``lam``; not the seed) with the highest median over
    seeds of ``best_val_acc`` (chosen on validation data, as the paper
    reports), and for it: ``seeds`` (runs that did not fail), ``params``,
    and each metric of :data:`CELL_METRICS` that the runs have as its median
    over seeds with ``<metric>_min`` and ``<metric>_max``. Failed runs are
    left out."""
    ok = runs[runs["state"] != "failed"]
    varying = _setting_keys(runs)
    metrics = [m for m in CELL_METRICS if m in ok and ok[m].notna().any()]
    agg = {"seeds": ("best_val_acc", "size"), "params": ("params", "median")}
    for m in metrics:
        agg.update({m: (m, "median"), f"{m}_min": (m, "min"), f"{m}_max": (m, "max")})
    med = ok.groupby(list(GRID) + varying, as_index=False, dropna=False).agg(**agg)
    best = (med.sort_values("best_val_acc", ascending=False, kind="stable")
            .groupby(list(GRID)).head(1))
    return best.sort_values(list(GRID), ignore_index=True)


def _setting_keys(runs) -> list[str]:
    """The config keys that vary within a CIFAR cell besides the seed (e.g.
    ``lam``): the settings :func:`_cifar_cells` chooses among."""
    ok = runs[runs["state"] != "failed"]
    return [k for k in runs.attrs.get("config_keys", [])
            if k in ok and k not in ("seed", *GRID) and ok[k].astype(str).nunique() > 1]


def cifar_paired(runs, metric: str = "best_val_acc", reference: str = "jumpstart",
                 cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each technique against ``reference``, paired by (depth, width, seed)
    over the cells both ran, each cell at its chosen setting (:func:`_cifar_cells`).

    Returns:
        One row per other technique: ``pairs``, ``wins`` / ``draws`` /
        ``losses`` of the technique, ``mean_diff`` (technique minus
        reference) and ``p`` (two-sided Wilcoxon signed-rank,
        :func:`~jumpstart.experiments.statistics.paired_test`; NaN when every
        pair is a draw). Empty when ``reference`` has no run. ``cells``:
        :func:`_cifar_cells` of ``runs`` when the caller has it already.
    """
    cells = _cifar_cells(runs) if cells is None else cells
    keys = list(GRID) + _setting_keys(runs)
    ok = runs[runs["state"] != "failed"]
    chosen = ok.merge(cells[keys], on=keys)  # NaN settings (a technique without them) match
    acc = chosen.pivot_table(index=["depth", "width", "seed"], columns="technique",
                             values=metric, aggfunc="first")
    rows = []
    if reference in acc:
        for t in [t for t in _techniques(runs) if t != reference and t in acc]:
            both = acc[[t, reference]].dropna()
            diff = both[t] - both[reference]
            wins, draws, losses = paired_record(both[t], both[reference])
            rows.append({"technique": t, "pairs": len(both), "wins": wins, "draws": draws,
                         "losses": losses,
                         "mean_diff": float(diff.mean()) if len(diff) else np.nan,
                         "p": paired_test(both[t], both[reference])[0]})
    return pd.DataFrame(rows, columns=["technique", "pairs", "wins", "draws", "losses",
                                       "mean_diff", "p"])


def cifar_table(runs, success: float = CIFAR_SUCCESS, cells: pd.DataFrame | None = None
                ) -> pd.DataFrame:
    """CPAIOR 2022 Fig. 3 as a table, from a depth x width x technique sweep on CIFAR.

    Args:
        runs: DataFrame of runs (:func:`~jumpstart.experiments.store.load`)
            with ``best_val_acc`` and ``params``.
        success: a cell trains when its best validation accuracy exceeds it.
        cells: :func:`_cifar_cells` of ``runs`` when the caller has it already.

    Returns:
        One row per technique: ``best_val_acc`` (best cell; each cell the
        best over its other settings, e.g. ``lam``, of the median over
        seeds), ``depth``, ``width``, ``params`` of that cell, ``trained``
        and ``cells`` (cells above ``success``, cells run), and
        ``largest_depth`` (text: per width, the largest depth that trains,
        e.g. ``"w4: 30, w8: 20"``, ``-`` where none does).
    """
    cells = _cifar_cells(runs) if cells is None else cells
    rows = []
    for t in _techniques(runs):
        c = cells[cells["technique"] == t]
        if c.empty:
            continue
        top = c.loc[c["best_val_acc"].idxmax()]
        good = c[c["best_val_acc"] > success]
        largest = ", ".join(
            f"w{w}: {int(good[good['width'] == w]['depth'].max())}"
            if (good["width"] == w).any() else f"w{w}: -" for w in sorted(c["width"].unique()))
        rows.append({"technique": t, "best_val_acc": float(top["best_val_acc"]),
                     "depth": int(top["depth"]), "width": int(top["width"]),
                     "params": int(top["params"]), "trained": len(good), "cells": len(c),
                     "largest_depth": largest})
    return pd.DataFrame(rows)


def _spread(row, metric: str) -> str:
    """``"median [min-max]"`` of a cell's metric; empty where undefined."""
    if pd.isna(row[metric]):
        return ""
    return f"{row[metric]:.3f} [{row[f'{metric}_min']:.3f}-{row[f'{metric}_max']:.3f}]"


def _cifar_markdown(runs, table: pd.DataFrame, cells: pd.DataFrame) -> str:
    epochs = sorted(runs["epochs"].dropna().astype(int).unique()) if "epochs" in runs else []
    lines = [f"Chance accuracy {_chance(runs):g}; epochs "
             f"{', '.join(map(str, epochs)) or 'not recorded'}; per cell the seeds that "
             "did not fail in the `seeds` column.", "",
             "CPAIOR 2022 Fig. 3: per technique, the best validation accuracy over the "
             "depth x width cells (each cell: the best setting of the other options, e.g. "
             "lam, on validation accuracy, as the paper reports; seeds: median), the cells "
             f"that train (best validation accuracy above {CIFAR_SUCCESS}, twice chance), "
             "and the largest depth that trains at each width ('-': none).", "",
             "| technique | best val acc | at depth x width (params) | cells trained | "
             "largest depth trained per width |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.technique} | {r.best_val_acc:.4f} | {r.depth} x {r.width} "
                     f"({r.params:,}) | {r.trained}/{r.cells} | {r.largest_depth} |")
    for metric in ("best_val_acc", "best_val_test_acc"):
        if metric not in runs or runs[metric].isna().all():
            continue
        paired = cifar_paired(runs, metric, cells=cells)
        if paired.empty:
            continue
        lines += ["", f"Against Jumpstart, paired by (depth, width, seed), {CELL_METRICS[metric]} "
                  "accuracy: the technique's wins / draws / losses, mean difference, and the "
                  "two-sided Wilcoxon signed-rank p:", "",
                  "| technique | pairs | w/d/l | mean difference | p |", "|---|---|---|---|---|"]
        for r in paired.itertuples():
            p = "" if pd.isna(r.p) else f"{r.p:.2g}"
            lines.append(f"| {r.technique} | {r.pairs} | {r.wins}/{r.draws}/{r.losses} | "
                         f"{r.mean_diff:+.3f} | {p} |")
    metrics = [m for m in CELL_METRICS if m in cells]
    lines += ["", "Per cell, median [min-max] over seeds (figures: `cifar_heatmaps.png`, "
              "`cifar_accuracy_vs_params.png`):", "",
              "| technique | depth | width | params | seeds | "
              + " | ".join(CELL_METRICS[m] for m in metrics) + " |",
              "|" + "---|" * (5 + len(metrics))]
    for _, r in cells.iterrows():
        lines.append(f"| {r['technique']} | {r['depth']} | {r['width']} | {int(r['params']):,} "
                     f"| {r['seeds']} | " + " | ".join(_spread(r, m) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def _accuracy_vs_params(path: Path, cells: pd.DataFrame, chance: float) -> None:
    """CPAIOR 2022 Fig. 3: best train (left) and validation (right) accuracy
    against parameter count (log axis), one colour per technique, one marker
    per depth, the cells of one depth joined, each point labelled with its
    width, bars from the minimum to the maximum over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained", sharey=True)
    markers = dict(zip(sorted(cells["depth"].unique()), "os^Dv<>p*h"))
    techniques = list(dict.fromkeys(cells["technique"]))
    for ax, metric, name in zip(axes, ("best_train_acc", "best_val_acc"),
                                ("best train accuracy", "best validation accuracy")):
        for (t, depth), part in cells.groupby(["technique", "depth"], sort=False):
            colour = f"C{techniques.index(t)}"
            part = part.sort_values("params")
            ax.errorbar(part["params"], part[metric],
                        yerr=[part[metric] - part[f"{metric}_min"],
                              part[f"{metric}_max"] - part[metric]],
                        color=colour, marker=markers[depth], alpha=0.85, capsize=2, lw=1.2,
                        label=f"{t}, depth {depth}")
            for x, y, w in zip(part["params"], part[metric], part["width"]):
                ax.annotate(f"w{w}", (x, y), textcoords="offset points", xytext=(4, 3),
                            fontsize=7, color=colour)
        ax.axhline(chance, color="grey", ls="--", lw=1)
        ax.axhline(CIFAR_SUCCESS, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda v, _: f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k" if v >= 1e3
            else f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("parameters (log scale)")
        ax.set_ylabel(name)
        ax.set_title(name, loc="left", fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=1, loc="best")
    fig.suptitle(f"CIFAR: accuracy vs parameter count, median and range over seeds "
                 f"(CPAIOR 2022 Fig. 3); dashed: chance {chance:g}, dotted: {CIFAR_SUCCESS}",
                 fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def split_techniques(runs, by: list[str]):
    """Label each run's technique with its values of the config keys ``by``,
    so a report shows each variant of a technique as its own technique.

    A run whose ``by`` keys are all unset (a technique without those options)
    keeps its label; others become e.g. ``diversify[ncl,early]`` (the values
    of the keys in the order given, unset ones left out).

    Args:
        runs: DataFrame of runs (:func:`~jumpstart.experiments.store.load`).
        by: config keys, e.g. ``["div_kind", "div_schedule"]``.

    Returns:
        A copy of ``runs`` with the ``technique`` column relabelled.

    Raises:
        ValueError: a key of ``by`` is not a config key of any run.
    """
    missing = [k for k in by if k not in runs.attrs.get("config_keys", runs.columns)]
    if missing:
        raise ValueError(f"no run has the config key(s) {', '.join(missing)}")
    out = runs.copy()
    if not by:
        return out

    def label(row) -> str:
        parts = [f"{row[k]:g}" if isinstance(row[k], float) else str(row[k])
                 for k in by if pd.notna(row[k])]
        return f"{row['technique']}[{','.join(parts)}]" if parts else row["technique"]

    out["technique"] = out.apply(label, axis=1)
    return out


def write_report(db: str | Path, out_dir: str | Path, *, sweep: str | None = None,
                 threshold: float = 0.9, by: list[str] | None = None) -> list[Path]:
    """Write the reports of a sweep: every registered report whose
    ``applies`` holds for its runs (:mod:`jumpstart.experiments.reports`;
    each reads the store only). Built in: ``init``, an initialization
    comparison (runs that differ in ``init``:
    :func:`~jumpstart.experiments.init_report.write_init_report`); ``nr``, a
    Neural Rejuvenation comparison (any run with technique ``nr``:
    :func:`~jumpstart.experiments.nr_report.write_nr_report`); ``tabular``,
    a tabular benchmark (runs with a test part, not images:
    :func:`~jumpstart.experiments.tabular_report.write_tabular_report`: UCI
    results, key metrics, wins/draws/losses, paired per-table figure);
    ``image``, an MNIST sweep (``table1_mnist.md/.csv`` as CPAIOR 2022
    Table 1 and ``mnist_heatmaps.png``) or a CIFAR one (``cifar_grid.csv/.md``,
    :func:`cifar_table` and per cell median [min-max] over seeds of best
    train / best val / final val / held-out test accuracy; ``cifar_cells.csv``;
    ``cifar_heatmaps.png``, depth x width per technique, annotated;
    ``cifar_accuracy_vs_params.png``, Fig. 3, train and validation panels);
    ``imagenet`` (``imagenet_results.md/.csv``, :func:`imagenet_table`, and
    ``imagenet_curves.png``, validation top-1 per epoch); ``grid``, any other
    depth x width x technique sweep (MOONS, CPAIOR 2022 Fig. 2), as below.

    The ``grid`` report's files:

    - ``fig2_moons.png``: CPAIOR 2022 Fig. 2, heatmaps of best train (top row)
      and best validation (bottom row) accuracy per technique, depth on x,
      width on y, colour scale 0.5 (chance) to 1.0; cells whose runs all
      failed, or that were not run, are grey;
    - ``trainable_depth.csv`` and ``trainable_depth.md``: the table of
      :func:`trainable_depth` at ``threshold``;
    - ``unit_status_heatmaps.png``: dead (top) and linear (bottom) unit ratio
      per technique, same axes, colour scale 0 to 1.

    Every cell is the median over the cell's runs that did not fail.

    Args:
        db: results database (SQLite) written by ``jumpstart sweep``.
        out_dir: output folder.
        sweep: report only this sweep's runs; default every run in ``db``.
        threshold: best train accuracy from which a cell counts as trainable.
        by: config keys that split a technique into variants reported apart
            (:func:`split_techniques`), e.g. ``["div_kind", "div_schedule"]``;
            default none (a technique's options are then chosen on validation
            data, or pooled, as each report says).

    Returns:
        The paths written, in the order above.

    Raises:
        FileNotFoundError: ``db`` does not exist.
        ValueError: ``threshold`` not in (0, 1]; ``db`` not a results
            database, or holding no runs (for ``sweep``), or runs without
            ``depth``/``width``/``technique``, or only failed runs; a key of
            ``by`` that no run has.
    """
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ValueError(f"threshold must be a number in (0, 1]; got {threshold!r}")
    runs = load(db, sweep=sweep)
    runs = split_techniques(runs, list(by or [])) if not runs.empty else runs
    where = f"sweep {sweep!r} of {db}" if sweep else str(db)
    if runs.empty:
        raise ValueError(f"no runs in {where}")
    missing = [c for c in GRID if c not in runs]
    if missing:
        raise ValueError(f"runs in {where} have no {', '.join(missing)}; this report needs a "
                         "depth x width x technique sweep such as MOONS")
    if (runs["state"] == "failed").all():
        raise ValueError(f"every run in {where} failed; nothing to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with ResultsStore(db) as store:
        job = ReportInput(runs, store, out, threshold)
        return [p for report in reports_for(runs) for p in report.write(job)]


def _grid(runs) -> bool:
    return (depth_width_grid(runs) and not image_sets(runs) and not has_test_part(runs)
            and not set(runs["dataset"]) <= set(FOLDER_SETS))


@register_report("grid", applies=_grid,
                 text="depth x width x technique grid (MOONS, CPAIOR 2022 Fig. 2): best "
                      "accuracy and unit status heatmaps, trainable depth")
def _write_grid_report(job: ReportInput) -> list[Path]:
    runs, out, threshold = job.runs, job.out, job.threshold
    paths = [out / name for name in ("fig2_moons.png", "trainable_depth.csv",
                                     "trainable_depth.md", "unit_status_heatmaps.png")]
    _heatmaps(paths[0], [("train", _medians(runs, "best_train_acc")),
                         ("validation", _medians(runs, "best_val_acc"))], _techniques(runs),
              0.5, 1.0, f"Best accuracy, {_over_seeds(runs)} (CPAIOR 2022 Fig. 2)",
              "best accuracy (0.5: chance)")
    table = trainable_depth(runs, threshold)
    table.to_csv(paths[1], index=False)
    paths[2].write_text(coverage(runs) + _markdown(table, _techniques(runs), threshold))
    _heatmaps(paths[3], [("dead units", _medians(runs, "unit_dead_ratio")),
                         ("linear units", _medians(runs, "unit_linear_ratio"))],
              _techniques(runs), 0.0, 1.0, f"Unit status ratio, {_over_seeds(runs)}",
              "share of the net's units")
    return paths
