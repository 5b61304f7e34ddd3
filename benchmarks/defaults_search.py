"""The search behind glassbox's default hyperparameters (docs/DEFAULTS.md): validation only, never test.

A coordinate search: start from the built-in defaults, then for each factor
in turn (early-stopping monitor, epochs, width, depth, dropout, weight decay,
label smoothing, batch size, learning rate for tables; patch, conv stem,
augmentation, epochs, width, learning rate for images) train every value of
that factor with the others held at the best found so far, and keep the
value with the best score. A candidate's score is measured over the
embedded data sets of its kind and several seeds (each seed is its own
80/20 train/test split, the training rows split again 85/15 into fit and
validation rows): mean validation accuracy, ties (within half a validation
row per data set) broken by mean validation log loss. The test rows are
never loaded into a score; ``glassbox train --seeds 5`` measures the chosen
defaults on them afterwards (docs/BENCHMARKS.md, "Against baselines").

``--cv K`` scores by K-fold cross-validation over each split's training and
validation rows instead of its validation rows alone (``train_one``): on
small tables the chosen defaults score 0.99+ on the validation rows, which
then no longer tell candidates apart.

Each training runs with one thread; ``--jobs 2`` trains two candidates at
once in worker processes.

Example:
    python benchmarks/defaults_search.py --kind tabular > defaults-tabular.json   # ~15 min
    python benchmarks/defaults_search.py --kind image --seeds 0,1 > defaults-image.json
    python benchmarks/defaults_search.py --kind image --factors augment --start '{"train.epochs": 100}'
    python benchmarks/defaults_search.py --kind tabular --factors linear_path --cv 5 --jobs 2
    python benchmarks/defaults_search.py --quick          # wine, 2 factors, a smoke test
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

DATASETS = {"tabular": ["breast-cancer", "wine"], "image": ["digits"]}

# factor -> the --set overrides of each value, in the order tried. The first
# factor of each kind is tried first because it changes what the others see.
FACTORS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "tabular": {
        "monitor": [{"train.monitor": "auto"}, {"train.monitor": "val_loss"}],
        "epochs": [
            {"train.epochs": 30, "train.patience": 10},
            {"train.epochs": 60, "train.patience": 15},
            {"train.epochs": 100, "train.patience": 25},
        ],
        "dim": [{"model.dim": 32}, {"model.dim": 64}, {"model.dim": 128}],
        "depth": [{"model.depth": 1}, {"model.depth": 2}, {"model.depth": 3}],
        "dropout": [{"model.dropout": 0.0}, {"model.dropout": 0.1}, {"model.dropout": 0.2}],
        "weight_decay": [
            {"train.weight_decay": 0.01},
            {"train.weight_decay": 0.05},
            {"train.weight_decay": 0.2},
        ],
        "label_smoothing": [{"train.label_smoothing": 0.0}, {"train.label_smoothing": 0.1}],
        "batch_size": [{"train.batch_size": 16}, {"train.batch_size": 32}, {"train.batch_size": 64}],
        "lr": [{"train.lr": 5e-4}, {"train.lr": 1e-3}, {"train.lr": 2e-3}],
        "linear_path": [{"model.linear_path": False}, {"model.linear_path": True}],
    },
    "image": {
        "augment": [{"train.augment": "none"}, {"train.augment": "auto"}],
        "conv_stem": [{"model.conv_stem": False}, {"model.conv_stem": True}],
        "patch": [{"model.patch": 1}, {"model.patch": 2}],
        "epochs": [
            {"train.epochs": 30, "train.patience": 10},
            {"train.epochs": 60, "train.patience": 15},
            {"train.epochs": 100, "train.patience": 25},
        ],
        "dim": [{"model.dim": 64}, {"model.dim": 128}],
        "lr": [{"train.lr": 1e-3}, {"train.lr": 2e-3}, {"train.lr": 4e-3}],
        "label_smoothing": [{"train.label_smoothing": 0.0}, {"train.label_smoothing": 0.1}],
    },
}


def train_one(source: str, seed: int, overrides: dict[str, Any], folds: int = 0) -> dict[str, Any]:
    """Train the built-in defaults plus ``overrides`` on one split; score on its validation rows only.

    ``folds`` > 0: K-fold cross-validation over that split's training and
    validation rows together (its test rows stay out): each fold trains on
    the other folds (85/15 again into fit and early-stopping rows) and is
    scored on the rows it held out, so every non-test row is scored once.
    """
    import torch

    torch.set_num_threads(1)
    from glassbox.config import load_recipe
    from glassbox.pipeline import prepare_data

    sets = [f"data.source={source}", f"seed={seed}"] + [f"{k}={v}" for k, v in overrides.items()]
    recipe = load_recipe(None, overrides=sets)
    data = prepare_data(recipe)  # the test split is made here but never scored
    start = time.perf_counter()
    if folds > 0:
        val = _cv_score(recipe, data, folds, seed)
    else:
        val = _fit_score(recipe, data["train"], data["val"], data["val"], seed)
    return {
        "source": source,
        "seed": seed,
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "val_rows": val["rows"],
        "best_epoch": val["best_epoch"],
        **({"folds": folds, "logistic_regression_accuracy": val["logistic_regression"]} if folds > 0 else {}),
        "seconds": round(time.perf_counter() - start, 2),
    }


def cv_folds(recipe: Any, data: dict[str, Any], folds: int, seed: int) -> list[tuple[Any, Any, Any]]:
    """K folds over a split's train+val rows (its test rows stay out): (fit, early-stopping, scored) sets.

    Each fold's training rows are split again, ``data.val_fraction`` of them for early stopping.
    """
    import numpy as np
    from sklearn.model_selection import StratifiedKFold, train_test_split

    rows = np.sort(np.concatenate([data["train"].index, data["val"].index]))
    pool = data["full"].subset(rows)
    y = pool.y.numpy()
    out = []
    for k, (fit, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)):
        a, b = train_test_split(fit, test_size=recipe.data.val_fraction, stratify=y[fit], random_state=k)
        out.append((pool.subset(np.sort(a)), pool.subset(np.sort(b)), pool.subset(held)))
    return out


def _cv_score(recipe: Any, data: dict[str, Any], folds: int, seed: int) -> dict[str, Any]:
    """``_fit_score`` over K folds of the split's train+val rows; logistic regression on the same folds."""
    correct = loss = lr_correct = 0.0
    best_epochs = []
    n = 0
    for inner, stop, scored in cv_folds(recipe, data, folds, seed):
        r = _fit_score(recipe, inner, stop, scored, seed)
        correct += r["accuracy"] * len(scored)
        loss += r["loss"] * len(scored)
        best_epochs.append(r["best_epoch"])
        lr_correct += _logistic_accuracy(inner, scored) * len(scored)  # the run's baseline, same rows
        n += len(scored)
    return {
        "accuracy": correct / n,
        "loss": loss / n,
        "rows": n,
        "best_epoch": best_epochs,
        "logistic_regression": lr_correct / n,
    }


def _fit_score(recipe: Any, train: Any, stop: Any, scored: Any, seed: int) -> dict[str, Any]:
    """Train on ``train`` (early stopping on ``stop``); accuracy and loss on ``scored``."""
    import torch

    from glassbox.nn import build_model
    from glassbox.train import Trainer

    torch.manual_seed(seed)
    model = build_model(recipe.model, train)
    trainer = Trainer(model, recipe.train, seed=seed).fit(train, stop)
    out = trainer.evaluate(scored)
    return {
        "accuracy": out["accuracy"],
        "loss": out["loss"],
        "rows": len(scored),
        "best_epoch": trainer.best_epoch_,
    }


def _logistic_accuracy(train: Any, scored: Any) -> float:
    from glassbox.baselines import fit_baselines

    rows = fit_baselines(train, scored)
    return next(r["test"]["accuracy"] for r in rows if r["name"] == "logistic regression")


def _score(results: list[dict[str, Any]]) -> dict[str, float]:
    acc = sum(r["val_accuracy"] for r in results) / len(results)
    loss = sum(r["val_loss"] for r in results) / len(results)
    # Half a validation row of the smallest set: accuracy differences below it are noise.
    tie = 0.5 / min(r["val_rows"] for r in results)
    return {"val_accuracy": acc, "val_loss": loss, "tie": tie}


def _better(a: dict[str, float], b: dict[str, float]) -> bool:
    """Is score ``a`` better than ``b``: higher accuracy beyond the tie margin, else lower loss."""
    if abs(a["val_accuracy"] - b["val_accuracy"]) > a["tie"]:
        return a["val_accuracy"] > b["val_accuracy"]
    return a["val_loss"] < b["val_loss"]


class Search:
    """Evaluations cached by their full override set, so a repeated candidate is trained once."""

    def __init__(self, datasets: list[str], seeds: list[int], jobs: int, folds: int = 0) -> None:
        self.datasets, self.seeds, self.jobs, self.folds = datasets, seeds, jobs, folds
        self.cache: dict[str, dict[str, Any]] = {}

    def evaluate_many(self, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        todo = [c for c in candidates if json.dumps(c, sort_keys=True) not in self.cache]
        units = [(ds, s, c, self.folds) for c in todo for ds in self.datasets for s in self.seeds]
        if self.jobs > 1:
            with ProcessPoolExecutor(self.jobs) as pool:
                done = list(pool.map(train_one, *zip(*units, strict=True))) if units else []
        else:
            done = [train_one(*u) for u in units]
        for c in todo:
            key = json.dumps(c, sort_keys=True)
            runs = [r for (_, _, cc, _), r in zip(units, done, strict=True) if cc is c]
            score = _score(runs)
            self.cache[key] = {"overrides": c, **score, "runs": runs}
            line = f"  {c}: val acc {score['val_accuracy']:.4f}, loss {score['val_loss']:.4f}"
            print(line, file=sys.stderr, flush=True)
        return [self.cache[json.dumps(c, sort_keys=True)] for c in candidates]


def coordinate_search(
    kind: str, search: Search, factors: list[str], start: dict[str, Any] | None = None
) -> dict[str, Any]:
    best: dict[str, Any] = dict(start or {})
    steps = []
    for factor in factors:
        print(f"{kind}: {factor}", file=sys.stderr, flush=True)
        candidates = [{**best, **value} for value in FACTORS[kind][factor]]
        scored = search.evaluate_many(candidates)
        winner = scored[0]
        for s in scored[1:]:
            if _better(s, winner):
                winner = s
        best = dict(winner["overrides"])
        steps.append(
            {
                "factor": factor,
                "tried": [{k: s[k] for k in ("overrides", "val_accuracy", "val_loss")} for s in scored],
                "chosen": winner["overrides"],
            }
        )
    return {"chosen": best, "steps": steps, "final": search.cache[json.dumps(best, sort_keys=True)]}


def _csv(kind: type) -> Any:
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=sorted(FACTORS), default="tabular")
    p.add_argument("--quick", action="store_true", help="wine, seed 0, two factors (a smoke test)")
    p.add_argument("--seeds", type=_csv(int), default=None, help="split seeds (default 0,1,2)")
    p.add_argument("--datasets", type=_csv(str), default=None, help="default: the kind's embedded sets")
    p.add_argument("--factors", type=_csv(str), default=None, help="default: all, in order")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    p.add_argument(
        "--cv", type=int, default=0, help="score by K-fold cross-validation over train+val rows (0: val rows)"
    )
    p.add_argument(
        "--start", type=json.loads, default=None, help='overrides to start from, JSON: {"model.dim": 128}'
    )
    args = p.parse_args(argv)
    factors = list(FACTORS[args.kind])
    if args.quick:
        args.kind, factors = "tabular", ["monitor", "label_smoothing"]
        args.datasets, args.seeds = args.datasets or ["wine"], args.seeds or [0]
    args.factors = args.factors or factors
    unknown = [f for f in args.factors if f not in FACTORS[args.kind]]
    if unknown:
        p.error(f"unknown factor {unknown[0]} for {args.kind}; choose from {', '.join(FACTORS[args.kind])}")
    args.datasets = args.datasets or DATASETS[args.kind]
    args.seeds = args.seeds if args.seeds is not None else [0, 1, 2]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    args = parse_args(argv)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        search = Search(args.datasets, args.seeds, args.jobs, args.cv)
        result = coordinate_search(args.kind, search, args.factors, args.start)
    finally:
        torch.set_num_threads(threads)
    from glassbox.run import _git_commit

    return {
        "benchmark": "defaults_search",
        "kind": args.kind,
        "commit": _git_commit(),
        "datasets": args.datasets,
        "seeds": args.seeds,
        "factors": args.factors,
        "start": args.start or {},
        "score": "mean validation accuracy over data sets and seeds; within half a row: lower val log loss",
        "cv_folds": args.cv,
        **result,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {"cores": os.cpu_count(), "threads_per_training": 1, "jobs": args.jobs},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=2)
    print()
