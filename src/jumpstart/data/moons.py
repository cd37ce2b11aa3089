"""The MOONS set-up of the CPAIOR 2022 paper (Sec. 4, Fig. 2)."""

from __future__ import annotations

import torch

from .base import Dataset


def moons(*, seed: int = 10, n_samples: int = 100, val_fraction: float = 0.15) -> Dataset:
    """Two noise-free interleaving half circles, as in CPAIOR 2022 Sec. 4.

    scikit-learn ``make_moons(n_samples, noise=None)`` with its order shuffled
    by ``seed``; every feature divided by one scalar, ``X.max() - X.min()``
    over the whole array; split with ``train_test_split(test_size=0.15,
    random_state=42)``: 85 train / 15 validation points by default. The
    authors' shuffle (NumPy's global RNG seeded 10) cannot be recreated, so
    which 15 points are held out differs from theirs
    (``shared/papers/jumpstart-experiments.md``).

    Returns:
        :class:`Dataset` with features of shape ``(N, 2)`` (float32, unitless,
        range 1 overall) and labels in ``{0, 1}``.

    Raises:
        ValueError: ``n_samples < 4`` or ``val_fraction`` outside (0, 1).
    """
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split

    if n_samples < 4:
        raise ValueError(f"n_samples must be >= 4; got {n_samples}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    x, y = make_moons(n_samples=n_samples, noise=None, shuffle=True, random_state=seed)
    x = x / (x.max() - x.min())
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=val_fraction, random_state=42)
    return Dataset(
        name="moons",
        x_train=torch.as_tensor(x_tr, dtype=torch.float32),
        y_train=torch.as_tensor(y_tr, dtype=torch.int64),
        x_val=torch.as_tensor(x_va, dtype=torch.float32),
        y_val=torch.as_tensor(y_va, dtype=torch.int64),
        num_classes=2,
    )
