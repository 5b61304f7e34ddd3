"""Few-shot evaluation of an encoder: prototypes and a linear probe on K labels per class.

Both classifiers read frozen embeddings (``glassbox.ssl.embed``) and are
compared with the same classifiers on the raw features, so a table shows
what the encoder adds:

- prototypes (Snell et al., 2017): standardize, L2-normalize, average the K
  support embeddings of each class, assign a query to the most cosine-similar
  class mean;
- linear probe: scikit-learn's logistic regression on standardized features.

Each number is the mean over several seeded draws of the support set,
since with one shot per class the draw decides much of the accuracy.

>>> import numpy as np
>>> Z = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
>>> prototype_predict(Z[:2], np.array([0, 1]), Z[2:]).tolist()
[0, 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np

FEWSHOT_FILE = "fewshot.json"  # in the run folder, read by the report
DRAWS = 10  # support sets drawn per setting; the spread over them is reported


def _standardize(pool: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    # Statistics from the support set alone are degenerate at one shot per
    # class, so they come from ``pool``: every training row, labels unused
    # (the unlabeled data a semi-supervised user has anyway).
    mu, sd = pool.mean(0), pool.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return [(a - mu) / sd for a in arrays]


def prototype_predict(
    support: np.ndarray, y_support: np.ndarray, query: np.ndarray, pool: np.ndarray | None = None
) -> np.ndarray:
    """Class ids for ``query`` (M, D): the nearest class mean of the support (N, D) by cosine.

    ``pool`` (default: the support) gives the standardization statistics.
    """
    s, q = _standardize(support if pool is None else pool, support, query)
    s = s / np.linalg.norm(s, axis=1, keepdims=True).clip(min=1e-12)
    q = q / np.linalg.norm(q, axis=1, keepdims=True).clip(min=1e-12)
    classes = np.unique(y_support)
    protos = np.stack([s[y_support == c].mean(0) for c in classes])  # (K, D)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True).clip(min=1e-12)
    return classes[(q @ protos.T).argmax(1)]


def probe_predict(
    support: np.ndarray, y_support: np.ndarray, query: np.ndarray, pool: np.ndarray | None = None
) -> np.ndarray:
    """Class ids for ``query`` from logistic regression (L2, C=1) fitted on the standardized support."""
    from sklearn.linear_model import LogisticRegression

    s, q = _standardize(support if pool is None else pool, support, query)
    if len(np.unique(y_support)) < 2:
        return np.full(len(query), y_support[0])
    return LogisticRegression(max_iter=2000).fit(s, y_support).predict(q)


CLASSIFIERS = {"prototype": prototype_predict, "probe": probe_predict}


def evaluate_shots(
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    y_train: np.ndarray,
    y_test: np.ndarray,
    *,
    shots: int | None = None,
    fraction: float | None = None,
    draws: int = DRAWS,
    seed: int = 0,
) -> dict[str, Any]:
    """Test accuracy of each classifier on each feature set, K shots per class or a label fraction.

    ``features`` maps a name (``encoder``, ``raw``) to ``(train rows, test
    rows)``; the same support rows are used for every feature set and
    classifier in a draw. Returns ``{"shots"|"fraction", "draws", "results":
    {feature: {classifier: {"mean", "std", "per_draw"}}}}``.
    """
    from glassbox.data.splits import labeled_subset

    if (shots is None) == (fraction is None):
        raise ValueError("give shots or fraction")
    n_draws = draws if (shots is not None or fraction < 1) else 1  # all labels: nothing to draw
    per: dict[str, dict[str, list[float]]] = {f: {c: [] for c in CLASSIFIERS} for f in features}
    for d in range(n_draws):
        rows = labeled_subset(y_train, fraction=fraction, per_class=shots, seed=seed * 1000 + d)
        for fname, (Ztr, Zte) in features.items():
            for cname, predict in CLASSIFIERS.items():
                pred = predict(Ztr[rows], y_train[rows], Zte, pool=Ztr)
                per[fname][cname].append(float((pred == y_test).mean()))
    key = {"shots": shots} if shots is not None else {"fraction": fraction}
    return {
        **key,
        "draws": n_draws,
        "results": {
            f: {
                c: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_draw": [round(a, 4) for a in v]}
                for c, v in cs.items()
            }
            for f, cs in per.items()
        },
    }


def raw_features(model: Any, X: Any) -> np.ndarray:
    """(N, D) the inputs as a raw baseline reads them: flattened, log-mel spectrograms for audio."""
    import torch

    if getattr(model, "kind", None) != "audio":
        return X.flatten(1).numpy()
    with torch.no_grad():
        return torch.cat([model.tokenizer.raw_features(X[i : i + 256]).flatten(1)
                          for i in range(0, len(X), 256)]).numpy()  # fmt: skip


def fewshot_report(model: Any, train: Any, test: Any, shots: list[int], draws: int = DRAWS, seed: int = 0):
    """Few-shot table for a classification ``model``: encoder vs raw features, each K in ``shots``.

    For audio the raw features are the log-mel spectrogram the tokenizer
    computes (a waveform's samples are no features a linear model can use).
    """
    from glassbox.ssl.base import embed

    features = {
        "encoder": (embed(model, train.X).numpy(), embed(model, test.X).numpy()),
        "raw": (raw_features(model, train.X), raw_features(model, test.X)),
    }
    y_tr, y_te = train.y.numpy(), test.y.numpy()
    return [evaluate_shots(features, y_tr, y_te, shots=k, draws=draws, seed=seed) for k in shots]
