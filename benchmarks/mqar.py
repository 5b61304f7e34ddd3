"""Multi-query associative recall (Zoology) for every registered attention kind, trained on the CPU.

Each kind trains one 2-layer, width-64 causal model (1 head, dropout 0,
sliding window 32) through the (sequence length, key-value pairs) cells in
order, 64x4 then 128x8 then 256x16, and reports after each cell the accuracy
over the query positions of 1,000 held-out rows
(``Trainer.evaluate()["accuracy"]``), the steps and the seconds it took.

Why a curriculum: a 2-layer softmax model first settles on "output one of
the values in the context" (accuracy 1 / pairs) and only later, suddenly,
forms the recall circuit (a previous-token head feeding a matching head).
On one CPU thread that jump took 3,000-4,300 steps of batch 32 at 64x4 in
every run here, and far more at longer rows, where each step costs 4x.
Zoology pays for it with 100k rows per setting and 32-64 epochs on a GPU,
and trains one model on a mixture of settings; here one model goes through
the settings in order: the jump happens on cheap short rows, and 256x16 then
needs about 250 steps. Every kind gets the same schedule and budget.

Budget per cell: at most ``--first-steps`` (8,000) steps for the first cell
and ``--steps`` (2,000) for each later one, AdamW (lr 1e-3, weight decay
0.1), cosine over that budget with 5 % warm-up, batches of 32 drawn afresh
each ``--eval-every`` steps from 50,000 rows; a cell ends early once the
validation accuracy reaches ``--stop-at`` (0.995), and the best validation
weights are kept.

Example:
    python benchmarks/mqar.py --quick --kinds softmax
    glassbox bench mqar --quick --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import torch

from glassbox.config import ModelConfig, TrainConfig
from glassbox.data.synthetic import mqar
from glassbox.nn.attention import KINDS
from glassbox.nn.models import build_model
from glassbox.train.callbacks import Callback
from glassbox.train.trainer import Trainer

GRID = ((64, 4), (128, 8), (256, 16))  # (seq_len, num_kv_pairs): Zoology's 4 tokens of room per pair
QUICK = ((64, 4), (256, 16))  # the cell every kind is judged on, after the cheap first stage


class StopWhenSolved(Callback):
    """End training once the validation accuracy reaches ``target`` (the next epoch does not start)."""

    def __init__(self, target: float, verbose: bool = False) -> None:
        self.target = target
        self.verbose = verbose

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.verbose:
            acc, loss = (
                metrics.get("val_accuracy", float("nan")),
                metrics.get("train_loss_epoch", float("nan")),
            )
            print(f"  epoch {epoch}: train loss {loss:.3f}, val accuracy {acc:.3f}", file=sys.stderr)
        if metrics.get("val_accuracy", 0.0) >= self.target:
            trainer.stopped_early_ = True


def _train_config(args: argparse.Namespace, steps: int) -> TrainConfig:
    return TrainConfig(
        epochs=max(1, -(-steps // args.eval_every)),
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        schedule="cosine",
        patience=None,
        monitor="val_accuracy",
        threads=args.threads,
        # An "epoch" is eval_every batches drawn afresh from a large pool of
        # rows: near-fresh data, as Zoology's 100k rows, and a validation
        # check (and the chance to stop) every eval_every steps.
        max_steps_per_epoch=args.eval_every,
    )


def run_kind(kind: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Train one model of ``kind`` through the cells in order; each cell's test accuracy and cost.

    With ``--curriculum`` (the default) the model that finished a cell
    starts the next, so the recall circuit found on short rows carries over
    to long ones, as Zoology's single model trained on a mixture of
    (64, 4) ... (256, 64) rows; without it every cell starts from scratch.
    """
    out: dict[str, dict[str, Any]] = {}
    model = None
    for i, (seq_len, pairs) in enumerate(args.cells):
        # Seeds fixed per cell and disjoint across train, validation and
        # test, so every kind sees exactly the same rows.
        base = args.seed * 1_000 + seq_len * 10 + pairs
        train = mqar(args.train_rows, seq_len, pairs, seed=base)
        val = mqar(args.val_rows, seq_len, pairs, seed=base + 100_000)
        test = mqar(args.test_rows, seq_len, pairs, seed=base + 200_000)
        if model is None or not args.curriculum:
            torch.manual_seed(args.seed)
            cfg = ModelConfig(
                dim=args.dim,
                depth=args.depth,
                heads=args.heads,
                mlp_ratio=args.mlp_ratio,
                dropout=0.0,
                attention=kind,
                window=args.window,
                max_len=max(512, *(t for t, _ in args.cells)),
            )
            model = build_model(cfg, train)
        # The first stage must find the recall circuit; later ones only adapt it.
        steps = args.first_steps if (i == 0 or not args.curriculum) else args.steps
        trainer = Trainer(
            model,
            _train_config(args, steps),
            callbacks=[StopWhenSolved(args.stop_at, args.verbose)],
            seed=args.seed + i,
        )
        t0 = time.perf_counter()
        trainer.fit(train, val)
        seconds = time.perf_counter() - t0
        metrics = trainer.evaluate(test)
        cell = {
            "accuracy": round(metrics["accuracy"], 4),
            "loss": round(metrics["loss"], 4),
            "best_val_accuracy": None if trainer.best_metric_ is None else round(trainer.best_metric_, 4),
            "steps": trainer.global_step_,
            "seconds": round(seconds, 1),
        }
        out[f"{seq_len}x{pairs}"] = cell
        print(f"mqar {kind} T={seq_len} pairs={pairs}: {cell}", file=sys.stderr, flush=True)
    return out


def kinds_to_run(only: list[str] | None = None) -> list[str]:
    names = [k for k in KINDS.names() if k != "auto"]  # auto only picks among the others
    if only:
        names = [k for k in names if k in only]
    return sorted(names, key=lambda k: (k != "softmax", k))


def _cells(text: str) -> list[tuple[int, int]]:
    """``"64x4,256x16"`` -> ``[(64, 4), (256, 16)]``."""
    out = []
    for part in text.split(","):
        t, p = part.lower().split("x")
        out.append((int(t), int(p)))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=_cells, default=list(GRID), help="T x pairs list, e.g. 64x4,256x16")
    p.add_argument("--quick", action="store_true", help="only 64x4 then 256x16")
    p.add_argument("--kinds", type=lambda s: s.split(","), default=None, help="subset of the kinds")
    p.add_argument("--train-rows", type=int, default=50_000)
    p.add_argument("--val-rows", type=int, default=500)
    p.add_argument("--test-rows", type=int, default=1_000)
    p.add_argument("--first-steps", type=int, default=8_000, help="most steps for the first cell")
    p.add_argument("--steps", type=int, default=2_000, help="most steps for each later cell")
    p.add_argument("--no-curriculum", dest="curriculum", action="store_false", help="each cell from scratch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=250, help="steps per epoch (then a validation check)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=float, default=0.05)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--mlp-ratio", type=float, default=2.0)
    p.add_argument("--window", type=int, default=32, help="sliding: keys each query sees")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stop-at", type=float, default=0.995, help="validation accuracy that ends a cell")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="print each epoch's validation accuracy to stderr")
    args = p.parse_args(argv)
    if args.quick:
        args.cells = list(QUICK)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train every (kind, cell) and return the accuracy table (what ``__main__`` prints as JSON)."""
    args = parse_args(argv)
    kinds = kinds_to_run(args.kinds)
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in kinds:
        table[kind] = run_kind(kind, args)
    settings = {k: v for k, v in vars(args).items() if k not in ("cells", "quick", "kinds", "verbose")}
    return {
        "benchmark": "mqar",
        "cells": [f"{t}x{p}" for t, p in args.cells],
        "kinds": kinds,
        "accuracy": {k: {c: r["accuracy"] for c, r in cells.items()} for k, cells in table.items()},
        "results": table,
        "settings": {**settings, "optimizer": "adamw", "schedule": "cosine", "vocab": 256, "alpha": 0.01},
        "machine": {
            "threads": args.threads,
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d"),
        },
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=2)
    print()
