"""Model families: Rectangular dense and 3x3-conv nets, the MOONS conv net,
the ResNet family with batch-norm and skip switches, and Neural
Rejuvenation's CIFAR VGG and bottleneck ResNet; each registers itself in
:data:`MODEL_FAMILIES` (:mod:`jumpstart.models.registry`)."""

from .registry import MODEL_FAMILIES, ModelFamily, ModelRequest, model_family, register_model
from .moons_conv import MoonsConv
from .rectangular import Rectangular
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from .vgg import VGG
from .cifar_resnet import CifarResNet
from .split import SplitConv2d

__all__ = ["MODEL_FAMILIES", "ModelFamily", "ModelRequest", "model_family", "register_model",
           "CifarResNet", "MoonsConv", "Rectangular", "ResNet", "SplitConv2d", "VGG", "resnet18", "resnet34",
           "resnet50", "resnet101", "resnet152"]


def layer_widths(model) -> list[int]:
    """The architecture of ``model`` as the output sizes of its ``nn.Linear``
    (``out_features``) and ``nn.Conv*`` (``out_channels``) layers, in module
    order (the output layer last for the families here). A run records it so
    that a model a technique reshaped (widened, pruned) can be rebuilt. A
    rejuvenated split layer is listed as ``[old, new]`` channels or units
    (Neural Rejuvenation)."""
    from torch import nn

    def width(m):
        if getattr(m, "old_out", None) is not None:
            return [m.old_out, m.weight.shape[0] - m.old_out]
        return m.out_features if isinstance(m, nn.Linear) else m.out_channels

    return [width(m) for m in model.modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


__all__ += ["layer_widths"]
