"""A result whose write fails is kept, not lost; run keys are canonical
(property test)."""

import json
import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

import jumpstart.experiments.sweep as sweep_module
from jumpstart.experiments import load, load_sweep, run_sweep
from jumpstart.experiments.config import run_key
from jumpstart.experiments.store import ResultsStore


def _sweep(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "faults"\n[fixed]\ndataset = "moons"\nepochs = 5\ndepth = 2\n'
                    'width = 3\ntechnique = "baseline"\n[grid]\nlr = [0.01, 0.02]\n')
    return load_sweep(path)


def test_failed_writes_go_to_a_sidecar_and_the_next_sweep_imports_them(tmp_path, monkeypatch,
                                                                         capsys):
    db = tmp_path / "r.db"
    real = ResultsStore.record

    def full_disk(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ResultsStore, "record", full_disk)
    monkeypatch.setattr(sweep_module, "WRITE_ATTEMPTS", 2)
    counts = run_sweep(_sweep(tmp_path), db, workers=1, progress=False)
    assert counts["done"] == 2  # trained, and kept
    err = capsys.readouterr().err
    assert err.count("could not write run") == 2 and "database or disk is full" in err
    folder = sweep_module.sidecar_folder(db)
    assert folder == tmp_path / "r.db.pending" and len(list(folder.glob("*.json"))) == 2
    kept = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    monkeypatch.setattr(ResultsStore, "record", real)
    again = run_sweep(_sweep(tmp_path), db, workers=1, progress=False)
    assert again["skipped"] == 2 and again["done"] == 0  # imported, not trained again
    assert not folder.exists()
    frame = load(db)
    assert sorted(frame["key"]) == sorted(kept)
    for key, row in frame.set_index("key").iterrows():
        assert row["best_train_acc"] == kept[key]["metrics"]["best_train_acc"]


def test_a_write_that_fails_once_is_retried(tmp_path, monkeypatch):
    db = tmp_path / "r.db"
    real = ResultsStore.record
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ResultsStore, "record", flaky)
    assert run_sweep(_sweep(tmp_path), db, workers=1, progress=False)["done"] == 2
    assert len(load(db)) == 2 and not sweep_module.sidecar_folder(db).exists()
    assert calls[0] == calls[1]  # the same run, written on the second try


REAL = st.one_of(st.integers(-1000, 1000),
                 st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False,
                           min_value=-1e6, max_value=1e6))


@settings(max_examples=200, deadline=None)
@given(lr=REAL, lam=REAL, margin=REAL, depth=st.integers(1, 100), width=st.integers(1, 64),
       seed=st.integers(0, 10), order=st.randoms())
def test_run_key_is_one_per_run_whatever_the_number_form(lr, lam, margin, depth, width, seed,
                                                         order):
    config = {"dataset": "moons", "model": "rectangular", "depth": depth, "width": width,
              "technique": "jumpstart", "lr": lr, "lam": lam, "margin": margin, "seed": seed}
    variants = []
    for form in (int, float):  # 1 and 1.0 for every real-valued key that is whole
        v = dict(config)
        for k in ("lr", "lam", "margin"):
            if float(v[k]).is_integer():
                v[k] = form(v[k])
        items = list(v.items())
        order.shuffle(items)  # and any key order
        variants.append(dict(items))
    keys = {run_key(v) for v in variants}
    assert len(keys) == 1
    # and different runs differ
    assert run_key({**config, "seed": seed + 1}) not in keys


def test_a_big_grid_streams_and_groups_are_capped(tmp_path, monkeypatch):
    import jumpstart.experiments.config as config_module
    from jumpstart.experiments.sweep import plan

    path = tmp_path / "g.toml"
    path.write_text('name = "g"\nmax_group = 7\n[fixed]\ndataset = "moons"\nepochs = 1\n'
                    'depth = 2\ntechnique = "baseline"\n[grid]\nwidth = [1, 2, 3, 4, 5]\n'
                    'seed = [0, 1, 2, 3]\nlr = [0.01, 0.02]\n')
    monkeypatch.setattr(config_module, "STREAM_FROM", 10)  # 40 combinations > 10: streamed
    sweep = load_sweep(path)
    assert callable(sweep.source) and sweep.max_group == 7
    first = next(sweep.iter_runs())
    assert (first["width"], first["seed"], first["lr"]) == (1, 0, 0.01)
    runs = sweep.runs
    assert len(runs) == 40 == len({run_key(r) for r in runs})
    groups = plan(sweep, set())
    # one stack group of 40 runs split into 7 + 7 + 7 + 7 + 7 + 5
    assert sorted(map(len, groups)) == [5, 7, 7, 7, 7, 7]
    assert sorted(run_key(c) for g in groups for c in g) == sorted(map(run_key, runs))
    counts = run_sweep(sweep, tmp_path / "r.db", workers=1, progress=False)
    assert counts["total"] == 40 and counts["done"] == 40
    path.write_text(path.read_text().replace("max_group = 7", "max_group = 0"))
    import pytest

    with pytest.raises(ValueError, match="max_group must be an integer >= 1; got 0"):
        load_sweep(path)


def test_a_dead_worker_fails_its_groups_runs():
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from jumpstart.experiments.sweep import _Local

    local = _Local(2, None, False)
    future = Future()
    future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
    group = [{"dataset": "moons", "depth": 2, "width": 3, "seed": s} for s in (0, 1)]
    local.pending[future] = group
    results = local._next()
    assert [r["state"] for r in results] == ["failed", "failed"]
    assert [r["key"] for r in results] == [run_key(c) for c in group]
    assert "worker process died" in results[0]["error"] and local.pool is None


def test_an_unreadable_sidecar_is_set_aside(tmp_path, monkeypatch, capsys):
    db = tmp_path / "r.db"
    real = ResultsStore.record
    monkeypatch.setattr(ResultsStore, "record", lambda *a, **k: (_ for _ in ()).throw(
        sqlite3.OperationalError("disk I/O error")))
    monkeypatch.setattr(sweep_module, "WRITE_ATTEMPTS", 1)
    run_sweep(_sweep(tmp_path), db, workers=1, progress=False)
    monkeypatch.setattr(ResultsStore, "record", real)
    folder = sweep_module.sidecar_folder(db)
    first, second = sorted(folder.glob("*.json"))
    first.write_text(first.read_text()[:40])  # a write cut short
    capsys.readouterr()
    with ResultsStore(db) as store:
        assert sweep_module.import_sidecars(store, db) == 1
    assert "cannot import" in capsys.readouterr().err
    assert first.with_suffix(".bad").exists() and not second.exists()
    assert len(load(db)) == 1
