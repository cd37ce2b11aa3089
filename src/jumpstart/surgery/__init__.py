"""Unit surgery: re-draw, silence, add and remove hidden units of a network.

The operations ReDo and Continual Backprop recycle units with
(``../shared/papers/recycling.md``), and the exact pruning of dead units
(:func:`prune_dead`). A *hidden layer* here is a weighted module
(``nn.Linear`` or ``nn.Conv2d``) whose outputs (units: rows of its weight,
output channels) go through an optional BatchNorm and an activation and are
read by the next weighted module(s), its *readers*. :func:`hidden_layers`
finds them in the toolkit's nets (:class:`~jumpstart.models.Rectangular`
dense and conv, with or without BatchNorm, :class:`~jumpstart.models.MoonsConv`,
the ResNet family's convs inside a block) and in plain ``nn.Sequential``
chains of Linear/Conv2d (+ BatchNorm) + activation; the output layer is never
a hidden layer.

Every operation says which entries it touches and returns them as
``(parameter, index)`` pairs; given an ``optimizer`` it keeps the optimizer
consistent: in-place operations zero the state of the touched entries
(:func:`jumpstart.optim.zero_state`: Adam moments, momentum; a scalar step
count is kept), operations that change a shape move the survivors' state to
the new parameters and give new entries fresh (zero) state
(:func:`jumpstart.optim.move_state`).

The package: layer discovery (:mod:`.layers`), the unit operations
(:mod:`.units`), exact compression (:mod:`.compression`).
"""

from .compression import CompressionReport, fold_linear, prune_dead
from .graph import EXACT_OPS, UnitGraph, UnitGroup
from .layers import (NORMS, PASS_THROUGH, WEIGHTED, HiddenLayer, Reader, hidden_layers, known_model,
                     layer_outputs, layers_of)
from .units import (INITS, Touched, absorb, draw, outgoing_weight_sum, prune_units, reinit_units,
                    silence_units, widen, zero_outgoing)

__all__ = ["EXACT_OPS", "INITS", "NORMS", "PASS_THROUGH", "WEIGHTED", "CompressionReport", "HiddenLayer",
           "Reader", "Touched", "UnitGraph", "UnitGroup", "absorb", "draw", "fold_linear", "hidden_layers", "known_model", "layer_outputs", "layers_of",
           "outgoing_weight_sum", "prune_dead", "prune_units", "reinit_units", "silence_units",
           "widen", "zero_outgoing"]
