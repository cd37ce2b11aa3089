"""The pieces Neural Rejuvenation's models share (Qiao et al., CVPR 2019;
``../shared/papers/neural-rejuvenation.md`` Secs. 4-5): convolutions split
into an old and a new half, the two-head classifier, and the description of
a model's convs that rejuvenation reads (:class:`NRLayer`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SPLIT_MODES = ("split", "cross")
#: standard deviation of a classifier's initial (and rejuvenated) columns
CLASSIFIER_STD = 0.01


def he_fan_out_(weight: Tensor) -> Tensor:
    """``N(0, 2 / (kh * kw * C_out))`` in place (the authors' conv init, and
    NR's draw for rejuvenated kernels); ``weight`` ``(C_out, C_in, kh, kw)``."""
    n = weight.shape[0] * weight[0, 0].numel()
    with torch.no_grad():
        return weight.normal_(0.0, (2.0 / n) ** 0.5)


class _Halves:
    """The old/new split shared by :class:`SplitConv2d` and :class:`SplitLinear`
    (NR Sec. 5; the authors' ``_AttConv2d``): the outputs are ``old_out`` old
    and the rest new ones, the inputs split the same way at ``old_in``.

    Split (:attr:`is_split`: ``old_in`` and ``old_out`` both cut their side
    in two non-empty parts): with ``x_o = x[:, :old_in]``,
    ``x_n = x[:, old_in:]`` and the weight's blocks ``W_oo, W_on, W_no, W_nn``
    (rows old/new outputs, columns old/new inputs):

    - ``mode="split"`` (the CIFAR scheme): ``cat[W_oo x_o, W_nn x_n]``, two
      disjoint networks; the cross blocks are never used;
    - ``mode="cross"`` (the ImageNet cross-attention): ``A = W_oo x_o``,
      ``B = W_on x_n``, ``y_o = A + B * 2 sigmoid(A)``, and symmetrically
      ``y_n = D + C * 2 sigmoid(D)`` with ``D = W_nn x_n``, ``C = W_no x_o``.

    Otherwise (a layer reading the network input, or one whose inputs or
    outputs did not grow) the plain layer over every input.
    """

    def _halves(self, old_in, old_out, mode) -> None:
        if mode not in SPLIT_MODES:
            raise ValueError(f"unknown split mode {mode!r}; allowed: {', '.join(SPLIT_MODES)}")
        self.old_out, self.mode = old_out, mode
        self.old_in = old_in if old_out is not None else None

    @property
    def is_split(self) -> bool:
        """Both the inputs and the outputs have an old and a new part."""
        return (self.old_in is not None and 0 < self.old_in < self.weight.shape[1]
                and 0 < self.old_out < self.weight.shape[0])

    def _split_forward(self, x: Tensor, op) -> Tensor:
        i, o, w, b = self.old_in, self.old_out, self.weight, self.bias
        xo, xn = x[:, :i], x[:, i:]
        bo, bn = (None, None) if b is None else (b[:o], b[o:])
        a, d = op(xo, w[:o, :i], bo), op(xn, w[o:, i:], bn)
        if self.mode == "cross":
            a = a + op(xn, w[:o, i:], None) * 2 * torch.sigmoid(a)
            d = d + op(xo, w[o:, :i], None) * 2 * torch.sigmoid(d)
        return torch.cat([a, d], 1)


class SplitConv2d(_Halves, nn.Conv2d):
    """A conv (``"same"`` padding) with old and new halves (see
    :class:`_Halves`). Shapes ``(N, C_in, H, W) -> (N, C_out, H', W')``.

    Raises:
        ValueError: unknown ``mode``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 stride: int = 1, old_in: int | None = None, old_out: int | None = None,
                 mode: str = "split", bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=kernel_size // 2, bias=bias)
        self._halves(old_in, old_out, mode)

    def forward(self, x: Tensor) -> Tensor:
        return self._split_forward(x, self._conv_forward) if self.is_split else super().forward(x)


class SplitLinear(_Halves, nn.Linear):
    """A linear layer with old and new halves (see :class:`_Halves`): the
    dense version of :class:`SplitConv2d`. Shapes ``(N, F_in) -> (N, F_out)``.

    Raises:
        ValueError: unknown ``mode``.
    """

    def __init__(self, in_features: int, out_features: int, *, old_in: int | None = None,
                 old_out: int | None = None, mode: str = "split", bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._halves(old_in, old_out, mode)

    def forward(self, x: Tensor) -> Tensor:
        return self._split_forward(x, F.linear) if self.is_split else super().forward(x)


def split_of(width) -> tuple[int, int | None]:
    """``(total, old)`` of a :func:`~jumpstart.models.layer_widths` entry:
    ``c -> (c, None)``, ``[old, new] -> (old + new, old)``."""
    if isinstance(width, (list, tuple)):
        return int(width[0]) + int(width[1]), int(width[0])
    return int(width), None


class TwoHeads:
    """The classifier of a rejuvenated net in ``"split"`` mode (NR Sec. 5):
    the same weights and one shared bias applied to each half of the pooled
    features ``h`` ``(N, C)``, ``z_old = W_o h_o + b``, ``z_new = W_n h_n + b``;
    the logits are ``z_old + z_new`` (the authors' prediction is its argmax)
    and the halves are kept for the two-head loss. A mixin for the models:
    they set ``head_split`` (old channels, or ``None``: one classifier) and
    call :meth:`_head`."""

    head_split: int | None = None
    halves: tuple[Tensor, Tensor] | None = None

    def _head(self, h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        weight = weight.flatten(1)
        if self.head_split is None:
            return F.linear(h, weight, bias)
        i = self.head_split
        z_old, z_new = F.linear(h[:, :i], weight[:, :i], bias), F.linear(h[:, i:], weight[:, i:], bias)
        self.halves = (z_old, z_new)
        return z_old + z_new


@dataclass
class NRLayer:
    """One conv as rejuvenation reads it.

    Attributes:
        conv: the conv or linear layer (rows are its channels or units).
        bn: the BatchNorm after it, or ``None`` (a plain net).
        act: the ReLU module that reads it (``None``: its output is added to
            a residual stream first, or it has none).
        source: index (in the model's list) of the conv whose output it reads,
            ``None`` for the network input.
        fixed: the authors' fixed layers (a ResNet's stem, last conv of each
            block and shortcuts): never penalized, every channel live, width
            ``int(C r)`` after rejuvenation.
        head: the classifier reads its output (one conv per model).
    """

    conv: nn.Module
    bn: nn.Module | None
    act: nn.Module | None
    source: int | None
    fixed: bool = False
    head: bool = False


def effective_params(model: nn.Module) -> int:
    """Parameters a forward uses: every parameter, except that a split conv
    in ``"split"`` mode counts only its two diagonal blocks (old x old and
    new x new; the cross blocks stay 0 and unused). The authors' README
    counts NR's CIFAR nets this way (spec Sec. 6: about half the baseline's
    conv weights at ``r = 2``)."""
    total = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, _Halves) and m.is_split and m.mode == "split":
            k = m.weight[0, 0].numel()
            new_out, new_in = m.weight.shape[0] - m.old_out, m.weight.shape[1] - m.old_in
            total -= (m.old_out * new_in + new_out * m.old_in) * k
    return total
