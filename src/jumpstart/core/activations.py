"""The activations jumpstart knows: how to recognize them, and their regions.

A hidden layer's pre-activation ``g`` feeds an activation ``f``. CPAIOR 2022
(Definitions 1 and 2) calls a ReLU unit *dead* when ``g <= 0`` on every input
(no gradient passes) and *linear* when ``g > 0`` on every input (it computes a
linear function). Other activations have other pieces; each kind here lists
its pieces as intervals of ``g`` with the label of a unit whose values all
lie in one of them (values in two pieces or more: *nonlinear*):

==================  ===========================================  ==================
kind                pieces of ``g`` (upper bounds)               labels
==================  ===========================================  ==================
relu                ``(-inf, 0]``, ``(0, inf)``                   dead, linear
relu6               ``(-inf, 0]``, ``(0, 6]``, ``(6, inf)``       dead, linear, saturated
leaky_relu, prelu   ``(-inf, 0]``, ``(0, inf)``                   negative, linear
hardtanh            ``(-inf, lo]``, ``(lo, hi]``, ``(hi, inf)``   saturated, linear, saturated
hardswish           ``(-inf, -3]``, ``(-3, 3]``, ``(3, inf)``     dead, nonlinear, linear
gelu, silu          ``(-inf, 0]``, ``(0, inf)``                   dead, linear
==================  ===========================================  ==================

LeakyReLU and PReLU units on the negative piece still pass gradient (slope
``a``), so they are reported *negative*, not dead. GELU and SiLU are smooth:
they use the regions of their ReLU envelope (``f(g) -> 0`` for ``g << 0``,
``f(g) -> g`` for ``g >> 0``), an approximation stated here and in the docs:
a GELU unit with ``g <= 0`` everywhere still passes a little gradient.

Recognized: the module classes of each kind, any parameterless module whose
output on a probe equals one kind's (so timm's own ``GELU`` class counts,
:func:`kind_of_module`), and the functional forms (``F.relu``,
``torch.relu``, ``Tensor.relu``, ``F.gelu``, ...: :data:`FUNCTIONS`).

The Jumpstart penalty's margin constraints stay at ``0`` for every kind (the
papers' constraints, CPAIOR eqs. (3)-(6)): they keep each unit and point
with values on both sides of the kink every kind here has at 0 (hardtanh's
linear piece spans it). A saturated ReLU6 unit (all ``g > 6``) violates the
unit-negative constraint (``min g <= -m``), so the penalty already pulls it
back through 0; constraints at 6 would add a second margin per unit for no
case the first misses. This is our choice; the papers treat ReLU only.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEAD, LINEAR, NONLINEAR, SATURATED, NEGATIVE = 0, 1, 2, 3, 4
#: label of each status code, by code
STATUS_NAMES = ("dead", "linear", "nonlinear", "saturated", "negative")


@dataclass(frozen=True)
class Kind:
    """One activation kind.

    Attributes:
        name: e.g. ``"relu"``.
        classes: its ``nn.Module`` classes.
        functions: its functional forms, as ``torch`` passes them to a
            ``TorchFunctionMode``.
        reference: ``f(g)`` out of place (for the probe and for measuring
            ``|f(g)|``), with the module's or call's parameters.
        pieces: ``(upper bound, label)`` pairs, last bound ``inf``; a value
            ``v`` is in the first piece whose bound is ``>= v``.
    """

    name: str
    classes: tuple[type[nn.Module], ...]
    functions: tuple[Callable, ...]
    reference: Callable[[Tensor], Tensor]
    pieces: tuple[tuple[float, int], ...]


INF = math.inf
_RELU_PIECES = ((0.0, DEAD), (INF, LINEAR))
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("relu", (nn.ReLU,), (F.relu, torch.relu, torch.relu_, F.relu_, Tensor.relu,
                              Tensor.relu_), torch.relu, _RELU_PIECES),
    Kind("relu6", (nn.ReLU6,), (F.relu6,), F.relu6, ((0.0, DEAD), (6.0, LINEAR), (INF, SATURATED))),
    Kind("leaky_relu", (nn.LeakyReLU,), (F.leaky_relu, F.leaky_relu_), F.leaky_relu,
         ((0.0, NEGATIVE), (INF, LINEAR))),
    Kind("prelu", (nn.PReLU,), (F.prelu,), F.leaky_relu, ((0.0, NEGATIVE), (INF, LINEAR))),
    Kind("hardtanh", (nn.Hardtanh,), (F.hardtanh, F.hardtanh_), F.hardtanh,
         ((-1.0, SATURATED), (1.0, LINEAR), (INF, SATURATED))),
    Kind("hardswish", (nn.Hardswish,), (F.hardswish,), F.hardswish,
         ((-3.0, DEAD), (3.0, NONLINEAR), (INF, LINEAR))),
    Kind("gelu", (nn.GELU,), (F.gelu,), F.gelu, _RELU_PIECES),
    Kind("silu", (nn.SiLU,), (F.silu,), F.silu, _RELU_PIECES),
)}
#: every class of every kind (ReLU6 and Hardtanh share a base: most derived first)
CLASSES: tuple[type[nn.Module], ...] = (nn.ReLU6, *(c for k in KINDS.values() for c in k.classes
                                                    if c is not nn.ReLU6))
#: functional form -> kind name
FUNCTIONS: dict[Callable, str] = {f: k.name for k in KINDS.values() for f in k.functions}

_PROBE = torch.linspace(-8, 8, 321).reshape(1, 321)
#: each kind's output on the probe, computed once (LeakyReLU: per slope, in the probe)
_REFERENCES = {**{name: KINDS[name].reference(_PROBE)
                  for name in ("relu", "relu6", "hardswish", "silu", "gelu", "hardtanh")},
               "gelu_tanh": F.gelu(_PROBE, approximate="tanh")}


def pieces_of(kind: str, module: nn.Module | None = None,
              args: tuple = (), kwargs: dict | None = None) -> tuple[tuple[float, int], ...]:
    """The pieces of ``kind`` with the parameters of ``module`` (or of a
    functional call's ``args``/``kwargs``): only hardtanh's bounds vary."""
    pieces = KINDS[kind].pieces
    if kind == "hardtanh":
        kwargs = kwargs or {}
        lo = getattr(module, "min_val", kwargs.get("min_val", args[1] if len(args) > 1 else -1.0))
        hi = getattr(module, "max_val", kwargs.get("max_val", args[2] if len(args) > 2 else 1.0))
        pieces = ((float(lo), SATURATED), (float(hi), LINEAR), (INF, SATURATED))
    return pieces


def _probeable(module: nn.Module) -> bool:
    """Whether calling ``module`` on a probe is safe: a leaf with no
    parameters and no buffers whose ``forward`` takes exactly one argument
    (a function of one tensor, so no state to disturb: e.g. not a
    torchmetrics ``Metric``, whose ``forward(*args)`` updates its state)."""
    if any(True for _ in module.children()) or any(True for _ in module.parameters()) \
            or any(True for _ in module.buffers()):
        return False
    try:
        params = list(inspect.signature(type(module).forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return False
    return len(params) >= 1 and params[0].kind in (params[0].POSITIONAL_ONLY,
                                                   params[0].POSITIONAL_OR_KEYWORD) \
        and all(p.default is not p.empty or p.kind == p.VAR_KEYWORD for p in params[1:]) \
        and not any(p.kind == p.VAR_POSITIONAL for p in params)


def kind_of_module(module: nn.Module) -> str | None:
    """The kind of ``module``: by class, else, for a module of unknown class
    that is a function of one tensor (a leaf, no parameters or buffers,
    ``forward`` of one argument), by its output on a probe (``-8 .. 8``)
    equal to one kind's reference to 1e-5 (LeakyReLU with the module's own
    slope); ``None`` when neither (a probe that raises is no match)."""
    for kind in KINDS.values():
        if isinstance(module, kind.classes):
            return kind.name
    if not _probeable(module):
        return None
    try:
        with torch.no_grad():
            y = module(_PROBE.clone())
    except Exception:  # not an elementwise function of one tensor
        return None
    if not isinstance(y, Tensor) or y.shape != _PROBE.shape:
        return None
    candidates = dict(_REFERENCES)
    slope = float(y[0, 0] / _PROBE[0, 0])
    if 0 < slope < 1:
        candidates["leaky_relu"] = F.leaky_relu(_PROBE, slope)
    for name, ref in candidates.items():
        if torch.allclose(y.float(), ref, atol=1e-5, rtol=1e-5):
            return "gelu" if name == "gelu_tanh" else name
    return None


def post_activation(module: nn.Module | None, g: Tensor) -> Tensor:
    """``module``'s output for ``g``, computed out of place (an in-place
    activation would overwrite ``g``) and without the module's hooks (a
    hooked activation would report ``g`` again); ReLU when ``module`` is
    ``None`` (pre-activations taken from listed ``layers``, whose activation
    is not known)."""
    if module is None or isinstance(module, nn.ReLU):
        return torch.relu(g)
    return module.forward(g.clone() if getattr(module, "inplace", False) else g)


def region_codes(mx: Tensor, mn: Tensor, pieces: tuple[tuple[float, int], ...]) -> Tensor:
    """The status code of each element from its max ``mx`` and min ``mn``
    over the reduced dims: the label of the piece both lie in, else
    ``NONLINEAR``. ``int8``, ``mx``'s shape."""
    bounds = torch.tensor([b for b, _ in pieces[:-1]], dtype=mx.dtype, device=mx.device)
    labels = torch.tensor([c for _, c in pieces], dtype=torch.int8, device=mx.device)
    hi = torch.searchsorted(bounds, mx.contiguous())  # first bound >= value
    lo = torch.searchsorted(bounds, mn.contiguous())
    return torch.where(hi == lo, labels[hi], torch.full_like(hi, NONLINEAR, dtype=torch.int8))
