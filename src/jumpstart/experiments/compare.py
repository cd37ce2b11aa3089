"""Comparisons: every technique on several benchmarks, each with its own
protocol, run into one results store and reported as one table.

A comparison file (TOML; the shipped one is ``comparisons/default.toml``,
:func:`load_comparison` without a path) holds:

- ``benchmarks``: the benchmarks run when none are named;
- ``[technique.LABEL]``: one compared technique: ``technique`` (the
  registered technique or ``a+b`` combination; default ``LABEL``), ``fixed``
  (run settings and options every run of it takes, e.g. ``init =
  "decorrelated"``), ``grid`` (its options' values, chosen per problem on
  validation data);
- ``[benchmark.NAME]``: ``description``, ``fixed`` and ``grid`` as in a sweep
  file (:mod:`jumpstart.experiments.config`), ``problem`` (the config keys
  that name one problem: ``["dataset"]`` for tables, ``["depth", "width"]``
  for a grid's cells), optional ``success`` (a problem counts as trained when
  its selected best validation accuracy exceeds it), optional ``chance``
  (the test accuracy of guessing, e.g. 0.1 for ten balanced classes; the
  report greys out a benchmark where no technique is above it) and ``options``
  (technique options scaled to the protocol: each run takes those its
  technique has, below its own ``fixed``), optional ``max_group`` (as in a
  sweep file: 1 records each long single-loop run as soon as it ends).
  Another comparison file may name a benchmark of the shipped default
  comparison without defining it: it is then that benchmark, protocol and
  all, so a file that changes the techniques only holds the techniques; a
  ``[benchmark.NAME]`` table of its own replaces the shipped one whole.

Each benchmark becomes one sweep named ``compare-NAME`` whose grids are the
benchmark's ``grid`` joined with each technique's (``[[grid]]`` tables, so
:func:`~jumpstart.experiments.config.sweep_from_doc` validates every value
before any run); runs already in the store are not trained again.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..data import SOURCES
from ..techniques import technique_options
from .config import MAX_GROUP, Sweep, SweepError, run_key, sweep_from_doc

#: the comparison file :func:`load_comparison` reads when given no path
DEFAULT = "default"
#: the keys of one ``[technique.LABEL]`` and one ``[benchmark.NAME]`` table
TECHNIQUE_KEYS = {"technique", "fixed", "grid"}
BENCHMARK_KEYS = {"description", "problem", "success", "chance", "fixed", "grid", "options",
                  "max_group"}


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of a comparison, expanded.

    Attributes:
        name: its name (the sweep is ``compare-NAME``).
        description: its protocol in words.
        problem: the config keys naming one problem (``("dataset",)``, or
            ``("depth", "width")``).
        success: validation accuracy above which a problem counts as
            trained, or ``None`` (no such count).
        chance: test accuracy of guessing, or ``None`` (not one level, e.g.
            tables with different class balances).
        sweep: its runs (:class:`~jumpstart.experiments.config.Sweep`).
        labels: run key -> the compared technique's label.
    """

    name: str
    description: str
    problem: tuple[str, ...]
    success: float | None
    chance: float | None
    sweep: Sweep
    labels: dict[str, str]


@dataclass(frozen=True)
class Comparison:
    """A comparison file, expanded for the benchmarks and techniques asked for.

    Attributes:
        name, description: the file's.
        techniques: the labels compared, in the file's order.
        grids: label -> its option grid as text (``"lam in {0.1, 1}"``), for
            the report.
        benchmarks: the :class:`Benchmark` s, in the order asked for.
    """

    name: str
    description: str
    techniques: tuple[str, ...]
    grids: dict[str, str]
    benchmarks: tuple[Benchmark, ...]


def comparisons() -> list[str]:
    """Names of the comparison files shipped with the package."""
    folder = resources.files("jumpstart.experiments") / "comparisons"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read(name_or_path: str | Path | None) -> tuple[str, dict]:
    path = Path(name_or_path) if name_or_path is not None else None
    if path is not None and (path.suffix == ".toml" or path.exists()):
        if not path.is_file():
            raise SweepError(f"comparison file {path} not found")
        source, text = str(path), path.read_text()
    else:
        name = DEFAULT if name_or_path is None else str(name_or_path)
        if name not in comparisons():
            raise SweepError(f"unknown comparison {name!r}; shipped: {', '.join(comparisons())} "
                             "(or give the path of a .toml file)")
        source = f"comparison {name}"
        text = (resources.files("jumpstart.experiments") / "comparisons"
                / f"{name}.toml").read_text()
    try:
        return source, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{source}: not valid TOML: {exc}") from None


def _table(source: str, where: str, value, allowed: set[str] | None = None) -> dict:
    """``value`` checked to be a table whose keys are all in ``allowed`` (any
    keys when ``None``)."""
    if not isinstance(value, dict):
        raise SweepError(f"{source}: [{where}] must be a table")
    bad = set(value) - allowed if allowed is not None else set()
    if bad:
        raise SweepError(f"{source}: unknown key(s) {sorted(bad)} in [{where}]; allowed: "
                         + ", ".join(sorted(allowed)))
    return value


def _pick(source: str, kind: str, asked, known: list[str]) -> list[str]:
    if asked is None:
        return known
    names = list(dict.fromkeys(asked))
    unknown = [n for n in names if n not in known]
    if not known:
        raise SweepError(f"{source}: defines no {kind} ([{kind}.NAME] tables)")
    if unknown or not names:
        raise SweepError(f"{source}: unknown {kind}(s) {unknown or '(none given)'}; "
                         f"known: {', '.join(known)}")
    return names


def _grid_text(grid: dict) -> str:
    return ", ".join(f"{k} in {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vs)}}}"
                     for k, vs in grid.items()) or "none"


def load_comparison(name_or_path: str | Path | None = None, *,
                    benchmarks: list[str] | None = None, techniques: list[str] | None = None,
                    seeds: int | None = None, data_dir: str | Path | None = None) -> Comparison:
    """Read, validate and expand a comparison file.

    Args:
        name_or_path: a shipped comparison (:func:`comparisons`) or a
            ``.toml`` path; ``None`` is :data:`DEFAULT`.
        benchmarks: the benchmarks to run, by name (the file's own or, for
            a file other than the default, the default's); ``None``: the
            file's ``benchmarks`` list, or else its own benchmarks, or else
            the default's.
        techniques: the technique labels to compare; ``None``: all of them.
        seeds: replaces every benchmark's ``seed`` axis with ``0 .. seeds-1``.
        data_dir: folder of tables (as ``jumpstart sweep --data-dir``), for
            the benchmarks on tables only (the others read their own folder
            in the shared data folder).

    Returns:
        The :class:`Comparison`.

    Raises:
        SweepError (a ValueError): file not found, bad TOML, an unknown key,
            benchmark or technique; a grid with more than two settings; two
            techniques that give the same run; any error of the sweep a
            benchmark expands to (the message names the benchmark).
    """
    source, doc = _read(name_or_path)
    _table(source, "top level", doc, {"name", "description", "benchmarks", "technique",
                                      "benchmark"})
    techs = _table(source, "technique", doc.get("technique", {}))
    own = _table(source, "benchmark", doc.get("benchmark", {}))
    shipped = {} if source == f"comparison {DEFAULT}" else _read(None)[1]["benchmark"]
    marks = {**shipped, **own}
    default = doc.get("benchmarks", list(own or marks))
    entries, grids = {}, {}
    for label in techs:
        entry = _table(source, f"technique.{label}", techs[label], TECHNIQUE_KEYS)
        fixed = _table(source, f"technique.{label}.fixed", entry.get("fixed", {}))
        grid = _table(source, f"technique.{label}.grid", entry.get("grid", {}))
        settings = 1
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{source}: [technique.{label}] grid {key} must be a "
                                 f"non-empty list; got {values!r}")
            settings *= len(values)
        if settings > 2:
            raise SweepError(f"{source}: [technique.{label}] grid has {settings} settings; "
                             "every technique gets the same budget, at most 2")
        entries[label] = (entry.get("technique", label), fixed, grid)
        grids[label] = _grid_text(grid)
    labels = _pick(source, "technique", techniques, list(techs))
    names = _pick(source, "benchmark", benchmarks if benchmarks is not None else default,
                  list(marks))
    out = []
    for name in names:
        mark = _table(source, f"benchmark.{name}", marks[name], BENCHMARK_KEYS)
        problem = mark.get("problem")
        if not (isinstance(problem, list) and problem and all(isinstance(k, str) for k in problem)):
            raise SweepError(f"{source}: [benchmark.{name}] problem must be a non-empty list "
                             f"of config keys; got {problem!r}")
        success = mark.get("success")
        if success is not None and not (isinstance(success, (int, float)) and 0 <= success < 1):
            raise SweepError(f"{source}: [benchmark.{name}] success must be a number in "
                             f"[0, 1); got {success!r}")
        chance = mark.get("chance")
        if chance is not None and not (isinstance(chance, (int, float)) and 0 < chance < 1):
            raise SweepError(f"{source}: [benchmark.{name}] chance must be a number in "
                             f"(0, 1); got {chance!r}")
        fixed = _table(source, f"benchmark.{name}.fixed", mark.get("fixed", {}))
        axes = _table(source, f"benchmark.{name}.grid", mark.get("grid", {}))
        scaled = _table(source, f"benchmark.{name}.options", mark.get("options", {}))
        named = axes.get("dataset", [fixed.get("dataset")])
        tables_only = isinstance(named, list) and not any(d in SOURCES for d in named)
        tables = []
        for label in labels:
            technique, tech_fixed, tech_grid = entries[label]
            try:
                own = set(technique_options(technique))
            except ValueError as exc:
                raise SweepError(f"{source}: [technique.{label}]: {exc}") from None
            grid = {**axes, "technique": [technique],
                    **{k: [v] for k, v in scaled.items() if k in own},
                    **{k: [v] for k, v in tech_fixed.items()}, **tech_grid}
            tables.append(grid)
        sweep_doc = {"name": f"compare-{name}", "description": mark.get("description", ""),
                     "max_group": mark.get("max_group", MAX_GROUP), "fixed": fixed}
        keys, configs = {}, []
        for label, table in zip(labels, tables):  # each technique's grid expanded once
            one = sweep_from_doc({**sweep_doc, "grid": [table]}, f"{source}, benchmark {name}",
                                 seeds=seeds, data_dir=data_dir if tables_only else None)
            for config in one.runs:
                key = run_key(config)
                if key in keys:
                    raise SweepError(f"{source}: techniques {keys[key]!r} and {label!r} give "
                                     f"the same run on benchmark {name}")
                keys[key] = label
                configs.append(config)
        sweep = Sweep(one.name, configs, one.save_weights, one.max_group)
        out.append(Benchmark(name, mark.get("description", ""), tuple(problem),
                             None if success is None else float(success),
                             None if chance is None else float(chance), sweep, keys))
    return Comparison(doc.get("name", source), doc.get("description", ""), tuple(labels),
                      {label: grids[label] for label in labels}, tuple(out))


def run_comparison(comparison: Comparison, db: str | Path, *, workers: int = 2,
                   backend: str = "local", address: str | None = None,
                   retry_failed: bool = False, progress: bool | None = None) -> dict[str, dict]:
    """Run (or resume) every benchmark's sweep of ``comparison`` into ``db``.

    Args:
        comparison: from :func:`load_comparison`.
        db: results database (created if missing; runs it holds are skipped).
        workers, backend, address, retry_failed, progress: as
            :func:`~jumpstart.experiments.sweep.run_sweep`.

    Returns:
        Per benchmark name: :func:`~jumpstart.experiments.sweep.run_sweep`'s
        counts and ``wall_seconds``, the time this call spent on it.

    Raises:
        ValueError: as :func:`~jumpstart.experiments.sweep.run_sweep`.
    """
    import time

    from .sweep import run_sweep

    out = {}
    for bench in comparison.benchmarks:
        start = time.perf_counter()
        counts = run_sweep(bench.sweep, db, workers=workers, backend=backend, address=address,
                           retry_failed=retry_failed, progress=progress)
        out[bench.name] = {**counts, "wall_seconds": time.perf_counter() - start}
    return out
