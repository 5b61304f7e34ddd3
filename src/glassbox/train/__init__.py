"""Training: the Trainer, its callbacks, checkpoints and metrics."""

from glassbox.train.callbacks import Callback, MicroBatch, ProgressBar, RunLogger, StepInfo
from glassbox.train.trainer import Trainer

__all__ = ["Callback", "MicroBatch", "ProgressBar", "RunLogger", "StepInfo", "Trainer"]
