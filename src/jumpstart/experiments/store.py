"""The results store: one SQLite file (stdlib ``sqlite3``, WAL mode).

Table ``run_sweeps``: which sweeps asked for which run (a run stored by one
sweep and skipped by another belongs to both). Table ``runs``: one row per run key with its config (JSON), state (``done``,
``diverged`` or ``failed``), metrics (strict JSON: an undefined value is
``null``; the keys of ``jumpstart train --json``), error text, wall seconds and finish time. Table ``curve_values``:
the run's per-epoch curves (every ``curve_every`` epochs), one row per (run,
epoch, metric), so every metric a trainer or technique recorded is kept
(:data:`~jumpstart.train.history.CURVE_METRICS` and any a technique logged).
A run and its curves are written in one transaction, so a sweep killed at any
moment leaves each run either wholly recorded or absent. A database written
before curves were stored per metric (table ``curves``) is migrated on open.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

from .. import strict_json

STATES = ("done", "diverged", "failed")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    config TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('done', 'diverged', 'failed')),
    metrics TEXT,
    error TEXT,
    seconds REAL,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_sweeps (
    key TEXT NOT NULL,
    sweep TEXT NOT NULL,
    PRIMARY KEY (key, sweep)
);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_weights (
    key TEXT PRIMARY KEY,
    weights BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS curve_values (
    key TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (key, epoch, metric)
);
"""
#: the columns of the table ``curves`` of databases written before ``curve_values``
LEGACY_CURVE_COLUMNS = ("loss", "penalty", "train_acc", "val_acc")


class ResultsStore:
    """A results database at ``path`` (created with its tables if missing).

    Raises:
        ValueError: ``path`` is a directory, cannot be created or written, is
            not a jumpstart results database, or fails SQLite's
            ``PRAGMA quick_check`` (a corrupt file is refused, never written to).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"results database {self.path} is a directory; give a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60)
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"cannot open the results database {self.path}: {exc}") from None
        try:
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                first = check.splitlines()[-1] if check.strip() else check
                raise ValueError(f"{self.path} is corrupt: it fails SQLite's integrity check "
                                 f"({first}); restore it or start a new database")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.OperationalError as exc:
            self._db.close()
            raise ValueError(f"cannot write the results database {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"{self.path} is corrupt or not a jumpstart results database: "
                             f"{exc}") from None
        except ValueError:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Give every run its recording sweep as a member (stores written before
        ``run_sweeps``), and move a legacy ``curves`` table's rows into
        ``curve_values``."""
        if self._db.execute("SELECT NOT EXISTS (SELECT 1 FROM run_sweeps)").fetchone()[0]:
            with self._db:  # once: every later record() adds its own membership
                self._db.execute("INSERT OR IGNORE INTO run_sweeps SELECT key, sweep FROM runs")
        legacy = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                  "AND name = 'curves'").fetchone()
        if legacy is None:
            return
        with self._db:
            for column in LEGACY_CURVE_COLUMNS:
                self._db.execute(f"INSERT OR REPLACE INTO curve_values SELECT key, epoch, "
                                 f"'{column}', {column} FROM curves")
            self._db.execute("DROP TABLE curves")

    def keys(self, states: tuple[str, ...] = STATES) -> set[str]:
        """Keys of the recorded runs whose state is in ``states``."""
        marks = ",".join("?" * len(states))
        rows = self._db.execute(f"SELECT key FROM runs WHERE state IN ({marks})", states)
        return {r[0] for r in rows}

    def record(self, key: str, sweep: str, config: dict, state: str, *, metrics: dict | None,
               curves: dict | None = None, error: str | None = None,
               seconds: float | None = None, weights: bytes | None = None) -> None:
        """Write one run, its curves and (when given) its trained weights
        atomically (replacing an earlier row).

        ``curves`` holds equal-length lists ``epoch`` and one per metric
        (``None`` where a metric was not recorded at that epoch); ``weights``
        is a checkpoint's bytes (:func:`jumpstart.train.checkpoint_bytes`).

        Raises:
            ValueError: ``state`` not one of ``done``, ``diverged``, ``failed``.
        """
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; allowed: {', '.join(STATES)}")
        with self._db:  # one transaction
            self._db.execute("DELETE FROM curve_values WHERE key = ?", (key,))
            self._db.execute("DELETE FROM run_weights WHERE key = ?", (key,))
            self._db.execute("DELETE FROM leases WHERE key = ?", (key,))
            if weights is not None:
                self._db.execute("INSERT INTO run_weights VALUES (?, ?)", (key, weights))
            self._db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, sweep, strict_json.dumps(config, sort_keys=True), state,
                 None if metrics is None else strict_json.dumps(metrics), error, seconds,
                 time.time()),
            )
            self._db.execute("INSERT OR IGNORE INTO run_sweeps VALUES (?, ?)", (key, sweep))
            if curves:
                epochs = curves["epoch"]
                self._db.executemany(
                    "INSERT INTO curve_values VALUES (?, ?, ?, ?)",
                    ((key, e, metric, v) for metric, values in curves.items() if metric != "epoch"
                     for e, v in zip(epochs, values) if v is not None and math.isfinite(v)))

    def claim(self, keys, owner: str, *, ttl: float, finished: tuple[str, ...] = STATES
              ) -> list[str]:
        """Lease the runs ``keys`` to ``owner`` before training them, atomically
        across processes (one ``BEGIN IMMEDIATE`` transaction).

        A key is claimed unless it is recorded in a state of ``finished`` or
        leased by another owner whose heartbeat is younger than ``ttl``
        seconds (a lease that stopped beating is taken over). Recording a run
        (:meth:`record`) drops its lease.

        Returns:
            The keys now leased to ``owner``, in the given order.
        """
        keys = list(keys)
        now = time.time()
        marks = ",".join("?" * len(finished))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            stored = {r[0] for r in self._db.execute(
                f"SELECT key FROM runs WHERE state IN ({marks})", finished)}
            held = {k for k, o, beat in self._db.execute("SELECT key, owner, heartbeat FROM leases")
                    if o != owner and beat > now - ttl}
            mine = [k for k in keys if k not in stored and k not in held]
            self._db.executemany("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)",
                                 ((k, owner, now) for k in mine))
            self._db.commit()
        except BaseException:
            self._db.rollback()
            raise
        return mine

    def beat(self, owner: str) -> None:
        """Renew the heartbeat of every lease ``owner`` holds."""
        with self._db:
            self._db.execute("UPDATE leases SET heartbeat = ? WHERE owner = ?",
                             (time.time(), owner))

    def release(self, owner: str) -> None:
        """Drop every lease ``owner`` holds (its unfinished runs become claimable)."""
        with self._db:
            self._db.execute("DELETE FROM leases WHERE owner = ?", (owner,))

    def live_leases(self, owner: str, *, ttl: float) -> set[str]:
        """Keys leased by owners other than ``owner`` with a heartbeat younger than ``ttl`` s."""
        rows = self._db.execute("SELECT key FROM leases WHERE owner != ? AND heartbeat > ?",
                                (owner, time.time() - ttl))
        return {r[0] for r in rows}

    def weights(self, key: str) -> tuple[str, dict, bytes]:
        """The run whose key is ``key`` or starts with it: ``(key, config, weights)``.

        Raises:
            KeyError: no run or several runs match, or the run was stored
                without weights (the message says to set ``save_weights = true``).
        """
        rows = self._db.execute(
            "SELECT runs.key, runs.config, run_weights.weights FROM runs LEFT JOIN run_weights "
            "ON runs.key = run_weights.key WHERE substr(runs.key, 1, ?) = ?", (len(key), key)
        ).fetchall()
        if len(rows) != 1:
            raise KeyError(f"{'no' if not rows else len(rows)} runs match key {key!r}")
        full, config, blob = rows[0]
        if blob is None:
            raise KeyError(f"run {full} was stored without weights; run its sweep with "
                           "save_weights = true")
        return full, json.loads(config), blob

    def add_to_sweep(self, keys, sweep: str) -> None:
        """Record that sweep ``sweep`` asked for the runs ``keys`` (already
        stored by another sweep): they then belong to both."""
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO run_sweeps VALUES (?, ?)",
                                 ((k, sweep) for k in keys))

    def runs(self, sweep: str | None = None):
        """DataFrame of runs (of every sweep, or of the runs sweep ``sweep``
        asked for, whichever sweep recorded them): ``key``, ``sweep`` (the
        recording one), ``state``, ``error``,
        ``seconds``, one column per config key and one per metric (the
        ``status`` ratios flattened to ``unit_dead_ratio``, ...); list values
        (``constraints``, ``widths``, ``lr_milestones``) as tuples, dict values
        (``split``) as JSON text. The config
        keys are listed in ``frame.attrs["config_keys"]``."""
        import pandas as pd

        query = "SELECT key, sweep, config, state, metrics, error, seconds FROM runs"
        if sweep:
            query += " WHERE key IN (SELECT key FROM run_sweeps WHERE sweep = ?)"
        rows = self._db.execute(query, (sweep,) if sweep else ()).fetchall()
        records, config_keys = [], set()
        for key, name, config, state, metrics, error, seconds in rows:
            config = json.loads(config)
            config_keys |= set(config)
            m = json.loads(metrics) if metrics else {}
            status = m.pop("status", {}) or {}
            m.pop("seconds", None)
            m["epochs_done"] = m.pop("epochs", None)  # the config's "epochs" is the budget
            record = {"key": key, "sweep": name, "state": state, "error": error,
                      "seconds": seconds, **config, **m, **status}
            records.append({k: tuple(v) if isinstance(v, list)  # hashable cells
                            else json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
                            for k, v in record.items()})
        frame = pd.DataFrame.from_records(records)
        frame.attrs["config_keys"] = sorted(config_keys)
        return frame

    def curves(self, keys=None):
        """DataFrame of curves: one row per (``key``, ``epoch``), one column per
        recorded metric (``loss``, ``penalty``, ``train_acc``, ``val_acc``,
        ``test_acc``, and any a technique logged; NaN where not recorded)."""
        import pandas as pd

        long = pd.read_sql_query("SELECT * FROM curve_values", self._db)
        if keys is not None:
            long = long[long["key"].isin(set(keys))]
        if long.empty:
            return pd.DataFrame(columns=["key", "epoch"])
        wide = long.pivot(index=["key", "epoch"], columns="metric", values="value")
        wide.columns.name = None
        return wide.reset_index().sort_values(["key", "epoch"], ignore_index=True)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(db: str | Path, *, sweep: str | None = None):
    """Runs of the results database ``db`` as a pandas DataFrame.

    One row per run; columns ``key``, ``sweep``, ``state`` (done / diverged /
    failed), ``error``, ``seconds``, one per config key (``depth``, ``width``,
    ``technique``, ``lam``, ``lr``, ``seed``, ``epochs``, ...) and one per
    metric, named as the keys of ``jumpstart train --json`` (``best_train_acc``,
    ``best_val_acc``, ..., and the status ratios ``unit_dead_ratio``, ...),
    except that the epochs a run completed are ``epochs_done`` (``epochs`` is
    the configured budget).

    Raises:
        FileNotFoundError: ``db`` does not exist.
    """
    if not Path(db).is_file():
        raise FileNotFoundError(f"results database {db} not found")
    with ResultsStore(db) as store:
        return store.runs(sweep)
