"""Data sets: MOONS, UCI/PMLB tables, MNIST / Fashion-MNIST IDX files, CIFAR
pickles (in memory); ImageNet-style ImageFolder trees (streamed from disk)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import Dataset
from .folder import FolderData, ImageFolder, image_folder
from .images import cifar, mnist, read_idx
from .moons import moons
from .tabular import _resolve, data_dir, data_root, table_names, tabular

@dataclass(frozen=True)
class Source:
    """One named data source: how to load it, check it exists, and size it.

    Attributes:
        load: ``load(seed, directory)`` -> the data set.
        folder: ``folder(directory)`` -> the folder it reads (``None``: it
            reads no folder, e.g. MOONS is generated).
        size: relative cost for scheduling (:func:`dataset_size`).
        kind: ``"builtin"`` (in memory, no files), ``"images"`` (in memory,
            read from a folder) or ``"streamed"`` (read from disk per batch).
        classes: how many classes, all (about) equally frequent, so chance
            accuracy is ``1 / classes`` (:func:`chance_level`).
    """

    load: Callable[[int, Path | None], Dataset | FolderData]
    folder: Callable[[str | Path | None], Path | None]
    size: float
    kind: str
    classes: int


def _named_folder(name: str, shared: str | None = None):
    """The folder of data set ``name``: the ``directory`` given, else (when
    ``shared`` names one) that subfolder of the shared data folder."""

    def folder(directory: str | Path | None) -> Path:
        if directory is not None:
            return Path(directory)
        root = data_root()
        if shared is not None and root is not None:
            return root / shared
        where = (f"; the shared data folder ($JUMPSTART_DATA, or ../shared/data beside the "
                 f"project or the working directory) has no {shared}/" if shared else "")
        raise FileNotFoundError(f"data set {name!r} needs its folder: give data_dir "
                                f"(--data-dir) pointing at the {name} files{where}")

    return folder


#: every named data set (tables are found by name or path in the data folder)
SOURCES: dict[str, Source] = {
    "moons": Source(lambda seed, d: moons(), lambda d: None, 1.0, "builtin", 2),
    # the paper's 85 training points, and 1,000 held-out points to tell techniques apart
    # (the paper's 15 validation points move accuracy in steps of 1/15)
    "moons-1k": Source(lambda seed, d: moons(n_samples=1085, val_fraction=1000 / 1085),
                       lambda d: None, 1.0, "builtin", 2),
    **{name: Source(lambda seed, d, name=name: mnist(d, seed=seed, name=name),
                    _named_folder(name, "mnist-5k" if name == "mnist-5k" else None),
                    1000.0, "images", 10)
       for name in ("mnist-5k", "mnist", "fashion-mnist")},
    **{name: Source(lambda seed, d, k=int(name[5:]): cifar(d, classes=k),
                    _named_folder(name), 1000.0, "images", int(name[5:]))
       for name in ("cifar10", "cifar100")},
    "cifar10-10k": Source(lambda seed, d: cifar(d, classes=10), _named_folder(
        "cifar10-10k", "cifar10-10k"), 1000.0, "images", 10),
    "imagenet": Source(lambda seed, d: image_folder(d, name="imagenet"),
                       _named_folder("imagenet"), 1e6, "streamed", 1000),
}
#: built-in data sets (no files), by name -> loader
DATASETS = {n: (lambda n=n: SOURCES[n].load(0, None)) for n, s in SOURCES.items()
            if s.kind == "builtin"}
#: image data sets read into memory from a folder (``data_dir`` in a sweep)
IMAGE_SETS = tuple(n for n, s in SOURCES.items() if s.kind == "images")
#: data sets streamed from an ImageFolder tree ``data_dir/{train,val}/CLASS/IMAGE``
FOLDER_SETS = tuple(n for n, s in SOURCES.items() if s.kind == "streamed")


def chance_level(name: str) -> float | None:
    """Chance accuracy of named data set ``name``: ``1 / classes`` of its
    :class:`Source`; ``None`` for a table (each has its own class balance)
    or an unknown name."""
    source = SOURCES.get(name)
    return None if source is None else 1 / source.classes


def load_dataset(name: str, *, seed: int = 0, directory: str | Path | None = None,
                 target: str = "target", min_class_rows: int | None = None,
                 test_split: float | None = None) -> Dataset | FolderData:
    """A data set by name: one of :data:`SOURCES` (``"moons"``, a fixed
    split; an image set of :data:`IMAGE_SETS` read from ``directory``,
    ``mnist-5k`` defaulting to the shared data folder's ``mnist-5k`` with a
    4000/1000 split by ``seed``; ``"imagenet"``, :func:`image_folder` on
    ``directory``, streamed, so a :class:`FolderData`); else a table
    (:func:`tabular`, split by ``seed``; ``directory``, the class column
    ``target`` and ``min_class_rows`` as there). ``test_split``: hold out
    that share of the validation part as a test part
    (:meth:`Dataset.with_test_split`, split by ``seed``), for data sets that
    have none.

    Raises:
        FileNotFoundError: the data cannot be found (the message says where).
        ValueError: files that cannot be used (see the loaders); a
            ``test_split`` on a streamed data set or one with a test part.
    """
    source = SOURCES.get(name)
    if source is not None:
        data = source.load(seed, source.folder(directory))
    else:
        data = tabular(name, seed=seed, directory=directory, target=target,
                       min_class_rows=min_class_rows)
    if test_split is None:
        return data
    if not isinstance(data, Dataset):
        raise ValueError(f"test_split needs a data set held in memory; {name} is streamed")
    return data.with_test_split(test_split, seed)


def run_data_key(config: dict) -> tuple:
    """What identifies a run's loaded data: its ``dataset``, ``seed``,
    ``data_dir``, ``target``, ``min_class_rows`` and ``test_split`` (absent
    keys at their defaults); runs with equal keys can share one load."""
    return (config["dataset"], config["seed"], config.get("data_dir"),
            config.get("target", "target"), config.get("min_class_rows"),
            config.get("test_split"))


def load_run_data(config: dict) -> Dataset | FolderData:
    """The data a run config (a sweep's run, a checkpoint's ``config``) trains
    on: :func:`load_dataset` with the keys of :func:`run_data_key`.

    Raises:
        KeyError: no ``dataset`` or ``seed`` in ``config``.
        FileNotFoundError, ValueError: as :func:`load_dataset`.
    """
    name, seed, directory, target, min_class_rows, test_split = run_data_key(config)
    return load_dataset(name, seed=seed, directory=directory, target=target,
                        min_class_rows=min_class_rows, test_split=test_split)


def check_dataset(name: str, directory: str | Path | None = None) -> None:
    """Raise ``FileNotFoundError`` (saying where it looked) if ``name`` cannot
    be found; reads no data. Used to validate sweeps before any training."""
    source = SOURCES.get(name)
    if source is None:
        _resolve(name, directory)
        return
    folder = source.folder(directory)
    if folder is not None and not folder.is_dir():
        raise FileNotFoundError(f"data set {name!r}: folder {folder} not found")


def dataset_size(name: str, directory: str | Path | None = None) -> float:
    """A cheap relative size of a data set, to schedule big ones first: 1 for
    a built-in one, 1000 for an image set, 10^6 for a streamed one
    (:attr:`Source.size`), the table file's size in KiB for a table (or 1 if
    not found)."""
    if name in SOURCES:
        return SOURCES[name].size
    try:
        return max(1.0, _resolve(name, directory).stat().st_size / 1024)
    except FileNotFoundError:
        return 1.0


__all__ = ["DATASETS", "FOLDER_SETS", "IMAGE_SETS", "SOURCES", "Dataset",
           "Source", "FolderData", "ImageFolder", "chance_level", "check_dataset", "cifar",
           "data_dir",
           "data_root", "dataset_size", "image_folder", "load_dataset", "load_run_data", "mnist",
           "moons", "read_idx", "run_data_key", "table_names", "tabular"]
