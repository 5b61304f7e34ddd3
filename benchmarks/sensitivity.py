"""Average sensitivity: a transformer learns majority and sparse parity on 20 bits, and not full parity.

The claim ("Why are Sensitive Functions Hard for Transformers?", Hahn and
Rofin 2024, and the 2025 follow-ups): transformers are biased towards
functions of low average sensitivity, so majority (sensitivity about
sqrt(2n/pi)) and a sparse parity (k) are learned from a few thousand
examples, while full parity (n, every bit flip changes the label) is not, and
what the model computes on it has a sensitivity far below n.

For each function, ``majority`` (ties at even n go to 1), ``sparse_parity``
(k = 3 bits chosen by the seed) and ``parity``, on n = 20 bits, and each seed:

- ``glassbox.audit.sensitivity.boolean_task(name, 20, rows, seed)`` draws
  4000 + 1000 + 2000 uniform random bit strings, split in that order into
  training, validation and test rows (drawn independently, so a few of 2^20
  strings may repeat across splits);
- the glassbox transformer (``ModelConfig(dim=64, depth=2, heads=4,
  dropout=0)``, feature tokens, seeded with ``torch.manual_seed(seed)``) is
  trained by ``glassbox.train.Trainer`` with ``TrainConfig(epochs=20,
  batch_size=64, lr=1e-3, patience=None, threads=1)`` (AdamW, cosine schedule,
  5 % warmup); it keeps the weights of its best validation-accuracy epoch;
- a ``SensitivityTracker`` on 64 test rows logs the model's sensitivity at
  each epoch end (the ``trajectory``);
- on the test rows: accuracy, and ``average_sensitivity`` of the trained
  model (exact per row: all 20 single-bit flips of each of the 2000 test rows,
  each classified), beside ``true_sensitivity`` of the function (exact, by
  the binomial formula for majority) and the function's own sensitivity on
  the same rows (a check of the measurement).

Reported per function: median, min and max over seeds of test accuracy and of
the learned model's sensitivity (and its normalized value, sensitivity / n),
the true sensitivity, the last epoch's probe value (64 rows, so noisier; on
parity, where validation accuracy is at chance, the kept "best" epoch is
arbitrary and the last one says more), per-seed values and seconds.
``findings`` checks the claim: majority and sparse parity learned (median
test accuracy at least 95 %) with a sensitivity within 0.5 of the true value,
full parity at most 60 % test accuracy with a learned sensitivity below n / 4.

``--quick``: seed 0, 1000 training rows, 3 epochs; checks that it runs (what
the test suite may call), not the claim.

    .venv/bin/python benchmarks/sensitivity.py > sensitivity.json   # ~6 min on 1 thread
    .venv/bin/glassbox bench sensitivity --quick --json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

FUNCTIONS = ("majority", "sparse_parity", "parity")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def unit(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train on one function with one seed; accuracy and sensitivity on the test rows."""
    from glassbox.audit.sensitivity import (
        SensitivityTracker,
        average_sensitivity,
        boolean_function,
        boolean_task,
        predict_fn,
        true_sensitivity,
    )
    from glassbox.config import ModelConfig, TrainConfig
    from glassbox.nn import build_model
    from glassbox.train import Trainer

    start = time.perf_counter()
    n, k = args.n, args.k
    data = boolean_task(name, n, args.rows + args.val_rows + args.test_rows, seed, k=k)
    order = torch.arange(len(data))
    train = data.subset(order[: args.rows])
    val = data.subset(order[args.rows : args.rows + args.val_rows])
    test = data.subset(order[args.rows + args.val_rows :])
    torch.manual_seed(seed)
    model = build_model(ModelConfig(dim=args.dim, depth=args.depth, heads=args.heads, dropout=0.0), train)
    tracker = SensitivityTracker(test.X, "boolean", n_rows=64, seed=seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, lr=args.lr, patience=None, threads=1)
    trainer = Trainer(model, cfg, callbacks=[tracker], seed=seed).fit(train, val)
    train_seconds = time.perf_counter() - start
    learned = average_sensitivity(predict_fn(model), test.X, "boolean")
    target = average_sensitivity(boolean_function(name, n, k=k, seed=seed), test.X, "boolean")
    true = true_sensitivity(name, n, k=k)
    acc = float(trainer.evaluate(test)["accuracy"])
    print(
        f"[sensitivity] {name} seed {seed}: test acc {acc:.3f},"
        f" sensitivity {learned['mean']:.2f} (true {true:.2f}), {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    return {
        "function": name,
        "seed": seed,
        "test_accuracy": round(acc, 4),
        "train_accuracy": round(float(trainer.evaluate(train)["accuracy"]), 4),
        "best_epoch": trainer.best_epoch_,
        "sensitivity": round(learned["mean"], 4),
        "sensitivity_stderr": round(learned["stderr"], 4),
        "sensitivity_normalized": round(learned["normalized"], 4),
        "true_sensitivity": round(true, 4),
        "function_sensitivity_on_test_rows": round(target["mean"], 4),
        "per_position": [round(r, 4) for r in learned["per_position"]],
        "trajectory": [
            {"epoch": r["epoch"], "sensitivity": round(r["sensitivity"], 3)} for r in tracker.records_
        ],
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _spread(xs: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(xs), 4),
        "min": round(min(xs), 4),
        "max": round(max(xs), 4),
        "per_seed": xs,
    }


def summarize(units: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in dict.fromkeys(u["function"] for u in units):
        mine = [u for u in units if u["function"] == name]
        out[name] = {
            "true_sensitivity": mine[0]["true_sensitivity"],
            "test_accuracy": _spread([u["test_accuracy"] for u in mine]),
            "sensitivity": _spread([u["sensitivity"] for u in mine]),
            "sensitivity_normalized": _spread([u["sensitivity_normalized"] for u in mine]),
            "last_epoch_probe_sensitivity": _spread([u["trajectory"][-1]["sensitivity"] for u in mine]),
            "seconds_median": round(statistics.median(u["seconds"] for u in mine), 1),
        }
    return out


def findings(summary: dict[str, Any], n: int) -> dict[str, Any]:
    """The claim, function by function, on the medians over seeds."""
    out: dict[str, Any] = {}
    for name in ("majority", "sparse_parity"):
        if name in summary:
            s = summary[name]
            acc, sens, true = s["test_accuracy"]["median"], s["sensitivity"]["median"], s["true_sensitivity"]
            out[f"{name}_learned_with_its_sensitivity"] = {
                "test_accuracy": acc,
                "sensitivity": sens,
                "true": true,
                "met": acc >= 0.95 and abs(sens - true) <= 0.5,
            }
    if "parity" in summary:
        s = summary["parity"]
        acc, sens = s["test_accuracy"]["median"], s["sensitivity"]["median"]
        out["parity_not_learned_and_learned_function_insensitive"] = {
            "test_accuracy": acc,
            "sensitivity": sens,
            "true": s["true_sensitivity"],
            "met": acc <= 0.60 and sens < n / 4,
        }
    return out


def _csv(kind: type) -> Any:
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="seed 0, 1000 training rows, 3 epochs")
    p.add_argument("--functions", type=_csv(str), default=list(FUNCTIONS), help=",".join(FUNCTIONS))
    p.add_argument("--seeds", type=_csv(int), default=None, help="seeds (default 0,1,2,3,4)")
    p.add_argument("--n", type=int, default=20, help="bits per input (default 20)")
    p.add_argument("--k", type=int, default=3, help="relevant bits of the sparse parity (default 3)")
    p.add_argument("--rows", type=int, default=None, help="training rows (default 4000)")
    p.add_argument("--val-rows", type=int, default=None, help="validation rows (default 1000)")
    p.add_argument("--test-rows", type=int, default=None, help="test rows (default 2000)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 20)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    args = p.parse_args(argv)
    unknown = [f for f in args.functions if f not in FUNCTIONS]
    if unknown:
        p.error(f"unknown function {unknown[0]}; choose from {', '.join(FUNCTIONS)}")
    q = args.quick
    args.seeds = args.seeds if args.seeds is not None else ([0] if q else [0, 1, 2, 3, 4])
    args.rows = args.rows or (1000 if q else 4000)
    args.val_rows = args.val_rows or (200 if q else 1000)
    args.test_rows = args.test_rows or (500 if q else 2000)
    args.epochs = args.epochs or (3 if q else 20)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from glassbox.run import _git_commit

    start = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        units = [unit(name, seed, args) for name in args.functions for seed in args.seeds]
    finally:
        torch.set_num_threads(threads)
    summary = summarize(units)
    return {
        "benchmark": "sensitivity",
        "commit": _git_commit(),
        "settings": {
            "n": args.n,
            "k": args.k,
            "functions": args.functions,
            "seeds": args.seeds,
            "rows": {"train": args.rows, "val": args.val_rows, "test": args.test_rows},
            "model": {"dim": args.dim, "depth": args.depth, "heads": args.heads, "dropout": 0.0},
            "train": {"epochs": args.epochs, "batch_size": 64, "lr": args.lr, "optimizer": "adamw"},
            "sensitivity": "exact: all n single-bit flips of every test row, through the trained model",
            "quick": args.quick,
        },
        "results": summary,
        "findings": findings(summary, args.n),
        "units": units,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": 1},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=2)
    print()
