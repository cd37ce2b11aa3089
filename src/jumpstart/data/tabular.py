"""UCI / PMLB tables (IEEE Access 2025, UCI experiments): read, split, standardize."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .base import Dataset, read_bytes

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


#: a class with fewer rows than this is *rare*: under one expected row in each
#: 20% part of a 60/20/20 split, so it cannot be stratified into all three
RARE_ROWS = 5


def tabular(name_or_path: str | Path, *, seed: int = 0, target: str = "target",
            directory: str | Path | None = None,
            min_class_rows: int | None = None) -> Dataset:
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

    Rare classes (our policy, the same for every seed and technique): a class
    with fewer than :data:`RARE_ROWS` (5) rows cannot appear in all three
    parts, so all its rows go to the training part (the model still sees
    them) and the other classes are stratified as usual; validation and test
    accuracy are then over the classes present there. With ``min_class_rows``
    the classes with fewer rows than that are dropped instead (their rows
    removed, the class ids re-coded over the classes kept). Either way the
    loader logs one line (logger ``jumpstart.data``, level WARNING) and the
    returned data set's ``split`` records ``rare_classes`` / ``rare_rows``
    (placed in training) and ``dropped_classes`` / ``dropped_rows`` (original
    class ids and row counts).

    Args:
        name_or_path: a table name in :func:`data_dir` (``"iris"``) or a file path.
        seed: seed of the split.
        target: name of the class column.
        directory: folder to look names up in (default: :func:`data_dir`).
        min_class_rows: drop classes with fewer rows than this (an integer
            >= 1; ``None`` drops none).

    Returns:
        :class:`Dataset` with ``x`` float32 ``(N_part, F)`` in standard units
        and ``y`` int64 ``(N_part,)``, and the test part set.

    Raises:
        FileNotFoundError: no such file or name (the message lists the known names).
        ValueError: no ``target`` column, non-numeric or NaN/inf features, a
            non-integer target, a bad ``min_class_rows``, fewer than 2 classes
            (after dropping), or fewer than 2 classes with :data:`RARE_ROWS`
            rows or more to stratify the validation and test parts over.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    path = _resolve(name_or_path, directory)
    sep = "\t" if ".tsv" in path.name else ","
    try:
        frame = pd.read_csv(io.BytesIO(read_bytes(path)), sep=sep)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file (no header row)") from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: not a {'TSV' if sep != ',' else 'CSV'} table: {exc}") from None
    if frame.empty:
        raise ValueError(f"{path}: a header row and no data rows")
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
    if not pd.api.types.is_numeric_dtype(frame[target]) or frame[target].dtype == bool:
        raise ValueError(f"{path}: target column {target!r} must hold integer class ids; "
                         f"it holds text (e.g. {str(y_raw[0])!r})")
    if not (pd.api.types.is_integer_dtype(frame[target])
            or (np.isfinite(y_raw.astype(float)).all()
                and np.equal(np.mod(y_raw.astype(float), 1), 0).all())):
        raise ValueError(f"{path}: target column {target!r} must hold integer class ids")
    if min_class_rows is not None and not (isinstance(min_class_rows, int)
                                           and not isinstance(min_class_rows, bool)
                                           and min_class_rows >= 1):
        raise ValueError(f"min_class_rows must be None or an integer >= 1; got {min_class_rows!r}")
    ids = y_raw.astype(np.int64)
    split = {}
    if min_class_rows is not None:
        values, counts = np.unique(ids, return_counts=True)
        small = values[counts < min_class_rows]
        if len(small):
            keep = ~np.isin(ids, small)
            split.update(dropped_classes=small.tolist(), dropped_rows=int((~keep).sum()))
            x, ids = x[keep], ids[keep]
    classes, y = np.unique(ids, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"{path}: a single class ({classes.tolist()})"
                         + (f" after dropping classes with fewer than {min_class_rows} rows"
                            if split else "") + "; need at least 2")
    counts = np.bincount(y)
    rare = counts < RARE_ROWS
    if int((~rare).sum()) < 2:
        raise ValueError(f"{path}: {int((~rare).sum())} class(es) with {RARE_ROWS} rows or "
                         f"more (counts {dict(zip(classes.tolist(), counts.tolist()))}); a "
                         f"stratified 60/20/20 split needs at least 2")
    idx = np.arange(len(y))
    in_rare = rare[y]
    if rare.any():
        split.update(rare_classes=classes[rare].tolist(), rare_rows=int(in_rare.sum()))
    common = idx[~in_rare]
    idx_tr, idx_rest = train_test_split(common, test_size=0.4, stratify=y[common],
                                        random_state=seed)
    idx_va, idx_te = train_test_split(idx_rest, test_size=0.5, stratify=y[idx_rest],
                                      random_state=seed)
    idx_tr = np.concatenate([idx_tr, idx[in_rare]])
    if split:
        said = []
        if "dropped_rows" in split:
            said.append(f"dropped {split['dropped_rows']} rows of class(es) "
                        f"{split['dropped_classes']} (fewer than {min_class_rows} rows)")
        if "rare_rows" in split:
            said.append(f"placed {split['rare_rows']} rows of rare class(es) "
                        f"{split['rare_classes']} (fewer than {RARE_ROWS} rows) in the "
                        f"training part only")
        logging.getLogger("jumpstart.data").warning("%s: %s", name, "; ".join(said))
    mean = x[idx_tr].mean(0)
    std = x[idx_tr].std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std

    def part(i):
        return torch.as_tensor(x[i], dtype=torch.float32), torch.as_tensor(y[i])

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = part(idx_tr), part(idx_va), part(idx_te)
    return Dataset(name, x_tr, y_tr, x_va, y_va, len(classes), x_test=x_te, y_test=y_te,
                   split=split or None)
