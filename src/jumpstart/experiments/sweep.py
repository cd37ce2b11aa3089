"""Running a sweep: pending runs grouped into populations, executed on a
backend (a local process pool or a Ray cluster), each result written to the
results store as soon as its group finishes.

Resuming is by construction: a run whose key is in the store is skipped, and
a run is written (with its curves) in one transaction, so a sweep killed at
any moment and started again loses no finished run and repeats none.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

from .config import Sweep, group_key, run_key
from .store import ResultsStore

BACKENDS = ("local", "ray")


def _train_group(configs: list[dict]) -> list[dict]:
    """Train runs that share a group key; one result dict per config."""
    from ..train.population import Member, train_population
    from ..train.run import train_run

    first = configs[0]
    batch_size = None if first["batch_size"] == "full" else first["batch_size"]
    js = next((c for c in configs if c["technique"] == "jumpstart"), None)
    options = {} if js is None else {k: js[k] for k in JUMPSTART_OPTIONS}
    out = []
    conv = first["model"] == "moons_conv"
    if not conv or (options.get("granularity", "position") == "position" and batch_size is None):
        if not conv:
            options.pop("granularity", None)  # dense: both granularities coincide
        members = [Member(c["width"], c["seed"], c.get("lam", 0.0)) for c in configs]
        results = train_population(
            members, dataset=first["dataset"], model=first["model"], depth=first["depth"],
            epochs=first["epochs"], lr=first["lr"], batch_size=batch_size, jumpstart=options,
            curve_every=first["curve_every"])
        for c, r in zip(configs, results):
            out.append((c, r.metrics, r.curves))
    else:  # MoonsConv with channel granularity or minibatches: one run at a time
        for c in configs:
            run = train_run(dataset=c["dataset"], model=c["model"], depth=c["depth"],
                            width=c["width"], lam=c.get("lam", 0.0), epochs=c["epochs"],
                            lr=c["lr"], batch_size=batch_size, seed=c["seed"], **options)
            h, every = run.fit.history, c["curve_every"]
            keep = [i for i, e in enumerate(h["epoch"]) if e % every == 0 or i == len(h["epoch"]) - 1]
            metrics = {**run.fit.metrics(), "status": run.status.ratios()}
            out.append((c, metrics, {k: [h[k][i] for i in keep] for k in h}))
    return [{"key": run_key(c), "config": c, "state": "diverged" if m["diverged"] else "done",
             "metrics": m, "curves": cv, "error": None, "seconds": m["seconds"]}
            for c, m, cv in out]


def run_group(configs: list[dict], threads: int | None = 1) -> list[dict]:
    """Train one group of runs and return one result dict per run.

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
        return _train_group(configs)
    except Exception:  # noqa: BLE001 - recorded, the sweep goes on
        if len(configs) > 1:
            return [r for c in configs for r in run_group([c], threads)]
        return [{"key": run_key(configs[0]), "config": configs[0], "state": "failed",
                 "metrics": None, "curves": None, "error": traceback.format_exc(),
                 "seconds": time.perf_counter() - start}]


JUMPSTART_OPTIONS = ("aggregation", "margin", "sign_balance", "tie_break", "granularity")


def plan(sweep: Sweep, done: set[str]) -> list[list[dict]]:
    """Pending runs (key not in ``done``) grouped into populations, costliest first.

    Runs sharing a :func:`group_key` train together, except that Jumpstart
    runs with different options split; baseline runs (no options, ``lam`` 0)
    join the first Jumpstart population of their group: a lam-0 member costs
    the same and is trained exactly as alone.
    """
    groups: dict[str, dict] = defaultdict(dict)
    for config in sweep.runs:
        if run_key(config) in done:
            continue
        shared = {k: v for k, v in config.items() if k not in JUMPSTART_OPTIONS}
        options = tuple(config.get(k) for k in JUMPSTART_OPTIONS)
        groups[group_key(shared)].setdefault(options, []).append(config)
    populations = []
    for by_options in groups.values():
        baselines = by_options.pop(tuple([None] * len(JUMPSTART_OPTIONS)), [])
        subgroups = list(by_options.values()) or [[]]
        subgroups[0] = baselines + subgroups[0]
        populations += subgroups

    def cost(g):
        return g[0]["depth"] * g[0]["epochs"] * sum(c["width"] + 4 for c in g)

    return sorted(populations, key=cost, reverse=True)


def run_sweep(sweep: Sweep, db: str | Path, *, workers: int = 2, backend: str = "local",
              address: str | None = None, retry_failed: bool = False,
              progress: bool | None = None) -> dict[str, int]:
    """Execute the runs of ``sweep`` that ``db`` does not hold yet.

    Args:
        sweep: from :func:`load_sweep`.
        db: results database (created if missing).
        workers: local worker processes (1 runs in this process).
        backend: ``"local"`` or ``"ray"``.
        address: Ray cluster address (``HOST:PORT``); ``None`` starts a local
            Ray with ``workers`` CPUs.
        retry_failed: also re-run runs recorded as failed.
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        Counts: ``total`` runs in the sweep, ``skipped`` (already stored),
        ``done``, ``diverged``, ``failed`` (this call).

    Raises:
        ValueError: unknown backend or ``workers < 1``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1; got {workers!r}")
    store = ResultsStore(db)
    states = ("done", "diverged") if retry_failed else ("done", "diverged", "failed")
    done = store.keys(states)
    groups = plan(sweep, done)
    counts = {"total": len(sweep.runs), "skipped": len(sweep.runs) - sum(map(len, groups)),
              "done": 0, "diverged": 0, "failed": 0}
    bar = _Bar(sum(map(len, groups)), sweep.name,
               sys.stderr.isatty() if progress is None else progress)
    try:
        execute = _execute_ray if backend == "ray" else _execute_local
        for result in execute(groups, workers, address):
            store.record(result["key"], sweep.name, result["config"], result["state"],
                         metrics=result["metrics"], curves=result["curves"],
                         error=result["error"], seconds=result["seconds"])
            counts[result["state"]] += 1
            bar.advance()
    finally:
        bar.close()
        store.close()
    return counts


def _die_with_parent() -> None:
    """Pool worker initializer: on Linux, be killed when the sweep process dies
    (even by SIGKILL), so no orphan keeps training a group nobody will record."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def _execute_local(groups, workers, _address):
    if workers == 1 or len(groups) <= 1:
        for g in groups:
            yield from run_group(g, threads=None if workers == 1 else 1)
        return
    pool = mp.get_context("spawn").Pool(workers, initializer=_die_with_parent)
    try:
        for results in pool.imap_unordered(run_group, groups):
            yield from results
        pool.close()
    finally:
        pool.terminate()  # Ctrl-C or an error: stop the workers now
        pool.join()


def _execute_ray(groups, workers, address):
    try:
        import ray
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install 'jumpstart[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_group)
        pending = [remote.remote(g) for g in groups]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                yield from ray.get(ref)
    finally:
        if started:
            ray.shutdown()


class _Bar:
    """Runs done / total with an ETA (rich), or nothing when not interactive."""

    def __init__(self, total: int, name: str, show: bool) -> None:
        self._progress = None
        if show and total:
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
