"""The method: margin deficits, the Jumpstart regularizer, activation status."""

from .deficits import Deficits, margin_deficits, member_deficits
from .hooks import HIDDEN_ACTIVATIONS, PreActivationHooks
from .regularizer import (AGGREGATIONS, CONSTRAINTS, JUMPSTART_OPTIONS, Jumpstart,
                          LayerDeficits, aggregate)
from .status import ActivationStatus, activation_status

__all__ = [
    "AGGREGATIONS", "CONSTRAINTS", "HIDDEN_ACTIVATIONS", "JUMPSTART_OPTIONS", "ActivationStatus",
    "Deficits", "Jumpstart", "LayerDeficits", "PreActivationHooks", "activation_status",
    "aggregate", "margin_deficits", "member_deficits",
]
