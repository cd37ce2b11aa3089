"""Data sets: MOONS and UCI/PMLB tables (more to come: MNIST, CIFAR, ImageFolder)."""

from __future__ import annotations

from pathlib import Path

from .base import Dataset
from .moons import moons
from .tabular import data_dir, table_names, tabular

DATASETS = {"moons": moons}


def load_dataset(name: str, *, seed: int = 0, directory: str | Path | None = None) -> Dataset:
    """A built-in data set by name (``"moons"``, fixed split) or else a table
    (:func:`tabular`, split by ``seed``; ``directory`` as there).

    Raises:
        FileNotFoundError: ``name`` is neither built in nor a table.
        ValueError: a table that cannot be used (see :func:`tabular`).
    """
    if name in DATASETS:
        return DATASETS[name]()
    return tabular(name, seed=seed, directory=directory)


def dataset_size(name: str, directory: str | Path | None = None) -> float:
    """A cheap relative size of a data set, to schedule big ones first: 1 for
    a built-in one, the table file's size in KiB for a table (1 if not found)."""
    from .tabular import _resolve

    if name in DATASETS:
        return 1.0
    try:
        return max(1.0, _resolve(name, directory).stat().st_size / 1024)
    except FileNotFoundError:
        return 1.0


__all__ = ["dataset_size", "DATASETS", "Dataset", "data_dir", "load_dataset", "moons", "table_names", "tabular"]
