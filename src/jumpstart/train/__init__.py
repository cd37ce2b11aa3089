"""Training: the single-run loop, one run end to end, the population
trainers, and the routing that picks a trainer for a run config."""

from .history import CURVE_METRICS, History, MemberResult
from .loop import FitResult, fit
from .route import TRAINERS, route
from .run import RunResult, train_run

__all__ = ["CURVE_METRICS", "FitResult", "History", "MemberResult", "RunResult", "TRAINERS",
           "fit", "route", "train_run"]
