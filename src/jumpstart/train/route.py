"""Routing: which trainer runs a run, decided in one place.

The sweep planner and the worker both call :func:`route`. Trainers are tried
fastest first, and each one takes a run only if it runs it exactly (the same
trajectory as the single-run loop, up to float rounding); otherwise it says
why not (its ``refusal``) and the next is tried:

1. ``"stacks"``: the hand-written MOONS stacks (:mod:`jumpstart.train.stacks`);
2. ``"population"``: the generic population trainer (:mod:`jumpstart.train.population`);
3. ``"single"``: the single-run loop (:mod:`jumpstart.train.run`), which runs
   every technique.

Each trainer module has the same two entries: ``refusal(run)`` (``None``: it
runs it) and ``train_runs(runs, data_of)`` (a group's runs of that trainer,
``(run, MemberResult)`` each). A technique declares what it supports in
``Technique.supports``, a model family in ``ModelFamily.supports``; nothing
here names a technique or a family.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import population, run as single, stacks
from .run_options import RunConfig, parse_run

#: the trainers, fastest first: name -> module with ``refusal`` and ``train_runs``
TRAINERS = {"stacks": stacks, "population": population, "single": single}


def refusals(run: RunConfig | Mapping) -> dict[str, str | None]:
    """Per trainer of :data:`TRAINERS`, why it cannot run ``run`` exactly
    (``None``: it can). A mapping is parsed first (:func:`~jumpstart.train.run_options.parse_run`).

    Raises:
        ValueError: as :func:`~jumpstart.train.run_options.parse_run`.
    """
    run = run if isinstance(run, RunConfig) else parse_run(run)
    return {name: trainer.refusal(run) for name, trainer in TRAINERS.items()}


def route(run: RunConfig | Mapping) -> str:
    """The trainer (a name of :data:`TRAINERS`) that runs ``run``: the first
    whose refusal is ``None``.

    Raises:
        ValueError: as :func:`refusals`.
    """
    reasons = refusals(run)
    return next(t for t in TRAINERS if reasons[t] is None)
