"""Data sets: MOONS, UCI/PMLB tables, MNIST / Fashion-MNIST IDX files, CIFAR
pickles (in memory); ImageNet-style ImageFolder trees (streamed from disk)."""

from __future__ import annotations

from pathlib import Path

from .base import Dataset
from .folder import FolderData, ImageFolder, image_folder
from .images import cifar, mnist, read_idx
from .moons import moons
from .tabular import _resolve, data_dir, data_root, table_names, tabular

DATASETS = {"moons": moons}
#: image data sets by name; each reads a folder (``data_dir`` in a sweep)
IMAGE_SETS = ("mnist-5k", "mnist", "fashion-mnist", "cifar10", "cifar100")
#: data sets streamed from an ImageFolder tree ``data_dir/{train,val}/CLASS/IMAGE``
FOLDER_SETS = ("imagenet",)


def _image_folder(name: str, directory: str | Path | None) -> Path:
    if directory is not None:
        return Path(directory)
    root = data_root()
    if name == "mnist-5k" and root is not None:
        return root / "mnist-5k"
    raise FileNotFoundError(f"data set {name!r} needs its folder: give data_dir "
                            f"(--data-dir) pointing at the {name} files")


def load_dataset(name: str, *, seed: int = 0, directory: str | Path | None = None,
                 target: str = "target") -> Dataset | FolderData:
    """A data set by name: ``"moons"`` (fixed split); an image set (one of
    :data:`IMAGE_SETS`, read from ``directory``; ``mnist-5k`` defaults to
    ``../shared/data/mnist-5k`` with a 4000/1000 split by ``seed``);
    ``"imagenet"`` (:func:`image_folder` on ``directory``, streamed, so a
    :class:`FolderData`); else a table (:func:`tabular`, split by ``seed``;
    ``directory`` and the class column ``target`` as there).

    Raises:
        FileNotFoundError: the data cannot be found (the message says where).
        ValueError: files that cannot be used (see the loaders).
    """
    if name in DATASETS:
        return DATASETS[name]()
    if name in IMAGE_SETS or name in FOLDER_SETS:
        folder = _image_folder(name, directory)
        if name in FOLDER_SETS:
            return image_folder(folder, name=name)
        if name.startswith("cifar"):
            return cifar(folder, classes=int(name[5:]))
        return mnist(folder, seed=seed, name=name)
    return tabular(name, seed=seed, directory=directory, target=target)


def check_dataset(name: str, directory: str | Path | None = None) -> None:
    """Raise ``FileNotFoundError`` (saying where it looked) if ``name`` cannot
    be found; reads no data. Used to validate sweeps before any training."""
    if name in DATASETS:
        return
    if name in IMAGE_SETS or name in FOLDER_SETS:
        folder = _image_folder(name, directory)
        if not folder.is_dir():
            raise FileNotFoundError(f"data set {name!r}: folder {folder} not found")
        return
    _resolve(name, directory)


def dataset_size(name: str, directory: str | Path | None = None) -> float:
    """A cheap relative size of a data set, to schedule big ones first: 1 for
    a built-in one, the table file's size in KiB for a table, 1000 for an
    image set, 10^6 for a streamed one (or 1 if not found)."""
    if name in DATASETS:
        return 1.0
    if name in IMAGE_SETS:
        return 1000.0
    if name in FOLDER_SETS:
        return 1e6
    try:
        return max(1.0, _resolve(name, directory).stat().st_size / 1024)
    except FileNotFoundError:
        return 1.0


__all__ = ["DATASETS", "FOLDER_SETS", "IMAGE_SETS", "Dataset", "FolderData", "ImageFolder",
           "check_dataset", "cifar", "data_dir", "data_root", "dataset_size", "image_folder",
           "load_dataset", "mnist", "moons", "read_idx", "table_names", "tabular"]
