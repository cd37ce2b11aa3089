"""Training-time augmentation of in-memory image batches, on their device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: the augmentations a run may ask for (run option ``augment``): ``"none"``,
#: or ``"crop_flip"``, the standard CIFAR training augmentation (random
#: 32x32 crop of the image zero-padded by 4 pixels, then a horizontal flip
#: with probability 1/2; He et al. 2016, Sec. 4.2, and the Neural
#: Rejuvenation code)
AUGMENTATIONS = ("none", "crop_flip")
#: pixels of zero padding around the image before the random crop
PAD = 4


def crop_flip(x: Tensor, generator: torch.Generator, pad: int = PAD) -> Tensor:
    """Random crop with ``pad`` zero padding and random horizontal flip, drawn
    per sample from ``generator`` (a CPU generator; the indices move to
    ``x``'s device).

    Args:
        x: images ``(N, C, H, W)``.

    Returns:
        ``(N, C, H, W)``: sample ``i`` is rows ``dy_i .. dy_i + H - 1`` and
        columns ``dx_i .. dx_i + W - 1`` of the padded image, ``dy_i, dx_i``
        uniform in ``0 .. 2 * pad``, its columns reversed when flipped.

    Raises:
        ValueError: ``x`` not 4-dimensional.
    """
    if x.dim() != 4:
        raise ValueError(f"crop_flip takes images (N, C, H, W); got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    padded = F.pad(x, (pad, pad, pad, pad))
    index = (torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :])
    return padded[tuple(i.to(x.device) for i in index)]


def check_augment(name: str) -> None:
    """Raise ``ValueError`` for a name not in :data:`AUGMENTATIONS`."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {name!r}; allowed: {', '.join(AUGMENTATIONS)}")
