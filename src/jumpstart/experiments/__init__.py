"""Experiments: declarative sweeps, the results store, backends, reports."""

from .config import Sweep, SweepError, load_sweep, presets, run_key
from .store import ResultsStore, load
from .report import write_report
from .sweep import run_sweep

__all__ = ["ResultsStore", "Sweep", "SweepError", "load", "load_sweep", "presets",
           "run_key", "run_sweep", "write_report"]
