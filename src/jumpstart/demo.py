"""``make demo``: MOONS, baseline vs Jumpstart on deep thin ReLU nets, over seeds.

The CPAIOR 2022 Fig. 2 settings (full batch, 5000 epochs, lam 1e-4) at width 3
and depths 10 and 30, with the library's default aggregation (``balanced``,
IEEE 2025), at the paper's Adam 0.01 and at Adam 0.001. One seed is not a
result here: at lr 0.01 a deep thin net may train and then collapse, and a
change of float rounding moves single runs (issue 19), so every cell is the
median and range over ``seeds`` seeds. All runs of one learning rate train
together as one population in the MOONS stacks
(:func:`jumpstart.train.stacks.train_stacked`), so five seeds cost about what
one run per cell cost.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

#: what the table and ``summary.csv`` report per cell, from each member's metrics
COLUMNS = (("best_train_acc", "best train acc"), ("best_val_acc", "best val acc"),
           ("train_acc", "final train acc"), ("unit_dead_ratio", "dead units"),
           ("unit_linear_ratio", "linear units"), ("point_dead_ratio", "points dead somewhere"))


def _population(job: dict) -> list[dict]:
    """Train one learning rate's population; one record per member, with the
    trained net's state for the status figures."""
    import torch

    from .train.stacks import Member, train_stacked

    torch.set_num_threads(1)
    members = [Member(job["width"], seed, lam, depth) for depth, _, lam, seed in job["cells"]]
    results = train_stacked(members, dataset="moons", epochs=job["epochs"], lr=job["lr"],
                            jumpstart={"aggregation": job["aggregation"]},
                            curve_every=job["epochs"])
    out = []
    for (depth, technique, _, seed), r in zip(job["cells"], results):
        m = {**r.metrics, **r.metrics["status"]}
        out.append({"lr": job["lr"], "depth": depth, "technique": technique, "seed": seed,
                    **{k: m[k] for k, _ in COLUMNS}, "seconds": m["seconds"],
                    "state": {k: v.clone() for k, v in r.model.state_dict().items()}})
    return out


def summarize(records: list[dict]) -> list[dict]:
    """Per (lr, depth, technique) cell: median, min and max of every
    :data:`COLUMNS` metric over the seeds, and the median seed (the member
    whose best train accuracy is the median; the lower middle one for an even
    count, ties to the lower seed)."""
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        cells.setdefault((r["lr"], r["depth"], r["technique"]), []).append(r)
    out = []
    for (lr, depth, technique), runs in cells.items():
        row = {"lr": lr, "depth": depth, "technique": technique, "seeds": len(runs)}
        for key, _ in COLUMNS:
            values = np.array([r[key] for r in runs], dtype=float)
            row[key] = float(np.median(values))
            row[f"{key}_min"], row[f"{key}_max"] = float(values.min()), float(values.max())
        ranked = sorted(runs, key=lambda r: (r["best_train_acc"], r["seed"]))
        row["median_seed"] = ranked[(len(ranked) - 1) // 2]["seed"]
        out.append(row)
    return out


def _meaning(rows: list[dict]) -> str:
    """One line on what the learning-rate rows show, from the numbers: per lr,
    Jumpstart at the deepest depth, median best and final training accuracy
    and the worst seed's final one."""
    deepest = max(r["depth"] for r in rows)
    parts = []
    for r in rows:
        if r["technique"] == "jumpstart" and r["depth"] == deepest:
            kept = r["best_train_acc"] - r["train_acc"] <= 0.02
            parts.append(f"lr {r['lr']:g}: best {r['best_train_acc']:.3f}, final "
                         f"{r['train_acc']:.3f} (worst seed {r['train_acc_min']:.3f}), "
                         + ("kept" if kept else "lost after the best epoch"))
    return (f"Best is the best epoch, final the last; Jumpstart at depth {deepest}: "
            + "; ".join(parts) + ". A deep thin net that trains and then collapses shows "
            "as final well below best.")


def run_demo(*, out: Path, width: int, depths: list[int], lam: float, aggregation: str,
             epochs: int, seeds: int, lrs: list[float], workers: int) -> list[dict]:
    """Train baseline and Jumpstart at each depth and learning rate over
    ``seeds`` seeds; print a table; write ``summary.md``, ``summary.csv`` and
    the median seed's status figure per cell
    (``out/<technique>-d<depth>-w<width>-lr<lr>/status.png``).

    Returns:
        :func:`summarize`'s rows.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .data import moons
    from .core.status import activation_status
    from .models import Rectangular

    console = Console(width=None if sys.stdout.isatty() else 140)
    cells = [(d, t, lam_, s) for d in depths for t, lam_ in (("baseline", 0.0), ("jumpstart", lam))
             for s in range(seeds)]
    jobs = [{"lr": lr, "width": width, "epochs": epochs, "aggregation": aggregation,
             "cells": cells} for lr in lrs]
    console.print(
        f"MOONS, width {width}, depths {', '.join(map(str, depths))}: baseline vs Jumpstart "
        f"(lam {lam:g}, {aggregation}), full batch, {epochs} epochs, Adam lr "
        f"{', '.join(f'{lr:g}' for lr in lrs)}; median [min-max] over {seeds} seeds",
        markup=False)
    records = []
    ctx = mp.get_context("spawn")
    with console.status(f"training {len(jobs)} populations of {len(cells)} nets"), \
            ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        for part in pool.map(_population, jobs):
            records += part
    rows = summarize(records)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = Table(title=escape(f"MOONS: best accuracy over epochs and status at the end "
                               f"(training set), median [min-max] over {seeds} seeds"))
    for col in ("lr", "depth", "technique", *(name for _, name in COLUMNS)):
        table.add_column(col, justify="right")
    lines = ["| lr | depth | technique | " + " | ".join(n for _, n in COLUMNS) + " |",
             "|" + "---|" * (3 + len(COLUMNS))]
    data = moons()
    for row in rows:
        cells_text = [f"{row[k]:.3f} [{row[k + '_min']:.3f}-{row[k + '_max']:.3f}]"
                      for k, _ in COLUMNS]
        head = [f"{row['lr']:g}", str(row["depth"]), row["technique"]]
        table.add_row(*head, *map(escape, cells_text))
        lines.append("| " + " | ".join(head + cells_text) + " |")
        median = next(r for r in records if (r["lr"], r["depth"], r["technique"], r["seed"]) ==
                      (row["lr"], row["depth"], row["technique"], row["median_seed"]))
        net = Rectangular(row["depth"], width, 2, 1)
        net.load_state_dict(median["state"])
        folder = out / f"{row['technique']}-d{row['depth']}-w{width}-lr{row['lr']:g}"
        folder.mkdir(parents=True, exist_ok=True)
        activation_status(net, data.x_train).plot(
            folder / "status.png",
            title=f"depth {row['depth']} width {width} {row['technique']}, lr {row['lr']:g}, "
                  f"seed {row['median_seed']} (median of {seeds}): status on the training set")
        row["status_figure"] = str(folder / "status.png")
    console.print(table)
    meaning = _meaning(rows)
    console.print(meaning, markup=False)
    (out / "summary.md").write_text("\n".join(lines) + "\n\n" + meaning + "\n")
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    (out / "records.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "state"} for r in records], indent=1) + "\n")
    console.print(f"wrote {out}/summary.md, summary.csv, records.json and the median seed's "
                  f"status.png per cell")
    return rows


#: the comparison the demo ends with (a benchmark of the shipped comparison file)
DEMO_BENCHMARK = "uci-demo"


def run_demo_comparison(*, out: Path, workers: int) -> Path:
    """The demo's last part: every technique of the shipped comparison on
    its ``uci-demo`` benchmark (three small UCI tables; see
    :mod:`jumpstart.experiments.compare`), run into ``out/comparison.db``
    (resumable) and reported in ``out/comparison/`` (``comparison.md``,
    ``.csv``, ``.png``); prints the test-accuracy table.

    Returns:
        The path of ``comparison.md``.

    Raises:
        FileNotFoundError: the UCI tables are not in the data folder.
    """
    from .experiments.compare import load_comparison, run_comparison
    from .experiments.comparison_report import write_comparison_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    comparison = load_comparison(benchmarks=[DEMO_BENCHMARK])
    runs = len(comparison.benchmarks[0].sweep.runs)
    print(f"\nEvery technique on three UCI tables ({DEMO_BENCHMARK}: "
          f"{len(comparison.techniques)} techniques, {runs} runs, options chosen on "
          "validation data, reported on the test part):", flush=True)
    counts = run_comparison(comparison, out / "comparison.db", workers=workers)
    paths = write_comparison_report(comparison, out / "comparison.db", out / "comparison",
                                    {k: c["wall_seconds"] for k, c in counts.items()})
    section = paths[1].read_text().split(f"## {DEMO_BENCHMARK}\n", 1)[1]
    print(section[section.index("Columns:"):].strip())
    print(f"wrote {paths[1]}, {paths[0].name} and {paths[2].name} "
          f"({counts[DEMO_BENCHMARK]['wall_seconds']:.0f} s)")
    return paths[1]
