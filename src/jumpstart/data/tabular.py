"""UCI / PMLB tables (IEEE Access 2025, UCI experiments): read, split, standardize."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .base import Dataset

SUFFIXES = (".tsv.gz", ".tsv", ".csv.gz", ".csv")


def data_root() -> Path | None:
    """The shared data folder: ``$JUMPSTART_DATA`` if set, else
    ``../shared/data`` from the working directory or from the project
    checkout; ``None`` when none exists."""
    env = os.environ.get("JUMPSTART_DATA")
    root = Path(__file__).resolve().parents[3]
    candidates = ([Path(env)] if env else []) + [Path.cwd() / ".." / "shared" / "data",
                                                 root / ".." / "shared" / "data"]
    return next((c.resolve() for c in candidates if c.is_dir()), None)


def data_dir(directory: str | Path | None = None) -> Path:
    """The folder of tables: ``directory`` if given, else :func:`data_root`'s
    ``uci/`` subfolder (or the root itself when it has none).

    Raises:
        FileNotFoundError: no such folder (the message says where it looked).
    """
    if directory is not None:
        candidates = [Path(directory)]
    else:
        root = data_root()
        candidates = [root / "uci", root] if root is not None else []
    for folder in candidates:
        if folder.is_dir():
            return folder.resolve()
    raise FileNotFoundError("no table folder found; looked in "
                            + (", ".join(str(c) for c in candidates) or "$JUMPSTART_DATA and "
                               "../shared/data")
                            + " (set JUMPSTART_DATA or give a directory)")


def table_names(directory: str | Path | None = None) -> list[str]:
    """Names of the tables (file names without suffix) in :func:`data_dir`, sorted.

    Raises:
        FileNotFoundError: no table folder (see :func:`data_dir`).
    """
    folder = data_dir(directory)
    names = {p.name[: -len(s)] for p in folder.iterdir() for s in SUFFIXES if p.name.endswith(s)}
    return sorted(names)


def _resolve(name_or_path: str | Path, directory: str | Path | None) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix or os.sep in str(name_or_path):
        raise FileNotFoundError(f"table file {path} not found")
    folder = data_dir(directory)
    for suffix in SUFFIXES:
        if (folder / f"{name_or_path}{suffix}").is_file():
            return folder / f"{name_or_path}{suffix}"
    raise FileNotFoundError(f"no table {name_or_path!r} in {folder}; known: "
                            f"{', '.join(table_names(folder)) or 'none'}")


def tabular(name_or_path: str | Path, *, seed: int = 0, target: str = "target",
            directory: str | Path | None = None) -> Dataset:
    """Load a PMLB-style table as a stratified, standardized train/val/test split.

    The file is a TSV (``.tsv``) or CSV (``.csv``), optionally gzip'd, with a
    header row, numeric feature columns and an integer class column
    ``target``. Rows are split 60/20/20 into train/validation/test, stratified
    by class (scikit-learn ``train_test_split``, ``random_state=seed``); each
    feature is standardized with the mean and standard deviation of the
    training part only (a constant feature is centred and left unscaled).
    Class ids are re-coded to ``0..K-1`` in sorted order. This is the IEEE
    Access 2025 UCI set-up, with the scaling and held-out test part its
    authors lacked (``shared/papers/jumpstart-experiments.md``).

    Args:
        name_or_path: a table name in :func:`data_dir` (``"iris"``) or a file path.
        seed: seed of the split.
        target: name of the class column.
        directory: folder to look names up in (default: :func:`data_dir`).

    Returns:
        :class:`Dataset` with ``x`` float32 ``(N_part, F)`` in standard units
        and ``y`` int64 ``(N_part,)``, and the test part set.

    Raises:
        FileNotFoundError: no such file or name (the message lists the known names).
        ValueError: no ``target`` column, non-numeric or NaN/inf features, a
            non-integer target, a single class, or fewer rows than 3 per class
            overall (``rows < 3 * classes``) or a class too small to appear in
            every part.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    path = _resolve(name_or_path, directory)
    sep = "\t" if ".tsv" in path.name else ","
    frame = pd.read_csv(path, sep=sep)
    name = path.name.split(".")[0]
    if target not in frame.columns:
        raise ValueError(f"{path}: no target column {target!r}; columns: "
                         f"{', '.join(map(str, frame.columns[:12]))}"
                         + (" ..." if frame.shape[1] > 12 else ""))
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise ValueError(f"{path}: no feature columns besides {target!r}")
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise ValueError(f"{path}: non-numeric feature column(s) {bad[:5]}")
    x = features.to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        rows = np.unique(np.nonzero(~np.isfinite(x))[0])[:5].tolist()
        raise ValueError(f"{path}: features hold NaN or inf (rows {rows} ...)")
    y_raw = frame[target].to_numpy()
    if not (pd.api.types.is_integer_dtype(frame[target])
            or (np.isfinite(y_raw.astype(float)).all()
                and np.equal(np.mod(y_raw.astype(float), 1), 0).all())):
        raise ValueError(f"{path}: target column {target!r} must hold integer class ids")
    classes, y = np.unique(y_raw.astype(np.int64), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"{path}: a single class ({classes.tolist()}); need at least 2")
    if len(y) < 3 * len(classes):
        raise ValueError(f"{path}: {len(y)} rows for {len(classes)} classes; need at least "
                         f"3 rows per class on average (rows >= 3 x classes)")
    counts = np.bincount(y)
    if counts.min() < 3:
        raise ValueError(f"{path}: class {classes[counts.argmin()]} has {counts.min()} rows; "
                         f"a stratified 60/20/20 split needs at least 3 per class")
    idx = np.arange(len(y))
    idx_tr, idx_rest = train_test_split(idx, test_size=0.4, stratify=y, random_state=seed)
    idx_va, idx_te = train_test_split(idx_rest, test_size=0.5, stratify=y[idx_rest],
                                      random_state=seed)
    mean = x[idx_tr].mean(0)
    std = x[idx_tr].std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std

    def part(i):
        return torch.as_tensor(x[i], dtype=torch.float32), torch.as_tensor(y[i])

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = part(idx_tr), part(idx_va), part(idx_te)
    return Dataset(name, x_tr, y_tr, x_va, y_va, len(classes), x_test=x_te, y_test=y_te)
