"""Several sweep processes on one store: runs are leased before training, so
the processes split the work and every run is trained and recorded once; the
leases of a process killed with SIGKILL are taken over when they stop beating."""

import json
import multiprocessing as mp
import os
import signal
import sqlite3
import time

import pytest

from jumpstart.experiments import load_sweep, run_sweep
from jumpstart.experiments.config import run_key
from jumpstart.techniques import TECHNIQUES, Option, Technique, register
from jumpstart.techniques.base import int_at_least


class Probe(Technique):
    """Appends 'pid depth probe_id' to $LEASE_LOG each time a run starts training."""

    name = "lease-probe"
    options = {"probe_id": Option(0, *int_at_least(0))}

    def attach(self, ctx):
        with open(os.environ["LEASE_LOG"], "a") as log:
            log.write(f"{os.getpid()} {len(ctx.model.linears)} {self.config['probe_id']}\n")


@pytest.fixture
def probe():
    register(Probe)
    yield
    TECHNIQUES.pop(Probe.name, None)


def _sweep(tmp_path, epochs):
    path = tmp_path / "leases.toml"
    path.write_text(f'name = "leases"\n[fixed]\ndataset = "moons"\nepochs = {epochs}\n'
                    'width = 3\nlr = 0.01\ntechnique = "lease-probe"\n'
                    '[grid]\ndepth = [1, 2, 3, 4, 5, 6]\nprobe_id = [0, 1]\n')
    return path  # 6 groups (one per depth) of 2 runs


def _sweeper(path, db, out, ttl):
    import torch

    torch.set_num_threads(1)  # several processes share the cores
    counts = run_sweep(load_sweep(path), db, workers=1, progress=False, lease_seconds=ttl)
    with open(out, "w") as f:
        json.dump({"pid": os.getpid(), **counts}, f)


def _start(n, path, db, tmp_path, ttl):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_sweeper, args=(path, db, tmp_path / f"counts{i}.json", ttl),
                         daemon=True)  # a hung sweeper fails its test, not the session's exit
             for i in range(n)]
    for p in procs:
        p.start()
    return procs


def _log(tmp_path):
    lines = (tmp_path / "log").read_text().split()
    return [tuple(map(int, lines[i:i + 3])) for i in range(0, len(lines), 3)]


def _stored(db):
    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM runs WHERE state = 'done'").fetchone()[0]


@pytest.mark.usefixtures("probe")
@pytest.mark.parametrize("processes", [2, 3])
def test_processes_split_the_work_and_train_every_run_once(tmp_path, monkeypatch, processes):
    monkeypatch.setenv("LEASE_LOG", str(tmp_path / "log"))
    db = tmp_path / "r.db"
    procs = _start(processes, _sweep(tmp_path, epochs=30), db, tmp_path, ttl=30)
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    trained = _log(tmp_path)
    runs = sorted((d, k) for _, d, k in trained)
    assert runs == sorted((d, k) for d in range(1, 7) for k in (0, 1))  # each exactly once
    counts = [json.loads((tmp_path / f"counts{i}.json").read_text()) for i in range(processes)]
    assert sum(c["done"] for c in counts) == 12 == _stored(db)
    assert all(c["done"] + c["elsewhere"] + c["skipped"] == 12 for c in counts)
    assert len({pid for pid, _, _ in trained}) >= 2  # the work was split


@pytest.mark.usefixtures("probe")
def test_leases_of_a_killed_process_are_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv("LEASE_LOG", str(tmp_path / "log"))
    db = tmp_path / "r.db"
    path = _sweep(tmp_path, epochs=60)
    victim, survivor = _start(2, path, db, tmp_path, ttl=2)
    deadline = time.time() + 60
    held: set = set()
    while time.time() < deadline:  # wait until the victim trained a run and holds a lease
        if (tmp_path / "log").exists() and any(pid == victim.pid for pid, _, _ in _log(tmp_path)):
            with sqlite3.connect(db, timeout=30) as con:
                held = {k for (k,) in con.execute("SELECT key FROM leases WHERE owner LIKE ?",
                                                  (f"%:{victim.pid}:%",))}
            if held:
                os.kill(victim.pid, signal.SIGKILL)
                break
        time.sleep(0.02)
    assert held, "the victim never held a lease"
    victim.join(10)
    survivor.join(300)
    assert survivor.exitcode == 0
    keys = {run_key(c): (c["depth"], c["probe_id"]) for c in load_sweep(path).runs}
    in_flight = {keys[k] for k in held}
    trained = _log(tmp_path)
    for run in keys.values():  # once; twice only for the run(s) the victim was training
        times = sum((d, k) == run for _, d, k in trained)
        assert times == 1 or (times == 2 and run in in_flight)
    survivor_counts = json.loads((tmp_path / "counts1.json").read_text())
    by_victim = {(d, k) for pid, d, k in trained if pid == victim.pid} - in_flight
    assert _stored(db) == 12
    assert survivor_counts["done"] + len(by_victim) == 12
