"""``make demo``: MOONS, baseline vs Jumpstart on deep thin ReLU nets.

The CPAIOR 2022 Fig. 2 settings (Adam 0.01, full batch, 5000 epochs, lam
1e-4) at width 3 and depths 10 and 30, with the library's default
aggregation (``balanced``, IEEE 2025): the paper trains width 3 to depth 60
with Jumpstart and only to depth 10 without it. (With the CPAIOR code's
squared-L2 aggregation the depth-30 net also reaches 100% training accuracy,
but at lr 0.01 it later collapses again; the paper reports the best epoch.)
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _one(job: dict) -> dict:
    import torch

    from .train import train_run

    torch.set_num_threads(1)
    out = job.pop("out")
    run = train_run(dataset="moons", **job)
    run.save(out)
    return {**run.metrics(), "out": str(out)}


def run_demo(*, out: Path, width: int, depths: list[int], lam: float, aggregation: str,
             epochs: int, seed: int, workers: int) -> list[dict]:
    """Train baseline and Jumpstart at each depth; print a table; write figures.

    Each run's ``run.json``, ``curves.csv`` and ``status.png`` go to
    ``out/<technique>-d<depth>-w<width>/``; a side-by-side ``summary.md``
    table to ``out``. Returns the runs' metrics.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    jobs = []
    for depth in depths:
        for technique, options in (("baseline", {}),
                                   ("jumpstart", {"lam": lam, "aggregation": aggregation})):
            jobs.append({
                "depth": depth, "width": width, "technique": technique, **options,
                "epochs": epochs, "seed": seed,
                "out": Path(out) / f"{technique}-d{depth}-w{width}",
            })
    console.print(
        f"MOONS, width {width}, depths {', '.join(map(str, depths))}: baseline vs Jumpstart "
        f"(lam {lam:g}, {aggregation}), Adam 0.01, full batch, {epochs} epochs, seed {seed}"
    )
    results = []
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool, \
            Progress(console=console, transient=True) as progress:
        task = progress.add_task("training", total=len(jobs))
        for res in pool.map(_one, jobs):
            results.append(res)
            progress.advance(task)
    table = Table(title="MOONS: best accuracy over epochs and status at the end (training set)")
    for col in ("depth", "technique", "best train acc", "best val acc", "final train acc",
                "dead units", "linear units", "points dead somewhere", "seconds"):
        table.add_column(col, justify="right")
    lines = ["| depth | technique | best train acc | best val acc | final train acc | "
             "dead units | linear units | points dead somewhere |", "|" + "---|" * 8]
    for r in results:
        s = r["status"]
        row = [str(r["depth"]), r["technique"],
               f"{r['best_train_acc']:.3f}", f"{r['best_val_acc']:.3f}", f"{r['train_acc']:.3f}",
               f"{s['unit_dead_ratio']:.2f}", f"{s['unit_linear_ratio']:.2f}",
               f"{s['point_dead_ratio']:.2f}"]
        table.add_row(*row, f"{r['seconds']:.0f}")
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "summary.md").write_text("\n".join(lines) + "\n")
    console.print(f"status figures: {', '.join(r['out'] + '/status.png' for r in results)}")
    return results
