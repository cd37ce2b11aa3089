"""Model families: Rectangular dense and 3x3-conv nets, the MOONS conv net,
the ResNet family with batch-norm and skip switches."""

from .moons_conv import MoonsConv
from .rectangular import Rectangular
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152

__all__ = ["MoonsConv", "Rectangular", "ResNet", "resnet18", "resnet34", "resnet50",
           "resnet101", "resnet152"]


def layer_widths(model) -> list[int]:
    """The architecture of ``model`` as the output sizes of its ``nn.Linear``
    (``out_features``) and ``nn.Conv*`` (``out_channels``) layers, in module
    order (the output layer last for the families here). A run records it so
    that a model a technique reshaped (widened, pruned) can be rebuilt."""
    from torch import nn

    return [m.out_features if isinstance(m, nn.Linear) else m.out_channels
            for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


__all__ += ["layer_widths"]
