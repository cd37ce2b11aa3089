"""The report of a comparison (:mod:`jumpstart.experiments.compare`): every
technique on every benchmark in one table and one figure.

Per benchmark, each *problem* (a table, or a depth x width cell) is treated
as a data set of the tabular protocol (:mod:`~jumpstart.experiments.tabular_report`):
per (problem, technique) the setting of the technique's grid (and learning
rate, where the benchmark has several) with the highest median best
validation accuracy over seeds is selected, on validation data only, and
reported by the median over its seeds of the test accuracy at the epoch of
best validation accuracy. Then, per technique and benchmark:

- ``test_acc``: mean over problems of that test accuracy;
- ``trainability``, ``convergence`` (IEEE Access 2025; ``shared/DESIGN.md``):
  share of problems where it beats the worst technique there; mean gap to
  the best technique there (``<= 0``); over the problems where every
  technique has a result;
- ``dead_units``, ``linear_units``: mean over problems of the selected runs'
  unit dead / linear ratios on the training set (final nets);
- ``trained``: problems whose selected best validation accuracy exceeds the
  benchmark's ``success`` level, as ``k/n`` (benchmarks with one);
- ``cost``: training seconds per epoch relative to the baseline's, over the
  runs each trained alone (the single-run loop) in the same store; undefined
  (empty) where runs trained in populations share one clock;
- ``vs_jumpstart``: problems won / drawn / lost against Jumpstart on test
  accuracy (``w/d/l``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .compare import Benchmark, Comparison
from .config import run_key
from .store import load
from .tabular_report import DRAW, key_metrics, markdown_table, select

REFERENCE = "jumpstart"
LEGEND = ("Columns: `test_acc` mean over problems; `trainability` share of problems above "
          "the worst technique; `convergence` mean gap to the best; `dead_units` / "
          "`linear_units` unit ratios of the final nets; `trained` problems above the "
          "benchmark's success level (validation); `cost` seconds per epoch relative to the "
          "baseline's (runs trained alone; empty for runs trained in populations); "
          "`vs_jumpstart` wins/draws/losses; `chosen` the settings selected (problems).")
COLUMNS = ("test_acc", "trainability", "convergence", "dead_units", "linear_units", "trained",
           "cost", "vs_jumpstart", "problems", "runs", "failed", "chosen")


def _problem_name(row, keys: tuple[str, ...]) -> str:
    if keys == ("dataset",):
        return str(row["dataset"])
    return " ".join(f"{k}={row[k]}" for k in keys)


def benchmark_runs(bench: Benchmark, runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` of one benchmark's sweep as the tabular protocol reads them.

    Args:
        bench: the benchmark (its ``labels`` map run keys to technique labels).
        runs: the store's runs (:func:`~jumpstart.experiments.store.load`);
            rows of other sweeps or techniques are dropped.

    Returns:
        The benchmark's runs with ``technique`` set to the compared label,
        ``dataset`` to the problem's name (``"iris"``, ``"depth=20 width=4"``)
        and ``attrs["config_keys"]`` without the problem's keys, so a
        selected setting reads e.g. ``"lam=0.1"``.
    """
    part = runs[runs["key"].isin(bench.labels)].copy()
    part["problem"] = part.apply(_problem_name, axis=1, keys=bench.problem) if len(part) else []
    part["technique"] = part["key"].map(bench.labels)
    part["dataset"] = part["problem"]
    part.attrs["config_keys"] = [k for k in runs.attrs.get("config_keys", [])
                                 if k not in bench.problem]
    return part


def _cost(part: pd.DataFrame, alone: set[str]) -> pd.Series:
    """Per label: seconds per epoch over its runs trained alone, relative to
    the baseline's (NaN where none, or no baseline)."""
    ok = part[part["key"].isin(alone) & (part["state"] != "failed")
              & (part["epochs_done"] > 0)]
    sums = ok.groupby("technique")[["seconds", "epochs_done"]].sum()
    per_epoch = sums["seconds"] / sums["epochs_done"]
    if "baseline" not in per_epoch:
        return pd.Series(dtype=float)
    return per_epoch / per_epoch["baseline"]


def benchmark_table(bench: Benchmark, runs: pd.DataFrame, labels: list[str],
                    alone: set[str]) -> pd.DataFrame:
    """One row per technique label of one benchmark: the columns of
    :data:`COLUMNS` (definitions in the module docstring).

    Args:
        bench: the benchmark.
        runs: :func:`benchmark_runs`' frame.
        labels: the compared labels, in the report's order.
        alone: keys of the runs trained by the single-run loop.

    Returns:
        DataFrame indexed by label; a label without any run that did not
        fail has NaN metrics (undefined, not zero).
    """
    table = pd.DataFrame(index=pd.Index(labels, name="technique"),
                         columns=list(COLUMNS), dtype=object)
    table["runs"] = runs.groupby("technique").size().reindex(labels).fillna(0).astype(int)
    table["failed"] = (runs[runs["state"] == "failed"].groupby("technique").size()
                       .reindex(labels).fillna(0).astype(int))
    if (runs["state"] != "failed").any():
        chosen = select(runs)
        metrics = key_metrics(chosen).set_index("technique")
        for label, group in chosen.groupby("technique"):
            table.loc[label, "test_acc"] = float(group["test_acc"].mean())
            table.loc[label, "dead_units"] = float(group["unit_dead_ratio"].mean())
            table.loc[label, "linear_units"] = float(group["unit_linear_ratio"].mean())
            table.loc[label, "problems"] = len(group)
            counts = group["config"].replace("", "-").value_counts()
            table.loc[label, "chosen"] = ", ".join(f"{c} ({n})" for c, n in counts.items())
            if bench.success is not None:
                table.loc[label, "trained"] = (f"{int((group['val_acc'] > bench.success).sum())}"
                                               f"/{len(group)}")
        for label in metrics.index:
            table.loc[label, "trainability"] = metrics.loc[label, "trainability"]
            table.loc[label, "convergence"] = metrics.loc[label, "convergence"]
        acc = chosen.pivot(index="dataset", columns="technique", values="test_acc")
        if REFERENCE in acc:
            for label in acc.columns:
                if label == REFERENCE:
                    continue
                diff = (acc[label] - acc[REFERENCE]).dropna()
                table.loc[label, "vs_jumpstart"] = (f"{int((diff > DRAW).sum())}/"
                                                    f"{int((diff.abs() <= DRAW).sum())}/"
                                                    f"{int((diff < -DRAW).sum())}")
        cost = _cost(runs, alone)
        for label in cost.index:
            table.loc[label, "cost"] = float(cost[label])
    return table


def _fmt(value, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return format(value, spec) if isinstance(value, (float, np.floating)) else str(value)


def _figure(path: Path, acc: pd.DataFrame) -> None:
    """Rank heatmap: techniques (rows) x benchmarks (columns), colour the rank
    of the technique's test accuracy on that benchmark (1 = best; ties share
    the best rank), annotated with the accuracy; a last column, the mean rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = acc.rank(ascending=False, method="min")
    ranks["mean rank"] = ranks.mean(axis=1)
    fig, ax = plt.subplots(figsize=(max(5.5, 2.2 + 1.3 * ranks.shape[1]),
                                    1.2 + 0.38 * len(ranks)),
                           layout="constrained")
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(ranks.to_numpy(float)), cmap=cmap, aspect="auto",
                      vmin=1, vmax=max(2, len(ranks)))
    for i, label in enumerate(ranks.index):
        for j, column in enumerate(ranks.columns):
            value = ranks.loc[label, column] if column == "mean rank" else acc.loc[label, column]
            if pd.notna(value):
                text = f"{value:.1f}" if column == "mean rank" else f"{value:.3f}"
                shade = image.cmap(image.norm(ranks.loc[label, column]))
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if sum(shade[:3]) < 1.5 else "black")
    ax.set_xticks(range(ranks.shape[1]), list(ranks.columns), rotation=20, ha="right")
    ax.set_yticks(range(len(ranks)), list(ranks.index))
    fig.colorbar(image, ax=ax, label="rank (1 = best)")
    ax.set_title("Test accuracy and its rank per benchmark", loc="left", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_comparison_report(comparison: Comparison, db: str | Path, out_dir: str | Path,
                            wall: dict[str, float] | None = None) -> list[Path]:
    """Write ``comparison.csv``, ``comparison.md`` and ``comparison.png``.

    Args:
        comparison: from :func:`~jumpstart.experiments.compare.load_comparison`.
        db: the results database the comparison ran into.
        out_dir: output folder (created if missing).
        wall: per benchmark, the seconds the last ``compare`` call spent on
            it, for the report's time section (optional).

    Returns:
        The three paths: the CSV (one row per benchmark and technique, the
        columns of :data:`COLUMNS`), the Markdown report and the figure.

    Raises:
        FileNotFoundError: ``db`` does not exist.
        ValueError: ``db`` holds no run of the comparison.
    """
    from ..train.route import route

    runs = load(db)
    labels = list(comparison.techniques)
    tables, parts = {}, {}
    for bench in comparison.benchmarks:
        parts[bench.name] = part = benchmark_runs(bench, runs)
        alone = {run_key(c) for c in bench.sweep.runs if route(c) == "single"}
        tables[bench.name] = benchmark_table(bench, part, labels, alone)
    if not any(len(p) for p in parts.values()):
        raise ValueError(f"{db} holds no run of this comparison; run `jumpstart compare` first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "comparison.csv", out / "comparison.md", out / "comparison.png"]
    frame = pd.concat({name: t for name, t in tables.items()}, names=["benchmark"]).reset_index()
    frame.to_csv(paths[0], index=False)
    acc = pd.DataFrame({name: pd.to_numeric(t["test_acc"]) for name, t in tables.items()})
    _figure(paths[2], acc)
    paths[1].write_text(_markdown(comparison, tables, parts, acc, wall or {}))
    return paths


def _markdown(comparison: Comparison, tables: dict, parts: dict, acc: pd.DataFrame,
              wall: dict[str, float]) -> str:
    lines = [f"# Comparison: {comparison.name}", "", comparison.description.strip(), "",
             "Test accuracy (mean over each benchmark's problems of the median over seeds, "
             "the setting chosen per problem on validation data); empty where a technique has "
             "no run that did not fail. Figure: `comparison.png`.", ""]
    summary = acc.map(lambda v: _fmt(v))
    summary.index.name = "technique"
    lines += [markdown_table(summary, index=True), ""]
    lines += ["## Wins / draws / losses against Jumpstart (test accuracy, per problem)", ""]
    wdl = pd.DataFrame({name: t["vs_jumpstart"].map(_fmt) for name, t in tables.items()})
    wdl.index.name = "technique"
    lines += [markdown_table(wdl.drop(index=REFERENCE, errors="ignore"), index=True), ""]
    lines += ["## Option grids (the same budget for every technique)", ""]
    grids = pd.DataFrame({"grid": pd.Series(comparison.grids)})
    grids.index.name = "technique"
    lines += [markdown_table(grids, index=True), ""]
    for bench in comparison.benchmarks:
        part = parts[bench.name]
        seconds = float(part["seconds"].sum()) if len(part) else 0.0
        time = f"training time {seconds / 60:.1f} min summed over runs"
        if bench.name in wall:
            time += f"; the last `compare` call spent {wall[bench.name] / 60:.1f} min on it"
        lines += [f"## {bench.name}", "", bench.description.strip(), "",
                  f"{part['problem'].nunique() if len(part) else 0} problems, {len(part)} runs "
                  f"of {len(bench.sweep.runs)} in the sweep ({time}).", ""]
        lines += [LEGEND, ""]
        for label, group in part.groupby("technique", sort=False):
            if (group["state"] == "failed").all():
                errors = [e for e in group["error"].dropna().astype(str) if e.strip()]
                why = errors[0].strip().splitlines()[-1] if errors else "no error text"
                lines += [f"Left out: {label} ({len(group)} failed runs: {why}).", ""]
        table = tables[bench.name].copy()
        if bench.success is None:
            table = table.drop(columns="trained")
        shown = table.map(_fmt)
        lines += [markdown_table(shown, index=True), ""]
    return "\n".join(lines)
