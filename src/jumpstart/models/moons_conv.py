"""The MOONS network as the CPAIOR 2022 authors' Keras code ran it (Fig. 2).

See ``shared/papers/jumpstart-experiments.md``, "MOONS": each 2-D point is a
single-channel 2x1 "image", every hidden layer a Conv2D with kernel (2, 1) and
TensorFlow "same" padding (one zero row at the bottom), so a layer holds
2 positions x ``width`` channels with weights shared across the positions.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .rectangular import init_weights
from .registry import ModelRequest, register_model


class MoonsConv(nn.Module):
    """``depth`` conv layers of ``width`` filters on 2-D points, then one logit.

    The input ``x`` of shape ``(N, 2)`` is viewed as ``(N, 1, 2, 1)`` (the two
    coordinates stacked on the height axis). Hidden layer ``l`` pads one zero
    row at the bottom and applies ``convs[l]`` (kernel ``(2, 1)``, bias), so
    its pre-activation has shape ``(N, width, 2, 1)``: position 0 sees rows
    (0, 1) of its input, position 1 sees row 1 and the zero row. Each layer has
    its own ``nn.ReLU`` in ``activations``, whose input is the pre-activation
    :class:`~jumpstart.Jumpstart` hooks (use ``granularity="position"`` for the
    authors' per-(position, channel) deficits). The last hidden output is
    flattened to ``2 * width`` features and mapped by ``output`` to the logit.

    Attributes:
        convs: ``nn.ModuleList`` of ``depth`` ``nn.Conv2d(C_in, width, (2, 1))``,
            ``C_in = 1`` for the first, ``width`` for the others.
        activations: ``nn.ModuleList`` of ``depth`` ``nn.ReLU``.
        output: ``nn.Linear(2 * width, 1)``.

    Args:
        depth: number of hidden conv layers, ``>= 1``.
        width: filters per hidden layer, ``>= 1``.
        init: ``"glorot"`` (Glorot uniform weights, zero biases, as Keras: a conv
            weight has fan-in ``2 * C_in`` and fan-out ``2 * width``),
            ``"kaiming"`` (Kaiming normal, fan-in, ReLU gain; zero biases) or
            ``"zero"`` (all zeros).

    Raises:
        ValueError: ``depth`` or ``width`` not an integer ``>= 1``, or an
            unknown ``init``; at forward time, ``x`` not of shape ``(N, 2)``.
    """

    def __init__(self, depth: int, width: int, *, init: str = "glorot") -> None:
        super().__init__()
        for name, value in (("depth", depth), ("width", width)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        self.depth, self.width = depth, width
        channels = [1] + [width] * depth
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size=(2, 1)) for a, b in zip(channels[:-1], channels[1:])
        )
        self.activations = nn.ModuleList(nn.ReLU() for _ in range(depth))
        self.output = nn.Linear(2 * width, 1)
        init_weights([*self.convs, self.output], init)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape ``(N, 1)`` for points ``x`` of shape ``(N, 2)``."""
        if x.dim() != 2 or x.shape[1] != 2:
            raise ValueError(f"MoonsConv expects points of shape (N, 2); got {tuple(x.shape)}")
        h = x.reshape(x.shape[0], 1, 2, 1)
        for conv, act in zip(self.convs, self.activations):
            h = act(conv(F.pad(h, (0, 0, 0, 1))))  # one zero row at the bottom
        return self.output(h.flatten(1))


@register_model("moons_conv", supports={"stacks"}, datasets=("moons",), model_options=False,
                text="the CPAIOR Keras MOONS conv net (MoonsConv; the moons data set only)")
def _moons_conv(r: ModelRequest) -> MoonsConv:
    return MoonsConv(r.depth, r.width)
