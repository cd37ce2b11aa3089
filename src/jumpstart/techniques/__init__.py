"""Techniques compared in the papers, behind one small interface.

A registry maps names to :class:`Technique` classes; ``"a+b"`` combines
techniques (applied in that order). Example::

    from jumpstart.techniques import make_technique
    tech = make_technique("jumpstart+batchnorm", lam=1e-3)
    options = tech.model_options({"activation": "relu", "norm": None, "skip": None})
"""

from __future__ import annotations

from torch import Tensor

from .base import CAPABILITIES, Option, Technique, TrainContext
from .builtin import BatchNorm, Baseline, Gelu, JumpstartTechnique, Skip
from .cbp import ContinualBackprop
from .diversify import Diversify
from .nr import NeuralRejuvenation
from .redo import ReDo

TECHNIQUES: dict[str, type[Technique]] = {}
#: names no technique option may take (a run config is one flat dict): the
#: run keys, added by :func:`reserve` (:data:`jumpstart.train.run_options.RUN_OPTIONS`)
RESERVED_KEYS: set[str] = set()


def reserve(names) -> None:
    """Add ``names`` to :data:`RESERVED_KEYS`: names that no technique option
    may take (the run keys, which the training layer declares).

    Raises:
        ValueError: a registered technique already has an option of one of
            these names.
    """
    names = set(names)
    for cls in TECHNIQUES.values():
        taken = sorted(set(cls.options) & names)
        if taken:
            raise ValueError(f"technique {cls.name!r}: option(s) {taken} are run keys")
    RESERVED_KEYS.update(names)


def register(cls: type[Technique]) -> type[Technique]:
    """Add a technique class to the registry under ``cls.name`` (usable as a decorator).

    Raises:
        ValueError: the name is taken, contains ``+``, or one of its option
            names is already used by another technique or is a run key
            (:data:`RESERVED_KEYS`; run configs are flat).
    """
    if cls.name in TECHNIQUES or "+" in cls.name:
        raise ValueError(f"technique name {cls.name!r} is taken or contains '+'")
    reserved = sorted(set(cls.options) & RESERVED_KEYS)
    if reserved:
        raise ValueError(f"technique {cls.name!r}: option(s) {reserved} are run keys; "
                         "name them otherwise")
    for other in TECHNIQUES.values():
        shared = set(other.options) & set(cls.options)
        if shared:
            raise ValueError(f"technique {cls.name!r}: option(s) {sorted(shared)} already "
                             f"belong to {other.name!r}")
    TECHNIQUES[cls.name] = cls
    return cls


for _cls in (Baseline, JumpstartTechnique, BatchNorm, Skip, Gelu, ReDo, ContinualBackprop,
             Diversify, NeuralRejuvenation):
    register(_cls)


def option_keys() -> tuple[str, ...]:
    """Every technique option name in the registry now (each belongs to one
    technique); read at call time, so techniques registered later count."""
    return tuple(k for cls in TECHNIQUES.values() for k in cls.options)


def technique_parts(name: str) -> list[type[Technique]]:
    """The classes of a (possibly combined, ``"a+b"``) technique name.

    Raises:
        ValueError: an unknown or repeated part (the message lists the known names).
    """
    parts = name.split("+") if isinstance(name, str) else [name]
    unknown = [p for p in parts if p not in TECHNIQUES]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"unknown or repeated technique in {name!r}; known: "
                         f"{', '.join(TECHNIQUES)} (combine with '+')")
    return [TECHNIQUES[p] for p in parts]


def technique_options(name: str) -> dict[str, Option]:
    """All options (name -> :class:`Option`) that technique ``name`` takes."""
    return {k: o for cls in technique_parts(name) for k, o in cls.options.items()}


def make_technique(name: str, **options) -> Technique:
    """Build technique ``name`` (``"jumpstart"``, ``"jumpstart+batchnorm"``, ...).

    Args:
        name: a registered name, or several joined by ``+``.
        **options: options of any of the parts; each part takes its own.

    Raises:
        ValueError: unknown technique, an option no part takes, a bad value.
    """
    parts = technique_parts(name)
    allowed = technique_options(name)
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"technique {name!r} takes no option(s) {sorted(unknown)}; "
                         f"allowed: {', '.join(allowed) or 'none'}")
    built = [cls(**{k: v for k, v in options.items() if k in cls.options}) for cls in parts]
    return built[0] if len(built) == 1 else Combined(built)


def technique_of(config: dict) -> Technique:
    """The technique a run config asks for (``config["technique"]``), built
    with the options of it that ``config`` holds.

    Raises:
        ValueError: an unknown technique, or an option value it refuses.
    """
    options = {k: config[k] for k in technique_options(config["technique"]) if k in config}
    return make_technique(config["technique"], **options)


class Combined(Technique):
    """Several techniques applied in order: model options pass through each,
    loss terms add up, every other hook is called on each part. It supports
    what all its parts support, and needs activations when any part does."""

    def __init__(self, parts: list[Technique]) -> None:
        self.parts = parts
        self.name = "+".join(p.name for p in parts)
        self.config = {k: v for p in parts for k, v in p.config.items()}
        self.supports = frozenset.intersection(*(p.supports for p in parts))
        self.needs_activations = any(p.needs_activations for p in parts)

    def model_options(self, options: dict) -> dict:
        for part in self.parts:
            options = part.model_options(options)
        return dict(options)

    def attach(self, ctx: TrainContext) -> None:
        for part in self.parts:
            part.attach(ctx)

    def loss(self, ctx: TrainContext) -> Tensor | None:
        terms = [t for t in (p.loss(ctx) for p in self.parts) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def task_loss(self, ctx: TrainContext, logits: Tensor, y: Tensor) -> Tensor | None:
        """The first part's replacement of the task loss, if any."""
        return next((t for t in (p.task_loss(ctx, logits, y) for p in self.parts)
                     if t is not None), None)

    def after_step(self, ctx: TrainContext) -> None:
        for part in self.parts:
            part.after_step(ctx)

    def after_epoch(self, ctx: TrainContext) -> None:
        for part in self.parts:
            part.after_epoch(ctx)

    def detach(self, ctx: TrainContext) -> None:
        for part in self.parts:
            part.detach(ctx)


__all__ = ["CAPABILITIES", "RESERVED_KEYS", "reserve", "TECHNIQUES", "Combined", "Option", "Technique", "TrainContext",
           "make_technique", "option_keys", "register", "technique_of", "technique_options",
           "technique_parts"]
