"""The report registry: each report declares which runs it applies to and
writes its files; ``jumpstart report`` (:func:`jumpstart.experiments.report.write_report`)
runs every registered report that applies to a store's runs.

A report reads the store only (runs, curves); it never rebuilds a net: what
it needs is recorded in the run when the run is trained. A new report is one
module::

    from jumpstart.experiments.reports import register_report

    @register_report("lr_curves", applies=lambda runs: runs["lr"].nunique() > 1,
                     text="validation accuracy per epoch, one line per lr")
    def write_lr_curves(job):
        curves = job.store.curves(job.runs["key"])
        ...  # write files into job.out, return their paths

The shared predicates below say which experiment a frame of runs is, so that
the built-in reports' ``applies`` read as what they are for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
import pandas as pd


@dataclass(frozen=True)
class ReportInput:
    """What a report's ``write`` gets.

    Attributes:
        runs: the runs frame (:func:`jumpstart.experiments.store.load`,
            failed runs included, techniques split by ``--by``).
        store: the open :class:`~jumpstart.experiments.store.ResultsStore`
            (curves: ``store.curves(runs["key"])``).
        out: the folder to write into (exists).
        threshold: best train accuracy from which a grid cell counts as
            trainable (the grid report's ``trainable_depth``).
    """

    runs: pd.DataFrame
    store: object
    out: Path
    threshold: float


@dataclass(frozen=True)
class Report:
    """One registered report.

    Attributes:
        name: its name (``jumpstart report --help`` lists them).
        applies: ``applies(runs) -> bool`` on the runs frame
            (:func:`jumpstart.experiments.store.load`, failed runs included).
        write: ``write(job) -> list[Path]``: the files it wrote into
            ``job.out`` (:class:`ReportInput`).
        text: one line saying what it writes.
    """

    name: str
    applies: Callable[[pd.DataFrame], bool]
    write: Callable
    text: str


REPORTS: dict[str, Report] = {}


def register_report(name: str, *, applies: Callable[[pd.DataFrame], bool], text: str):
    """Decorator registering ``write(job: ReportInput) -> list[Path]`` as report ``name``.

    Raises:
        ValueError: the name is taken.
    """
    def add(write):
        if name in REPORTS:
            raise ValueError(f"report {name!r} is already registered")
        REPORTS[name] = Report(name, applies, write, text)
        return write

    return add


def reports_for(runs: pd.DataFrame) -> list[Report]:
    """The registered reports that apply to ``runs``, in registration order."""
    return [r for r in REPORTS.values() if r.applies(runs)]


def varies_init(runs: pd.DataFrame) -> bool:
    """Runs that differ in ``init``: an initialization comparison."""
    return "init" in runs and runs["init"].nunique() > 1


def has_technique(runs: pd.DataFrame, name: str) -> bool:
    """Some run's technique is ``name`` or a combination holding it."""
    return bool(runs["technique"].astype(str).str.split("+").map(lambda t: name in t).any())


def depth_width_grid(runs: pd.DataFrame) -> bool:
    """A depth x width x technique grid of one initialization with no
    Neural Rejuvenation run (whose net's depth is fixed by its family)."""
    return not varies_init(runs) and not has_technique(runs, "nr")


def has_test_part(runs: pd.DataFrame) -> bool:
    """Some run recorded a held-out test accuracy (a tabular benchmark, or
    images with ``test_split``)."""
    return "best_val_test_acc" in runs and bool(runs["best_val_test_acc"].notna().any())


#: the MNIST-like sets the MNIST grid report covers (CPAIOR 2022 Table 1)
MNIST_SETS = ("mnist", "mnist-5k", "fashion-mnist")


def image_sets(runs: pd.DataFrame) -> bool:
    """Every run on an MNIST-like set (:data:`MNIST_SETS`), or every run on a
    CIFAR set: the image grid reports (their test part, if any, is reported
    there)."""
    datasets = runs["dataset"].astype(str)
    return set(datasets) <= set(MNIST_SETS) or bool(datasets.str.startswith("cifar").all())
