"""Rectangular (depth x width) dense ReLU networks, CPAIOR 2022 Sec. 4."""

from __future__ import annotations

from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
NORMS = (None, "batch")
INITS = ("glorot", "kaiming", "zero")


def init_weights(layers, init: str) -> None:
    """Initialize weighted layers in place: ``"glorot"`` (Glorot uniform, the
    Keras default the CPAIOR code used), ``"kaiming"`` (Kaiming normal, fan-in,
    ReLU gain) or ``"zero"`` weights; biases always zero.

    Raises:
        ValueError: unknown ``init``.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    for layer in layers:
        if init == "glorot":
            nn.init.xavier_uniform_(layer.weight)
        elif init == "kaiming":
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        else:
            nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


class Rectangular(nn.Module):
    """``depth`` hidden layers of ``width`` units, then a linear output layer.

    Hidden layer ``l`` (1-based) computes ``h_l = act(norm(W_l h_{l-1} + b_l))``;
    with ``skip=k`` a residual connection adds ``h_l`` to the pre-activation of
    layer ``l + k`` for ``l = 1, 1 + k, 1 + 2k, ...`` (ResNet-style, before the
    activation; layer 1 maps the input, so blocks start after it). Each hidden layer has its own activation module, so the
    pre-activation hooked by :class:`~jumpstart.Jumpstart` is the input of
    that module (after any normalization). The output layer has none.

    Args:
        depth: number of hidden layers, ``>= 1``.
        width: units per hidden layer, ``>= 1``.
        in_features: input size ``F``; input shape ``(N, F)``.
        out_features: output size ``K``; output shape ``(N, K)`` (logits).
        activation: ``"relu"`` or ``"gelu"``.
        norm: ``None`` or ``"batch"`` (BatchNorm1d before each activation;
            the hidden linear layers then have no bias, which BN would cancel).
        skip: ``None`` or ``k >= 1``, residual span in layers.
        init: ``"glorot"`` (Glorot uniform weights, zero biases; the Keras
            default the CPAIOR code used), ``"kaiming"`` (Kaiming normal,
            fan-in, ReLU gain; zero biases) or ``"zero"`` (all zeros).

    Raises:
        ValueError: any argument outside the values above.
    """

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
    ) -> None:
        super().__init__()
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
        self.depth, self.width, self.skip = depth, width, skip
        dims = [in_features] + [width] * depth
        # a bias before batch normalization is cancelled by it (and Adam would
        # only amplify its rounding-noise gradient), so normalized layers have none
        self.linears = nn.ModuleList(nn.Linear(a, b, bias=norm is None)
                                     for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(width) if norm == "batch" else nn.Identity() for _ in range(depth)
        )
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in range(depth))
        self.output = nn.Linear(width, out_features)
        init_weights([*self.linears, self.output], init)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape ``(N, out_features)`` for ``x`` of shape ``(N, in_features)``."""
        k = self.skip
        residual = x
        for i, (lin, norm, act) in enumerate(zip(self.linears, self.norms, self.activations)):
            if k and i >= 1 and (i - 1) % k == 0:
                residual = x  # input of a block of k width -> width layers
            g = norm(lin(x))
            if k and i >= 1 and i % k == 0:
                g = g + residual
            x = act(g)
        return self.output(x)
