"""Wall time of a whole preset sweep under two versions of the code, side by side.

    python benchmarks/preset_wall_time.py cifar10-10k-cpu --old /tmp/old/src [--workers 2]

Each version's ``jumpstart sweep PRESET --db FRESH.db --workers W`` runs in
turn on a fresh store in a temporary folder (the old one first, or as
``--order`` says), with ``PYTHONPATH`` pointing at that version's ``src``
folder (the current one: this checkout's ``src``). Make an old version's
folder with ``git worktree add /tmp/old COMMIT``; it must take the same
``sweep`` command line. Prints each version's commit, wall seconds, runs
stored and failed, the sweep's exit code, and the old version's time over
each one's. Run it on a
quiet machine: nothing else may share the cores. Data: ``$JUMPSTART_DATA``,
else this checkout's ``../shared/data``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _commit(src: Path) -> str:
    out = subprocess.run(["git", "-C", str(src), "log", "-1", "--format=%h %cs"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


def _run(name: str, src: Path, preset: str, workers: int, folder: Path) -> dict:
    """One version's whole sweep on a fresh store: wall seconds and counts."""
    db = folder / f"{name}.db"
    # the data folder named for both: an old tree outside this checkout would
    # look for ../shared/data beside itself
    env = {**os.environ, "PYTHONPATH": str(src),
           "JUMPSTART_DATA": os.environ.get("JUMPSTART_DATA", str(HERE.parent / "shared/data"))}
    code = "import sys; from jumpstart.cli import main; sys.exit(main(sys.argv[1:]))"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "sweep", preset, "--db", str(db),
                           "--workers", str(workers)], env=env, cwd=folder)
    seconds = time.perf_counter() - start
    with sqlite3.connect(db) as con:
        states = dict(con.execute("SELECT state, COUNT(*) FROM runs GROUP BY state"))
    return {"seconds": seconds, "rc": proc.returncode, "done": states.get("done", 0),
            "failed": states.get("failed", 0), "commit": _commit(src)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="a preset name or a sweep .toml path")
    parser.add_argument("--old", type=Path, required=True, help="the old version's src folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--order", default="old,new", help="old,new or new,old")
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": HERE / "src"}
    order = args.order.split(",")
    if sorted(order) != ["new", "old"]:
        parser.error(f"--order must be old,new or new,old; got {args.order!r}")
    preset = str(Path(args.preset).resolve()) if args.preset.endswith(".toml") else args.preset
    if not (trees["old"] / "jumpstart" / "cli.py").is_file():
        parser.error(f"{trees['old']} holds no jumpstart package (jumpstart/cli.py)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in order:
            print(f"{name}: {trees[name]} ...", flush=True)
            results[name] = _run(name, trees[name], preset, args.workers, Path(tmp))
    old = results["old"]["seconds"]
    print(f"\n{args.preset}, {args.workers} workers\n")
    print("| code | commit | exit code | wall s | runs done | failed | old / this |")
    print("|---|---|---|---|---|---|---|")
    for name in order:
        r = results[name]
        print(f"| {name} | {r['commit']} | {r['rc']} | {r['seconds']:.0f} | {r['done']} | {r['failed']} "
              f"| {old / r['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
