"""Model families: rectangular dense nets, the MOONS conv net (more to come: conv, ResNet)."""

from .moons_conv import MoonsConv
from .rectangular import Rectangular

__all__ = ["MoonsConv", "Rectangular"]
