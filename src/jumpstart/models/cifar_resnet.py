"""The CIFAR bottleneck ResNet of Neural Rejuvenation's experiments
(ResNet-164: the authors' ``models/cifar/resnet.py`` run as ``--depth 110``,
which selects the bottleneck block with 18 blocks per stage;
``../shared/papers/neural-rejuvenation.md`` Sec. 6), with a width
multiplier, split into old and new halves after rejuvenation (Sec. 5)."""

from __future__ import annotations

from torch import Tensor, nn

from .registry import ModelRequest, register_model
from .split import (SPLIT_MODES, NRLayer, SplitConv2d, TwoHeads, he_fan_out_,
                    split_of)

#: stage widths before the bottleneck expansion (x4)
STAGES = (16, 32, 64)
EXPANSION = 4


class Bottleneck(nn.Module):
    """``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``
    with 1x1, 3x3 (the stride), 1x1 convs; the shortcut is a strided 1x1 conv
    and BatchNorm when the shape changes, else the identity. Convs are
    :class:`~jumpstart.models.SplitConv2d` (``widths`` entries as
    :func:`~jumpstart.models.split.split_of` reads them)."""

    def __init__(self, c_in, widths: list, stride: int, old_in: int | None, mode: str) -> None:
        super().__init__()
        (w1, o1), (w2, o2), (w3, o3) = (split_of(w) for w in widths[:3])
        self.conv1 = SplitConv2d(c_in, w1, 1, old_in=old_in, old_out=o1, mode=mode)
        self.bn1, self.relu1 = nn.BatchNorm2d(w1), nn.ReLU()
        self.conv2 = SplitConv2d(w1, w2, 3, stride=stride, old_in=o1, old_out=o2, mode=mode)
        self.bn2, self.relu2 = nn.BatchNorm2d(w2), nn.ReLU()
        self.conv3 = SplitConv2d(w2, w3, 1, old_in=o2, old_out=o3, mode=mode)
        self.bn3, self.relu3 = nn.BatchNorm2d(w3), nn.ReLU()
        self.shortcut = None
        if len(widths) == 4:
            wd, od = split_of(widths[3])
            self.shortcut = SplitConv2d(c_in, wd, 1, stride=stride, old_in=old_in, old_out=od,
                                        mode=mode)
            self.shortcut_bn = nn.BatchNorm2d(wd)

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        h = self.relu2(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        skip = x if self.shortcut is None else self.shortcut_bn(self.shortcut(x))
        return self.relu3(h + skip)


class CifarResNet(TwoHeads, nn.Module):
    """NR's CIFAR ResNet with bottleneck blocks: a 3x3 stem of ``16 w``
    channels, three stages of ``n = (depth - 2) / 9`` blocks with
    ``16 w, 32 w, 64 w`` inner channels (x4 out; strides 1, 2, 2), global
    average pooling and a linear classifier (``depth=164``: n = 18, the
    paper's ResNet-164, 1.68M conv weights at ``width_multiplier=1``).
    Fixed layers (Sec. 6): the stem, the last conv of each block and the
    shortcuts; prunable: each block's first two convs. BatchNorm scales start
    at 1; convs and the classifier He fan-out (``N(0, 2 / C_out)``, as the
    authors' init loop draws their 1x1-conv classifier), the classifier's
    bias PyTorch's default.

    Args:
        depth: ``9 n + 2`` with ``n >= 1``.
        width_multiplier: scales every width (rounded, at least 1).
        num_classes: logits ``K``.
        in_channels: image channels.
        widths: per conv in module order (stem, then per block conv1, conv2,
            conv3 and the shortcut where there is one), an int or
            ``[old, new]`` after rejuvenation; optionally followed by
            ``num_classes`` (:func:`~jumpstart.models.layer_widths`).
        mode: ``"split"`` or ``"cross"`` (see
            :class:`~jumpstart.models.SplitConv2d`; in ``"split"`` mode the
            classifier is two heads with a shared bias).

    Input ``(N, in_channels, H, W)``, output ``(N, K)``.

    Raises:
        ValueError: a depth that is not ``9 n + 2``, a multiplier <= 0, an
            unknown mode, or ``widths`` of the wrong length.
    """

    def __init__(self, depth: int = 164, width_multiplier: float = 1.0, num_classes: int = 10,
                 *, in_channels: int = 3, widths: list | None = None,
                 mode: str = "split") -> None:
        super().__init__()
        if not (isinstance(depth, int) and depth >= 11 and (depth - 2) % 9 == 0):
            raise ValueError(f"a bottleneck CIFAR ResNet has depth 9 n + 2 (164: n = 18); "
                             f"got {depth!r}")
        if not (isinstance(width_multiplier, (int, float)) and width_multiplier > 0):
            raise ValueError(f"width_multiplier must be > 0; got {width_multiplier!r}")
        if mode not in SPLIT_MODES:
            raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(SPLIT_MODES)}")
        n = (depth - 2) // 9
        planes = [max(1, round(p * width_multiplier)) for p in STAGES]
        base = [planes[0]]
        for s, p in enumerate(planes):
            for b in range(n):
                base += [p, p, p * EXPANSION] + ([p * EXPANSION] if b == 0 else [])
        widths = base if widths is None else list(widths)[:len(base) + 1]
        if len(widths) not in (len(base), len(base) + 1):
            raise ValueError(f"widths lists {len(widths)} convs; ResNet-{depth} has {len(base)}")
        self.depth, self.mode, self.in_channels = depth, mode, in_channels
        total, old = split_of(widths[0])
        self.stem = SplitConv2d(in_channels, total, 3, old_out=old, mode=mode)
        self.stem_bn, self.stem_relu = nn.BatchNorm2d(total), nn.ReLU()
        blocks, k, c_in, old_in = [], 1, total, old
        for s in range(len(planes)):
            for b in range(n):
                size = 4 if b == 0 else 3
                block = Bottleneck(c_in, widths[k:k + size], 2 if (b == 0 and s > 0) else 1,
                                   old_in, mode)
                blocks.append(block)
                k += size
                c_in, old_in = split_of(widths[k - size + 2])
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                he_fan_out_(m.weight)
        # the authors' classifier is a 1x1 conv caught by their conv init (He fan-out,
        # std sqrt(2 / K)) with PyTorch's default bias
        he_fan_out_(self.classifier.weight.view(*self.classifier.weight.shape, 1, 1))
        self.head_split = (old_in if mode == "split" and old_in is not None
                           and 0 < old_in < c_in else None)

    def nr_layers(self) -> list[NRLayer]:
        """The stem, then per block conv1, conv2 (prunable), conv3 and the
        shortcut (fixed); a block's first conv and shortcut read the stream,
        whose producer is the previous block's last conv (or the stem)."""
        out = [NRLayer(self.stem, self.stem_bn, self.stem_relu, None, fixed=True)]
        stream = 0
        for block in self.blocks:
            first = len(out)
            out += [NRLayer(block.conv1, block.bn1, block.relu1, stream),
                    NRLayer(block.conv2, block.bn2, block.relu2, first),
                    NRLayer(block.conv3, block.bn3, None, first + 1, fixed=True)]
            if block.shortcut is not None:
                out.append(NRLayer(block.shortcut, block.shortcut_bn, None, stream, fixed=True))
            stream = first + 2
        out[stream].head = True
        return out

    def rejuvenated(self, widths: list, mode: str) -> CifarResNet:
        """A fresh net of this one's depth with ``widths`` in ``mode``, on the same device."""
        return CifarResNet(self.depth, 1.0, self.classifier.out_features,
                           in_channels=self.in_channels, widths=widths,
                           mode=mode).to(self.classifier.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.stem_relu(self.stem_bn(self.stem(x)))).mean((2, 3))
        return self._head(h, self.classifier.weight, self.classifier.bias)


@register_model("cifar_resnet", images=True,
                text="Neural Rejuvenation's CIFAR bottleneck ResNet (depth 9n+2, BN and "
                     "shortcuts built in)")
def _cifar_resnet(r: ModelRequest) -> CifarResNet:
    if r.options["activation"] != "relu" or r.options["skip"] is not None:
        raise ValueError("model cifar_resnet has ReLU, BatchNorm and shortcuts built in; "
                         "the technique asks for other activations or skips")
    return CifarResNet(r.depth, float(r.width), r.out_features, in_channels=r.shape[0],
                       widths=r.widths, mode=r.mode)
