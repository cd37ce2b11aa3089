"""Training: the single-run loop, one run end to end, the population
trainers, and the routing that picks a trainer for a run config."""

from .checkpoint import checkpoint_bytes, read_checkpoint, rebuild_model
from .history import CURVE_METRICS, History, MemberResult
from .loop import FitResult, fit
from .route import TRAINERS, route
from .run import RunResult, train_run

__all__ = ["CURVE_METRICS", "FitResult", "History", "MemberResult", "RunResult", "TRAINERS",
           "checkpoint_bytes", "fit", "read_checkpoint", "rebuild_model", "route", "train_run"]
