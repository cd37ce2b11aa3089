"""ImageNet-style ``ImageFolder`` trees, streamed from disk (IEEE Access 2025,
ImageNet experiment).

A tree is ``ROOT/train/CLASS/*.jpg`` and ``ROOT/val/CLASS/*.jpg``: one folder
per class, class ids in sorted folder-name order (torchvision's
``ImageFolder`` convention). Images are decoded with Pillow in the
DataLoader workers and transformed as torchvision's standard ImageNet recipe:

- train: ``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))``
  (bilinear), horizontal flip with probability 0.5;
- eval: resize the shorter side to ``resize`` (bilinear), center crop ``size``;
- then ``[0, 1]`` RGB normalized by the ImageNet mean and std.

The transforms are written on Pillow and torch directly: the torchvision
wheels on the package index are CUDA builds that cannot be imported beside
the CPU build of torch, and a loader must work on both.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

#: file name endings read as images (case-insensitive), as torchvision's
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: ImageNet channel mean and std of [0, 1] RGB
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_MEAN, _STD = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)


def random_resized_crop_box(height: int, width: int, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3), generator=None) -> tuple[int, int, int, int]:
    """The crop ``(top, left, h, w)`` of ``RandomResizedCrop``: up to 10 tries
    of an area fraction uniform in ``scale`` and an aspect ratio log-uniform
    in ``ratio`` that fits the image; else the largest central crop whose
    aspect ratio is clamped to ``ratio``. Draws from ``generator`` (torch's
    global one when ``None``, which DataLoader seeds per worker)."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2] * (height - h + 1)), height - h)
            left = min(int(u[3] * (width - w + 1)), width - w)
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _to_tensor(image) -> Tensor:
    """``(3, H, W)`` float32 normalized by :data:`MEAN` / :data:`STD`."""
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return (x.float().div_(255) - _MEAN) / _STD


def train_transform(image, size: int = 224) -> Tensor:
    """Random resized crop to ``size x size`` plus a random horizontal flip,
    normalized: ``(3, size, size)`` float32. ``image`` is an RGB PIL image."""
    from PIL import Image

    top, left, h, w = random_resized_crop_box(image.height, image.width)
    image = image.crop((left, top, left + w, top + h)).resize(
        (size, size), Image.Resampling.BILINEAR)
    if torch.rand(1).item() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _to_tensor(image)


def eval_transform(image, size: int = 224, resize: int = 256) -> Tensor:
    """Shorter side resized to ``resize``, center crop ``size x size``,
    normalized: ``(3, size, size)`` float32. ``image`` is an RGB PIL image.

    Raises:
        ValueError: ``size > resize``.
    """
    from PIL import Image

    if size > resize:
        raise ValueError(f"crop size {size} is larger than the resize {resize}")
    w, h = image.width, image.height
    if w <= h:
        nw, nh = resize, int(resize * h / w)
    else:
        nw, nh = int(resize * w / h), resize
    image = image.resize((nw, nh), Image.Resampling.BILINEAR)
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    return _to_tensor(image.crop((left, top, left + size, top + size)))


class ImageFolder(torch.utils.data.Dataset):
    """One split of an ImageFolder tree: ``root/CLASS/IMAGE``.

    Items are ``(x, y)``: ``x`` float32 ``(3, size, size)`` from
    :func:`train_transform` (``train=True``) or :func:`eval_transform`, ``y``
    the class id (int). Class ids follow sorted folder names, or the order of
    ``classes`` when given (so a validation split uses the training split's ids).

    Args:
        root: the split's folder.
        train: random augmentation (training) or the deterministic eval view.
        size: crop side in pixels; ``resize``: eval resize of the shorter side.
        classes: class folder names to use, in id order.

    Raises:
        FileNotFoundError: ``root`` missing, no class folders, a class folder
            with no image, or a class of ``classes`` absent under ``root``.
    """

    def __init__(self, root: str | Path, *, train: bool, size: int = 224, resize: int = 256,
                 classes: list[str] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} not found")
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not found:
            raise FileNotFoundError(f"{root} has no class folders (expected {root}/CLASS/IMAGE)")
        self.classes = list(classes) if classes is not None else found
        missing = sorted(set(self.classes) - set(found))
        if missing:
            raise FileNotFoundError(f"{root} lacks class folder(s) {missing[:5]}"
                                    f"{' ...' if len(missing) > 5 else ''}")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files = sorted(p for p in (root / name).rglob("*")
                           if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not files:
                raise FileNotFoundError(f"class folder {root / name} holds no image "
                                        f"({', '.join(IMAGE_EXTENSIONS)})")
            self.samples += [(f, label) for f in files]
        self.root, self.train, self.size, self.resize = root, train, size, resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        x = train_transform(image, self.size) if self.train else eval_transform(
            image, self.size, self.resize)
        return x, label

    def eval_view(self) -> "ImageFolder":
        """The same files with the eval transform (for activation status);
        shares the file list, no second walk of the tree."""
        view = copy.copy(self)
        view.train = False
        return view


@dataclass(frozen=True)
class FolderData:
    """A train/validation split streamed from disk; :func:`jumpstart.train.fit`
    reads it through DataLoaders.

    Attributes:
        name: data set name.
        train, val: :class:`ImageFolder` splits (the same class ids).
        num_classes: number of classes ``K >= 2``.
    """

    name: str
    train: ImageFolder
    val: ImageFolder
    num_classes: int

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """``(3, size, size)``."""
        return (3, self.train.size, self.train.size)


def image_folder(directory: str | Path, *, name: str = "imagenet", size: int = 224,
                 resize: int = 256) -> FolderData:
    """An ImageFolder tree ``directory/{train,val}/CLASS/IMAGE`` (ImageNet's
    layout once the validation images are sorted into class folders).

    Raises:
        FileNotFoundError: a missing ``train`` or ``val`` folder (the message
            says where), or see :class:`ImageFolder`.
        ValueError: fewer than 2 classes, a validation class that training
            lacks, ``size < 1`` or ``size > resize``.
    """
    directory = Path(directory)
    if not (isinstance(size, int) and size >= 1 and size <= resize):
        raise ValueError(f"need 1 <= size <= resize; got size {size!r}, resize {resize!r}")
    for split in ("train", "val"):
        if not (directory / split).is_dir():
            raise FileNotFoundError(f"{name}: folder {directory / split} not found "
                                    f"(expected {directory}/{{train,val}}/CLASS/IMAGE)")
    train = ImageFolder(directory / "train", train=True, size=size, resize=resize)
    if len(train.classes) < 2:
        raise ValueError(f"{name}: need at least 2 class folders in {directory / 'train'}")
    val = ImageFolder(directory / "val", train=False, size=size, resize=resize,
                      classes=train.classes)
    extra = sorted(p.name for p in (directory / "val").iterdir()
                   if p.is_dir() and p.name not in train.classes)
    if extra:
        raise ValueError(f"{name}: class folder(s) {extra[:5]} in {directory / 'val'} "
                         f"are not in {directory / 'train'}")
    return FolderData(name, train, val, len(train.classes))
