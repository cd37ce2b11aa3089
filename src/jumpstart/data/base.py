"""The in-memory data set container every loader returns."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Dataset:
    """A train/validation(/test) split held in memory.

    Attributes:
        name: data set name.
        x_train: features, float32, shape ``(N_train, *feature_shape)``.
        y_train: class ids, int64, shape ``(N_train,)``, in ``[0, num_classes)``.
        x_val: features, float32, shape ``(N_val, *feature_shape)``.
        y_val: class ids, int64, shape ``(N_val,)``.
        num_classes: number of classes ``K >= 2``.
        x_test, y_test: optional held-out test part (``None`` when the data
            set has none), shapes as the validation part.
        split: what the loader did beyond a plain stratified split (for
            tables: rare classes placed in the training part or dropped, see
            :func:`~jumpstart.data.tabular`); ``None`` when nothing.

    Raises:
        ValueError: mismatched lengths or feature shapes, non-finite
            features, or labels outside ``[0, num_classes)``.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    num_classes: int
    x_test: Tensor | None = None
    y_test: Tensor | None = None
    split: dict | None = None

    def parts(self) -> list[tuple[str, Tensor, Tensor]]:
        """``(name, x, y)`` for ``train``, ``val`` and, when present, ``test``."""
        out = [("train", self.x_train, self.y_train), ("val", self.x_val, self.y_val)]
        if self.x_test is not None:
            out.append(("test", self.x_test, self.y_test))
        return out

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"{self.name}: need at least 2 classes; got {self.num_classes}")
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError(f"{self.name}: x_test and y_test must be given together")
        for part, x, y in self.parts():
            if x.shape[0] != y.shape[0] or y.dim() != 1:
                raise ValueError(
                    f"{self.name}: {part} features {tuple(x.shape)} and labels "
                    f"{tuple(y.shape)} do not match"
                )
            if not torch.isfinite(x).all():
                raise ValueError(f"{self.name}: {part} features hold NaN or inf")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(
                    f"{self.name}: {part} labels must be in [0, {self.num_classes}); "
                    f"got range [{int(y.min())}, {int(y.max())}]"
                )
        for part, x, _ in self.parts()[1:]:
            if self.x_train.shape[1:] != x.shape[1:]:
                raise ValueError(
                    f"{self.name}: train and {part} feature shapes differ: "
                    f"{tuple(self.x_train.shape[1:])} vs {tuple(x.shape[1:])}"
                )

    def with_test_split(self, fraction: float, seed: int = 0) -> "Dataset":
        """This data set with a held-out test part cut from its validation part.

        For data sets that ship a train and a validation part only (MNIST,
        CIFAR, MOONS), so that options chosen on validation data are reported
        on data that did not choose them: a stratified split (scikit-learn's
        ``train_test_split``, ``random_state=seed``) of the validation part
        into ``1 - fraction`` validation and ``fraction`` test.

        Args:
            fraction: share of the validation part held out, in (0, 1).
            seed: the split's random state.

        Returns:
            A new :class:`Dataset` (``split`` records ``test_split``).

        Raises:
            ValueError: ``fraction`` not in (0, 1); the data set already has
                a test part; a validation part too small to give both parts
                every class that scikit-learn's stratified split needs.
        """
        if not (isinstance(fraction, float) and 0 < fraction < 1):
            raise ValueError(f"test_split must be a number in (0, 1); got {fraction!r}")
        if self.x_test is not None:
            raise ValueError(f"{self.name} already has a test part; test_split is for data "
                             "sets with a train and a validation part only")
        from sklearn.model_selection import train_test_split

        index = np.arange(len(self.y_val))
        labels = self.y_val.numpy()
        try:
            keep, held = train_test_split(index, test_size=fraction, random_state=seed,
                                          stratify=labels)
        except ValueError as exc:
            raise ValueError(f"{self.name}: cannot hold out a test part of {fraction:g} of "
                             f"the {len(index)} validation samples: {exc}") from None
        keep, held = torch.as_tensor(np.sort(keep)), torch.as_tensor(np.sort(held))
        return replace(self, x_val=self.x_val[keep], y_val=self.y_val[keep],
                       x_test=self.x_val[held], y_test=self.y_val[held],
                       split={**(self.split or {}), "test_split": fraction})

    @property
    def in_features(self) -> int:
        """Number of input features (product of the feature shape)."""
        return int(self.x_train[0].numel())


def read_bytes(path: str | Path) -> bytes:
    """The contents of a data file, gunzipped when its name ends in ``.gz``.

    Raises:
        ValueError: ``truncated file PATH`` (a gzip stream that ends early),
            or ``PATH is named .gz but is not a gzip file``; both name the file.
    """
    path = Path(path)
    if not path.name.endswith(".gz"):
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError:
        raise ValueError(f"truncated file {path}: the gzip stream ends early") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path} is named .gz but is not a gzip file ({exc})") from None
