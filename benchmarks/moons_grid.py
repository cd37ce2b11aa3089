"""Wall time of a MOONS sweep with population training vs the single-run loop.

    python benchmarks/moons_grid.py [--preset moons-paper] [--workers 2]
        [--epochs E] [--subset-epochs 300] [--db PATH]

1. Runs the whole preset (default ``moons-paper``: 432 runs, 5000 epochs)
   through ``run_sweep`` (population training, ``--workers`` processes) into a
   fresh results database and times it. Target (issue 3): at most 15 minutes
   on a 2-core machine.
2. Times the single-run loop (``train_run``, one thread) on a subset: depths
   {5, 30, 100} (those in the grid) x widths {3, 25} x both techniques, for
   ``--subset-epochs`` epochs each; fits seconds per epoch = a + b * depth per
   technique, predicts the single-run time of the whole grid, divided by
   ``--workers`` (the same parallelism), and prints the speedup. Target: >= 20x.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from jumpstart.experiments import load, load_sweep, run_sweep
from jumpstart.train import train_run
from jumpstart.techniques import technique_options


def single_run_model(sweep, subset_epochs: int) -> dict[str, np.ndarray]:
    """Per technique, least-squares (a, b) of seconds per epoch = a + b * depth."""
    torch.set_num_threads(1)
    depths = sorted({r["depth"] for r in sweep.runs})
    probe = [d for d in (5, 30, 100) if d in depths] or depths[:2]
    base = sweep.runs[0]
    fits = {}
    for technique in ("baseline", "jumpstart"):
        xs, ys = [], []
        example = next((r for r in sweep.runs if r["technique"] == technique), None)
        if example is None:
            continue
        for depth in probe:
            for width in (3, 25):
                start = time.perf_counter()
                train_run(dataset=base["dataset"], model=base["model"], depth=depth, width=width,
                          technique=technique,
                          **{k: example[k] for k in technique_options(technique) if k in example},
                          epochs=subset_epochs, lr=base["lr"], seed=0)
                xs.append(depth)
                ys.append((time.perf_counter() - start) / subset_epochs)
        fits[technique] = np.polyfit(xs, ys, 1)[::-1]  # (a, b)
        print(f"single-run loop, {technique}: {len(xs)} runs of {subset_epochs} epochs, "
              f"s/epoch = {fits[technique][0]:.2e} + {fits[technique][1]:.2e} * depth")
    return fits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="moons-paper")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--subset-epochs", type=int, default=300)
    parser.add_argument("--db", default=None, help="results database (default: a temp file)")
    args = parser.parse_args()
    sweep = load_sweep(args.preset)
    if args.epochs:
        sweep = replace(sweep, runs=[{**r, "epochs": args.epochs} for r in sweep.runs])
    epochs = sweep.runs[0]["epochs"]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db or Path(tmp) / "bench.db")
        if db.exists():
            raise SystemExit(f"{db} exists; give a fresh path so every run is timed")
        start = time.perf_counter()
        counts = run_sweep(sweep, db, workers=args.workers, progress=True)
        wall = time.perf_counter() - start
        frame = load(db)
    print(f"population: {counts['done'] + counts['diverged']} runs ({counts['failed']} failed) "
          f"of {args.preset}, {epochs} epochs, {args.workers} workers: {wall:.0f} s "
          f"({wall / 60:.1f} min; target <= 15 min for moons-paper)")
    print(f"  recorded {len(frame)} runs")
    fits = single_run_model(sweep, args.subset_epochs)
    serial = sum(fits[r["technique"]][0] + fits[r["technique"]][1] * r["depth"]
                 for r in sweep.runs) * epochs
    predicted = serial / args.workers
    print(f"single-run loop, predicted for the same grid on {args.workers} workers: "
          f"{predicted:.0f} s ({predicted / 3600:.2f} h)")
    print(f"speedup: {predicted / wall:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
