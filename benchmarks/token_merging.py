"""Token merging (ToMe) on digits: accuracy and inference throughput against tokens merged per block.

Trains one image transformer without merging, then applies merging to it
off the shelf at each ``r`` (``Transformer.set_merge``) and, optionally,
trains more models with merging on (``--train-r``) to compare training
with it. Prints one JSON object.

Model: digits.yaml's width and heads at depth 4, with ``patch=1`` so that
each 8x8 image is 64 patch tokens + CLS: merging needs tokens to merge, and
depth lets the savings compound (r tokens fewer in every later block). The
convolutional stem stays on: with one pixel per token and no stem, every
token is a scalar times one shared direction, and that model reached only
72.7 % test accuracy after 30 epochs, against 98.6 % with the stem; an
accuracy-vs-speed trade is only worth measuring on a model that works. The
stem runs once, before the blocks, so it is part of the cost merging does
not touch (it is counted in every throughput figure).

Throughput: one thread (``torch.set_num_threads(1)``), batch 256 (the first
256 test images), ``inference_mode``, warm-up calls first, then the
``r`` values interleaved repetition by repetition, so that each ratio to
``r = 0`` compares runs made side by side under the same machine load; the
median of the repeats. ``images_per_s`` is from wall-clock time;
``images_per_s_cpu`` from the process's CPU time, which a shared machine's
other work disturbs less (only our own thread runs).

Example:
    python benchmarks/token_merging.py
    python benchmarks/token_merging.py --r 0,8,16,32 --train-r 32
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any

import torch

from glassbox.config import ModelConfig, TrainConfig
from glassbox.data import load_dataset, split_dataset
from glassbox.data.base import Dataset
from glassbox.nn import Transformer, build_model
from glassbox.nn.merging import merge_count
from glassbox.train import Trainer

BATCH = 256


def tokens_per_block(model: Transformer, n_tokens: int, r: int) -> list[int]:
    """Tokens each block attends over, then the count the head's norm sees: ``[N, N - r1, ...]``."""
    counts = [n_tokens]
    for _ in model.blocks:
        counts.append(counts[-1] - merge_count(counts[-1], r, model.tokenizer.has_cls))
    return counts


def train(
    args: argparse.Namespace, data: tuple[Dataset, Dataset, Dataset], merge_r: int
) -> tuple[Transformer, Trainer, dict[str, Any]]:
    train_set, val_set, _ = data
    cfg = ModelConfig(
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        patch=args.patch,
        conv_stem=not args.no_stem,
        merge_r=merge_r,
    )
    tcfg = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.002, patience=None)  # digits.yaml's optimiser
    torch.manual_seed(args.seed)
    model = build_model(cfg, train_set)
    trainer = Trainer(model, tcfg, seed=args.seed)
    start = time.perf_counter()
    trainer.fit(train_set, val_set)
    info = {
        "merge_r": merge_r,
        "seconds": round(time.perf_counter() - start, 1),
        "best_epoch": trainer.best_epoch_,
        "best_val_accuracy": None if trainer.best_metric_ is None else round(trainer.best_metric_, 4),
    }
    return model.eval(), trainer, info


def accuracy(model: Transformer, trainer: Trainer, test: Dataset, r: int) -> float:
    model.set_merge(r)
    return round(trainer.evaluate(test)["accuracy"], 4)


def time_side_by_side(
    model: Transformer, x: torch.Tensor, rs: list[int], repeats: int, warmup: int
) -> dict[int, dict[str, float]]:
    """Median seconds per forward of ``x`` for each ``r``, wall-clock and process CPU time."""
    wall: dict[int, list[float]] = {r: [] for r in rs}
    cpu: dict[int, list[float]] = {r: [] for r in rs}
    with torch.inference_mode():
        for r in rs:
            model.set_merge(r)
            for _ in range(warmup):
                model(x)
        for _ in range(repeats):
            for r in rs:
                model.set_merge(r)
                w0, c0 = time.perf_counter(), time.process_time()
                model(x)
                wall[r].append(time.perf_counter() - w0)
                cpu[r].append(time.process_time() - c0)
    return {r: {"wall": statistics.median(wall[r]), "cpu": statistics.median(cpu[r])} for r in rs}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--r", type=_ints, default=[0, 16, 32], help="tokens merged per block; 0 is the baseline")
    p.add_argument(
        "--train-r",
        type=_ints,
        default=[],
        help="r values to also train a model with merging on, e.g. 32 (costs a training run each)",
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=1)
    p.add_argument("--no-stem", action="store_true", help="patch tokens straight from pixels")
    p.add_argument("--repeats", type=int, default=15, help="timed forwards per r")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--train-threads", type=int, default=None, help="torch threads for training; default torch's"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if 0 not in args.r:
        args.r = [0, *args.r]  # the baseline every ratio needs
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, merge, measure; returns the results (what ``__main__`` prints as JSON)."""
    args = parse_args(argv)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    if args.train_threads is not None:
        torch.set_num_threads(args.train_threads)
    data = split_dataset(load_dataset("digits"), 0.15, 0.2, seed=args.seed)
    test = data[2]
    base, base_trainer, base_info = train(args, data, merge_r=0)
    trained = {r: train(args, data, merge_r=r) for r in args.train_r if r > 0}

    torch.set_num_threads(1)
    x = test.X[:BATCH]
    n_tokens = base.tokenizer(x[:1]).shape[1]
    times = time_side_by_side(base, x, args.r, args.repeats, args.warmup)
    acc0 = accuracy(base, base_trainer, test, 0)
    rows = []
    for r in args.r:
        t = times[r]
        acc = accuracy(base, base_trainer, test, r)
        row: dict[str, Any] = {
            "r": r,
            "tokens_per_block": tokens_per_block(base, n_tokens, r),
            "accuracy": acc,
            "accuracy_drop_points": round(100 * (acc0 - acc), 2),
            "images_per_s": round(len(x) / t["wall"]),
            "images_per_s_cpu": round(len(x) / t["cpu"]),
            "speedup": round(times[0]["wall"] / t["wall"], 3),
            "speedup_cpu": round(times[0]["cpu"] / t["cpu"], 3),
        }
        if r in trained:
            model, trainer, _ = trained[r]
            # The same architecture at the same r: its speed is this row's.
            row["accuracy_trained_with_merging"] = accuracy(model, trainer, test, r)
        rows.append(row)
    torch.set_num_threads(threads)
    ok = [row for row in rows if row["r"] > 0 and row["accuracy_drop_points"] <= 1.0]
    best = max(ok, key=lambda row: row["speedup"], default=None)
    return {
        "benchmark": "token_merging",
        "settings": {
            "dataset": "digits",
            "split": {"val": 0.15, "test": 0.2, "seed": args.seed, "test_rows": len(test)},
            "model": {
                "dim": args.dim,
                "depth": args.depth,
                "heads": args.heads,
                "patch": args.patch,
                "conv_stem": not args.no_stem,
                "tokens": n_tokens,
            },
            "train": {"epochs": args.epochs, "batch_size": 64, "lr": 0.002, "patience": None},
            "throughput": {
                "threads": 1,
                "batch": len(x),
                "warmup": args.warmup,
                "repeats": args.repeats,
                "statistic": "median, r values interleaved",
            },
            "r": args.r,
            "train_r": args.train_r,
            "proportional_attention": True,
        },
        "training": [base_info, *[info for _, _, info in trained.values()]],
        "results": rows,
        "best_within_1_point": None
        if best is None
        else {k: best[k] for k in ("r", "speedup", "speedup_cpu", "accuracy_drop_points")},
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=2)
    print()
