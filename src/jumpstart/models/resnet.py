"""The ResNet family in torchvision's layout, with switches for batch
normalization and skip connections (IEEE Access 2025: a ResNet-50 with neither,
trained with Jumpstart, matches the standard one on ImageNet).

With ``norm="batch"``, ``skip=True`` and ``bias=False`` the nets are
torchvision's (``resnet50``: 25,557,032 parameters). Every ReLU is its own
module, so :class:`~jumpstart.Jumpstart` and
:func:`~jumpstart.activation_status` see one layer per activation.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import ModelRequest, register_model

#: depth -> (block kind, blocks per stage), torchvision's table
LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
           152: ("bottleneck", (3, 8, 36, 3))}
STAGE_PLANES = (64, 128, 256, 512)


def _norm(norm: str | None, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


class Block(nn.Module):
    """A residual block: ``basic`` (3x3, 3x3; expansion 1) or ``bottleneck``
    (1x1, 3x3 with the stride, 1x1; expansion 4). With ``skip`` the input (or
    its 1x1-conv projection when the shape changes) is added before the last
    ReLU; without it the block is a plain stack of convs."""

    def __init__(self, kind: str, inplanes: int, planes: int, stride: int, *, norm, skip: bool,
                 bias: bool, width_multiplier: float) -> None:
        super().__init__()
        self.expansion = 1 if kind == "basic" else 4
        out = planes * self.expansion
        if kind == "basic":
            shapes = [(inplanes, planes, 3, stride), (planes, out, 3, 1)]
        else:
            inner = max(1, int(round(planes * width_multiplier)))
            shapes = [(inplanes, inner, 1, 1), (inner, inner, 3, stride), (inner, out, 1, 1)]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, k, stride=s, padding=k // 2, bias=bias)
                                   for a, b, k, s in shapes)
        self.norms = nn.ModuleList(_norm(norm, b) for _, b, _, _ in shapes)
        self.activations = nn.ModuleList(nn.ReLU() for _ in shapes)
        self.skip = skip
        self.downsample = None
        if skip and (stride != 1 or inplanes != out):
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=bias), _norm(norm, out))

    def forward(self, x: Tensor) -> Tensor:
        """Output ``(N, planes * expansion, H / stride, W / stride)`` for ``x`` ``(N, C, H, W)``."""
        identity = x
        last = len(self.convs) - 1
        for i, (conv, norm, act) in enumerate(zip(self.convs, self.norms, self.activations)):
            g = norm(conv(x))
            if i == last and self.skip:
                g = g + (identity if self.downsample is None else self.downsample(identity))
            x = act(g)
        return x


class ResNet(nn.Module):
    """ResNet-``depth`` (18, 34, 50, 101, 152): stem (7x7/2 conv, norm, ReLU,
    3x3/2 max pool), four stages of blocks (planes 64/128/256/512, strides
    1/2/2/2), global average pooling, linear classifier.

    Args:
        depth: one of 18, 34, 50, 101, 152.
        norm: ``"batch"`` (BatchNorm2d after every conv) or ``None``.
        skip: residual connections on (with 1x1 projections where shapes
            change) or off (a plain net, IEEE Access 2025).
        bias: conv biases (torchvision: none).
        width_multiplier: scales the inner (3x3) width of bottleneck blocks
            (torchvision's ``wide_resnet50_2`` is 2.0); basic blocks ignore it.
        num_classes: classifier outputs ``K``.

    Input ``(N, 3, H, W)``, output logits ``(N, K)``. Convs are initialized
    Kaiming normal (fan-out, ReLU gain), BN weights 1 and biases 0, conv
    biases 0, as torchvision does.

    Raises:
        ValueError: unknown depth or norm, ``width_multiplier <= 0``,
            ``num_classes < 1``.
    """

    def __init__(self, depth: int = 50, *, norm: str | None = "batch", skip: bool = True,
                 bias: bool = False, width_multiplier: float = 1.0,
                 num_classes: int = 1000) -> None:
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"unknown ResNet depth {depth!r}; allowed: {', '.join(map(str, LAYOUTS))}")
        if norm not in (None, "batch"):
            raise ValueError(f"unknown norm {norm!r}; allowed: None, batch")
        if not width_multiplier > 0:
            raise ValueError(f"width_multiplier must be > 0; got {width_multiplier!r}")
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f"num_classes must be an integer >= 1; got {num_classes!r}")
        kind, counts = LAYOUTS[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=bias)
        self.norm1 = _norm(norm, 64)
        self.relu1 = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        blocks, inplanes = [], 64
        for stage, (planes, count) in enumerate(zip(STAGE_PLANES, counts)):
            for b in range(count):
                stride = 2 if stage > 0 and b == 0 else 1
                block = Block(kind, inplanes, planes, stride, norm=norm, skip=skip, bias=bias,
                              width_multiplier=width_multiplier)
                blocks.append(block)
                inplanes = planes * block.expansion
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, 3, H, W)``."""
        x = self.maxpool(self.relu1(self.norm1(self.conv1(x))))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2); options as :class:`ResNet`."""
    return ResNet(18, **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3); options as :class:`ResNet`."""
    return ResNet(34, **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (bottleneck blocks 3-4-6-3); options as :class:`ResNet`.
    ``resnet50(norm=None, skip=False)`` is the IEEE Access 2025 plain net."""
    return ResNet(50, **kwargs)


def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (bottleneck blocks 3-4-23-3); options as :class:`ResNet`."""
    return ResNet(101, **kwargs)


def resnet152(**kwargs) -> ResNet:
    """ResNet-152 (bottleneck blocks 3-8-36-3); options as :class:`ResNet`."""
    return ResNet(152, **kwargs)


@register_model("resnet", images=True, fractional_width=True,
                text="ResNet 18-152, width a multiplier; BN and skips only if the technique "
                     "adds them")
def _resnet(r: ModelRequest) -> ResNet:
    if r.options["activation"] != "relu":
        raise ValueError(f"model resnet has ReLU activations only; the technique asks for "
                         f"{r.options['activation']}")
    if r.shape[0] != 3:
        raise ValueError(f"model resnet takes RGB images (3 channels); {r.dataset} has "
                         f"{r.shape[0]}")
    if not (isinstance(r.width, (int, float)) and r.width > 0):
        raise ValueError(f"width (the width multiplier) must be > 0 for model resnet; "
                         f"got {r.width!r}")
    return ResNet(r.depth, norm=r.options["norm"], skip=r.options["skip"] is not None,
                  width_multiplier=float(r.width), num_classes=r.out_features)
