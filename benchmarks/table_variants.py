"""Ways to train the tabular model that might close its gap to logistic regression, cross-validated.

Every variant is scored on exactly the folds of
``benchmarks/defaults_search.py --cv K`` (``cv_folds``: K folds over the
non-test rows of each split seed, each fold's training rows split again
85/15 for early stopping); the test rows are never loaded into a score.
Reported per variant: errors over all scored rows, per seed, and the same
for logistic regression (the run's baseline: standardized features, C = 1)
on the same folds. The variants (docs/DEFAULTS.md, "a fourth pass"):

- ``default``: the built-in defaults (linear path trained jointly from zero);
- ``ensemble5``: five initializations, class probabilities averaged;
- ``refit``: early stopping finds the best epoch, then a fresh model trains
  that many epochs plus one on the fit and early-stopping rows together;
- ``lr_first``: the linear path set to logistic regression fitted on the fit
  rows and frozen, the transformer trained on top;
- ``lr_first_zero_head``: the same with the transformer's head zeroed, so
  training starts exactly at logistic regression;
- ``branch_drop0.5``, ``branch_drop0.8``: in training, each row's transformer
  logits dropped with that probability, so the linear path must classify alone
  on those rows (``_branch_drop``);
- ``input_noise0.1``, ``input_noise0.3``: Gaussian noise of that many standard
  deviations on every training feature (``_input_noise``);
- ``linear_l2``: logistic regression's own L2 penalty (C = 1) on the linear path.

Recipe settings are varied with ``--set``, e.g. ``--set model.deep_penalty=1`` (the
transformer's logits penalized; a default since the fifth pass).

Example:
    python benchmarks/table_variants.py > variants.json        # wine, seeds 0-2, all variants, ~12 min
    python benchmarks/table_variants.py --datasets breast-cancer --variants default,lr_first
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from defaults_search import _csv, _logistic_accuracy, cv_folds


def _train(
    recipe: Any, train: Any, stop: Any, seed: int, prepare: Callable[[Any], None] | None = None
) -> tuple[Any, Any]:
    """A model of the recipe and its Trainer, fitted on ``train`` (early stopping on ``stop``, if any)."""
    import torch

    from glassbox.nn import build_model
    from glassbox.train import Trainer

    torch.manual_seed(seed)
    model = build_model(recipe.model, train)
    if prepare is not None:
        prepare(model)
    trainer = Trainer(model, recipe.train, seed=seed).fit(train, stop)
    return model, trainer


def _logistic_first(train: Any, zero_head: bool) -> Callable[[Any], None]:
    def prepare(model: Any) -> None:
        import numpy as np
        import torch
        from sklearn.linear_model import LogisticRegression

        z = model.tokenizer.standardize(train.X).numpy()
        lr = LogisticRegression(max_iter=3000).fit(z, train.y.numpy())
        w, b = lr.coef_, lr.intercept_
        if w.shape[0] == 1:  # binary: sklearn keeps one row; the model's two logits are (0, w.x + b)
            w, b = np.concatenate([np.zeros_like(w), w]), np.concatenate([[0.0], b])
        with torch.no_grad():
            model.linear.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            model.linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
            if zero_head:
                torch.nn.init.zeros_(model.head.weight)
                torch.nn.init.zeros_(model.head.bias)
        model.linear.requires_grad_(False)

    return prepare


def _branch_drop(p: float) -> Callable[[Any], None]:
    """In training, each row's transformer logits are dropped with probability ``p`` (inverted scaling).

    The linear path then has to classify alone on those rows, so it is pushed towards logistic
    regression's own solution and the transformer learns what is left (dropout on a whole branch,
    as stochastic depth drops a residual block). Evaluation uses both paths in full.
    """

    def prepare(model: Any) -> None:
        import types

        import torch

        def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.encode(x)
            deep = self.head(h[:, 0])  # (B, n_classes)
            if self.training:
                keep = (torch.rand(deep.shape[0], 1) >= p).to(deep.dtype) / (1 - p)  # (B, 1)
                deep = deep * keep
            return deep + self.linear(self.tokenizer.standardize(x))

        model.forward = types.MethodType(forward, model)

    return prepare


def _input_noise(sigma: float) -> Callable[[Any], None]:
    """In training, Gaussian noise of ``sigma`` training standard deviations added to every feature.

    Noise on the inputs acts as a smoothness penalty (Bishop 1995: to first order, Tikhonov
    regularization); with about a hundred training rows it is the cheapest form of augmentation
    a table has. Both paths see the same noisy row; evaluation sees the clean one.
    """

    def prepare(model: Any) -> None:
        import types

        import torch

        plain = model.forward

        def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                x = x + sigma * self.tokenizer.std * torch.randn_like(x)  # (B, F)
            return plain(x)

        model.forward = types.MethodType(forward, model)

    return prepare


def _linear_l2(rows: int, c: float = 1.0) -> Callable[[Any], None]:
    """Logistic regression's own penalty on the linear path: ``||W||^2 / (2 C n)`` added to the mean loss.

    scikit-learn's ``LogisticRegression(C=1)`` minimizes ``C * sum(loss) + ||w||^2 / 2``; divided by
    ``C n`` that is the mean loss plus this term. AdamW's decoupled decay (0.01 x lr a step) is far
    weaker, so on a separable table the joint linear path is close to unregularized. Added as a
    gradient hook (``W / (C n)``), the bias unpenalized as in scikit-learn.
    """

    def prepare(model: Any) -> None:
        w = model.linear.weight
        w.register_hook(lambda g: g + w.detach() / (c * rows))

    return prepare


def predict(variant: str, recipe: Any, train: Any, stop: Any, scored: Any, seed: int) -> Any:
    """Class probabilities ``(N, K)`` on ``scored`` of the model ``variant`` trains."""
    import numpy as np

    from glassbox.train.trainer import predict_proba

    if variant == "default":
        return predict_proba(_train(recipe, train, stop, seed)[0], scored)
    if variant == "ensemble5":
        members = [_train(recipe, train, stop, seed if j == 0 else seed * 1000 + j)[0] for j in range(5)]
        return np.mean([predict_proba(m, scored) for m in members], axis=0)
    if variant == "refit":
        _, first = _train(recipe, train, stop, seed)
        epochs = first.best_epoch_ + 1  # best_epoch_ counts from 1: one epoch past the best
        both = _concat(train, stop)
        cfg = recipe.model_copy(
            update={"train": recipe.train.model_copy(update={"epochs": epochs, "patience": None})}
        )
        return predict_proba(_train(cfg, both, None, seed)[0], scored)
    if variant in ("lr_first", "lr_first_zero_head"):
        prepare = _logistic_first(train, zero_head=variant.endswith("zero_head"))
        return predict_proba(_train(recipe, train, stop, seed, prepare)[0], scored)
    if variant.startswith("branch_drop"):
        p = float(variant.removeprefix("branch_drop"))
        return predict_proba(_train(recipe, train, stop, seed, _branch_drop(p))[0], scored)
    if variant.startswith("input_noise"):
        sigma = float(variant.removeprefix("input_noise"))
        return predict_proba(_train(recipe, train, stop, seed, _input_noise(sigma))[0], scored)
    if variant == "linear_l2":
        return predict_proba(_train(recipe, train, stop, seed, _linear_l2(len(train)))[0], scored)
    raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def _concat(a: Any, b: Any) -> Any:
    """Rows of ``a`` then ``b`` (same columns) as one Dataset."""
    import dataclasses

    import torch

    return dataclasses.replace(
        a,
        X=torch.cat([a.X, b.X]),
        y=torch.cat([a.y, b.y]),
        index=torch.cat([a.index, b.index]),
        sensitive=None,
        groups=None,
        row_info={},
    )


VARIANTS = [
    "default",
    "ensemble5",
    "refit",
    "lr_first",
    "lr_first_zero_head",
    "branch_drop0.5",
    "branch_drop0.8",
    "input_noise0.1",
    "input_noise0.3",
    "linear_l2",
]


def one(source: str, seed: int, variants: list[str], folds: int, sets: list[str]) -> dict[str, Any]:
    import torch

    from glassbox.config import load_recipe
    from glassbox.pipeline import prepare_data

    torch.set_num_threads(1)
    recipe = load_recipe(None, overrides=[f"data.source={source}", f"seed={seed}", *sets])
    data = prepare_data(recipe)  # the test split is made here but never scored
    errors = dict.fromkeys(variants, 0)
    lr_errors, rows = 0.0, 0
    for inner, stop, scored in cv_folds(recipe, data, folds, seed):
        y = scored.y
        for v in variants:
            errors[v] += int((predict(v, recipe, inner, stop, scored, seed).argmax(-1) != y.numpy()).sum())
        lr_errors += (1 - _logistic_accuracy(inner, scored)) * len(y)
        rows += len(y)
    return {
        "source": source,
        "seed": seed,
        "rows": rows,
        "errors": errors,
        "logistic_regression": round(lr_errors),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", type=_csv(str), default=["wine"])
    p.add_argument("--seeds", type=_csv(int), default=[0, 1, 2])
    p.add_argument("--variants", type=_csv(str), default=VARIANTS)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, repeatable"
    )
    args = p.parse_args(argv)
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant {bad[0]}; choose from {', '.join(VARIANTS)}")
    start = time.perf_counter()
    units = []
    for source in args.datasets:
        for seed in args.seeds:
            units.append(one(source, seed, args.variants, args.folds, args.set))
            print(json.dumps(units[-1]), file=sys.stderr, flush=True)
    totals = {
        source: {
            "rows": sum(u["rows"] for u in units if u["source"] == source),
            "logistic_regression": sum(u["logistic_regression"] for u in units if u["source"] == source),
            **{v: sum(u["errors"][v] for u in units if u["source"] == source) for v in args.variants},
        }
        for source in args.datasets
    }
    from glassbox.run import _git_commit

    return {
        "benchmark": "table_variants",
        "commit": _git_commit(),
        "folds": args.folds,
        "set": args.set,
        "seeds": args.seeds,
        "errors": totals,
        "units": units,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
