"""Image data sets in their standard on-disk formats: MNIST / Fashion-MNIST
IDX files and CIFAR-10 / CIFAR-100 python pickles (CPAIOR 2022 Sec. 4)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .base import Dataset, read_bytes

IDX_MAGIC = {"images": 2051, "labels": 2049}


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{stem}[.gz] not found in {directory}")


def read_idx(path: str | Path, kind: str) -> np.ndarray:
    """Read an IDX file (raw or gzip'd): ``kind`` ``"images"`` (magic 2051,
    ``uint8 (N, rows, cols)``) or ``"labels"`` (magic 2049, ``uint8 (N,)``).

    Raises:
        ValueError: wrong magic number, a file shorter than its header says,
            a truncated or not-gzip ``.gz`` file (:func:`~jumpstart.data.base.read_bytes`).
    """
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 8:
        raise ValueError(f"truncated file {path}: {len(data)} bytes, shorter than an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != IDX_MAGIC[kind]:
        raise ValueError(f"{path}: magic number {magic}, expected {IDX_MAGIC[kind]} "
                         f"for an IDX {kind} file")
    dims = 3 if kind == "images" else 1
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but "
                         f"the file holds {body.size}")
    return body.reshape(shape)


def _split(x: np.ndarray, y: np.ndarray, val_size: int, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=val_size, stratify=y, random_state=seed)


def mnist(directory: str | Path, *, val_size: int = 1000, seed: int = 0,
          name: str = "mnist") -> Dataset:
    """MNIST (or Fashion-MNIST) from a folder of IDX files.

    Reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (raw or
    ``.gz``). With ``t10k-*`` files beside them, those are the validation part;
    without (``shared/data/mnist-5k``), ``val_size`` images are split off,
    stratified, by ``seed``. Pixels are scaled to [0, 1].

    Returns:
        :class:`Dataset` with ``x`` float32 ``(N, 1, 28, 28)``, 10 classes.

    Raises:
        FileNotFoundError: a training file is missing (the message names it
            and the folder).
        ValueError: wrong magic number, truncated file, or image and label
            counts that differ.
    """
    folder = Path(directory)
    parts = {}
    for part in ("train", "t10k"):
        try:
            images = read_idx(_find(folder, f"{part}-images-idx3-ubyte"), "images")
            labels = read_idx(_find(folder, f"{part}-labels-idx1-ubyte"), "labels")
        except FileNotFoundError:
            if part == "train":
                raise
            continue
        if len(images) != len(labels):
            raise ValueError(f"{folder}: {part} has {len(images)} images but "
                             f"{len(labels)} labels")
        parts[part] = (images, labels.astype(np.int64))
    x, y = parts["train"]
    if "t10k" in parts:
        x_va, y_va = parts["t10k"]
        x_tr, y_tr = x, y
    else:
        x_tr, x_va, y_tr, y_va = _split(x, y, val_size, seed)

    def tensor(a):
        return torch.tensor(a, dtype=torch.float32).div_(255).unsqueeze(1)

    return Dataset(name, tensor(x_tr), torch.as_tensor(y_tr), tensor(x_va), torch.as_tensor(y_va),
                   10)


def cifar(directory: str | Path, *, classes: int = 10) -> Dataset:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``,
    ``test``; fine labels) from the python-pickle folder; the test batch is the
    validation part. Pixels are scaled to [0, 1] and standardized per channel
    with the training part's mean and standard deviation.

    Returns:
        :class:`Dataset` with ``x`` float32 ``(N, 3, 32, 32)``.

    Raises:
        FileNotFoundError: a batch file is missing (named, with the folder).
        ValueError: ``classes`` not 10 or 100, a batch without ``data`` and
            labels, data not of shape ``(N, 3072)``, or label and image counts
            that differ.
    """
    if classes not in (10, 100):
        raise ValueError(f"classes must be 10 or 100; got {classes!r}")
    folder = Path(directory)
    names = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if classes == 10 \
        else (["train"], ["test"])
    key = b"labels" if classes == 10 else b"fine_labels"

    def load(files):
        xs, ys = [], []
        for name in files:
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"CIFAR-{classes} batch {name} not found in {folder}")
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            if b"data" not in batch or key not in batch:
                raise ValueError(f"{path}: not a CIFAR-{classes} batch (no data / {key.decode()})")
            data, labels = np.asarray(batch[b"data"]), np.asarray(batch[key], dtype=np.int64)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise ValueError(f"{path}: data of shape {data.shape}, expected (N, 3072)")
            if len(data) != len(labels):
                raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
            xs.append(data)
            ys.append(labels)
        x = torch.as_tensor(np.concatenate(xs), dtype=torch.float32).div_(255)
        return x.view(-1, 3, 32, 32), torch.as_tensor(np.concatenate(ys))

    x_tr, y_tr = load(names[0])
    x_va, y_va = load(names[1])
    mean = x_tr.mean(dim=(0, 2, 3), keepdim=True)
    std = x_tr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return Dataset(f"cifar{classes}", (x_tr - mean) / std, y_tr, (x_va - mean) / std, y_va,
                   classes)
