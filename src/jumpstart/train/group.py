"""Training a group of sweep runs: each run parsed once, routed, and trained
by its trainer.

A sweep hands a worker a group of run configs that share the data set, model
family and training length, and a depth unless all go to the stacks. Each
config is parsed once (:func:`~jumpstart.train.run_options.parse_run`: checked,
technique built), :func:`~jumpstart.train.route.route` names its trainer, and
each trainer's ``train_runs`` cuts its runs into the populations it can run
(:data:`~jumpstart.train.route.TRAINERS`): the MOONS stacks (members differ in
width, depth, seed and ``lam``), the generic population trainer (seed and
learning rate), the single-run loop (one at a time). Each (data set, seed) is
loaded once per group and shared by its runs; one results tail adds what
every trainer's runs record (parameters, widths, the data's split).
"""

from __future__ import annotations

from collections import defaultdict

from torch import nn

from ..data import load_run_data, run_data_key
from ..models import layer_widths
from ..models.split import effective_params
from .route import TRAINERS, refusals, route
from .run_options import parse_run


def train_group(configs: list[dict], trainer: str | None = None
                ) -> list[tuple[dict, dict, dict, nn.Module]]:
    """Train the runs ``configs``: they share data set, model, epochs, batch
    size, curve spacing, init and data folder, and either all go to the
    stacks (any depths) or all share one depth.

    Args:
        configs: run configs (as :func:`jumpstart.experiments.load_sweep` makes them).
        trainer: ``None`` routes each run (:func:`~jumpstart.train.route.route`);
            a name of :data:`~jumpstart.train.route.TRAINERS` forces that trainer.

    Returns:
        ``(config, metrics, curves, model)`` per run, in any order; metrics as
        ``jumpstart train --json`` plus ``params`` (the trained net's
        parameter count), ``effective_params`` (those a forward uses:
        :func:`~jumpstart.models.split.effective_params`), ``params_at_init``
        (before any step; the trainers that never replace the net leave it
        equal to ``params``) and ``widths`` (:func:`~jumpstart.models.layer_widths`);
        curves every ``curve_every`` epochs; the trained model (a standalone
        net, also for population members).

    Raises:
        ValueError: a config :func:`~jumpstart.train.run_options.parse_run`
            refuses, a forced ``trainer`` that refuses a run (the message says
            why), or an unknown trainer name.
        whatever the trainers raise (the sweep records it per run).
    """
    if trainer is not None and trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; allowed: {', '.join(TRAINERS)}")
    runs = [parse_run(c) for c in configs]
    config_of = {id(r): c for r, c in zip(runs, configs)}
    routes = defaultdict(list)
    for run in runs:
        if trainer is None:
            routes[route(run)].append(run)
            continue
        reason = refusals(run)[trainer]
        if reason is not None:
            raise ValueError(f"trainer {trainer!r} refuses the run: {reason}")
        routes[trainer].append(run)
    loaded: dict = {}  # run_data_key -> data, loaded once

    def data_of(run):
        key = run_data_key(run.values)
        if key not in loaded:
            loaded[key] = load_run_data(run.values)
        return loaded[key]

    out = [done for name in TRAINERS for done in TRAINERS[name].train_runs(routes[name], data_of)]
    splits = {k: d.split for k, d in loaded.items() if getattr(d, "split", None)}
    return [(config_of[id(run)],
             {"params_at_init": (params := sum(p.numel() for p in r.model.parameters())),
              **r.metrics, "params": params, "effective_params": effective_params(r.model),
              "widths": layer_widths(r.model),
              **({"split": splits[key]} if (key := run_data_key(run.values)) in splits
                 else {})},
             r.curves, r.model)
            for run, r in out]
