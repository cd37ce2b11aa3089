"""Declarative sweeps: a TOML file (or a shipped preset) expanded to runs.

A sweep file has a ``name``, optional ``description``, and tables:

- ``[fixed]``: settings every run shares (``dataset``, ``model``, ``epochs``,
  ``lr``, ``batch_size`` = ``"full"`` or an integer, ``curve_every``,
  ``init``, ``data_dir``, ``loader_workers``, the fast path's ``precision``,
  ``memory_format`` and ``flush_denormal``
  (:data:`jumpstart.train.fast_path.FAST_OPTIONS`), the optimizer
  options of :data:`jumpstart.optim.OPTIMIZER_OPTIONS` (``optimizer``,
  ``momentum``, ``nesterov``, ``weight_decay``, ``lr_milestones``,
  ``lr_gamma``), ...);
- one table per technique (``[jumpstart]``, ``[skip]``, ...): that
  technique's options (:mod:`jumpstart.techniques`), kept only in the runs of
  techniques that take them (a ``baseline`` run carries no ``lam``);
- ``[grid]``: axes, each a non-empty list; the runs are their product. Any
  run key or technique option may be an axis, including the options of a
  technique registered after import (:func:`jumpstart.techniques.register`;
  a multi-process sweep's workers see it when its module registers it on
  import). ``dataset = ["*"]`` means every
  table in the data folder (``data_dir``, see :func:`jumpstart.data.data_dir`).
  Several grids (``[[grid]]`` tables, as scikit-learn's list of parameter
  grids) give the union of their products, each over ``[fixed]``: e.g. one
  technique with its own optimizer beside the others.

A file may start from another: ``extends = "PRESET"`` (a shipped preset) or
``extends = "other.toml"`` (a path, relative to the file's folder). It is that
sweep with the file's changes: a top-level value (``name``, ``description``,
``save_weights``, ``max_group``) replaces the other's, ``[fixed]`` and the
technique tables are merged key by key (the file's keys win), and a grid
given replaces the other's grids whole.

A run is a flat dict (its *config*); its key is a hash of the config's
canonical JSON, so the same run always has the same key.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..core.regularizer import CONSTRAINTS
from ..data import check_dataset, table_names
from ..optim import OPTIMIZER_OPTIONS
from ..techniques import TECHNIQUES, option_keys, technique_options
from ..train.run_options import KEYED, RUN_OPTIONS, check_combination

#: the run keys a sweep must name itself (in ``[fixed]`` or ``[grid]``)
REQUIRED = ("dataset", "depth", "width", "technique")
#: the defaults a sweep writes into every run config, and so into its key
#: (:data:`~jumpstart.train.run_options.KEYED`)
BASE_DEFAULTS = {k: RUN_OPTIONS[k].default for k in KEYED if k not in REQUIRED}


def member_keys() -> tuple[str, ...]:
    """Run keys the runs of one group (one worker task) may differ in: width,
    seed, lr, technique and every technique option registered now."""
    return ("width", "seed", "lr", "technique", *option_keys())


#: each run key's check and text (:data:`~jumpstart.train.run_options.RUN_OPTIONS`)
CHECKS = {k: (o.check, o.text) for k, o in RUN_OPTIONS.items()}


def _option_check(key: str):
    for cls in TECHNIQUES.values():
        if key in cls.options:
            return cls.options[key].check, cls.options[key].text
    if key == "technique":
        return CHECKS[key][0], ("one of " + ", ".join(TECHNIQUES) + " or several joined by '+'")
    return CHECKS[key]


class SweepError(ValueError):
    """A sweep file or preset that cannot be used; the message says what and where."""


#: the most runs one group (one worker's unit of work, trained as one or a
#: few populations) holds: a crash loses at most this many runs' work; a
#: sweep file may set ``max_group`` (top level)
MAX_GROUP = 256


@dataclass(frozen=True)
class Sweep:
    """An expanded sweep.

    Attributes:
        name: the sweep's name.
        source: its run configs (flat dicts, unique, in grid order): a list,
            or a function returning a fresh iterator over them (a streamed
            grid, expanded as it is consumed: :meth:`iter_runs`).
        save_weights: store each run's trained weights (top-level key
            ``save_weights = true``; not part of any run's key), for
            ``jumpstart compress`` and :func:`jumpstart.train.rebuild_model`.
        max_group: the most runs a worker trains as one group
            (:data:`MAX_GROUP` by default; top-level key ``max_group``).
    """

    name: str
    source: list[dict] | Callable[[], Iterator[dict]]
    save_weights: bool = False
    max_group: int = MAX_GROUP

    def iter_runs(self) -> Iterator[dict]:
        """The run configs, one at a time (a streamed grid is never held whole)."""
        return iter(self.source) if isinstance(self.source, list) else self.source()

    @property
    def runs(self) -> list[dict]:
        """All run configs as one list (materializes a streamed grid)."""
        return self.source if isinstance(self.source, list) else list(self.source())


#: options added after results stores existed, with the default they had
#: implicitly before: left out of the key at that default, so the runs of an
#: older store keep their keys and a resumed sweep does not train them again
KEY_OMITTED_DEFAULTS = {"constraints": list(CONSTRAINTS)}


def _float_keys() -> frozenset[str]:
    """Run keys whose values are real numbers: the learning rate and every
    technique or optimizer option whose default is a float (computed once per
    state of the registry)."""
    return _float_keys_of(tuple(TECHNIQUES.values()))


@functools.lru_cache(maxsize=8)
def _float_keys_of(classes: tuple) -> frozenset[str]:
    options = {k: o for cls in classes for k, o in cls.options.items()}
    options.update(OPTIMIZER_OPTIONS)
    return frozenset({"lr", "init_lr", "test_split"} | {k for k, o in options.items()
                                          if isinstance(o.default, float)})


def canonical(config: dict) -> dict:
    """``config`` with the integers of real-valued keys as floats (``lam = 1``
    is ``lam = 1.0``) and their negative zeros as zeros (``-0.0`` is ``0.0``),
    so one run has one config and one key."""
    floats = _float_keys()
    return {k: float(v) + 0.0 if k in floats and isinstance(v, (int, float))
            and not isinstance(v, bool) else v for k, v in config.items()}


def run_key(config: dict) -> str:
    """Stable 16-hex-digit key of a run config (SHA-256 of the JSON of its
    :func:`canonical` form, options of :data:`KEY_OMITTED_DEFAULTS` at their
    default left out): ``lam = 1`` and ``lam = 1.0`` are one run."""
    config = {k: v for k, v in canonical(config).items()
              if not (k in KEY_OMITTED_DEFAULTS
                      and isinstance(v, (list, tuple)) and list(v) == KEY_OMITTED_DEFAULTS[k])}
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def group_key(config: dict) -> str:
    """Key shared by runs that can train together in one population."""
    members = member_keys()
    shared = {k: v for k, v in config.items() if k not in members}
    return run_key(shared)


def presets() -> list[str]:
    """Names of the sweep presets shipped with the package."""
    folder = resources.files("jumpstart.experiments") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read(preset_or_path: str | Path, seen: tuple[str, ...] = ()) -> tuple[str, dict]:
    """The sweep document of a preset or file, its ``extends`` applied (see
    the module docstring); ``seen``: the files extending it (a cycle is an
    error)."""
    path = Path(preset_or_path)
    folder = None
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SweepError((f"{seen[-1]}: extends " if seen else "")
                             + f"sweep file {path} not found")
        source, text, folder = str(path), path.read_text(), path.resolve().parent
    else:
        name = str(preset_or_path)
        if name not in presets():
            raise SweepError(
                (f"{seen[-1]}: extends " if seen else "")
                + f"unknown sweep preset {name!r}; presets: {', '.join(presets())} "
                "(or give the path of a .toml file)"
            )
        source = f"preset {name}"
        text = (resources.files("jumpstart.experiments") / "presets" / f"{name}.toml").read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{source}: not valid TOML: {exc}") from None
    parent = doc.pop("extends", None)
    if parent is None:
        return source, doc
    if not (isinstance(parent, str) and parent):
        raise SweepError(f"{source}: extends must be a preset name or a .toml path; "
                         f"got {parent!r}")
    if source in seen:
        raise SweepError(f"{source}: extends cycle: {' -> '.join((*seen, source))}")
    if folder is not None and parent.endswith(".toml"):
        parent = folder / parent
    base = _read(parent, (*seen, source))[1]
    for key, value in doc.items():
        merge = key != "grid" and isinstance(value, dict) and isinstance(base.get(key), dict)
        base[key] = {**base[key], **value} if merge else value
    return source, base


def _check_value(source: str, where: str, key: str, value) -> None:
    check, text = _option_check(key)
    if not check(value):
        raise SweepError(f"{source}: {where} {key} must be {text}; got {value!r}")


def load_sweep(preset_or_path: str | Path, *, seeds: int | None = None,
               data_dir: str | Path | None = None) -> Sweep:
    """Read, validate and expand a sweep preset (by name) or TOML file (by path).

    Args:
        preset_or_path: a name from :func:`presets` or a path to a ``.toml``.
        seeds: if given, replaces the ``seed`` axis with ``0 .. seeds-1``.
        data_dir: folder of tables; overrides the file's ``data_dir``.

    Returns:
        :class:`Sweep` whose runs hold every run key (defaults filled in; a
        run carries exactly the options of its technique).

    Raises:
        SweepError (a ValueError): file or preset not found, bad TOML, unknown
            table or key, a value of the wrong type or range, an empty axis,
            a required key missing, a data set that cannot be found; the
            message names the file and the key.
    """
    source, doc = _read(preset_or_path)
    return sweep_from_doc(doc, source, seeds=seeds, data_dir=data_dir)


def sweep_from_doc(doc: dict, source: str, *, seeds: int | None = None,
                   data_dir: str | Path | None = None) -> Sweep:
    """:func:`load_sweep` on a sweep file already read: ``doc`` as
    ``tomllib`` returns it, ``source`` naming it in messages (e.g. a
    comparison's benchmark, :mod:`jumpstart.experiments.compare`).

    Raises:
        SweepError: as :func:`load_sweep`.
    """
    options_now = set(option_keys())
    sections = {"fixed": set(CHECKS), "grid": set(CHECKS) | options_now,
                **{name: set(cls.options) for name, cls in TECHNIQUES.items()}}
    unknown = set(doc) - {"name", "description", "save_weights", "max_group", *sections}
    if unknown:
        raise SweepError(f"{source}: unknown top-level key(s) {sorted(unknown)}; allowed: "
                         f"name, description, save_weights, max_group, "
                         + ", ".join(f"[{s}]" for s in sections))
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise SweepError(f"{source}: needs a non-empty string 'name'")
    save_weights = doc.get("save_weights", False)
    if not isinstance(save_weights, bool):
        raise SweepError(f"{source}: save_weights must be true or false; got {save_weights!r}")
    grid_tables = doc.get("grid", {})
    if isinstance(grid_tables, dict):
        grid_tables = [grid_tables]
    if not (isinstance(grid_tables, list) and grid_tables
            and all(isinstance(t, dict) for t in grid_tables)):
        raise SweepError(f"{source}: [grid] must be a table or [[grid]] a list of tables")
    tables = {}
    for section, allowed in sections.items():
        for table in grid_tables if section == "grid" else [doc.get(section, {})]:
            if not isinstance(table, dict):
                raise SweepError(f"{source}: [{section}] must be a table")
            bad = set(table) - allowed
            if bad:
                raise SweepError(f"{source}: unknown key(s) {sorted(bad)} in [{section}]; "
                                 f"allowed: {', '.join(sorted(allowed)) or 'none'}")
            tables[section] = table
    options = {}
    for section, table in tables.items():
        if section == "grid":
            continue
        for key, value in table.items():
            _check_value(source, f"[{section}]", key, value)
        if section != "fixed":
            options.update(table)
    if seeds is not None and not (isinstance(seeds, int) and seeds >= 1):
        raise SweepError(f"seeds must be an integer >= 1; got {seeds!r}")
    base = {**BASE_DEFAULTS, **tables["fixed"]}
    if data_dir is not None:
        base["data_dir"] = str(Path(data_dir).resolve())

    def build(values: dict) -> dict:
        config = {k: v for k, v in {**base, **values}.items() if k not in options_now}
        for key, option in technique_options(config["technique"]).items():
            config[key] = values.get(key, options.get(key, option.default))
        return config

    grids = []
    for table in grid_tables:
        grid = dict(table)
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{source}: [grid] {key} must be a non-empty list; "
                                 f"got {values!r}")
            for v in values:
                _check_value(source, "[grid]", key, v)
        if seeds is not None:
            grid["seed"] = list(range(seeds))
        grid = _expand_datasets(source, base, grid)
        present = set(base) | set(grid)
        missing = [k for k in REQUIRED if k not in present]
        if missing:
            raise SweepError(f"{source}: missing {', '.join(missing)} (in [fixed] or [grid])")
        # the checks that combine keys, over the product of the axes they read
        # only (small), so a big grid is validated without being expanded
        checked = [k for k in grid if k in ("model", "dataset", "width", "technique",
                                            *OPTIMIZER_OPTIONS)]
        for combo in itertools.product(*(grid[k] for k in checked)):
            _check_combination(source, build(dict(zip(checked, combo))))
        grids.append(grid)

    def expand() -> Iterator[dict]:
        seen: set[str] = set()
        for grid in grids:
            for combo in itertools.product(*grid.values()):
                config = canonical(build(dict(zip(grid, combo))))
                key = run_key(config)
                if key not in seen:
                    seen.add(key)
                    yield config

    size = sum(math.prod(len(v) for v in grid.values()) for grid in grids)
    max_group = doc.get("max_group", MAX_GROUP)
    if not (isinstance(max_group, int) and not isinstance(max_group, bool) and max_group >= 1):
        raise SweepError(f"{source}: max_group must be an integer >= 1; got {max_group!r}")
    return Sweep(name, list(expand()) if size <= STREAM_FROM else expand, save_weights,
                 max_group)


#: grids with more combinations than this are streamed (expanded as consumed)
STREAM_FROM = 100_000


def _check_combination(source: str, config: dict) -> None:
    """The checks of a run config that combine keys
    (:func:`~jumpstart.train.run_options.check_combination`); raises :class:`SweepError`."""
    try:
        check_combination(config)
    except ValueError as exc:
        raise SweepError(f"{source}: {exc}") from None


def _expand_datasets(source: str, base: dict, grid: dict) -> dict:
    """Resolve ``dataset = ["*"]`` to the tables of the data folder and check
    that every named data set exists."""
    names = grid.get("dataset", [base["dataset"]] if "dataset" in base else [])
    folder = base.get("data_dir")
    try:
        if "*" in names:
            names = [n for n in names if n != "*"] + table_names(folder)
        for n in names:
            check_dataset(n, folder)
    except FileNotFoundError as exc:
        raise SweepError(f"{source}: {exc}") from None
    if "dataset" in grid:
        return {**grid, "dataset": list(dict.fromkeys(names))}
    return grid
