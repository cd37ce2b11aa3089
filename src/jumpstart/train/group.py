"""Training a group of sweep runs: split into populations, one trainer each.

A sweep hands a worker a group of run configs that share the data set, model
family and training length, and a depth unless all go to the stacks. Each
run's technique is built once, :func:`~jumpstart.train.route.route` names its
trainer, and the runs of each trainer are split into the populations it can
run:

- the hand-written MOONS stacks (:func:`~jumpstart.train.stacked.train_stacked`):
  one population per learning rate and Jumpstart options; members differ in
  width, depth, seed and ``lam``;
- the generic population trainer (:func:`~jumpstart.train.population.train_population`):
  members differ in seed and learning rate;
- the single-run loop (:func:`~jumpstart.train.run.train_run`) for the rest.

Each (data set, seed) is loaded once per group and shared by its runs.
"""

from __future__ import annotations

import json
from collections import defaultdict

from torch import nn

from ..core.regularizer import JUMPSTART_OPTIONS
from ..data import load_run_data, run_data_key
from ..models import layer_widths
from ..techniques import technique_of
from .population import train_population
from .route import TRAINERS, refusals, route
from .run import train_run
from .stacked import Member, train_stacked


def _split(configs, key):
    parts = defaultdict(list)
    for c in configs:
        parts[json.dumps(key(c), sort_keys=True, default=str)].append(c)
    return list(parts.values())


def stack_spec(technique) -> tuple[float, dict]:
    """``(lam, Jumpstart options)`` of a technique that runs in the stacks: its
    whole effect is the Jumpstart penalty its config describes (``lam`` 0 and
    no options when it has none, e.g. the baseline)."""
    config = technique.config
    return (float(config.get("lam", 0.0)),
            {k: config[k] for k in JUMPSTART_OPTIONS if k != "lam" and k in config})


def _stack_parts(configs, specs) -> list[list[dict]]:
    """Populations for the stacks: one per learning rate and penalty options;
    unpenalized runs (``lam = 0``, e.g. the baseline) join the first
    population of their learning rate, where they cost no penalty work."""
    parts = []
    for same_lr in _split(configs, lambda c: c["lr"]):
        plain = [c for c in same_lr if specs[id(c)][0] == 0]
        penalized = _split([c for c in same_lr if specs[id(c)][0] > 0],
                           lambda c: specs[id(c)][1])
        if penalized:
            penalized[0] += plain
        parts += penalized or [plain]
    return parts


def train_group(configs: list[dict], trainer: str | None = None
                ) -> list[tuple[dict, dict, dict, nn.Module]]:
    """Train the runs ``configs``: they share data set, model, epochs, batch
    size, curve spacing, init and data folder, and either all go to the
    stacks (any depths) or all share one depth.

    Args:
        configs: run configs (as :func:`jumpstart.experiments.load_sweep` makes them).
        trainer: ``None`` routes each run (:func:`~jumpstart.train.route.route`);
            one of :data:`~jumpstart.train.route.TRAINERS` forces that trainer.

    Returns:
        ``(config, metrics, curves, model)`` per run, in any order; metrics as
        ``jumpstart train --json`` plus ``params`` (the net's parameter
        count) and ``widths`` (:func:`~jumpstart.models.layer_widths`);
        curves every ``curve_every`` epochs; the trained model (a standalone
        net, also for population members).

    Raises:
        ValueError: a forced ``trainer`` that refuses a run (the message says
            why), or an unknown trainer name.
        whatever the trainers raise (the sweep records it per run).
    """
    first = configs[0]
    batch_size = None if first["batch_size"] == "full" else first["batch_size"]
    techs = {id(c): technique_of(c) for c in configs}
    if trainer is not None and trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; allowed: {', '.join(TRAINERS)}")
    routes = defaultdict(list)
    for c in configs:
        if trainer is None:
            routes[route(c, techs[id(c)])].append(c)
            continue
        reason = refusals(c, techs[id(c)])[trainer]
        if reason is not None:
            raise ValueError(f"trainer {trainer!r} refuses the run: {reason}")
        routes[trainer].append(c)
    loaded: dict = {}  # run_data_key -> data, loaded once

    def data_of(c):
        key = run_data_key(c)
        if key not in loaded:
            loaded[key] = load_run_data(c)
        return loaded[key]

    out = []
    specs = {id(c): stack_spec(techs[id(c)]) for c in routes["stacks"]}
    for part in _stack_parts(routes["stacks"], specs):
        options = specs[id(part[0])][1]
        members = [Member(c["width"], c["seed"], specs[id(c)][0], c["depth"]) for c in part]
        results = train_stacked(
            members, dataset=first["dataset"], model=first["model"], epochs=first["epochs"],
            lr=part[0]["lr"], batch_size=batch_size, jumpstart=options,
            curve_every=first["curve_every"])
        out += [(c, r.metrics, r.curves, r.model) for c, r in zip(part, results)]
    for part in _split(routes["population"],
                       lambda c: {k: v for k, v in c.items() if k not in ("seed", "lr")}):
        c0 = part[0]
        results = train_population(
            [data_of(c) for c in part], technique=techs[id(c0)], depth=c0["depth"],
            width=c0["width"], seeds=[c["seed"] for c in part], lrs=[c["lr"] for c in part],
            epochs=c0["epochs"], batch_size=batch_size, init=c0.get("init", "glorot"),
            curve_every=c0["curve_every"])
        out += [(c, r.metrics, r.curves, r.model) for c, r in zip(part, results)]
    for c in routes["single"]:
        tech = techs[id(c)]
        run = train_run(**{k: v for k, v in c.items()
                           if k not in ("curve_every", "batch_size", "technique", *tech.config)},
                        technique=tech, batch_size=batch_size, data=data_of(c))
        h, every = run.fit.history, c["curve_every"]
        # the epochs History keeps for the population trainers
        keep = [i for i, e in enumerate(h["epoch"]) if e % every == 0 or e == c["epochs"]]
        metrics = {**run.fit.metrics(), "status": run.metrics()["status"]}
        out.append((c, metrics, {k: [h[k][i] for i in keep] for k in h}, run.model))
    splits = {k: d.split for k, d in loaded.items() if getattr(d, "split", None)}
    return [(c, {**m, "params": sum(p.numel() for p in model.parameters()),
                 "widths": layer_widths(model),
                 **({"split": splits[run_data_key(c)]} if run_data_key(c) in splits else {})},
             curves, model)
            for c, m, curves, model in out]
