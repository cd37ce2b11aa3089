"""Time to the first stored result, and peak memory, of a 10^6-run sweep.

    python benchmarks/sweep_scale.py [--limit 120] [--workers 2]

Writes a grid of 100 widths x 100 seeds x 100 learning rates of 1-epoch
MOONS runs (depth 2, baseline) to a temporary TOML, starts
``jumpstart sweep`` on a fresh store, and polls the store and the process
tree's resident memory (``/proc``, Linux) until ``--limit`` seconds. Prints
the seconds to the first stored run, the runs stored by the end, and the
peak resident memory summed over the sweep and its workers. Target (issue
16): first results within 60 s, memory under 2 GiB.
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


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (from ``/proc``)."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        parents[int(entry)] = int(fields["PPid"])
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, parent in parents.items() if parent == p and c not in tree]
    return sum(rss.get(p, 0) for p in tree)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=float, default=120.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "big.toml"
        lrs = ", ".join(f"{(i + 1) / 1000:g}" for i in range(100))
        grid.write_text(
            'name = "scale"\n[fixed]\ndataset = "moons"\nepochs = 1\ndepth = 2\n'
            'technique = "baseline"\n[grid]\n'
            f"width = {list(range(1, 101))}\nseed = {list(range(100))}\nlr = [{lrs}]\n")
        db = Path(tmp) / "r.db"
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "jumpstart.cli", "sweep", str(grid),
                                 "--db", str(db), "--workers", str(args.workers)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = None
        peak = stored = 0
        try:
            while time.perf_counter() - start < args.limit and proc.poll() is None:
                peak = max(peak, _tree_rss(proc.pid))
                if db.exists():
                    try:
                        with sqlite3.connect(db, timeout=1) as con:
                            stored = con.execute("SELECT count(*) FROM runs").fetchone()[0]
                    except sqlite3.Error:
                        pass
                    if stored and first is None:
                        first = time.perf_counter() - start
                time.sleep(0.5)
        finally:
            proc.kill()
            proc.wait()
    print("| runs in grid | first result (s) | runs stored | after (s) | peak memory (GiB) |")
    print("|---|---|---|---|---|")
    print(f"| 1000000 | {'none' if first is None else f'{first:.1f}'} | {stored} | "
          f"{args.limit:.0f} | {peak / 2 ** 30:.2f} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
