"""jumpstart: Jumpstart regularization for plain, thin, deep ReLU networks.

Riera, Rey, Serra, Puertas, Pujol, "Training Thinner and Deeper Neural
Networks: Jumpstart Regularization", CPAIOR 2022; Riera, Puertas, Pujol,
"Unit-Centric Regularization for Efficient Deep Neural Networks", IEEE Access
2025.
"""

from .core import ActivationStatus, Jumpstart, activation_status, margin_deficits
from .diversification import Diversity, diversity

__version__ = "0.1.0"

__all__ = ["ActivationStatus", "Diversity", "Jumpstart", "activation_status", "diversity",
           "margin_deficits"]
