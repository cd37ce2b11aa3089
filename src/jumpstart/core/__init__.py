"""The method: margin deficits, the Jumpstart regularizer, activation status."""

from .deficits import Deficits, margin_deficits, member_deficits
from .regularizer import AGGREGATIONS, CONSTRAINTS, Jumpstart, LayerDeficits, aggregate
from .status import ActivationStatus, activation_status

__all__ = [
    "AGGREGATIONS", "CONSTRAINTS", "ActivationStatus", "Deficits", "Jumpstart",
    "LayerDeficits", "activation_status", "aggregate", "margin_deficits", "member_deficits",
]
