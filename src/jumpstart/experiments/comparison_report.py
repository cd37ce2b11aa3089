"""The report of a comparison (:mod:`jumpstart.experiments.compare`): every
technique on every benchmark in one table and one figure.

Per benchmark, each *problem* (a table, or a depth x width cell) is treated
as a data set of the tabular protocol (:mod:`~jumpstart.experiments.selection`):
per (problem, technique) the setting of the technique's grid (and learning
rate, where the benchmark has several) with the highest median best
validation accuracy over seeds is selected, on validation data only, and
reported by the median over its seeds of the test accuracy at the epoch of
best validation accuracy. Then, per technique and benchmark:

- ``test_acc``: mean over problems of that test accuracy, ``ci_low`` /
  ``ci_high`` its 95% percentile bootstrap interval over problems
  (:func:`~jumpstart.experiments.statistics.bootstrap_interval`; undefined
  below :data:`MIN_PROBLEMS` problems); ``seeds``: the seeds behind each problem's
  median (runs that did not fail; ``"3"``, or a range ``"2-3"``);
- ``trainability``, ``convergence`` (IEEE Access 2025; ``shared/DESIGN.md``):
  share of problems where it beats the worst reference technique there; mean
  gap to the best reference technique there; over the problems where every
  technique has a result;
- ``dead_units``, ``linear_units``: mean over problems of the selected runs'
  unit dead / linear ratios on the training set (final nets);
- ``trained``: problems whose selected best validation accuracy exceeds the
  benchmark's ``success`` level, as ``k/n`` (benchmarks with one);
- ``cost``: training seconds per epoch relative to the baseline's, over the
  runs each trained alone (the single-run loop) in the same store; undefined
  (empty) where runs trained in populations share one clock;
- ``vs_jumpstart``: problems won / drawn / lost against Jumpstart on test
  accuracy (``w/d/l``), ``p_vs_jumpstart`` the two-sided Wilcoxon
  signed-rank p-value over the problems both have, draws dropped
  (:func:`~jumpstart.experiments.statistics.paired_test`; undefined where
  every problem is a draw);
- ``vs_jumpstart_seeds``, ``p_seeds``: the same against Jumpstart over
  (problem, seed) pairs: each technique's setting chosen per problem, its
  run of each seed paired with Jumpstart's run of that seed. With few
  problems (MOONS has 2, where no test over problems can reach p < 0.5) this
  is the test that can separate techniques; a pair shares its seed (and the
  problem's data), not the net, and the seeds of one problem are not new
  problems: it speaks for these problems, not for others.

Per problem, :func:`problem_table` gives each technique's test accuracy
there as median, min and max over seeds (``comparison_problems.csv`` and
each benchmark's section of ``comparison.md``).

The trainability and convergence references are the paper's five techniques
(:mod:`~jumpstart.experiments.selection`), so they do not move when
techniques are added to a comparison.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..train.route import route
from .compare import Benchmark, Comparison
from .config import run_key
from .statistics import bootstrap_interval, paired_record, paired_test
from .store import load
from .selection import ACCURACY, key_metrics, markdown_table, select, selected_runs

REFERENCE = "jumpstart"
#: fewest problems for a bootstrap interval: with fewer, a percentile interval is
#: little more than the range of the values (with 2, exactly their min and max)
MIN_PROBLEMS = 6
LEGEND = ("Columns: `test_acc` mean over problems, `ci_low`-`ci_high` its 95% bootstrap "
          "interval over problems, `seeds` per problem; `trainability` share of problems "
          "above the worst of the paper's five techniques; `convergence` mean gap to their "
          "best; `dead_units` / "
          "`linear_units` unit ratios of the final nets; `trained` problems above the "
          "benchmark's success level (validation); `cost` seconds per epoch relative to the "
          "baseline's (runs trained alone; empty for runs trained in populations); "
          "`vs_jumpstart` wins/draws/losses, `p_vs_jumpstart` Wilcoxon signed-rank p over "
          "problems; `vs_jumpstart_seeds`, `p_seeds` the same over (problem, seed) pairs; "
          "`chosen` the settings selected (problems).")
COLUMNS = ("test_acc", "ci_low", "ci_high", "seeds", "trainability", "convergence",
           "dead_units", "linear_units", "trained", "cost", "vs_jumpstart", "p_vs_jumpstart",
           "vs_jumpstart_seeds", "p_seeds", "problems", "runs", "failed", "chosen")


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
                    alone: set[str], picked: pd.DataFrame) -> pd.DataFrame:
    """One row per technique label of one benchmark: the columns of
    :data:`COLUMNS` (definitions in the module docstring).

    Args:
        bench: the benchmark.
        runs: :func:`benchmark_runs`' frame.
        labels: the compared labels, in the report's order.
        alone: keys of the runs trained by the single-run loop.
        picked: the runs of each (problem, technique)'s chosen setting,
            :func:`~jumpstart.experiments.selection.selected_runs` of ``runs``
            (computed once per benchmark, shared with :func:`problem_table`).

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
            if group["test_acc"].notna().sum() >= MIN_PROBLEMS:
                low, high = bootstrap_interval(group["test_acc"])
                table.loc[label, "ci_low"], table.loc[label, "ci_high"] = low, high
            fewest, most = int(group["seeds"].min()), int(group["seeds"].max())
            table.loc[label, "seeds"] = str(most) if fewest == most else f"{fewest}-{most}"
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
        seeded = picked.pivot_table(index=["dataset", "seed"], columns="technique",
                                    values=ACCURACY)
        for pairs, record_col, p_col in ((acc, "vs_jumpstart", "p_vs_jumpstart"),
                                         (seeded, "vs_jumpstart_seeds", "p_seeds")):
            if REFERENCE not in pairs:
                continue
            for label in pairs.columns.drop(REFERENCE):
                record = paired_record(pairs[label], pairs[REFERENCE])
                table.loc[label, record_col] = "/".join(map(str, record))
                table.loc[label, p_col] = paired_test(pairs[label], pairs[REFERENCE])[0]
        cost = _cost(runs, alone)
        for label in cost.index:
            table.loc[label, "cost"] = float(cost[label])
    return table


def problem_table(picked: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, technique): the setting chosen there on validation and
    its test accuracy over seeds.

    Args:
        picked: :func:`~jumpstart.experiments.selection.selected_runs` of
            :func:`benchmark_runs`' frame.

    Returns:
        One row per (problem, technique) with a run that did not fail:
        ``problem``, ``technique``, ``config`` (the chosen setting),
        ``seeds`` (its runs that did not fail), ``median``, ``min``, ``max``
        of the test accuracy at the best-validation epoch over those seeds
        (NaN where no seed has one).
    """
    if not len(picked):
        return pd.DataFrame(columns=["problem", "technique", "config", "seeds", "median",
                                     "min", "max"])
    return (picked.groupby(["dataset", "technique", "config"], as_index=False)
            .agg(seeds=("seed", "size"), median=(ACCURACY, "median"), min=(ACCURACY, "min"),
                 max=(ACCURACY, "max"))
            .rename(columns={"dataset": "problem"}))


def _ranges(problems: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """``"0.998 [0.976-1.000]"`` per problem (rows) and technique (columns)."""
    text = problems.apply(lambda r: f"{_fmt(r['median'])} [{_fmt(r['min'])}-{_fmt(r['max'])}]"
                          if pd.notna(r["median"]) else "", axis=1)
    wide = (problems.assign(text=text).pivot(index="problem", columns="technique", values="text")
            .reindex(columns=[label for label in labels if label in set(problems["technique"])]))
    return wide.fillna("")


def _fmt(value, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return format(value, spec) if isinstance(value, (float, np.floating)) else str(value)


def beats_chance(table: pd.DataFrame, chance: float | None) -> bool | None:
    """Whether some technique of a benchmark is above chance: the lower end
    of its interval (its mean where the interval is undefined) above
    ``chance``; ``None`` where the benchmark has no chance level or no
    result."""
    low = pd.to_numeric(table["ci_low"]).fillna(pd.to_numeric(table["test_acc"]))
    if chance is None or low.isna().all():
        return None
    return bool((low > chance).any())


def _figure(path: Path, tables: dict[str, pd.DataFrame], chances: dict[str, float | None],
            problems: dict[str, pd.DataFrame]) -> None:
    """One panel per benchmark: each technique's mean test accuracy (dot,
    labelled) with its 95% bootstrap interval (bar), each problem's median
    over seeds (grey ticks, :func:`problem_table`), the chance level
    (dashed); a panel says when its interval is undefined (fewer than
    :data:`MIN_PROBLEMS` problems), and a benchmark where no technique is
    above chance (:func:`beats_chance`) is drawn on grey and says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(tables)
    labels = list(next(iter(tables.values())).index)
    fig, axes = plt.subplots(1, len(names), squeeze=False, sharey=True, layout="constrained",
                             figsize=(2.0 + 2.6 * len(names), 1.0 + 0.32 * len(labels)))
    for ax, name in zip(axes[0], names):
        t = tables[name]
        mean = pd.to_numeric(t["test_acc"])
        low, high = pd.to_numeric(t["ci_low"]), pd.to_numeric(t["ci_high"])
        y = np.arange(len(labels))
        ax.errorbar(mean, y, xerr=[(mean - low).clip(lower=0), (high - mean).clip(lower=0)],
                    fmt="o", color="C0", ecolor="C0", capsize=2, ms=4, lw=1.2)
        for yi, m in zip(y, mean):
            if pd.notna(m):
                ax.annotate(f"{m:.2f}", (m, yi), textcoords="offset points", xytext=(0, 5),
                            ha="center", fontsize=7)
        each = problems[name]
        rows = each["technique"].map({label: i for i, label in enumerate(labels)})
        ax.plot(each["median"], rows, "|", color="0.45", ms=7, zorder=1, gid="problems")
        chance = chances.get(name)
        title = name if mean.notna().any() else f"{name}\n(no results)"
        if mean.notna().any() and low.isna().all():
            title += f"\n(no interval: {each['problem'].nunique()} problems)"
        if chance is not None:
            ax.axvline(chance, color="grey", ls="--", lw=1)
            if beats_chance(t, chance) is False:
                ax.set_facecolor("0.88")
                title += "\n(no technique above chance)"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("test accuracy" + ("" if chance is None else f" (chance {chance:g})"),
                      fontsize=8)
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0][0].set_ylim(len(labels) - 0.5, -0.9)  # first technique on top, room for labels
    fig.suptitle("Test accuracy: mean over problems (dot)\nwith its 95% bootstrap interval "
                 "(bar);\neach problem's median over seeds (grey tick)", fontsize=9)
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
        The four paths: the CSV (one row per benchmark and technique, the
        columns of :data:`COLUMNS`), the Markdown report, the figure, and
        the per-problem CSV (:func:`problem_table`'s rows with a
        ``benchmark`` column).

    Raises:
        FileNotFoundError: ``db`` does not exist.
        ValueError: ``db`` holds no run of the comparison.
    """
    runs = load(db)
    labels = list(comparison.techniques)
    tables, parts, problems = {}, {}, {}
    for bench in comparison.benchmarks:
        parts[bench.name] = part = benchmark_runs(bench, runs)
        alone = {run_key(c) for c in bench.sweep.runs if route(c) == "single"}
        picked = selected_runs(part)  # the chosen settings' runs, once per benchmark
        tables[bench.name] = benchmark_table(bench, part, labels, alone, picked)
        problems[bench.name] = problem_table(picked)
    if not any(len(p) for p in parts.values()):
        raise ValueError(f"{db} holds no run of this comparison; run `jumpstart compare` first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "comparison.csv", out / "comparison.md", out / "comparison.png",
             out / "comparison_problems.csv"]
    frame = pd.concat({name: t for name, t in tables.items()}, names=["benchmark"]).reset_index()
    frame.to_csv(paths[0], index=False)
    pd.concat(problems, names=["benchmark"]).reset_index(level=0).to_csv(paths[3], index=False)
    acc = pd.DataFrame({name: pd.to_numeric(t["test_acc"]) for name, t in tables.items()})
    _figure(paths[2], tables, {b.name: b.chance for b in comparison.benchmarks}, problems)
    paths[1].write_text(_markdown(comparison, tables, parts, problems, acc, wall or {}))
    return paths


def _interval(row) -> str:
    """``"0.722 [0.650, 0.790]"``: a row's mean test accuracy and interval."""
    mean = _fmt(row["test_acc"])
    if mean and _fmt(row["ci_low"]):
        return f"{mean} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
    return mean


def _paired(row, record_col: str = "vs_jumpstart", p_col: str = "p_vs_jumpstart") -> str:
    """``"14/0/10 (p=0.27)"``: a row's record against Jumpstart and its p-value."""
    record = _fmt(row[record_col])
    p = row[p_col]
    return f"{record} (p={p:.2g})" if record and pd.notna(p) else record


def _markdown(comparison: Comparison, tables: dict, parts: dict, problems: dict,
              acc: pd.DataFrame, wall: dict[str, float]) -> str:
    lines = [f"# Comparison: {comparison.name}", "", comparison.description.strip(), "",
             "Test accuracy: mean over each benchmark's problems of the median over seeds "
             "(the setting chosen per problem on validation data), with its 95% bootstrap "
             "interval over problems in brackets; empty where a technique has no run that did "
             "not fail. Figure: `comparison.png`.", ""]
    summary = pd.DataFrame({name: [_interval(t.loc[label]) for label in t.index]
                            for name, t in tables.items()}, index=acc.index)
    summary.index.name = "technique"
    lines += [markdown_table(summary, index=True), ""]
    for bench in comparison.benchmarks:
        table = tables[bench.name]
        seeds = ", ".join(sorted(set(table["seeds"].dropna().astype(str)))) or "none"
        above = beats_chance(table, bench.chance)
        level = ("no single chance level" if bench.chance is None else
                 f"chance {bench.chance:g}; " + {
                     True: "some technique is above it (interval, or mean where undefined)",
                     False: "no technique is above it", None: "no results"}[above])
        lines.append(f"- {bench.name}: {level}; seeds per problem: {seeds}.")
    lines += ["", "## Against Jumpstart, per problem: wins / draws / losses "
              "(Wilcoxon signed-rank p, two-sided)", ""]
    wdl = pd.DataFrame({name: [_paired(t.loc[label]) for label in t.index]
                        for name, t in tables.items()}, index=acc.index)
    wdl.index.name = "technique"
    lines += [markdown_table(wdl.drop(index=REFERENCE, errors="ignore"), index=True), ""]
    lines += ["## Against Jumpstart, per (problem, seed): wins / draws / losses "
              "(Wilcoxon signed-rank p, two-sided)", "",
              "Each technique's setting chosen per problem, its run of each seed paired with "
              "Jumpstart's of that seed. A pair shares the seed and the problem's data, not "
              "the net; the seeds of one problem are not new problems, so this speaks for "
              "these problems only. With n pairs, none drawn and no tied differences (the "
              "exact test) the smallest p is 2 / 2^n: 0.031 for 6 pairs, 7.6e-6 for 18.", ""]
    seeded = pd.DataFrame({name: [_paired(t.loc[label], "vs_jumpstart_seeds", "p_seeds")
                                  for label in t.index] for name, t in tables.items()},
                          index=acc.index)
    seeded.index.name = "technique"
    lines += [markdown_table(seeded.drop(index=REFERENCE, errors="ignore"), index=True), ""]
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
        for p_col in ("p_vs_jumpstart", "p_seeds"):
            shown[p_col] = table[p_col].map(lambda v: _fmt(v, ".2g"))
        lines += [markdown_table(shown, index=True), ""]
        if len(problems[bench.name]):
            lines += ["Per problem: test accuracy at the best-validation epoch, median "
                      "[min-max] over seeds, of the setting chosen there on validation.", "",
                      markdown_table(_ranges(problems[bench.name], list(tables[bench.name].index)),
                                     index=True), ""]
    return "\n".join(lines)
