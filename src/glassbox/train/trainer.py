"""The Trainer: one loop for every model family, extended through callbacks.

>>> from glassbox.config import ModelConfig, TrainConfig
>>> from glassbox.data import load_dataset, split_dataset
>>> from glassbox.nn import build_model
>>> tr, va, te = split_dataset(load_dataset("iris"), 0.2, 0.2, seed=0)
>>> model = build_model(ModelConfig(dim=16, depth=1), tr)
>>> trainer = Trainer(model, TrainConfig(epochs=2, batch_size=32)).fit(tr, va)
>>> sorted(trainer.evaluate(te))
['accuracy', 'loss', 'macro_f1']
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glassbox.config import TrainConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.train import distributed
from glassbox.train.callbacks import Callback, MicroBatch, StepInfo
from glassbox.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from glassbox.train.metrics import classification_metrics, higher_is_better, lm_metrics

EVAL_BATCH = 512  # evaluation has no gradients, so larger batches are cheaper per row


def _lr_lambda(total: int, warmup_steps: int, schedule: str):
    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


class Trainer:
    """Fits a model on a Dataset as a TrainConfig says.

    Learned state after ``fit``: ``history_`` (one record per step and per
    epoch), ``best_metric_``, ``best_epoch_``, ``global_step_``,
    ``stopped_early_``; the model ends with its best validation weights.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        callbacks: Iterable[Callback] = (),
        seed: int = 0,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.callbacks = list(callbacks)
        self.seed = seed
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    # -- losses -------------------------------------------------------------------
    def loss_fn(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        task: str,
        reduction: str = "mean",
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Cross-entropy; for LMs over every next byte. reduction='none' gives one loss per example.

        ``weight`` (K,) weighs classes, as ``train.class_weight: balanced`` asks;
        ``label_smoothing`` only enters the training term (``example_losses``).
        """
        if task == "lm":
            # logits (B, T, V), y (B, T); targets of -100 are ignored (prompt
            # positions of a recall task), so average over the scored ones only.
            per_tok = nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T)
            scored = (y != -100).sum(dim=1).clamp(min=1)
            per_ex = per_tok.sum(dim=1) / scored
            return per_ex.mean() if reduction == "mean" else per_ex
        return nn.functional.cross_entropy(
            logits, y, reduction=reduction, weight=weight, label_smoothing=label_smoothing
        )

    def example_losses(self, logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
        """(B,) each example's term of the training loss (class-weighted when weights are on).

        ``logits`` must come from the model's latest forward: that forward's ``deep_penalty``
        (``take_penalty``), if any, is added to its rows.
        """
        from glassbox.nn.models import take_penalty

        w = None if self.class_weights_ is None else self.class_weights_.to(logits.dtype)
        eps = self.config.label_smoothing if task == "classification" else 0.0
        losses = self.loss_fn(logits, y, task, reduction="none", weight=w, label_smoothing=eps)
        return losses + take_penalty(self.model, len(losses))

    def loss_scale(self, y: torch.Tensor, task: str) -> float:
        """1 / the batch loss's denominator: the batch size, or the sum of class weights.

        ``cross_entropy(weight=w)`` with mean reduction divides by ``sum(w[y])``;
        computed over the whole step's labels so micro-batches add up to it.
        """
        if task == "classification" and self.class_weights_ is not None:
            return 1.0 / float(self.class_weights_[y].sum())
        return 1.0 / len(y)

    @staticmethod
    def balanced_weights(train: Dataset) -> torch.Tensor:
        """n / (K * count_k), as scikit-learn's class_weight='balanced'; absent classes get 0."""
        counts = torch.bincount(train.y, minlength=train.n_classes).float()
        w = len(train) / (train.n_classes * counts.clamp(min=1))
        return torch.where(counts > 0, w, torch.zeros_like(w))

    @staticmethod
    def inputs_targets(x: torch.Tensor, y: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        if task == "lm":
            if y.ndim == 2:
                return x, y  # per-position targets given (e.g. MQAR answers), (B, T) each
            return x[:, :-1], x[:, 1:]  # (B, T) inputs, (B, T) next-byte targets
        return x, y

    # -- batching -----------------------------------------------------------------
    def _epoch_order(self, n: int, epoch: int) -> torch.Tensor:
        # The order of epoch e depends only on (seed, e), so a resumed run replays
        # the same batches without having to save the sampler.
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)

    def _batches(self, n: int, epoch: int) -> list[torch.Tensor]:
        order = self._epoch_order(n, epoch)
        bs = self.config.batch_size
        batches = [order[i : i + bs] for i in range(0, n, bs)]
        if self.config.max_steps_per_epoch is not None:
            batches = batches[: self.config.max_steps_per_epoch]
        return batches

    # -- evaluation ---------------------------------------------------------------
    def predict_proba(self, data: Dataset) -> np.ndarray:
        """Class probabilities (N, K) for classification data."""
        return predict_proba(self.model, data)

    @torch.no_grad()
    def evaluate(self, data: Dataset) -> dict[str, float]:
        if data.task == "classification":
            return classification_metrics(data.y.numpy(), self.predict_proba(data))
        was = self.model.training
        self.model.eval()
        nll, tokens, correct = 0.0, 0, 0
        for i in range(0, len(data), EVAL_BATCH):
            x, y = self.inputs_targets(data.X[i : i + EVAL_BATCH], data.y[i : i + EVAL_BATCH], "lm")
            logits = self.model(x)  # (B, T, V)
            scored = y != -100
            tok_loss = nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
            nll += tok_loss[scored].sum().item()
            tokens += int(scored.sum())
            correct += int((logits.argmax(-1) == y)[scored].sum())
        self.model.train(was)
        return {**lm_metrics(nll / max(1, tokens)), "accuracy": correct / max(1, tokens)}

    # -- fitting ------------------------------------------------------------------
    def _monitor(self, task: str) -> str:
        m = self.config.monitor
        if m == "auto":
            return "val_accuracy" if task == "classification" else "val_loss"
        return m

    def _build_optim(self) -> None:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "adamw":
            self.optimizer_: torch.optim.Optimizer = torch.optim.AdamW(
                params, lr=c.lr, weight_decay=c.weight_decay
            )
        else:
            self.optimizer_ = torch.optim.SGD(
                params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
            )
        warm = round(c.warmup * self.total_steps_)
        self.scheduler_ = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer_, _lr_lambda(self.total_steps_, warm, c.schedule)
        )

    def _state(self, epoch: int, batch_in_epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "global_step": self.global_step_,
            "optimizer": self.optimizer_.state_dict(),
            "scheduler": self.scheduler_.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "history": self.history_,
            "best_metric": self.best_metric_,
            "best_epoch": self.best_epoch_,
            "best_weights": self._best_weights,
            "bad_epochs": self._bad_epochs,
            "stopped_early": self.stopped_early_,
            "callbacks": {key: cb.state_dict() for key, cb in self._callback_keys()},
        }

    def _callback_keys(self) -> list[tuple[str, Callback]]:
        # Keyed by class and position among callbacks of that class, so state finds its owner on resume.
        seen: dict[str, int] = {}
        out = []
        for cb in self.callbacks:
            name = type(cb).__qualname__
            out.append((f"{name}:{seen.get(name, 0)}", cb))
            seen[name] = seen.get(name, 0) + 1
        return out

    def _checkpoint(self, epoch: int, batch_in_epoch: int) -> None:
        if self.checkpoint_dir is not None:
            state = self._state(epoch, batch_in_epoch)  # on every rank: callbacks may gather their state
            if not self.dist_.main:
                return  # rank 0 alone writes the run folder
            path = save_checkpoint(self.checkpoint_dir, self.global_step_, self.model.state_dict(), state)
            for cb in self.callbacks:
                cb.on_checkpoint(self, path)

    def _restore(self) -> tuple[int, int]:
        """Load the latest checkpoint; returns (epoch, batches already done in it)."""
        assert self.checkpoint_dir is not None
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            raise UserError(f"no checkpoint to resume from in {self.checkpoint_dir}; start the run afresh")
        weights, st = load_checkpoint(path)
        self.model.load_state_dict(weights)
        self.optimizer_.load_state_dict(st["optimizer"])
        self.scheduler_.load_state_dict(st["scheduler"])
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["python_rng"])
        self.global_step_ = st["global_step"]
        self.history_ = st["history"]
        self.best_metric_ = st["best_metric"]
        self.best_epoch_ = st["best_epoch"]
        self._best_weights = st["best_weights"]
        self._bad_epochs = st["bad_epochs"]
        self.stopped_early_ = st["stopped_early"]
        self._callback_states = st.get("callbacks", {})
        return st["epoch"], st["batch_in_epoch"]

    def fit(self, train: Dataset, val: Dataset | None = None, *, resume: bool = False) -> Trainer:
        c = self.config
        if c.threads is not None:
            torch.set_num_threads(c.threads)
        task = train.task
        monitor = self._monitor(task)
        self.monitor_ = monitor
        self.task_ = task
        self.train_data_ = train
        self.val_data_ = val
        owners = [cb for cb in self.callbacks if type(cb).forward_backward is not Callback.forward_backward]
        if len(owners) > 1:
            names = ", ".join(type(cb).__name__ for cb in owners)
            raise ValueError(f"only one callback may replace the forward and backward; got {names}")
        self._owner = owners[0] if owners else None
        self.dist_ = distributed.current()
        self._ddp: nn.Module | None = None
        if self.dist_.active and self._owner is None:
            from torch.nn.parallel import DistributedDataParallel

            # Identical seeds give identical initial weights; DDP also broadcasts rank 0's.
            self._ddp = DistributedDataParallel(self.model)
        self._callback_states: dict[str, Any] = {}
        balanced = c.class_weight == "balanced" and task == "classification"
        self.class_weights_ = self.balanced_weights(train) if balanced else None
        steps_per_epoch = len(self._batches(len(train), 1))
        self.total_steps_ = steps_per_epoch * c.epochs
        self.history_: list[dict[str, Any]] = []
        self.global_step_ = 0
        self.best_metric_: float | None = None
        self.best_epoch_: int | None = None
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._bad_epochs = 0
        self.stopped_early_ = False
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        self._build_optim()
        start_epoch, skip = 1, 0
        if resume:
            start_epoch, skip = self._restore()

        self.model.train()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        for key, cb in self._callback_keys():
            if self._callback_states.get(key) is not None:
                cb.load_state_dict(self._callback_states[key])
        for epoch in range(start_epoch, c.epochs + 1):
            if self.stopped_early_:
                break  # resumed from the checkpoint written when early stopping fired
            self._run_epoch(train, epoch, skip, task)
            skip = 0
            self._end_epoch(val, epoch, monitor)
        if self._best_weights is not None:
            self.model.load_state_dict(self._best_weights)
        self.model.eval()
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self

    def forward_backward(self, micro: MicroBatch) -> torch.Tensor:
        """Forward and backward of one micro-batch; its gradient share accumulates in ``.grad``.

        Under DDP the loss is scaled by the world size, since DDP averages the
        ranks' gradients and each rank's ``scale`` is already its share of the global batch.
        """
        if self._ddp is None:
            loss = self.example_losses(self.model(micro.x), micro.y, self.task_).sum() * micro.scale
            loss.backward()
            return loss.detach()
        import contextlib

        last = micro.number == micro.count - 1
        sync = contextlib.nullcontext() if last else self._ddp.no_sync()  # reduce once per step
        with sync:
            loss = self.example_losses(self._ddp(micro.x), micro.y, self.task_).sum() * micro.scale
            (loss * self.dist_.world).backward()
        return loss.detach()

    def _micro_batches(self, train: Dataset, idx: torch.Tensor, task: str) -> list[MicroBatch]:
        scale = self.loss_scale(train.y[idx], task)  # of the global batch, whichever rank holds a row
        idx = distributed.shard(idx, self.dist_)  # (a part of the global batch; may be empty)
        parts = idx.tensor_split(max(1, min(self.config.accumulate, len(idx))))
        out = []
        augment = self._augments(train)
        for m, part in enumerate(parts):
            x, y = self.inputs_targets(train.X[part], train.y[part], task)
            if augment:
                x = self._augment(x, m)
            out.append(MicroBatch(m, len(parts), part, train.index[part], x, y, scale))
        return out

    def _augments(self, train: Dataset) -> bool:
        return self.config.augment == "auto" and train.kind == "image" and train.task == "classification"

    def _augment(self, x: torch.Tensor, micro: int) -> torch.Tensor:
        """A mild random crop, rotation and shift of each image (B, C, H, W), seeded by step and micro-batch.

        Mild on purpose: an 8 x 8 digit cropped to half its area is often
        another digit (glassbox.ssl.views.image_view). The seed depends only on
        (seed, step, micro-batch), so a resumed run sees the same views.
        """
        from glassbox.ssl.views import image_view

        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.global_step_) * 64 + micro)
        return image_view(x, g, scale=(0.85, 1.0), degrees=10.0, translate=0.0, noise=0.0)

    def _run_epoch(self, train: Dataset, epoch: int, skip: int, task: str) -> None:
        c = self.config
        every = c.checkpoint_every
        batches = self._batches(len(train), epoch)
        step = self._owner.forward_backward if self._owner is not None else None
        for b, idx in enumerate(batches):
            if b < skip:
                continue  # done before the checkpoint we resumed from
            self.optimizer_.zero_grad(set_to_none=True)
            micros = self._micro_batches(train, idx, task)
            loss = torch.zeros(())
            for micro in micros:
                part = step(self, micro) if step is not None else None
                loss = loss + (part if part is not None else self.forward_backward(micro))
            if self.dist_.active:
                loss = self._reduce_step(loss, owned=step is not None)
            if not torch.isfinite(loss):
                raise UserError(
                    f"training loss became {loss.item()} at step {self.global_step_ + 1}; lower train.lr"
                )
            self.global_step_ += 1
            if len(micros) == 1:
                x, y = micros[0].x, micros[0].y
            else:
                x, y = torch.cat([m.x for m in micros]), torch.cat([m.y for m in micros])  # as trained on
            info = StepInfo(self.global_step_, epoch, idx, train.index[idx], x, y, loss, self.optimizer_)
            for cb in self.callbacks:
                cb.on_after_backward(self, info)
            if c.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.optimizer_.step()
            lr = self.scheduler_.get_last_lr()[0]
            self.scheduler_.step()
            self.history_.append(
                {"step": self.global_step_, "epoch": epoch, "train_loss": loss.item(), "lr": lr}
            )
            for cb in self.callbacks:
                cb.on_step_end(self, info)
            if every and self.global_step_ % every == 0:
                self._checkpoint(epoch, b + 1)

    def _reduce_step(self, loss: torch.Tensor, owned: bool) -> torch.Tensor:
        """The step's global loss; and, when a callback did the backward, the gradients summed over ranks."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if owned:
            # Every rank must send the same tensors: a parameter a rank's rows did not reach gets zeros.
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            distributed.all_reduce_sum([p.grad for p in params])
        total = loss.detach().clone().reshape(1)
        distributed.all_reduce_sum([total])
        return total[0]

    def _end_epoch(self, val: Dataset | None, epoch: int, monitor: str) -> None:
        """Evaluate, track the best weights, decide on early stopping, checkpoint."""
        record: dict[str, Any] = {"step": self.global_step_, "epoch": epoch}
        steps = [r["train_loss"] for r in self.history_ if r.get("epoch") == epoch and "train_loss" in r]
        if steps:
            record["train_loss_epoch"] = float(np.mean(steps))
        if val is not None and len(val):
            metrics = {f"val_{k}": v for k, v in self.evaluate(val).items()}
            record.update(metrics)
            if monitor not in metrics:
                known = ", ".join(sorted(metrics))
                raise UserError(f"train.monitor '{monitor}' is not measured here; choose one of {known}")
            value = metrics[monitor]
            better = (
                self.best_metric_ is None
                or (higher_is_better(monitor) and value > self.best_metric_)
                or (not higher_is_better(monitor) and value < self.best_metric_)
            )
            if better:
                self.best_metric_, self.best_epoch_, self._bad_epochs = value, epoch, 0
                self._best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                self._bad_epochs += 1
                patience = self.config.patience
                self.stopped_early_ = patience is not None and self._bad_epochs >= patience
        self.history_.append(record)
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, record)
        if self.config.checkpoint_every == 0:
            self._checkpoint(epoch + 1, 0)

    def iter_batches(self, data: Dataset, epoch: int = 1) -> Iterator[torch.Tensor]:
        """The batch positions the trainer would use in ``epoch`` (for tools that replay training)."""
        yield from self._batches(len(data), epoch)


@torch.no_grad()
def predict_proba(model: nn.Module, data: Dataset) -> np.ndarray:
    """Class probabilities ``(N, K)`` of a classifier on ``data``, in eval mode; its mode is restored."""
    if data.task != "classification":
        raise ValueError("predict_proba is for classification data")
    was = model.training
    model.eval()
    out = [torch.softmax(model(data.X[i : i + EVAL_BATCH]), dim=-1) for i in range(0, len(data), EVAL_BATCH)]
    model.train(was)
    return torch.cat(out).numpy()
