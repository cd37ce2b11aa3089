"""The technique interface: what the trainer calls, and when.

A technique is one way of making a deep thin net trainable (the IEEE Access
2025 UCI experiments compare baseline, Jumpstart, skip connections, batch
normalization and GELU). The trainers (:func:`jumpstart.train.fit`, the population trainer) know
no technique by name; they call these methods at fixed points of a run:

1. :meth:`Technique.model_options` before the model is built: shape it
   (e.g. insert batch normalization) by editing the constructor options;
2. :meth:`Technique.attach` once the model exists: add hooks;
3. :meth:`Technique.loss` after each training forward: an extra loss term;
4. :meth:`Technique.after_step` after each optimizer step: weight surgery;
5. :meth:`Technique.detach` at the end of training: remove hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn


@dataclass(frozen=True)
class Option:
    """One option of a technique, as it appears in a sweep config.

    Attributes:
        default: value used when the config does not set it.
        check: predicate a valid value satisfies.
        text: what a valid value is, for error messages ("a number >= 0").
    """

    default: object
    check: Callable[[object], bool]
    text: str


class Technique:
    """Base class of techniques: every hook is a no-op (the ``baseline``).

    Subclasses set ``name`` and ``options`` (name -> :class:`Option`), and
    override the hooks they need. Option names are unique across techniques,
    so a run config stays one flat dict.

    Args:
        **options: values for the names in ``options``; missing ones take
            their defaults.

    Raises:
        ValueError: an unknown option name, or a value its check rejects (the
            message names the technique, the option and what is allowed).
    """

    name: ClassVar[str] = "baseline"
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, **options) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise ValueError(f"technique {self.name!r} takes no option(s) {sorted(unknown)}; "
                             f"allowed: {allowed}")
        self.config = {k: options.get(k, o.default) for k, o in self.options.items()}
        for key, value in self.config.items():
            if not self.options[key].check(value):
                raise ValueError(f"technique {self.name!r}: {key} must be "
                                 f"{self.options[key].text}; got {value!r}")

    def model_options(self, options: dict) -> dict:
        """Return the model constructor options to use (``options`` is not modified).

        The trainer passes the options the model family takes (for
        :class:`~jumpstart.models.Rectangular`: ``activation``, ``norm``,
        ``skip``). Raises ``ValueError`` when the family lacks one this
        technique needs.
        """
        return dict(options)

    def attach(self, model: nn.Module) -> None:
        """Called once with the built model (a population model has ``model.members``)."""

    def loss(self) -> Tensor | None:
        """Extra loss term of the last training forward: 0-dim, or ``(P,)`` for a
        population (one per member); ``None`` for none."""
        return None

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimizer step."""

    def detach(self) -> None:
        """Called when training ends (also after an error); idempotent."""

    def stack_penalty(self) -> tuple[float, dict] | None:
        """``(lam, options)`` when the hand-written MOONS population stacks
        (:mod:`jumpstart.train.stacks`) can run this technique as a Jumpstart
        penalty with that coefficient (``lam`` 0: no penalty); ``None`` when
        they cannot, and the generic trainers run it."""
        return None

    def _need(self, options: dict, key: str) -> dict:
        if key not in options:
            raise ValueError(f"technique {self.name!r} needs a model family with a {key!r} "
                             f"option (e.g. rectangular); this one takes {sorted(options)}")
        return dict(options)


def int_at_least(lo: int) -> tuple[Callable[[object], bool], str]:
    """Check and text for an integer option ``>= lo`` (booleans rejected)."""
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
            f"an integer >= {lo}")


def number(pred: Callable[[float], bool], text: str) -> tuple[Callable[[object], bool], str]:
    """Check and text for a numeric option satisfying ``pred`` (booleans rejected)."""
    return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and pred(v), text)


def choice(values) -> tuple[Callable[[object], bool], str]:
    """Check and text for an option that takes one of ``values``."""
    values = tuple(values)
    return (lambda v: v in values), "one of " + ", ".join(map(str, values))
