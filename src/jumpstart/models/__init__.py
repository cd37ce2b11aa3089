"""Model families: rectangular dense nets (more to come: conv, ResNet)."""

from .rectangular import Rectangular

__all__ = ["Rectangular"]
