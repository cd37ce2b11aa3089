"""Model families: Rectangular dense and 3x3-conv nets, the MOONS conv net,
the ResNet family with batch-norm and skip switches."""

from .moons_conv import MoonsConv
from .rectangular import Rectangular
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152

__all__ = ["MoonsConv", "Rectangular", "ResNet", "resnet18", "resnet34", "resnet50",
           "resnet101", "resnet152"]
