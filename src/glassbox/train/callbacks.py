"""Callbacks: how capabilities join a training run without editing the Trainer.

In-run valuation, the ledger, learning-dynamics tracking, differential
privacy and the progress bar are all callbacks. A callback sees the trainer
(read its ``model``, ``optimizer_``, ``history_``) and, at each step, a
``StepInfo`` with the batch itself and which examples it held.

Order within a step: forward and backward of each micro-batch
(``train.accumulate`` of them), ``on_after_backward`` once (the whole
batch's gradients are there, parameters not yet updated: the place for
per-example work on the current weights), gradient clipping, optimizer
step, ``on_step_end``.

One callback may take over the forward and backward of each micro-batch
(``forward_backward``): in-run valuation appends validation rows to the
batch so that a single backward pass yields every example's score. A
callback with state that must survive ``--resume`` returns it from
``state_dict`` (tensors, numbers, strings, lists and dicts only: checkpoints
load with ``weights_only``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from glassbox.run import Run
    from glassbox.train.trainer import Trainer


@dataclass
class StepInfo:
    step: int  # global optimizer step, counting from 1
    epoch: int  # counting from 1
    indices: torch.Tensor  # (B,) positions of the batch's rows in the training Dataset
    source_ids: torch.Tensor  # (B,) the same rows' ids in the loaded source (Dataset.index)
    x: torch.Tensor  # the batch's inputs
    y: torch.Tensor  # the batch's targets
    loss: torch.Tensor  # scalar mean loss of the batch (detached)
    optimizer: torch.optim.Optimizer


@dataclass
class MicroBatch:
    """One micro-batch of a step: the rows, and how its losses enter the batch loss.

    The batch loss is ``scale * sum(per-example losses)`` over all micro-batches
    of the step (``scale`` is 1 / batch size, or 1 / sum of class weights under
    ``train.class_weight: balanced``), so accumulation gives the same gradient
    as one big batch.
    """

    number: int  # 0-based, within the step
    count: int  # micro-batches in this step
    indices: torch.Tensor  # (b,) positions in the training Dataset
    source_ids: torch.Tensor  # (b,) ids in the loaded source
    x: torch.Tensor
    y: torch.Tensor
    scale: float


class Callback:
    """Override what you need; every hook is a no-op by default."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def forward_backward(self, trainer: Trainer, micro: MicroBatch) -> torch.Tensor | None:
        """Replace the trainer's forward and backward of one micro-batch.

        Must leave the micro-batch's share of the batch gradient accumulated in
        each parameter's ``.grad``, exactly as ``Trainer.forward_backward`` does,
        and return the detached loss ``scale * sum(losses)``. At most one
        callback of a Trainer may override this.
        """
        return None

    def state_dict(self) -> dict[str, Any] | None:
        """State to keep in checkpoints (None: nothing to keep)."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s result; called on resume, after ``on_fit_start``."""

    def on_after_backward(self, trainer: Trainer, info: StepInfo) -> None: ...

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """Called after a checkpoint folder ``path`` was written completely."""

    def on_fit_end(self, trainer: Trainer) -> None: ...


class RunLogger(Callback):
    """Mirrors the trainer's history into the run folder's metrics.jsonl.

    On resume the history comes back from the checkpoint, so the file is
    rewritten from it first: steps the killed process logged after its last
    checkpoint are dropped rather than duplicated.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self._written = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        import json

        lines = "".join(json.dumps(r) + "\n" for r in trainer.history_)
        self.run.write_text("metrics.jsonl", lines)
        self._written = len(trainer.history_)

    def _flush(self, trainer: Trainer) -> None:
        for record in trainer.history_[self._written :]:
            self.run.log(record)
        self._written = len(trainer.history_)

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        self._flush(trainer)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self._flush(trainer)

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        # Into the ledger: the metrics so far, then the new checkpoint and the removal of the old one.
        self._flush(trainer)
        self.run.ledger.flush()
        folder = path.parent
        if folder.parent == self.run.path:
            self.run.ledger.sync(folder.name)

    def on_fit_end(self, trainer: Trainer) -> None:
        self._flush(trainer)


class ProgressBar(Callback):
    """A rich progress bar on a terminal; silent when stderr is not one (CI, pipes, files)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Any = None
        self._task: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=trainer.total_steps_, completed=trainer.global_step_, status=""
        )

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        if self._progress is not None and info.step % 5 == 0:
            self._progress.update(self._task, completed=info.step, status=f"loss {info.loss.item():.4f}")

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self._progress is not None:
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val_"))
            self._progress.update(self._task, completed=trainer.global_step_, status=f"epoch {epoch} {shown}")

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=trainer.global_step_)
            self._progress.stop()
            self._progress = None
