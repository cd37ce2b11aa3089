"""The run options, declared once, and a run config parsed once.

Every key a run config may hold is an :class:`~jumpstart.core.options.Option`
in :data:`RUN_OPTIONS` (its default, check and help text): the data set and
model, the training length and rate, the init, the data's loading, the fast
path's (:data:`~jumpstart.train.fast_path.FAST_OPTIONS`) and the optimizer's
(:data:`~jumpstart.optim.OPTIMIZER_OPTIONS`). Sweep validation
(:mod:`jumpstart.experiments.config`), the names no technique option may take
(:func:`jumpstart.techniques.reserve`), :func:`~jumpstart.train.train_run`
and the trainers read them from here.

:func:`parse_run` turns a flat config dict into one :class:`RunConfig`: every
run option checked and filled, the combinations checked, the technique built.
That object flows to the trainer (:mod:`jumpstart.train.route`,
:mod:`jumpstart.train.group`); nothing below re-validates or re-reads the
dict.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..core.options import Option, int_at_least, number
from ..data.augment import AUGMENTATIONS
from ..models.rectangular import DECORRELATE_LR, DECORRELATE_STEPS, INITS
from ..models.registry import MODEL_FAMILIES, model_family
from ..optim import OPTIMIZER_OPTIONS, check_optimizer
from ..techniques import Technique, make_technique, reserve, technique_parts
from .fast_path import FAST_OPTIONS


class _Required:
    def __repr__(self) -> str:
        return "required"


#: the default of a run option that has none: a sweep or a caller must give it
REQUIRED = _Required()


def _technique(v) -> bool:
    try:
        technique_parts(v)
    except ValueError:
        return False
    return True


def _name(text: str) -> tuple:
    return (lambda v: isinstance(v, str) and bool(v)), text


def _or_none(check_text: tuple) -> tuple:
    check, text = check_text
    return (lambda v: v is None or check(v)), text


#: every run key: its default, check and help text (one definition of each
#: default: a sweep, ``train_run`` and the CLI read it here)
RUN_OPTIONS: dict[str, Option] = {
    "dataset": Option("moons", *_name("a data set name or file")),
    "model": Option("rectangular", lambda v: v in MODEL_FAMILIES,
                    "a registered model family (jumpstart.models.MODEL_FAMILIES)"),
    "depth": Option(REQUIRED, *int_at_least(1)),
    # any number > 0 here; an integer unless the family takes a multiplier
    # (check_combination)
    "width": Option(REQUIRED, *number(lambda v: v > 0, "an integer >= 1")),
    "technique": Option("baseline", _technique,
                        "a registered technique or several joined by '+'"),
    "epochs": Option(5000, *int_at_least(1)),
    "lr": Option(0.01, *number(lambda v: v > 0, "> 0")),
    "batch_size": Option("full", lambda v: v in ("full", None) or (
        isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        '"full" or an integer >= 1'),
    "seed": Option(0, *int_at_least(0)),
    "curve_every": Option(50, *int_at_least(1)),
    "init": Option("glorot", lambda v: v in INITS, "one of " + ", ".join(INITS)),
    "init_steps": Option(DECORRELATE_STEPS, *int_at_least(0)),
    "init_lr": Option(DECORRELATE_LR, *number(lambda v: v > 0, "a number > 0")),
    "head": Option("flatten", lambda v: v in ("flatten", "maxavg"),
                   "one of flatten, maxavg"),
    "data_dir": Option(None, lambda v: v is None or isinstance(v, os.PathLike)
                       or isinstance(v, str) and bool(v), "a folder path"),
    "target": Option("target", *_name("a column name")),
    "min_class_rows": Option(None, *_or_none(int_at_least(1))),
    "test_split": Option(None, *_or_none(number(lambda v: 0 < v < 1, "a number in (0, 1)"))),
    "loader_workers": Option(4, *int_at_least(0)),
    "augment": Option("none", lambda v: v in AUGMENTATIONS,
                      "one of " + ", ".join(AUGMENTATIONS)),
    # measure the net's redundancy before any step (the init report reads it
    # from the run; single-run loop, in-memory data)
    "init_diversity": Option(False, lambda v: isinstance(v, bool), "true or false"),
    **FAST_OPTIONS,
    **OPTIMIZER_OPTIONS,
}

#: the run keys every recorded config carries (a sweep's run config and
#: ``train_run``'s ``RunResult.config``), at their default when not set; the
#: others enter a config only when set, so that stores written before they
#: existed keep their run keys
KEYED = ("dataset", "model", "depth", "width", "technique", "epochs", "lr", "batch_size",
         "curve_every", "seed")

#: ``train_run``'s call arguments that are not run keys: no technique option
#: may take these names either
CALL_ARGUMENTS = ("device", "progress", "data")

reserve((*RUN_OPTIONS, *CALL_ARGUMENTS))


def check_combination(config: Mapping) -> None:
    """The checks of a run config that combine keys (a key left out is at its
    default): the model family takes the data set and, unless it takes a
    width multiplier, an integer width; the optimizer's options agree
    (:func:`~jumpstart.optim.check_optimizer`).

    Raises:
        ValueError: the message names the model, the width or the options.
    """
    def value(key):
        return config.get(key, RUN_OPTIONS[key].default)

    family = model_family(value("model"))
    if family.datasets is not None and value("dataset") not in family.datasets:
        raise ValueError(f"model {family.name} takes the {', '.join(family.datasets)} data "
                         "set only")
    if not family.fractional_width and not isinstance(value("width"), int):
        raise ValueError(f"width must be an integer >= 1 for model {family.name}; "
                         f"got {value('width')!r}")
    check_optimizer(**{k: value(k) for k in OPTIMIZER_OPTIONS})


@dataclass(frozen=True)
class RunConfig:
    """One run, parsed: every run option's value and the built technique.

    Read a run option as ``run["lr"]``.

    Attributes:
        values: every key of :data:`RUN_OPTIONS`, the given value or its
            default, checked (``technique`` as its name).
        technique: the run's technique, built from its options.
        record: the config as a sweep stores it and hashes it into the run
            key: the :data:`KEYED` keys, every other run key that was set, the
            technique's name and its options (defaults filled).
    """

    values: dict
    technique: Technique
    record: dict

    def __getitem__(self, key: str):
        return self.values[key]

    @property
    def batch_size(self) -> int | None:
        """The minibatch size; ``None`` for full batch (``"full"``)."""
        size = self.values["batch_size"]
        return None if size == "full" else size

    @property
    def optimizer(self) -> dict:
        """The optimizer's options (:data:`~jumpstart.optim.OPTIMIZER_OPTIONS`)."""
        return {k: self.values[k] for k in OPTIMIZER_OPTIONS}

    @property
    def fast_path(self) -> dict:
        """The fast path's options (:data:`~jumpstart.train.fast_path.FAST_OPTIONS`)."""
        return {k: self.values[k] for k in FAST_OPTIONS}


def parse_run(config: Mapping) -> RunConfig:
    """Check a flat run config and build its technique, once.

    Args:
        config: run keys (:data:`RUN_OPTIONS`) and the options of its
            technique (``lam``, ``aggregation``, ...). ``technique`` is a
            registered name, ``"a+b"``, or a :class:`Technique` already built
            (then no technique option may be given).

    Returns:
        The :class:`RunConfig`.

    Raises:
        ValueError: before any work: a key that is neither a run key nor an
            option of the run's technique, a required key missing (``depth``,
            ``width``), a value its check rejects, a model that does not take
            the data set or a fractional width, a bad optimizer combination;
            the message names the key and the value.
    """
    technique = config.get("technique", RUN_OPTIONS["technique"].default)
    given = {k: v for k, v in config.items() if k in RUN_OPTIONS and k != "technique"}
    others = {k: v for k, v in config.items() if k not in RUN_OPTIONS}
    if isinstance(technique, Technique):
        if others:
            raise ValueError(f"technique {technique.name!r} is already built; it takes no "
                             f"option(s) {sorted(others)} here")
        tech = technique
    else:
        tech = make_technique(technique, **others)  # raises on an option it does not take
    values = {}
    for key, option in RUN_OPTIONS.items():
        value = tech.name if key == "technique" else given.get(key, option.default)
        if value is REQUIRED:
            raise ValueError(f"run config needs {key} ({option.text})")
        if key != "technique" and not option.check(value):
            raise ValueError(f"{key} must be {option.text}; got {value!r}")
        values[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    check_combination(values)
    record = {k: values[k] for k in RUN_OPTIONS
              if k in KEYED or given.get(k) is not None}
    record.update(tech.config)
    return RunConfig(values, tech, record)


def group_by(runs: list[RunConfig], key: Callable[[RunConfig], object]) -> list[list[RunConfig]]:
    """``runs`` split into lists of equal ``key(run)`` (compared as JSON), in
    order of first appearance: how the trainers cut a group into populations."""
    parts = defaultdict(list)
    for run in runs:
        parts[json.dumps(key(run), sort_keys=True, default=str)].append(run)
    return list(parts.values())
