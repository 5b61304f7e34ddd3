"""The pretraining loop: a registered method, an encoder, unlabeled rows, AdamW with a cosine schedule.

Separate from the supervised Trainer on purpose: there are no labels, no
validation metric to stop on and no per-example callbacks (valuation, DP),
only a loss over views. What it leaves is the encoder's weights inside the
model, which the supervised stage then fine-tunes or probes.

>>> import torch
>>> from glassbox.config import ModelConfig, PretrainConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn import build_model
>>> data = Dataset("toy", "tabular", "classification", torch.randn(64, 4), torch.randint(0, 2, (64,)),
...                feature_names=list("abcd"), classes=["no", "yes"])
>>> model = build_model(ModelConfig(dim=16, depth=1, heads=2), data)
>>> history = pretrain(model, data.X, PretrainConfig(epochs=2, batch_size=32), seed=0)
>>> [sorted(h) for h in history][0]
['epoch', 'nt_xent', 'pretrain_loss', 'seconds', 'step']
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from glassbox.config import PretrainConfig
from glassbox.ssl.base import METHODS, check_kind

WARMUP = 0.05  # share of the steps spent warming the learning rate up
GRAD_CLIP = 1.0  # gradient norm cap: contrastive losses spike early at small batch sizes


def unlabeled_rows(n: int, unlabeled: str | float, seed: int) -> torch.Tensor:
    """Row positions pretraining reads: all ``n``, or a seeded share of them (at least 2)."""
    if unlabeled == "all":
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed + 7919)  # not the split's or the trainer's stream
    k = max(2, round(float(unlabeled) * n))
    return torch.randperm(n, generator=g)[:k].sort().values


def _inputs(kind: str, X: torch.Tensor) -> torch.Tensor:
    # Byte windows hold T + 1 bytes, the last one only ever a target.
    return X[:, :-1] if kind == "text" else X


def pretrain(
    model: nn.Module,
    X: torch.Tensor,
    cfg: PretrainConfig,
    *,
    seed: int = 0,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Pretrain ``model``'s encoder on rows ``X`` (no labels) as ``cfg`` says; one record per epoch.

    Each record holds ``epoch``, ``step``, ``pretrain_loss`` (the epoch's mean),
    the method's own terms and the seconds so far; ``on_epoch`` gets each as
    it is made (the run folder's metrics log). The method's heads are
    discarded; the model ends in eval mode.
    """
    check_kind(cfg.method, model.kind)
    X = _inputs(model.kind, X)
    if len(X) < 2:
        raise ValueError(f"pretraining needs at least 2 rows, got {len(X)}")
    pool = X if model.kind == "tabular" else None  # SCARF and VIME draw replacements from the rows
    method = METHODS.build(cfg.method, model=model, cfg=cfg, pool=pool)
    params = [p for p in [*model.parameters(), *method.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    bs = min(cfg.batch_size, len(X))
    per_epoch = len(X) // bs  # the ragged last batch is dropped: BatchNorm and negatives want full ones
    total = cfg.epochs * per_epoch
    warm = max(1, round(WARMUP * total))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator().manual_seed(seed)
    bar = _Bar(total, progress)
    history: list[dict[str, Any]] = []
    start, step = time.perf_counter(), 0
    model.train()
    method.train()
    try:
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(len(X), generator=g)
            sums: dict[str, float] = {}
            for b in range(per_epoch):
                loss, terms = method.loss(model, X[order[b * bs : (b + 1) * bs]], g)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"pretraining loss became {float(loss)} at epoch {epoch}; lower pretrain.lr"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, GRAD_CLIP)
                opt.step()
                sched.step()
                step += 1
                for k, v in {"pretrain_loss": float(loss.detach()), **terms}.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.update(step, epoch, float(loss.detach()))
            record = {"epoch": epoch, "step": step, **{k: v / per_epoch for k, v in sums.items()}}
            record["seconds"] = round(time.perf_counter() - start, 3)
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    finally:
        bar.close()
        model.eval()
    return history


class _Bar:
    """A rich progress bar on a terminal, silent otherwise (as the Trainer's)."""

    def __init__(self, total: int, enabled: bool | None) -> None:
        self.progress: Any = None
        if not (sys.stderr.isatty() if enabled is None else enabled):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]pretrain[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.progress.start()
        self.task = self.progress.add_task("pretrain", total=total, status="")

    def update(self, step: int, epoch: int, loss: float) -> None:
        if self.progress is not None and step % 5 == 0:
            self.progress.update(self.task, completed=step, status=f"epoch {epoch} loss {loss:.4f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
