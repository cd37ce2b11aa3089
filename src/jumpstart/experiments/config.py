"""Declarative sweeps: a TOML file (or a shipped preset) expanded to runs.

A sweep file has a ``name``, optional ``description``, and three tables:

- ``[fixed]``: settings every run shares (``dataset``, ``model``, ``epochs``,
  ``lr``, ``batch_size`` = ``"full"`` or an integer, ``curve_every``, ...);
- ``[jumpstart]``: options of the ``jumpstart`` technique (``lam``,
  ``aggregation``, ``margin``, ``sign_balance``, ``tie_break``,
  ``granularity``), dropped from ``baseline`` runs;
- ``[grid]``: axes, each a non-empty list; the runs are their product.

Any run key may sit in ``[fixed]``/``[jumpstart]`` as a scalar or in ``[grid]``
as a list. A run is a flat dict (its *config*); its key is a hash of the
config's canonical JSON, so the same run always has the same key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..core.deficits import GRANULARITIES, TIE_BREAKS
from ..core.regularizer import AGGREGATIONS
from ..data import DATASETS

MODELS = ("rectangular", "moons_conv")
TECHNIQUES = ("baseline", "jumpstart")
BASE_DEFAULTS = {"model": "rectangular", "epochs": 5000, "lr": 0.01, "batch_size": "full",
                 "curve_every": 50, "seed": 0}
JUMPSTART_DEFAULTS = {"lam": 1e-4, "aggregation": "balanced", "margin": 1.0,
                      "sign_balance": 0.5, "tie_break": "single", "granularity": "channel"}
REQUIRED = ("dataset", "depth", "width", "technique")
#: run keys a member of one population may vary in; the rest define the group
MEMBER_KEYS = ("width", "seed", "technique", "lam")


def _int_at_least(lo):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo
    return check, f"an integer >= {lo}"


def _number(pred, text):
    def check(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and pred(v)
    return check, text


def _choice(options):
    return (lambda v: v in options), "one of " + ", ".join(map(str, options))


CHECKS = {
    "dataset": _choice(tuple(DATASETS)),
    "model": _choice(MODELS),
    "depth": _int_at_least(1),
    "width": _int_at_least(1),
    "technique": _choice(TECHNIQUES),
    "epochs": _int_at_least(1),
    "curve_every": _int_at_least(1),
    "seed": _int_at_least(0),
    "lr": _number(lambda v: v > 0, "a number > 0"),
    "batch_size": ((lambda v: v == "full" or (isinstance(v, int) and not isinstance(v, bool)
                                              and v >= 1)), '"full" or an integer >= 1'),
    "lam": _number(lambda v: v >= 0, "a number >= 0"),
    "aggregation": _choice(AGGREGATIONS),
    "margin": _number(lambda v: v > 0, "a number > 0"),
    "sign_balance": _number(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "tie_break": _choice(TIE_BREAKS),
    "granularity": _choice(GRANULARITIES),
}
SECTIONS = {"fixed": set(CHECKS) - set(JUMPSTART_DEFAULTS),
            "jumpstart": set(JUMPSTART_DEFAULTS), "grid": set(CHECKS)}


class SweepError(ValueError):
    """A sweep file or preset that cannot be used; the message says what and where."""


@dataclass(frozen=True)
class Sweep:
    """An expanded sweep.

    Attributes:
        name: the sweep's name.
        runs: run configs (flat dicts), unique, in grid order.
    """

    name: str
    runs: list[dict]


def run_key(config: dict) -> str:
    """Stable 16-hex-digit key of a run config (SHA-256 of its canonical JSON)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def group_key(config: dict) -> str:
    """Key shared by runs that can train together in one population."""
    shared = {k: v for k, v in config.items() if k not in MEMBER_KEYS}
    return run_key(shared)


def presets() -> list[str]:
    """Names of the sweep presets shipped with the package."""
    folder = resources.files("jumpstart.experiments") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read(preset_or_path: str | Path) -> tuple[str, dict]:
    path = Path(preset_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SweepError(f"sweep file {path} not found")
        source, text = str(path), path.read_text()
    else:
        name = str(preset_or_path)
        if name not in presets():
            raise SweepError(
                f"unknown sweep preset {name!r}; presets: {', '.join(presets())} "
                "(or give the path of a .toml file)"
            )
        source = f"preset {name}"
        text = (resources.files("jumpstart.experiments") / "presets" / f"{name}.toml").read_text()
    try:
        return source, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{source}: not valid TOML: {exc}") from None


def _check_value(source: str, where: str, key: str, value) -> None:
    check, text = CHECKS[key]
    if not check(value):
        raise SweepError(f"{source}: {where} {key} must be {text}; got {value!r}")


def load_sweep(preset_or_path: str | Path, *, seeds: int | None = None) -> Sweep:
    """Read, validate and expand a sweep preset (by name) or TOML file (by path).

    Args:
        preset_or_path: a name from :func:`presets` or a path to a ``.toml``.
        seeds: if given, replaces the ``seed`` axis with ``0 .. seeds-1``.

    Returns:
        :class:`Sweep` whose runs hold every run key (defaults filled in;
        ``baseline`` runs carry no Jumpstart options and no ``lam``).

    Raises:
        SweepError (a ValueError): file or preset not found, bad TOML, unknown
            table or key, a value of the wrong type or range, an empty axis,
            a required key missing; the message names the file and the key.
    """
    source, doc = _read(preset_or_path)
    unknown = set(doc) - {"name", "description", *SECTIONS}
    if unknown:
        raise SweepError(f"{source}: unknown top-level key(s) {sorted(unknown)}; allowed: "
                         f"name, description, [fixed], [jumpstart], [grid]")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise SweepError(f"{source}: needs a non-empty string 'name'")
    tables = {}
    for section, allowed in SECTIONS.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise SweepError(f"{source}: [{section}] must be a table")
        bad = set(table) - allowed
        if bad:
            raise SweepError(f"{source}: unknown key(s) {sorted(bad)} in [{section}]; allowed: "
                             f"{', '.join(sorted(allowed))}")
        tables[section] = table
    for section in ("fixed", "jumpstart"):
        for key, value in tables[section].items():
            _check_value(source, f"[{section}]", key, value)
    grid = tables["grid"]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{source}: [grid] {key} must be a non-empty list; got {values!r}")
        for v in values:
            _check_value(source, "[grid]", key, v)
    if seeds is not None:
        if not (isinstance(seeds, int) and seeds >= 1):
            raise SweepError(f"seeds must be an integer >= 1; got {seeds!r}")
        grid = {**grid, "seed": list(range(seeds))}
    base = {**BASE_DEFAULTS, **tables["fixed"]}
    js = {**JUMPSTART_DEFAULTS, **tables["jumpstart"]}
    present = set(base) | set(grid)
    missing = [k for k in REQUIRED if k not in present]
    if missing:
        raise SweepError(f"{source}: missing {', '.join(missing)} (in [fixed] or [grid])")
    axes = list(grid)
    runs, seen = [], set()
    for combo in itertools.product(*(grid[k] for k in axes)):
        config = {**base, **js, **dict(zip(axes, combo))}
        if config["technique"] == "baseline":
            for key in JUMPSTART_DEFAULTS:
                config.pop(key)
        if config["model"] == "moons_conv" and config["dataset"] != "moons":
            raise SweepError(f"{source}: model moons_conv takes the moons data set only")
        key = run_key(config)
        if key not in seen:
            seen.add(key)
            runs.append(config)
    return Sweep(name, runs)
