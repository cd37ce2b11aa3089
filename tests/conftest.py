import pickle
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def figures(monkeypatch):
    """Every matplotlib figure saved while the test runs, by file name (saved as usual)."""
    from matplotlib.figure import Figure

    saved, save = {}, Figure.savefig

    def record(fig, path, *args, **kwargs):
        saved[Path(path).name] = fig
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def cifar_batch(path, n, classes, rng):
    """Write one CIFAR python-pickle batch of ``n`` random 32x32 RGB images."""
    key = "labels" if classes == 10 else "fine_labels"
    batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
             key.encode(): list(rng.integers(0, classes, n))}
    with open(path, "wb") as f:
        pickle.dump(batch, f)
