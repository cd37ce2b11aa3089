"""Data sets: MOONS (more to come: UCI tables, MNIST, CIFAR, ImageFolder)."""

from .base import Dataset
from .moons import moons

DATASETS = {"moons": moons}

__all__ = ["DATASETS", "Dataset", "moons"]
