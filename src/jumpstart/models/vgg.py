"""Neural Rejuvenation's CIFAR VGG (Qiao et al., CVPR 2019; the authors'
``models/cifar/vgg.py``, ``../shared/papers/neural-rejuvenation.md`` Sec. 6),
with a width multiplier, its convolutions split into an old and a new half
after rejuvenation (Sec. 5)."""

from __future__ import annotations

from torch import Tensor, nn

from .registry import ModelRequest, register_model
from .split import (CLASSIFIER_STD, SPLIT_MODES, NRLayer, SplitConv2d, TwoHeads, he_fan_out_,
                    split_of)

#: the NR VGG-19 layout: 16 3x3 convs (channels) and 2 max-pools ("M"); the
#: head is a 1x1 conv classifier then global average pooling
VGG19 = (64, 64, 128, 128, "M", 256, 256, 256, 256, 512, 512, "M",
         512, 512, 512, 512, 512, 512)
DEPTHS = {19: VGG19}
#: NR's BatchNorm scale init (the authors' CIFAR VGG)
BN_INIT = 0.5


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


class VGG(TwoHeads, nn.Module):
    """NR's CIFAR VGG: 3x3 convs (no bias under BatchNorm), each followed by
    BatchNorm (scale initialized to :data:`BN_INIT`) and ReLU, max-pools as
    in the layout, then a 1x1 conv classifier and global average pooling
    (no fully connected layers). Convs are drawn by
    :func:`~jumpstart.models.split.he_fan_out_`, the classifier from
    ``N(0, 0.01^2)`` with bias 0 (the spec gives that draw for rejuvenated
    columns; we use it at the start too).

    After rejuvenation (``widths`` with ``[old, new]`` pairs; NR Sec. 5) the
    convs are :class:`~jumpstart.models.SplitConv2d` halves. In ``"split"``
    mode the classifier is two heads with a shared bias
    (:class:`~jumpstart.models.split.TwoHeads`: logits ``z_old + z_new``,
    :attr:`halves` kept for the two-head loss); in ``"cross"`` mode one
    classifier reads every channel (our choice: the authors' cross-attention
    runs on ImageNet, whose heads the spec does not describe).

    Args:
        depth: a layout of :data:`DEPTHS` (19: NR's VGG-19).
        width: channels of the first conv (64 is the paper's); every conv is
            scaled alike (:func:`vgg_widths`).
        num_classes: logits ``K``.
        in_channels: image channels.
        norm: ``"batch"`` or ``None`` (plain convs with a bias).
        widths: channels per conv overriding ``width``: an int, or
            ``[old, new]`` for a rejuvenated conv; optionally followed by
            ``num_classes`` (as :func:`~jumpstart.models.layer_widths` lists them).
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
        widths = base if widths is None else list(widths)[:len(base) + 1]
        if len(widths) not in (len(base), len(base) + 1):
            raise ValueError(f"widths lists {len(widths)} convs; VGG-{depth} has {len(base)}")
        self.depth, self.norm, self.mode = depth, norm, mode
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        channels, old_in, k = in_channels, None, 0
        for c in DEPTHS[depth]:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            total, old = split_of(widths[k])
            conv = SplitConv2d(channels, total, old_in=old_in, old_out=old, mode=mode,
                               bias=norm is None)
            he_fan_out_(conv.weight)
            layers.append(conv)
            if norm == "batch":
                bn = nn.BatchNorm2d(total)
                nn.init.constant_(bn.weight, BN_INIT)
                layers.append(bn)
            layers.append(nn.ReLU())
            channels, old_in, k = total, old, k + 1
        self.features = nn.Sequential(*layers)
        for m in self.features:
            if getattr(m, "bias", None) is not None and isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0.0, CLASSIFIER_STD)
        nn.init.zeros_(self.classifier.bias)
        self.head_split = (old_in if mode == "split" and old_in is not None
                           and 0 < old_in < channels else None)

    def convs(self) -> list[SplitConv2d]:
        """The hidden convs, input to output."""
        return [m for m in self.features if isinstance(m, SplitConv2d)]

    def nr_layers(self) -> list[NRLayer]:
        """Every conv as rejuvenation reads it: a chain, none fixed."""
        layers = list(self.features)
        out = []
        for i, m in enumerate(layers):
            if isinstance(m, SplitConv2d):
                bn = layers[i + 1] if isinstance(layers[i + 1], nn.BatchNorm2d) else None
                act = layers[i + 2 if bn is not None else i + 1]
                out.append(NRLayer(m, bn, act, len(out) - 1 if out else None))
        out[-1].head = True
        return out

    def rejuvenated(self, widths: list, mode: str) -> VGG:
        """A fresh VGG of this one's layout with ``widths`` (``[old, new]``
        per conv) in ``mode``, on the same device."""
        return VGG(self.depth, 1, self.classifier.out_channels, in_channels=self.in_channels,
                   norm=self.norm, widths=widths, mode=mode).to(self.classifier.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x).mean((2, 3))  # pooling first: the 1x1 conv is linear
        return self._head(h, self.classifier.weight, self.classifier.bias)


@register_model("vgg", images=True,
                text="Neural Rejuvenation's CIFAR VGG (first conv of width channels)")
def _vgg(r: ModelRequest) -> VGG:
    if r.options["activation"] != "relu" or r.options["skip"] is not None:
        raise ValueError("model vgg is a plain ReLU chain; the technique asks for "
                         f"{r.options['activation']} activations or skips")
    return VGG(r.depth, r.width, r.out_features, in_channels=r.shape[0],
               norm=r.options["norm"], widths=r.widths, mode=r.mode)
