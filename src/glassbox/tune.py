"""The ``best`` preset: hyperparameter search with Optuna, cross-validated on the training split only.

Each trial samples a model and training configuration (TPE sampler,
seeded), trains it on k-1 folds of the training rows and scores it by the
validation loss on the held-out fold (the best epoch's, as early stopping
would keep); after each fold the running mean is reported, and Optuna's
median pruner stops trials that are already worse than the median of the
others at that fold. The search stops at its trial budget or its time
budget, whichever comes first. The run's validation split stops the final
training early as usual, and its test split is never passed to the search:
``search`` receives the training rows alone (``tests/test_tune.py`` checks
that no row a trial touches is a test row).

>>> from glassbox.config import TuneConfig
>>> space = SPACES["tabular"]
>>> sorted(space)[:3]
['model.depth', 'model.dim', 'model.dropout']
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np

# name -> ("int" | "cat" | "float" | "log", choices or (low, high)); a grid the searches of
# docs/DEFAULTS.md found worth covering. Images add the tokenizer's patch and conv stem.
_COMMON: dict[str, tuple[str, Any]] = {
    "model.dim": ("cat", [32, 64, 128]),
    "model.depth": ("int", (1, 4)),
    "model.dropout": ("float", (0.0, 0.3)),
    "train.lr": ("log", (3e-4, 5e-3)),
    "train.weight_decay": ("log", (1e-5, 0.3)),
    "train.batch_size": ("cat", [16, 32, 64, 128]),
}
SPACES: dict[str, dict[str, tuple[str, Any]]] = {
    "tabular": _COMMON,
    "image": {**_COMMON, "model.patch": ("cat", [1, 2, 4]), "model.conv_stem": ("cat", [True, False])},
}


def _suggest(trial: Any, name: str, kind: str, spec: Any) -> Any:
    if kind == "cat":
        return trial.suggest_categorical(name, spec)
    if kind == "int":
        return trial.suggest_int(name, *spec)
    if kind == "log":
        return trial.suggest_float(name, *spec, log=True)
    return trial.suggest_float(name, *spec)


def _apply(recipe: Any, params: dict[str, Any]) -> Any:
    model = recipe.model.model_copy(update={k[6:]: v for k, v in params.items() if k.startswith("model.")})
    train = recipe.train.model_copy(update={k[6:]: v for k, v in params.items() if k.startswith("train.")})
    if model.dim % model.heads:
        model = model.model_copy(update={"heads": math.gcd(model.dim, model.heads)})
    return recipe.model_copy(update={"model": model, "train": train})


def folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k folds of the training rows: (fit rows, held-out rows) per fold."""
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(k, int(np.bincount(y).min()) if len(y) else 2))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def start_params(recipe: Any, space: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """The recipe's own values of the searched parameters, where they lie inside the space."""
    out = {}
    for name, (kind, spec) in space.items():
        section, field = name.split(".", 1)
        value = getattr(getattr(recipe, section), field)
        inside = value in spec if kind == "cat" else spec[0] <= value <= spec[1]
        if inside:
            out[name] = value
    return out


def search(recipe: Any, train: Any, *, progress: bool | None = None) -> dict[str, Any]:
    """Run the study on ``train`` (the training split, nothing else) as ``recipe.tune`` says.

    Returns ``{"best_params", "best_value", "trials": [...], "seconds", "settings"}``;
    ``apply_best(recipe, result)`` is the recipe the final training uses.
    """
    import optuna
    import torch

    from glassbox.nn import build_model
    from glassbox.train import Trainer

    cfg = recipe.tune
    if train.kind not in SPACES or train.task != "classification":
        from glassbox.errors import UserError

        raise UserError(
            f"tune: searches tabular and image classifiers, not {train.kind} {train.task} data;"
            " drop the tune: section (or preset: best)"
        )
    space = SPACES[train.kind]
    splits = folds(train.y.numpy(), cfg.folds, recipe.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=recipe.seed, n_startup_trials=min(8, cfg.trials))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    # The first trial is the recipe itself (the tuned defaults, docs/DEFAULTS.md), so the search
    # can only replace it with something that scored better on the folds.
    study.enqueue_trial(start_params(recipe, space), skip_if_exists=True)
    show = sys.stderr.isatty() if progress is None else progress
    start = time.perf_counter()

    def objective(trial: Any) -> float:
        params = {name: _suggest(trial, name, kind, spec) for name, (kind, spec) in space.items()}
        r = _apply(recipe, params)
        # Search trials train for at most `epochs` epochs each, early-stopped by their own fold.
        r = r.model_copy(
            update={"train": r.train.model_copy(update={"epochs": cfg.epochs, "patience": cfg.patience})}
        )
        losses = []
        for i, (fit_rows, held) in enumerate(splits):
            fit, val = train.subset(np.sort(fit_rows)), train.subset(np.sort(held))
            torch.manual_seed(recipe.seed + i)
            model = build_model(r.model, fit)
            t = Trainer(model, r.train, seed=recipe.seed + i).fit(fit, val)
            best = min(h["val_loss"] for h in t.history_ if "val_loss" in h)
            losses.append(best)
            trial.report(float(np.mean(losses)), i)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(losses))

    def tick(study: Any, trial: Any) -> None:
        if show:
            done = len(study.trials)
            best = study.best_value if any(t.value is not None for t in study.trials) else float("nan")
            elapsed = time.perf_counter() - start
            line = f"\rtune: trial {done}/{cfg.trials}, best CV loss {best:.4f}, {elapsed:.0f} s"
            print(line, end="", file=sys.stderr, flush=True)

    study.optimize(objective, n_trials=cfg.trials, timeout=cfg.timeout, callbacks=[tick], catch=(ValueError,))
    if show:
        print(file=sys.stderr)
    trials = [
        {"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
         "seconds": round(t.duration.total_seconds(), 2) if t.duration else None,
         "fold_losses": list(t.intermediate_values.values())}
        for t in study.trials
    ]  # fmt: skip
    complete = [t for t in study.trials if t.value is not None]
    if not complete:
        from glassbox.errors import UserError

        raise UserError(
            f"tune: no trial finished within tune.timeout={cfg.timeout:g} s; raise it or lower tune.epochs"
        )
    return {
        "best_params": study.best_params,
        "best_value": study.best_value,
        "trials": trials,
        "seconds": round(time.perf_counter() - start, 1),
        "settings": {**cfg.model_dump(), "sampler": "TPE", "pruner": "median", "rows": len(train),
                     "folds_used": len(splits), "objective": "mean over folds of the best epoch's val loss"},
    }  # fmt: skip


def apply_best(recipe: Any, result: dict[str, Any]) -> Any:
    """The recipe with the search's best parameters in place (and no tune section left)."""
    return _apply(recipe, result["best_params"]).model_copy(update={"tune": None})
