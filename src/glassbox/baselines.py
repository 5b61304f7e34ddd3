"""The models a data scientist would try first, trained beside every glassbox model on the same split.

Tables: logistic regression (standardized, as glassbox's tokenizer
standardizes) and scikit-learn's HistGradientBoosting, plus LightGBM and
XGBoost when they are installed. Images: logistic regression and an RBF
SVC on standardized pixels. All fit on exactly the run's training rows
(validation rows unused, as glassbox uses them only to stop early) and are
scored on its test rows with the same four numbers as glassbox's model:
accuracy, balanced accuracy, ROC AUC (one-vs-rest macro for several
classes) and log loss, with the seconds each took to fit.

>>> import torch
>>> from glassbox.data import load_dataset, split_dataset
>>> tr, _, te = split_dataset(load_dataset("iris"), 0.2, 0.2, seed=0)
>>> rows = fit_baselines(tr, te, seed=0)
>>> [r["name"] for r in rows]
['logistic regression', 'HistGradientBoosting']
>>> sorted(rows[0]["test"])
['accuracy', 'balanced_accuracy', 'log_loss', 'roc_auc']
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np

BASELINES_FILE = "baselines.json"


def scores(y: np.ndarray, prob: np.ndarray, n_classes: int) -> dict[str, float | None]:
    """Accuracy, balanced accuracy, ROC AUC and log loss of class probabilities ``prob`` (N, K)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, roc_auc_score

    prob = np.clip(np.asarray(prob, dtype=float), 1e-12, 1.0)
    prob = prob / prob.sum(1, keepdims=True)
    pred = prob.argmax(1)
    labels = list(range(n_classes))
    out: dict[str, float | None] = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "log_loss": float(log_loss(y, prob, labels=labels)),
    }
    try:
        if n_classes == 2:
            out["roc_auc"] = float(roc_auc_score(y, prob[:, 1]))
        else:
            out["roc_auc"] = float(roc_auc_score(y, prob, multi_class="ovr", average="macro", labels=labels))
    except ValueError:  # a class missing from a tiny test split
        out["roc_auc"] = None
    return out


def _candidates(kind: str, seed: int) -> list[tuple[str, Callable[[], Any]]]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    def logistic() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))

    if kind == "image":
        return [
            ("logistic regression", logistic),
            ("RBF SVC", lambda: make_pipeline(StandardScaler(), SVC(probability=True, random_state=seed))),
        ]
    out: list[tuple[str, Callable[[], Any]]] = [
        ("logistic regression", logistic),
        ("HistGradientBoosting", lambda: HistGradientBoostingClassifier(random_state=seed)),
    ]
    if importlib.util.find_spec("lightgbm") is not None:
        from lightgbm import LGBMClassifier

        out.append(("LightGBM", lambda: LGBMClassifier(random_state=seed, verbose=-1)))
    if importlib.util.find_spec("xgboost") is not None:
        from xgboost import XGBClassifier

        out.append(("XGBoost", lambda: XGBClassifier(random_state=seed, n_estimators=200)))
    return out


def fit_baselines(train: Any, test: Any, *, seed: int = 0) -> list[dict[str, Any]]:
    """Each baseline's test scores and fit seconds, for a tabular or image classification split."""
    if train.task != "classification" or train.kind not in ("tabular", "image"):
        return []
    Xtr, Xte = train.X.flatten(1).numpy(), test.X.flatten(1).numpy()
    ytr, yte = train.y.numpy(), test.y.numpy()
    K = train.n_classes
    rows = []
    for name, make in _candidates(train.kind, seed):
        model = make()
        start = time.perf_counter()
        model.fit(Xtr, ytr)
        seconds = time.perf_counter() - start
        prob = np.zeros((len(Xte), K))
        prob[:, model.classes_] = model.predict_proba(Xte)  # a class absent from training gets 0
        rows.append({"name": name, "test": scores(yte, prob, K), "fit_seconds": round(seconds, 3)})
    return rows


def comparison(glassbox: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which wins on test accuracy: glassbox's model or the best baseline, and by how many points."""
    if not rows:
        return {}
    best = max(rows, key=lambda r: r["test"]["accuracy"])
    diff = 100 * (glassbox["accuracy"] - best["test"]["accuracy"])
    if abs(diff) < 1e-9:
        verdict = f"glassbox ties the best baseline ({best['name']}) on test accuracy"
    elif diff > 0:
        verdict = f"glassbox beats the best baseline ({best['name']}) by {diff:.1f} points of test accuracy"
    else:
        verdict = f"the best baseline ({best['name']}) beats glassbox by {-diff:.1f} points of test accuracy"
    return {"best_baseline": best["name"], "points": round(diff, 2), "verdict": verdict}
