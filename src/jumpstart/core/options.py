"""Declared options: a default, a check and the text of what is allowed.

One :class:`Option` per setting, defined once beside the code that uses it
(Jumpstart's options in :mod:`jumpstart.core.regularizer`, the optimizer's in
:mod:`jumpstart.optim`, each technique's on its class), and read by every
layer that exposes the setting: the constructors, the techniques, sweep files,
the command line and the Lightning callback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """One option, as it appears in a constructor, a sweep config or the CLI.

    Attributes:
        default: value used when none is given.
        check: predicate a valid value satisfies.
        text: what a valid value is, for error messages ("a number >= 0").
    """

    default: object
    check: Callable[[object], bool]
    text: str


def int_at_least(lo: int) -> tuple[Callable[[object], bool], str]:
    """Check and text for an integer option ``>= lo`` (booleans rejected)."""
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
            f"an integer >= {lo}")


def number(pred: Callable[[float], bool], text: str) -> tuple[Callable[[object], bool], str]:
    """Check and text for a finite numeric option satisfying ``pred`` (booleans,
    NaN and infinities rejected)."""
    return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and pred(v), text)


def choice(values) -> tuple[Callable[[object], bool], str]:
    """Check and text for an option that takes one of ``values``."""
    values = tuple(values)
    return (lambda v: v in values), "one of " + ", ".join(map(str, values))


def subset(values) -> tuple[Callable[[object], bool], str]:
    """Check and text for a non-empty list (or tuple) of distinct items of ``values``."""
    values = tuple(values)

    def check(v) -> bool:
        return (isinstance(v, (list, tuple)) and bool(v) and len(set(v)) == len(v)
                and all(isinstance(x, str) and x in values for x in v))

    return check, "a non-empty list of distinct items of " + ", ".join(values)


def reject_unknown(options: dict, spec: dict[str, Option], what: str) -> None:
    """Refuse keys of ``options`` that ``spec`` does not declare.

    Raises:
        ValueError: ``"unknown <what> option(s) [...]; allowed: ..."``.
    """
    unknown = set(options) - set(spec)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {sorted(unknown)}; allowed: "
                         f"{', '.join(spec)}")


def filled(options: dict, spec: dict[str, Option], what: str) -> dict:
    """Every option of ``spec``: the value in ``options``, else its default,
    each checked.

    Raises:
        ValueError: an unknown key (:func:`reject_unknown`), or a value its
            check rejects (the message names the key, the value and what is
            allowed).
    """
    reject_unknown(options, spec, what)
    out = {k: options.get(k, o.default) for k, o in spec.items()}
    for key, value in out.items():
        if not spec[key].check(value):
            raise ValueError(f"{key} must be {spec[key].text}; got {value!r}")
    return out
