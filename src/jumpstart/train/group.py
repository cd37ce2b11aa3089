"""Training a group of sweep runs: split into populations, pick the trainer.

A sweep hands a worker a group of run configs that share the data set, model
family and training length, and a depth unless all are :func:`stackable`.
Here the group is split into the populations the trainers can run, without
naming any technique:

- the hand-written MOONS stacks (:func:`~jumpstart.train.population.train_population`)
  for :func:`stackable` runs (a built-in binary data set, a technique that
  declares a ``stack_penalty``); members differ in width, depth, seed and that
  penalty's ``lam``;
- the generic population trainer (:func:`~jumpstart.train.batched.train_batched`)
  for dense nets under any technique; members differ in seed and learning rate;
- one run at a time (:func:`~jumpstart.train.run.train_run`) otherwise
  (conv nets and ResNets, bf16 runs, the MOONS conv net with per-channel
  deficits or minibatches).
"""

from __future__ import annotations

import json
from collections import defaultdict

from ..data import DATASETS, load_dataset
from ..techniques import make_technique, technique_options


def _options(config: dict) -> dict:
    """The technique options a run config sets."""
    return {k: config[k] for k in technique_options(config["technique"]) if k in config}


def technique_of(config: dict):
    """The technique a run config asks for, built with its options."""
    return make_technique(config["technique"], **_options(config))


def _split(configs, key):
    parts = defaultdict(list)
    for c in configs:
        parts[json.dumps(key(c), sort_keys=True, default=str)].append(c)
    return list(parts.values())


def _stack_parts(configs, stacks) -> list[list[dict]]:
    """Populations for the stacks: one per learning rate and penalty options;
    unpenalized runs (``lam = 0``, e.g. the baseline) join the first
    population of their learning rate, where they cost no penalty work."""
    parts = []
    for same_lr in _split(configs, lambda c: c["lr"]):
        plain = [c for c in same_lr if stacks[id(c)][0] == 0]
        penalized = _split([c for c in same_lr if stacks[id(c)][0] > 0],
                           lambda c: stacks[id(c)][1])
        if penalized:
            penalized[0] += plain
        parts += penalized or [plain]
    return parts


def stack_spec(config: dict) -> tuple[float, dict] | None:
    """The technique's ``stack_penalty()`` (``lam``, options) when the run
    trains in the hand-written MOONS stacks, else ``None``: a built-in
    (binary) data set, a dense or MoonsConv net with Glorot init in float32,
    and a technique that declares a ``stack_penalty`` (for MoonsConv: per
    position deficits, full batch)."""
    spec = technique_of(config).stack_penalty()
    if not (config["dataset"] in DATASETS and config.get("init", "glorot") == "glorot"
            and config["model"] in ("rectangular", "moons_conv")
            and config.get("precision", "32") == "32" and spec is not None):
        return None
    if config["model"] == "moons_conv" and not (
            spec[1].get("granularity", "position") == "position"
            and config["batch_size"] == "full"):
        return None
    return spec


def stackable(config: dict) -> bool:
    """Whether a run trains in the hand-written MOONS stacks (:func:`stack_spec`).
    Such runs share a population whatever their depth (see
    :mod:`jumpstart.train.stacks`)."""
    return stack_spec(config) is not None


def train_group(configs: list[dict]) -> list[tuple[dict, dict, dict]]:
    """Train the runs ``configs``: they share data set, model, epochs, batch
    size, curve spacing, init and data folder, and either all are
    :func:`stackable` (any depths) or all share one depth.

    Returns:
        ``(config, metrics, curves)`` per run, in any order; metrics as
        ``jumpstart train --json`` plus ``params`` (the net's parameter
        count); curves every ``curve_every`` epochs.

    Raises:
        whatever the trainers raise (the sweep records it per run).
    """
    from .batched import train_batched
    from .population import Member, train_population
    from .run import train_run

    first = configs[0]
    batch_size = None if first["batch_size"] == "full" else first["batch_size"]
    out = []
    specs = {id(c): stack_spec(c) for c in configs}
    stacked = [c for c in configs if specs[id(c)] is not None]
    rest = [c for c in configs if specs[id(c)] is None]
    stacks = {id(c): specs[id(c)] for c in stacked}
    for part in _stack_parts(stacked, stacks) if stacked else []:
        options = dict(stacks[id(part[0])][1])
        options.pop("granularity", None)
        if first["model"] == "moons_conv":
            options["granularity"] = "position"
        members = [Member(c["width"], c["seed"], stacks[id(c)][0], c["depth"]) for c in part]
        results = train_population(
            members, dataset=first["dataset"], model=first["model"], epochs=first["epochs"],
            lr=part[0]["lr"], batch_size=batch_size, jumpstart=options,
            curve_every=first["curve_every"])
        out += [(c, r.metrics, r.curves, r.model) for c, r in zip(part, results)]
    singles = []
    if first["model"] == "rectangular" and first.get("precision", "32") == "32":
        tables: dict = {}  # members of one seed share one loaded split
        for part in _split(rest, lambda c: {k: v for k, v in c.items()
                                            if k not in ("seed", "lr")}):
            c0 = part[0]
            datas = []
            for c in part:
                key = (c["dataset"], c["seed"], c.get("data_dir"), c.get("target", "target"))
                if key not in tables:
                    tables[key] = load_dataset(c["dataset"], seed=c["seed"],
                                               directory=key[2], target=key[3])
                datas.append(tables[key])
            results = train_batched(
                datas, technique=technique_of(c0), depth=c0["depth"], width=c0["width"],
                seeds=[c["seed"] for c in part], lrs=[c["lr"] for c in part],
                epochs=c0["epochs"], batch_size=batch_size, init=c0.get("init", "glorot"),
                curve_every=c0["curve_every"])
            out += [(c, r.metrics, r.curves, r.model) for c, r in zip(part, results)]
    else:
        singles = rest
    for c in singles:
        run = train_run(**{k: v for k, v in c.items() if k not in ("curve_every", "batch_size")},
                        batch_size=batch_size)
        h, every = run.fit.history, c["curve_every"]
        keep = [i for i, e in enumerate(h["epoch"]) if e % every == 0 or i == len(h["epoch"]) - 1]
        metrics = {**run.fit.metrics(), "status": run.status.ratios()}
        out.append((c, metrics, {k: [h[k][i] for i in keep] for k in h}, run.model))
    return [(c, {**m, "params": sum(p.numel() for p in model.parameters())}, curves)
            for c, m, curves, model in out]
