"""The CIFAR training augmentation (random crop of the padded image, flip)."""

import pytest
import torch

from jumpstart.data.augment import crop_flip
from jumpstart.train import route, train_run


def test_crop_flip_by_hand():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    out = crop_flip(x, torch.Generator().manual_seed(7), pad=2)
    g = torch.Generator().manual_seed(7)  # the same draws, in the same order
    dy = torch.randint(0, 5, (2,), generator=g)
    dx = torch.randint(0, 5, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    for i in range(2):
        padded = torch.zeros(3, 8, 9)
        padded[:, 2:6, 2:7] = x[i]
        crop = padded[:, dy[i]:dy[i] + 4, dx[i]:dx[i] + 5]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert out.shape == x.shape
    with pytest.raises(ValueError, match=r"takes images \(N, C, H, W\)"):
        crop_flip(x[0], torch.Generator())


def test_augmented_runs_train_in_the_single_loop():
    config = {"dataset": "mnist-5k", "model": "conv", "depth": 1, "width": 2,
              "technique": "baseline", "augment": "crop_flip", "lr": 0.01, "epochs": 1}
    assert route(config) == "single"
    run = train_run(dataset="mnist-5k", model="conv", depth=1, width=2, technique="baseline",
                    augment="crop_flip", epochs=1, lr=0.01, batch_size=500)
    plain = train_run(dataset="mnist-5k", model="conv", depth=1, width=2, technique="baseline",
                      epochs=1, lr=0.01, batch_size=500)
    assert run.config["augment"] == "crop_flip" and "augment" not in plain.config
    assert run.fit.history["loss"] != plain.fit.history["loss"]  # other inputs were seen
    with pytest.raises(ValueError, match="takes in-memory images"):
        train_run(dataset="moons", depth=2, width=3, augment="crop_flip", epochs=1)
    with pytest.raises(ValueError, match="augment must be one of none, crop_flip; got 'mixup'"):
        train_run(dataset="moons", depth=2, width=3, augment="mixup", epochs=1)
