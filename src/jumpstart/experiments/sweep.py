"""Running a sweep: pending runs grouped into populations, executed on a
backend (a local process pool or a Ray cluster), each result written to the
results store as soon as its group finishes.

Resuming is by construction: a run whose key is in the store is skipped, and
a run is written (with its curves) in one transaction, so a sweep killed at
any moment and started again loses no finished run and repeats none. Runs are
leased in the store before they are trained, so several processes on one
store split the work (:func:`run_sweep`).
"""

from __future__ import annotations

import base64
import itertools
import json
import multiprocessing as mp
import os
import socket
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from collections import defaultdict, deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .. import strict_json
from ..data import dataset_size
from ..train.route import route
from .config import MAX_GROUP, Sweep, group_key, run_key
from .store import ResultsStore

BACKENDS = ("local", "ray")


def _train_group(configs: list[dict], save_weights: bool) -> list[dict]:
    """Train runs that share a group key; one result dict per config."""
    from ..train import checkpoint_bytes
    from ..train.group import train_group

    return [{"key": run_key(c), "config": c, "state": "diverged" if m["diverged"] else "done",
             "metrics": m, "curves": cv, "error": None, "seconds": m["seconds"],
             "weights": checkpoint_bytes(c, model) if save_weights else None}
            for c, m, cv, model in train_group(configs)]


def worker_threads(workers: int) -> int:
    """Torch threads for each of ``workers`` local processes: the machine's
    cores shared out, ``max(1, cores // workers)``, never oversubscribed
    (``cores``: the CPUs this process may run on)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


def run_group(configs: list[dict], threads: int | None = 1, save_weights: bool = False
              ) -> list[dict]:
    """Train one group of runs and return one result dict per run (with the
    trained weights' checkpoint bytes when ``save_weights``).

    Never raises: if the group fails, each run is retried alone, and a run
    that still raises is returned with state ``failed`` and its traceback.
    This is the unit of work a backend ships to a worker.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    # Tiny gradients make Adam's second moments denormal, and denormal
    # arithmetic is several times slower on CPUs; flushing them to zero (as GPU
    # kernels commonly do) changes no result that a float32 run can resolve.
    torch.set_flush_denormal(True)
    start = time.perf_counter()
    try:
        return _train_group(configs, save_weights)
    except Exception:  # noqa: BLE001 - recorded, the sweep goes on
        if len(configs) > 1:
            return [r for c in configs for r in run_group([c], threads, save_weights)]
        return [{"key": run_key(configs[0]), "config": configs[0], "state": "failed",
                 "metrics": None, "curves": None, "error": traceback.format_exc(),
                 "seconds": time.perf_counter() - start, "weights": None}]


def plan(runs, done: set[str], max_group: int = MAX_GROUP) -> list[list[dict]]:
    """Pending runs (key not in ``done``) grouped for the workers, costliest first.

    ``runs`` is a :class:`Sweep` or an iterable of run configs. Runs sharing a
    :func:`~jumpstart.experiments.config.group_key` (same data set, model,
    depth, training length) form one group; the worker splits it into
    populations (:func:`jumpstart.train.group.train_group`). Runs that train in
    the MOONS stacks (:func:`jumpstart.train.route.route`) and differ only in
    depth and member keys may share a population whatever their depth:
    :func:`_cut` merges neighbouring depths where that saves per-epoch
    overhead without making any group costlier than the costliest depth alone.
    A run of the single-run loop is a group of its own, so it is recorded as
    soon as it ends (a group of them would share only the data load).
    No group holds more than ``max_group`` runs (a bigger one is split in order).
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    merged: set[str] = set()  # keys of groups of stackable runs (any depth)
    if isinstance(runs, Sweep):
        runs, max_group = runs.iter_runs(), runs.max_group
    for config in runs:
        if run_key(config) not in done:
            trainer = route(config)
            if trainer == "stacks":
                key = group_key({**config, "depth": None})
                merged.add(key)
            elif trainer == "single":  # trained one at a time: a group would share
                key = run_key(config)  # only the data load, and record only at its end
            else:
                key = group_key(config)
            groups[key].append(config)
    out = []
    for key, group in groups.items():
        for part in _cut(group) if key in merged else [group]:
            out += [part[i:i + max_group] for i in range(0, len(part), max_group)]

    def cost(g):
        size = dataset_size(g[0]["dataset"], g[0].get("data_dir"))
        return g[0]["epochs"] * size * _cost(g)

    return sorted(out, key=cost, reverse=True)


#: fixed per-epoch cost of a population (penalty, optimizer and bookkeeping
#: calls), in units of one layer of one member of width ``w`` costing ``w + 4``:
#: on the MOONS stacks (one thread) an epoch costs about 1.5 ms plus 0.4 us per
#: such unit
EPOCH_COST = 3600.0


def _cost(configs: list[dict]) -> float:
    """Relative per-epoch cost of training ``configs`` as one population:
    ``EPOCH_COST + max depth * sum(width + 4)`` (shallower members run
    pass-through layers up to the deepest)."""
    return EPOCH_COST + max(c["depth"] for c in configs) * sum(c["width"] + 4 for c in configs)


def _cut(configs: list[dict]) -> list[list[dict]]:
    """``configs`` cut into groups of contiguous depths: the fewest groups
    among the cuts whose costliest group (:func:`_cost`) is cheapest (linear
    partition by dynamic programming over the distinct depths)."""
    by_depth: dict[int, list[dict]] = defaultdict(list)
    for c in configs:
        by_depth[c["depth"]].append(c)
    depths = sorted(by_depth)
    sizes = [sum(c["width"] + 4 for c in by_depth[d]) for d in depths]
    m = len(depths)

    def cost(i, j):  # depths[i:j] as one group
        return EPOCH_COST + depths[j - 1] * sum(sizes[i:j])

    # best[k][j]: (max cost, cut index) of depths[:j] in k groups
    best = [[(0.0, 0)] + [(float("inf"), 0)] * m]
    for k in range(1, m + 1):
        row = [(float("inf"), 0)] * (m + 1)
        for j in range(k, m + 1):
            row[j] = min((max(best[k - 1][i][0], cost(i, j)), i) for i in range(k - 1, j))
        best.append(row)
    k = min(range(1, m + 1), key=lambda k: best[k][m][0])
    cuts, j = [], m
    while j > 0:
        i = best[k][j][1]
        cuts.append([c for d in depths[i:j] for c in by_depth[d]])
        j, k = i, k - 1
    return cuts[::-1]


#: seconds without a heartbeat after which another sweep process on the same
#: store takes over a run's lease (the owner beats every quarter of it)
LEASE_SECONDS = 120.0


def run_sweep(sweep: Sweep, db: str | Path, *, workers: int = 2, backend: str = "local",
              address: str | None = None, retry_failed: bool = False,
              progress: bool | None = None, lease_seconds: float = LEASE_SECONDS
              ) -> dict[str, int]:
    """Execute the runs of ``sweep`` that ``db`` does not hold yet.

    Several processes (on one machine, sharing the SQLite file) may run sweeps
    on one store at once: each run is leased in the store before it is
    trained (:meth:`ResultsStore.claim`), so the processes split the work and
    none trains a run another holds; a process's leases carry a heartbeat,
    and a lease whose heartbeat stops for ``lease_seconds`` (a killed
    process) is taken over. A process that has nothing left to claim waits
    for the runs others hold, so the sweep is complete when any process
    returns. Across machines, use the Ray backend.

    Args:
        sweep: from :func:`load_sweep`.
        db: results database (created if missing).
        workers: local worker processes (1 runs in this process).
        backend: ``"local"`` or ``"ray"``.
        address: Ray cluster address (``HOST:PORT``); ``None`` starts a local
            Ray with ``workers`` CPUs.
        retry_failed: also re-run runs recorded as failed.
        progress: show a progress bar (default: when stderr is a terminal).
        lease_seconds: see above (> 0).

    Returns:
        Counts: ``total`` runs in the sweep, ``skipped`` (already stored
        when the call started), ``done``, ``diverged``, ``failed`` (trained
        by this call), ``elsewhere`` (recorded meanwhile by other processes).

    Raises:
        ValueError: unknown backend, ``workers < 1``, ``lease_seconds <= 0``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1; got {workers!r}")
    if not (isinstance(lease_seconds, (int, float)) and lease_seconds > 0):
        raise ValueError(f"lease_seconds must be > 0; got {lease_seconds!r}")
    store = ResultsStore(db)
    import_sidecars(store, db)
    states = ("done", "diverged") if retry_failed else ("done", "diverged", "failed")
    counts = {"total": 0, "skipped": 0, "done": 0, "diverged": 0, "failed": 0, "elsewhere": 0}
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    bar = _Bar(len(sweep.source) if isinstance(sweep.source, list) else None, sweep.name,
               sys.stderr.isatty() if progress is None else progress)
    heart = _Heartbeat(db, owner, lease_seconds / 4)

    kept = sidecar_folder(db)

    def claim(group: list[dict]) -> list[dict]:
        keyed = [(run_key(c), c) for c in group]
        if kept.is_dir():  # a result kept beside the store is not trained again
            keyed = [(k, c) for k, c in keyed if not (kept / f"{k}.json").exists()]
        mine = set(store.claim([k for k, _ in keyed], owner, ttl=lease_seconds,
                               finished=states))
        return [c for k, c in keyed if k in mine]

    attempted: set[str] = set()
    first = True
    executor = (_Ray if backend == "ray" else _Local)(workers, address, sweep.save_weights)
    try:
        while True:  # a pass over the sweep; again while others hold what is left
            finished = store.keys(states)
            left = trained = 0
            for chunk in _chunks(sweep.iter_runs(), CHUNK):
                keys = [run_key(c) for c in chunk]
                if first:
                    counts["total"] += len(chunk)
                    counts["skipped"] += sum(k in finished for k in keys)
                    store.add_to_sweep([k for k in keys if k in finished], sweep.name)
                todo = [c for c, k in zip(chunk, keys)
                        if k not in finished and k not in attempted]
                left += len(todo)
                for result in executor.run(plan(todo, set(), sweep.max_group), claim):
                    _save(store, sweep.name, result, db)
                    attempted.add(result["key"])
                    counts[result["state"]] += 1
                    bar.advance()
                    trained += 1
            first = False
            if left == trained:
                break
            if not trained:  # what is left is leased by live processes: wait for them
                time.sleep(min(lease_seconds / 4, 2.0))
        stored = store.keys()
        for chunk in _chunks(sweep.iter_runs(), CHUNK):
            store.add_to_sweep([k for k in map(run_key, chunk) if k in stored], sweep.name)
        counts["elsewhere"] = (counts["total"] - counts["skipped"]
                               - counts["done"] - counts["diverged"] - counts["failed"])
        executor.close(kill=False)
    finally:
        executor.close(kill=True)  # an error or Ctrl-C: stop the workers now
        heart.stop()
        store.release(owner)
        bar.close()
        store.close()
    return counts


#: runs of a sweep taken at a time (keyed, checked against the store,
#: planned, trained) while the grid streams
CHUNK = 20_000


def _chunks(iterable, size: int):
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


#: attempts at writing a result to the store before it goes to a sidecar file
WRITE_ATTEMPTS = 3


def sidecar_folder(db: str | Path) -> Path:
    """Where results that could not be written to the store ``db`` are kept:
    ``<db>.pending/`` beside it, one JSON file per run."""
    db = Path(db)
    return db.with_name(db.name + ".pending")


def _save(store: ResultsStore, sweep: str, result: dict, db) -> None:
    """Record ``result``; when the store refuses the write (disk full, file
    made read-only) after :data:`WRITE_ATTEMPTS` tries, keep it in a sidecar
    JSON file (:func:`sidecar_folder`) and say where on stderr."""
    for attempt in range(WRITE_ATTEMPTS):
        try:
            store.record(result["key"], sweep, result["config"], result["state"],
                         metrics=result["metrics"], curves=result["curves"],
                         error=result["error"], seconds=result["seconds"],
                         weights=result["weights"])
            return
        except sqlite3.Error as exc:
            error = exc
            time.sleep(0.2 * (attempt + 1))
    folder = sidecar_folder(db)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result['key']}.json"
    weights = result["weights"]
    tmp = folder / f".{result['key']}.{os.getpid()}.tmp"
    tmp.write_text(strict_json.dumps({
        **{k: v for k, v in result.items() if k != "weights"}, "sweep": sweep,
        "weights": None if weights is None else base64.b64encode(weights).decode()}))
    os.replace(tmp, path)  # whole or absent, never a truncated file
    print(f"jumpstart: could not write run {result['key']} to {db} ({error}); kept it in "
          f"{path}, the next sweep on this store imports it", file=sys.stderr)


def import_sidecars(store: ResultsStore, db: str | Path) -> int:
    """Record the results kept beside ``db`` by an earlier sweep whose writes
    failed (:func:`sidecar_folder`), deleting each file once recorded. Each
    file is first renamed to a name of this process, so two sweeps starting
    at once import it once; a file that cannot be read is left, renamed
    ``*.bad``, with a warning.

    Returns:
        The number of runs imported.
    """
    folder = sidecar_folder(db)
    if not folder.is_dir():
        return 0
    count = 0
    for path in sorted(folder.glob("*.json")):
        mine = path.with_name(f"{path.name}.{os.getpid()}.importing")
        try:
            os.rename(path, mine)
        except OSError:  # another process took it
            continue
        try:
            r = json.loads(mine.read_text())
            weights = None if r["weights"] is None else base64.b64decode(r["weights"])
        except (ValueError, KeyError) as exc:
            mine.rename(path.with_suffix(".bad"))
            print(f"jumpstart: cannot import {path} ({exc}); left as {path.with_suffix('.bad')}",
                  file=sys.stderr)
            continue
        store.record(r["key"], r["sweep"], r["config"], r["state"], metrics=r["metrics"],
                     curves=r["curves"], error=r["error"], seconds=r["seconds"], weights=weights)
        mine.unlink()
        count += 1
    try:
        folder.rmdir()
    except OSError:  # not empty, or just taken by another process
        pass
    return count


class _Heartbeat:
    """Renews ``owner``'s leases every ``every`` seconds from a thread with its
    own connection to the store, until :meth:`stop`."""

    def __init__(self, db: str | Path, owner: str, every: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(db, owner, every), daemon=True)
        self._thread.start()

    def _run(self, db, owner: str, every: float) -> None:
        store = None
        while not self._stop.wait(every):
            try:  # a busy or briefly unwritable store: beat again next time
                store = store or ResultsStore(db)
                store.beat(owner)
            except (sqlite3.Error, ValueError) as exc:
                print(f"jumpstart: lease heartbeat failed ({exc}); retrying", file=sys.stderr)
        if store is not None:
            store.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: on Linux, be killed when the sweep process dies
    (even by SIGKILL), so no orphan keeps training a group nobody will record;
    exit at once when it died before this ran."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent:
        os._exit(0)


def _claimed(groups, capacity: int, claim, submit, wait):
    """Run ``groups`` with at most ``capacity`` in flight, each claimed
    (:meth:`ResultsStore.claim`) just before it is submitted, so processes
    sharing a store split the work; yield the results as they come."""
    pending = deque(groups)
    running = 0
    while pending or running:
        while pending and running < capacity:
            group = claim(pending.popleft())
            if group:
                submit(group)
                running += 1
        if running:
            yield from wait()
            running -= 1


def _lost(group: list[dict], why: str) -> list[dict]:
    """Failed results for the runs of a group whose worker died."""
    return [{"key": run_key(c), "config": c, "state": "failed", "metrics": None,
             "curves": None, "error": why, "seconds": None, "weights": None} for c in group]


class _Local:
    """Runs groups in this process (``workers == 1``) or on a pool of
    ``workers`` spawned processes, started on the first claimed group and
    kept for the whole sweep. A worker that dies (killed, out of memory)
    fails the runs of its group with a message; the pool is then restarted.

    Threads: a pool worker gets :func:`worker_threads`; a group run in this
    process keeps the torch threads its caller set (the caller owns them: a
    process forked from one that used OpenMP threads hangs if it raises its
    thread count, which is why the lease tests' forked sweepers pin 1)."""

    def __init__(self, workers: int, _address, save_weights: bool) -> None:
        self.workers, self.save_weights = workers, save_weights
        self.threads = worker_threads(workers)
        self.pool: ProcessPoolExecutor | None = None
        self.pending: dict = {}

    def run(self, groups, claim):
        if self.workers == 1 or (len(groups) <= 1 and self.pool is None):
            for g in groups:
                g = claim(g)
                if g:
                    yield from run_group(g, None, self.save_weights)
            return
        yield from _claimed(groups, self.workers, claim, self._submit, self._next)

    def _submit(self, group: list[dict]) -> None:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                            initializer=_die_with_parent,
                                            initargs=(os.getpid(),))
        self.pending[self.pool.submit(run_group, group, self.threads, self.save_weights)] = group

    def _next(self) -> list[dict]:
        done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
        future = done.pop()
        group = self.pending.pop(future)
        try:
            return future.result()
        except BrokenProcessPool:
            self.pool = None  # every pending group fails the same way; a new pool follows
            return _lost(group, "a worker process died while training this group (killed or "
                                "out of memory?)")

    def close(self, kill: bool) -> None:
        if self.pool is None:
            return
        if kill:
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None


class _Ray:
    """Runs groups as Ray tasks; Ray is started (or joined, with an address)
    on the first claimed group and left once at the end."""

    def __init__(self, workers: int, address: str | None, save_weights: bool) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("--backend ray needs Ray: pip install 'jumpstart[ray]'") from None
        self.ray, self.workers, self.address = ray, workers, address
        self.save_weights, self.started, self.remote = save_weights, False, None
        self.refs: list = []

    def run(self, groups, claim):
        yield from _claimed(groups, self._capacity(), claim, self._submit, self._next)

    def _capacity(self) -> int:
        if not self.ray.is_initialized():
            return self.workers
        return max(self.workers, int(self.ray.cluster_resources().get("CPU", self.workers)))

    def _submit(self, group: list[dict]) -> None:
        if self.remote is None:
            if not self.ray.is_initialized():
                self.started = True
                if self.address:
                    self.ray.init(address=self.address, log_to_driver=False)
                else:
                    self.ray.init(num_cpus=self.workers, include_dashboard=False,
                                  log_to_driver=False)
            self.remote = self.ray.remote(num_cpus=1)(run_group)
        self.refs.append(self.remote.remote(group, 1, self.save_weights))

    def _next(self) -> list[dict]:
        finished, self.refs = self.ray.wait(self.refs, num_returns=1)
        return self.ray.get(finished[0])

    def close(self, kill: bool) -> None:
        if self.started:
            self.ray.shutdown()
            self.started, self.remote = False, None


class _Bar:
    """Runs done / total with an ETA (rich), or nothing when not interactive."""

    def __init__(self, total: int | None, name: str, show: bool) -> None:
        self._progress = None
        if show and total != 0:  # None: a streamed grid of unknown size
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(TextColumn(f"[bold]{name}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      TimeRemainingColumn(), transient=False)
            self._task = self._progress.add_task(name, total=total)
            self._progress.start()

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
