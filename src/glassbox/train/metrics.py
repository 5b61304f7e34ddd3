"""Evaluation metrics shared by the trainer, the report and later audits.

Which direction is better is part of a metric's definition, so early
stopping never has to guess: ``higher_is_better("val_loss")`` is False.
"""

from __future__ import annotations

import math

import numpy as np

# Metrics where smaller is better; everything else is maximized.
_LOWER = ("loss", "bits_per_byte", "perplexity", "ece")


def higher_is_better(name: str) -> bool:
    return not any(name.endswith(s) for s in _LOWER)


def classification_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Accuracy, log loss, macro F1 and, for two classes, AUROC.

    >>> m = classification_metrics(np.array([0, 1, 1]), np.array([[.9, .1], [.2, .8], [.6, .4]]))
    >>> round(m["accuracy"], 3), round(m["auroc"], 3)
    (0.667, 1.0)
    """
    from sklearn.metrics import f1_score, roc_auc_score

    y_true = np.asarray(y_true)
    prob = np.asarray(prob, dtype=np.float64)
    pred = prob.argmax(axis=1)
    eps = 1e-12
    out = {
        "accuracy": float((pred == y_true).mean()),
        "loss": float(-np.log(np.clip(prob[np.arange(len(y_true)), y_true], eps, 1.0)).mean()),
        "macro_f1": float(f1_score(y_true, pred, average="macro", labels=np.arange(prob.shape[1]))),
    }
    if prob.shape[1] == 2 and len(np.unique(y_true)) == 2:
        out["auroc"] = float(roc_auc_score(y_true, prob[:, 1]))
    return out


def lm_metrics(mean_nll: float) -> dict[str, float]:
    """Next-byte loss in nats, bits per byte and perplexity from the mean negative log-likelihood."""
    return {
        "loss": float(mean_nll),
        "bits_per_byte": float(mean_nll / math.log(2)),
        "perplexity": float(math.exp(min(mean_nll, 50.0))),
    }
