"""Neural Rejuvenation's CIFAR VGG (Qiao et al., CVPR 2019; the authors'
``models/cifar/vgg.py``, ``../shared/papers/neural-rejuvenation.md`` Sec. 6),
with a width multiplier, and its convolutions split into an old and a new
half after rejuvenation (Sec. 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the NR VGG-19 layout: 16 3x3 convs (channels) and 2 max-pools ("M"); the
#: head is a 1x1 conv classifier then global average pooling
VGG19 = (64, 64, 128, 128, "M", 256, 256, 256, 256, 512, 512, "M",
         512, 512, 512, 512, 512, 512)
DEPTHS = {19: VGG19}
#: NR's BatchNorm scale init (the authors' CIFAR VGG)
BN_INIT = 0.5
SPLIT_MODES = ("split", "cross")
#: standard deviation of the classifier's initial (and rejuvenated) columns
CLASSIFIER_STD = 0.01


def he_fan_out_(weight: Tensor) -> Tensor:
    """``N(0, 2 / (kh * kw * C_out))`` in place (the authors' conv init, and
    NR's draw for rejuvenated kernels); ``weight`` ``(C_out, C_in, kh, kw)``."""
    n = weight.shape[0] * weight[0, 0].numel()
    with torch.no_grad():
        return weight.normal_(0.0, (2.0 / n) ** 0.5)


def vgg_widths(depth: int, width: int) -> list[int]:
    """Channels of each conv of the depth-``depth`` layout when its first conv
    has ``width`` channels (the paper's is 64): each scaled by ``width / 64``,
    rounded down, at least 1.

    Raises:
        ValueError: ``depth`` not in :data:`DEPTHS`, or ``width < 1``.
    """
    if depth not in DEPTHS:
        raise ValueError(f"model vgg has depth {', '.join(map(str, DEPTHS))}; got {depth!r}")
    if not (isinstance(width, int) and width >= 1):
        raise ValueError(f"width (channels of the first conv) must be an integer >= 1; "
                         f"got {width!r}")
    return [max(1, c * width // 64) for c in DEPTHS[depth] if c != "M"]


class SplitConv2d(nn.Conv2d):
    """A 3x3 conv whose output channels may be split into ``old_out`` old and
    ``out_channels - old_out`` new ones, reading inputs split the same way
    at ``old_in`` (NR Sec. 5; the authors' ``_AttConv2d``).

    Split (``old_in`` and ``old_out`` set): with ``x_o = x[:, :old_in]``,
    ``x_n = x[:, old_in:]`` and the weight's blocks ``W_oo, W_on, W_no, W_nn``
    (rows old/new outputs, columns old/new inputs):

    - ``mode="split"`` (the CIFAR scheme): ``cat[W_oo * x_o, W_nn * x_n]``, two
      disjoint networks; the cross blocks are never used;
    - ``mode="cross"`` (the ImageNet cross-attention): ``A = W_oo * x_o``,
      ``B = W_on * x_n``, ``y_o = A + B * 2 sigmoid(A)``, and symmetrically
      ``y_n = D + C * 2 sigmoid(D)`` with ``D = W_nn * x_n``, ``C = W_no * x_o``.

    Unsplit (``old_out is None``, or ``old_in is None``: a layer reading the
    network input, or one whose inputs or outputs did not grow), a plain conv.
    Shapes ``(N, C_in, H, W) -> (N, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, old_in: int | None = None,
                 old_out: int | None = None, mode: str = "split", bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)
        if mode not in SPLIT_MODES:
            raise ValueError(f"unknown split mode {mode!r}; allowed: {', '.join(SPLIT_MODES)}")
        self.old_out, self.mode = old_out, mode
        self.old_in = old_in if old_out is not None else None

    @property
    def is_split(self) -> bool:
        """Both the inputs and the outputs have an old and a new part."""
        return (self.old_in is not None and 0 < self.old_in < self.in_channels
                and 0 < self.old_out < self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if not self.is_split:
            return super().forward(x)
        i, o, w, b = self.old_in, self.old_out, self.weight, self.bias
        xo, xn = x[:, :i], x[:, i:]
        bo, bn = (None, None) if b is None else (b[:o], b[o:])
        a = self._conv_forward(xo, w[:o, :i], bo)
        d = self._conv_forward(xn, w[o:, i:], bn)
        if self.mode == "cross":
            a = a + self._conv_forward(xn, w[:o, i:], None) * 2 * torch.sigmoid(a)
            d = d + self._conv_forward(xo, w[o:, :i], None) * 2 * torch.sigmoid(d)
        return torch.cat([a, d], 1)


class VGG(nn.Module):
    """NR's CIFAR VGG: 3x3 convs (no bias under BatchNorm), each followed by
    BatchNorm (scale initialized to :data:`BN_INIT`) and ReLU, max-pools as
    in the layout, then a 1x1 conv classifier and global average pooling
    (no fully connected layers). Convs are drawn by :func:`he_fan_out_`, the
    classifier from ``N(0, 0.01^2)`` with bias 0 (the spec gives that draw for
    rejuvenated columns; we use it at the start too).

    After rejuvenation (``widths`` with ``[old, new]`` pairs; NR Sec. 5) the
    convs are :class:`SplitConv2d` halves. In ``"split"`` mode the
    classifier is applied to each half with one shared bias,
    ``z_old = W_o x_o + b`` and ``z_new = W_n x_n + b`` (kept in
    :attr:`halves` for the two-head loss); the model returns
    ``z_old + z_new`` (the authors' prediction is its argmax). In
    ``"cross"`` mode one classifier reads every channel (our choice: the
    authors' cross-attention runs on ImageNet, whose heads the spec does not
    describe).

    Args:
        depth: a layout of :data:`DEPTHS` (19: NR's VGG-19).
        width: channels of the first conv (64 is the paper's); every conv is
            scaled alike (:func:`vgg_widths`).
        num_classes: logits ``K``.
        in_channels: image channels.
        norm: ``"batch"`` or ``None`` (plain convs with a bias).
        widths: channels per conv overriding ``width``: an int, or
            ``[old, new]`` for a rejuvenated conv (then the model is split);
            optionally followed by ``num_classes`` (as
            :func:`~jumpstart.models.layer_widths` lists them).
        mode: ``"split"`` or ``"cross"`` (rejuvenated models only).

    Input ``(N, in_channels, H, W)``, output ``(N, K)``.

    Raises:
        ValueError: bad depth, width, norm, mode, or ``widths`` of the wrong length.
    """

    def __init__(self, depth: int = 19, width: int = 64, num_classes: int = 10, *,
                 in_channels: int = 3, norm: str | None = "batch",
                 widths: list | None = None, mode: str = "split") -> None:
        super().__init__()
        base = vgg_widths(depth, width)
        if norm not in (None, "batch"):
            raise ValueError(f"unknown norm {norm!r}; allowed: batch, None")
        if mode not in SPLIT_MODES:
            raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(SPLIT_MODES)}")
        if widths is not None:
            widths = list(widths)[:len(base)] if len(widths) == len(base) + 1 else list(widths)
            if len(widths) != len(base):
                raise ValueError(f"widths lists {len(widths)} convs; VGG-{depth} has {len(base)}")
        self.depth, self.norm, self.mode = depth, norm, mode
        self.halves: tuple[Tensor, Tensor] | None = None
        layers: list[nn.Module] = []
        channels, old_in, k = in_channels, None, 0
        for c in DEPTHS[depth]:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            w = base[k] if widths is None else widths[k]
            total, old = (sum(w), int(w[0])) if isinstance(w, (list, tuple)) else (int(w), None)
            conv = SplitConv2d(channels, total, old_in=old_in, old_out=old, mode=mode,
                               bias=norm is None)
            layers.append(conv)
            if norm == "batch":
                bn = nn.BatchNorm2d(total)
                nn.init.constant_(bn.weight, BN_INIT)
                layers.append(bn)
            layers.append(nn.ReLU())
            channels, old_in, k = total, old, k + 1
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        #: old channels the split classifier reads (None: one classifier)
        self.head_split = (old_in if mode == "split" and old_in is not None
                           and 0 < old_in < channels else None)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                he_fan_out_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, 0.0, CLASSIFIER_STD)
        nn.init.zeros_(self.classifier.bias)

    def convs(self) -> list[SplitConv2d]:
        """The hidden convs, input to output."""
        return [m for m in self.features if isinstance(m, SplitConv2d)]

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x).mean((2, 3))  # pooling first: the 1x1 conv is linear
        w = self.classifier.weight.flatten(1)
        b = self.classifier.bias
        if self.head_split is None:
            return F.linear(h, w, b)
        i = self.head_split
        z_old, z_new = F.linear(h[:, :i], w[:, :i], b), F.linear(h[:, i:], w[:, i:], b)
        self.halves = (z_old, z_new)
        return z_old + z_new
