"""Routing: which trainer runs a run config, decided in one place.

The sweep planner and the worker both call :func:`route`. Trainers are tried
fastest first, and each one takes a run only if it runs it exactly (the same
trajectory as the single-run loop, up to float rounding); otherwise it says
why not (its ``refusal``) and the next is tried:

1. ``"stacks"``: the hand-written MOONS stacks
   (:func:`jumpstart.train.stacked.train_stacked`);
2. ``"population"``: the generic population trainer
   (:func:`jumpstart.train.population.train_population`);
3. ``"single"``: the single-run loop (:func:`jumpstart.train.train_run`),
   which runs every technique.

A technique declares what it supports in ``Technique.supports``; nothing here
names a technique.
"""

from __future__ import annotations

from ..techniques import Technique, technique_of
from .population import refusal as population_refusal
from .stacked import refusal as stacked_refusal

#: the trainers, fastest first
TRAINERS = ("stacks", "population", "single")


def refusals(config: dict, technique: Technique | None = None) -> dict[str, str | None]:
    """Per trainer of :data:`TRAINERS`, why it cannot run ``config`` exactly
    (``None``: it can). ``technique`` is the run's built technique
    (:func:`~jumpstart.techniques.technique_of` when omitted).

    Raises:
        ValueError: as :func:`~jumpstart.techniques.technique_of`, or a bad
            optimizer option.
    """
    technique = technique if technique is not None else technique_of(config)
    return {"stacks": stacked_refusal(config, technique),
            "population": population_refusal(technique, config),
            "single": None}


def route(config: dict, technique: Technique | None = None) -> str:
    """The trainer (one of :data:`TRAINERS`) that runs ``config``: the first
    whose refusal is ``None``.

    Raises:
        ValueError: as :func:`refusals`.
    """
    reasons = refusals(config, technique)
    return next(t for t in TRAINERS if reasons[t] is None)
