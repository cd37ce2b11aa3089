"""Training: the loop any technique uses, and one run end to end."""

from .loop import FitResult, fit
from .run import RunResult, train_run

__all__ = ["FitResult", "RunResult", "fit", "train_run"]
