"""Training: the Trainer, its callbacks, checkpoints and metrics."""

from glassbox.train.callbacks import Callback, ProgressBar, RunLogger, StepInfo
from glassbox.train.trainer import Trainer

__all__ = ["Callback", "ProgressBar", "RunLogger", "StepInfo", "Trainer"]
