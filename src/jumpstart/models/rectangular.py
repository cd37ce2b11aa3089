"""Rectangular (depth x width) ReLU networks, dense or 3x3 conv, CPAIOR 2022 Sec. 4."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .registry import ModelRequest, register_model
from .split import NRLayer, TwoHeads

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
NORMS = (None, "batch")
INITS = ("glorot", "kaiming", "zero", "orthogonal", "decorrelated")
KINDS = ("dense", "conv")
HEADS = ("flatten", "maxavg")
#: defaults of the ``decorrelated`` init: data-free Adam steps and their rate
DECORRELATE_STEPS = 300
DECORRELATE_LR = 0.01


def decorrelate_(weight: Tensor, bias: Tensor | None = None, *, steps: int = DECORRELATE_STEPS,
                 lr: float = DECORRELATE_LR) -> Tensor:
    """Decorrelated initialization of one layer, in place (a reconstruction of
    Kovalenko et al. 2021 and its ICANN 2023 follow-up, which pre-optimize
    random weights by backpropagation to decorrelate them; see
    ``../shared/papers/neural-diversification.md``): ``steps`` data-free
    Adam steps at rate ``lr`` minimizing
    :func:`~jumpstart.core.correlation.weight_corr` of the rows of
    ``weight`` ``(H, ...)``, then a rescale back to the standard deviation
    the weights had (over all entries). The randomness is the starting draw:
    reproducible per seed, different across seeds. A layer of one unit, or of
    one input, has nothing to decorrelate and is left as drawn. Returns
    ``weight``."""
    from ..core.correlation import weight_corr

    if weight.shape[0] < 2 or weight[0].numel() < 2:  # one row, or one weight per row
        return weight
    std = weight.detach().std()
    w = weight.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    b = None if bias is None else bias.detach()
    for _ in range(steps):
        opt.zero_grad()
        weight_corr(w, b).backward()
        opt.step()
    with torch.no_grad():
        weight.copy_(w * (std / w.std()))
    return weight


def init_weights(layers, init: str, *, steps: int = DECORRELATE_STEPS,
                 lr: float = DECORRELATE_LR) -> None:
    """Initialize weighted layers in place: ``"glorot"`` (Glorot uniform, the
    Keras default the CPAIOR code used), ``"kaiming"`` (Kaiming normal, fan-in,
    ReLU gain), ``"zero"`` weights, ``"orthogonal"`` (orthogonal rows or
    columns, gain 1; Saxe et al. 2014) or ``"decorrelated"`` (Glorot, then
    :func:`decorrelate_` with ``steps`` and ``lr``: a reconstruction); biases
    always zero.

    Raises:
        ValueError: unknown ``init``.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    for layer in layers:
        if init in ("glorot", "decorrelated"):
            nn.init.xavier_uniform_(layer.weight)
        elif init == "kaiming":
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        elif init == "orthogonal":
            nn.init.orthogonal_(layer.weight)
        else:
            nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        if init == "decorrelated":
            decorrelate_(layer.weight, layer.bias, steps=steps, lr=lr)


class Rectangular(TwoHeads, nn.Module):
    """``depth`` hidden layers of ``width`` units, then a linear output layer.

    Hidden layer ``l`` (1-based) computes ``h_l = act(norm(W_l h_{l-1} + b_l))``;
    with ``skip=k`` a residual connection adds ``h_l`` to the pre-activation of
    layer ``l + k`` for ``l = 1, 1 + k, 1 + 2k, ...`` (ResNet-style, before the
    activation; layer 1 maps the input, so blocks start after it). Each hidden
    layer has its own activation module, so the pre-activation hooked by
    :class:`~jumpstart.Jumpstart` is the input of that module (after any
    normalization). The output layer has none.

    ``kind="conv"`` makes every hidden layer a 3x3 convolution with ``width``
    filters, "same" padding and no pooling (CPAIOR Sec. 4, MNIST and CIFAR);
    the head is ``"flatten"`` (flatten, then linear: the MNIST set-up) or
    ``"maxavg"`` (global max and average pooling concatenated, then linear:
    the CIFAR set-up).

    Args:
        depth: number of hidden layers, ``>= 1``.
        width: units (filters) per hidden layer, ``>= 1``.
        in_features: input size ``F`` (dense; input ``(N, F)``) or input
            channels ``C`` (conv; input ``(N, C, H, W)``).
        out_features: output size ``K``; output shape ``(N, K)`` (logits).
        activation: ``"relu"`` or ``"gelu"``.
        norm: ``None`` or ``"batch"`` (BatchNorm before each activation;
            the hidden layers then have no bias, which BN would cancel).
        skip: ``None`` or ``k >= 1``, residual span in layers.
        init: one of :data:`INITS`, see :func:`init_weights` (``"glorot"``:
            Glorot uniform weights, zero biases, the Keras default the CPAIOR
            code used).
        init_steps, init_lr: the ``"decorrelated"`` init's Adam steps and rate.
        kind: ``"dense"`` or ``"conv"``.
        head: conv only, ``"flatten"`` or ``"maxavg"``.
        input_size: conv with ``head="flatten"``: the input's ``(H, W)``.
        widths: per hidden layer, overriding ``width``: an int, or
            ``[old, new]`` for a layer Neural Rejuvenation grew (then the
            layers are :class:`~jumpstart.models.SplitLinear` /
            :class:`~jumpstart.models.SplitConv2d` halves, and in ``"split"``
            mode the output layer is two heads with a shared bias,
            :class:`~jumpstart.models.split.TwoHeads`); optionally followed
            by ``out_features`` (as :func:`~jumpstart.models.layer_widths`
            lists them). No skips. With the max+avg head the pooled features
            are then ordered ``[max_old, avg_old, max_new, avg_new]`` (the
            survivors' columns first; in ``"split"`` mode each head reads its
            own half).
        mode: ``"split"`` or ``"cross"`` (with ``[old, new]`` widths).

    Raises:
        ValueError: any argument outside the values above.
    """

    #: a rejuvenated max+avg net's old channels (its pooled features ``[max_old,
    #: avg_old, max_new, avg_new]``), else ``None``
    pool_split: int | None = None

    def __init__(
        self,
        depth: int,
        width: int,
        in_features: int,
        out_features: int,
        *,
        activation: str = "relu",
        norm: str | None = None,
        skip: int | None = None,
        init: str = "glorot",
        kind: str = "dense",
        head: str = "flatten",
        input_size: tuple[int, int] | None = None,
        init_steps: int = DECORRELATE_STEPS,
        init_lr: float = DECORRELATE_LR,
        widths: list | None = None,
        mode: str = "split",
    ) -> None:
        super().__init__()
        self._args = dict(activation=activation, norm=norm, kind=kind, head=head,
                          input_size=input_size)
        for name, value in (("depth", depth), ("width", width),
                            ("in_features", in_features), ("out_features", out_features)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; allowed: None, batch")
        if skip is not None and not (isinstance(skip, int) and skip >= 1):
            raise ValueError(f"skip must be None or an integer >= 1; got {skip!r}")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; allowed: {', '.join(HEADS)}")
        if kind == "conv" and head == "flatten" and not (
                input_size is not None and len(input_size) == 2
                and all(isinstance(v, int) and v >= 1 for v in input_size)):
            raise ValueError(f"a conv net with head 'flatten' needs input_size=(H, W); "
                             f"got {input_size!r}")
        if widths is not None:
            widths = list(widths)[:depth + 1]
            if len(widths) not in (depth, depth + 1) or skip:
                raise ValueError(f"widths: one entry per hidden layer ({depth}), for a net "
                                 f"without skips; got {widths!r}")
        self.depth, self.width, self.skip, self.kind, self.head = depth, width, skip, kind, head
        bias = norm is None  # BN cancels a bias (and Adam would amplify its noise gradient)
        group = input_size[0] * input_size[1] if kind == "conv" and head == "flatten" else 1
        if widths is None:
            dims = [in_features] + [width] * depth
            if kind == "dense":
                layers = [nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:])]
            else:
                layers = [nn.Conv2d(a, b, 3, padding=1, bias=bias)
                          for a, b in zip(dims[:-1], dims[1:])]
            last = width
        else:
            from .split import SplitConv2d, SplitLinear, split_of

            layers, fan_in, old_in = [], in_features, None
            for w in widths[:depth]:
                total, old = split_of(w)
                layers.append(SplitLinear(fan_in, total, old_in=old_in, old_out=old, mode=mode,
                                          bias=bias) if kind == "dense" else
                              SplitConv2d(fan_in, total, old_in=old_in, old_out=old, mode=mode,
                                          bias=bias))
                fan_in, old_in = total, old
            last = fan_in
            if old_in is not None and 0 < old_in < last:  # the last layer has both halves
                if kind == "conv" and head == "maxavg":
                    self.pool_split = old_in
                if mode == "split":
                    self.head_split = old_in * (2 if self.pool_split else group)
        norm_cls = nn.BatchNorm1d if kind == "dense" else nn.BatchNorm2d
        norms = (norm_cls(lin.weight.shape[0]) if norm else nn.Identity() for lin in layers)
        head_in = last * group if head == "flatten" or kind == "dense" else 2 * last
        #: the hidden weighted layers (nn.Linear, or nn.Conv2d for kind "conv")
        self.linears = nn.ModuleList(layers)
        self.norms = nn.ModuleList(norms)
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in range(depth))
        self.output = nn.Linear(head_in, out_features)
        init_weights([*self.linears, self.output], init, steps=init_steps, lr=init_lr)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, out_features)`` for ``x`` of shape ``(N, in_features)``
        (dense; ``(N, ...)`` with ``in_features`` entries per sample is
        flattened) or ``(N, C, H, W)`` (conv)."""
        if self.kind == "dense" and x.dim() > 2:
            x = x.flatten(1)  # images into a dense net: one feature per pixel
        k = self.skip
        residual = x
        for i, (lin, norm, act) in enumerate(zip(self.linears, self.norms, self.activations)):
            if k and i >= 1 and (i - 1) % k == 0:
                residual = x  # input of a block of k width -> width layers
            g = norm(lin(x))
            if k and i >= 1 and i % k == 0:
                g = g + residual
            x = act(g)
        if self.kind == "conv" and self.head == "flatten":
            x = x.flatten(1)
        elif self.kind == "conv":
            top, mean = x.amax(dim=(2, 3)), x.mean(dim=(2, 3))
            i = self.pool_split
            x = (torch.cat([top, mean], dim=1) if i is None else
                 torch.cat([top[:, :i], mean[:, :i], top[:, i:], mean[:, i:]], dim=1))
        if self.head_split is not None:
            return self._head(x, self.output.weight, self.output.bias)
        return self.output(x)

    def nr_layers(self) -> list[NRLayer]:
        """The hidden layers as Neural Rejuvenation reads them: a chain, none
        fixed, the output layer reading the last.

        Raises:
            ValueError: a net with skips.
        """
        if self.skip:
            raise ValueError("nr rejuvenates Rectangular nets without skips")
        out = [NRLayer(lin, norm if not isinstance(norm, nn.Identity) else None, act,
                       i - 1 if i else None)
               for i, (lin, norm, act) in enumerate(zip(self.linears, self.norms,
                                                        self.activations))]
        out[-1].head = True
        return out

    def rejuvenated(self, widths: list, mode: str) -> Rectangular:
        """A fresh net of this one's family with hidden ``widths``
        (``[old, new]`` each) in ``mode``, on the same device."""
        first = self.linears[0].weight
        return Rectangular(self.depth, self.width, first.shape[1], self.output.out_features,
                           widths=widths, mode=mode, **self._args).to(first.device)


@register_model("rectangular", supports={"population", "stacks"},
                text="dense Rectangular (images are flattened: an MLP on pixels)")
def _dense(r: ModelRequest) -> Rectangular:
    return Rectangular(r.depth, r.width, math.prod(r.shape), r.out_features, init=r.init,
                       init_steps=r.init_steps, init_lr=r.init_lr, widths=r.widths,
                       mode=r.mode, **r.options)


@register_model("conv", images=True,
                text="Rectangular of 3x3 convs with head flatten or maxavg (CPAIOR Sec. 4)")
def _conv(r: ModelRequest) -> Rectangular:
    return Rectangular(r.depth, r.width, r.shape[0], r.out_features, init=r.init, kind="conv",
                       head=r.head, input_size=r.shape[1:], init_steps=r.init_steps,
                       init_lr=r.init_lr, widths=r.widths, mode=r.mode, **r.options)
