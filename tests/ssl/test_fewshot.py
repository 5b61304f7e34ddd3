"""Few-shot classifiers against brute force, and the labeled-row draws."""

import numpy as np
import pytest

from glassbox.data.splits import labeled_subset
from glassbox.errors import UserError
from glassbox.ssl.fewshot import evaluate_shots, probe_predict, prototype_predict


def brute_prototypes(support, y, query, pool):
    mu, sd = pool.mean(0), pool.std(0)
    out = []
    for q in query:
        qs = (q - mu) / sd
        qs = qs / np.linalg.norm(qs)
        best, best_sim = None, -np.inf
        for c in sorted(set(y.tolist())):
            members = [(s - mu) / sd for s, t in zip(support, y, strict=True) if t == c]
            members = [m / np.linalg.norm(m) for m in members]
            proto = np.mean(members, axis=0)
            sim = float(qs @ proto) / np.linalg.norm(proto)
            if sim > best_sim:
                best, best_sim = c, sim
        out.append(best)
    return np.array(out)


def test_prototypes_match_brute_force():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(60, 5)) * [1, 2, 3, 0.5, 1]
    support, y = pool[:12], np.repeat([0, 1, 2], 4)
    query = pool[12:]
    assert np.array_equal(
        prototype_predict(support, y, query, pool=pool), brute_prototypes(support, y, query, pool)
    )


def test_probe_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    pool = rng.normal(size=(50, 4))
    y = (pool[:, 0] > 0).astype(int)
    mu, sd = pool.mean(0), pool.std(0)
    ref = LogisticRegression(max_iter=2000).fit((pool[:20] - mu) / sd, y[:20]).predict((pool[20:] - mu) / sd)
    assert np.array_equal(probe_predict(pool[:20], y[:20], pool[20:], pool=pool), ref)


def test_labeled_subset_per_class_and_fraction():
    y = np.array([0] * 50 + [1] * 30 + [2] * 3)
    rows = labeled_subset(y, per_class=2, seed=0)
    assert np.bincount(y[rows]).tolist() == [2, 2, 2]
    rows = labeled_subset(y, fraction=0.1, seed=0)
    assert np.bincount(y[rows]).tolist() == [5, 3, 1]  # stratified, at least one of the rare class
    assert np.array_equal(rows, labeled_subset(y, fraction=0.1, seed=0))
    assert not np.array_equal(rows, labeled_subset(y, fraction=0.1, seed=1))
    with pytest.raises(UserError, match="fewer than the 4 shots"):
        labeled_subset(y, per_class=4, seed=0)


def test_evaluate_shots_scores_separable_embeddings_perfectly():
    rng = np.random.default_rng(2)
    y_tr, y_te = np.repeat(np.arange(4), 20), np.repeat(np.arange(4), 10)
    centers = rng.normal(size=(4, 6)) * 10
    enc = (centers[y_tr] + rng.normal(size=(80, 6)), centers[y_te] + rng.normal(size=(40, 6)))
    raw = (rng.normal(size=(80, 6)), rng.normal(size=(40, 6)))  # no signal
    out = evaluate_shots({"encoder": enc, "raw": raw}, y_tr, y_te, shots=1, draws=4)
    assert out["shots"] == 1 and out["draws"] == 4
    assert out["results"]["encoder"]["prototype"]["mean"] == 1.0
    assert out["results"]["encoder"]["probe"]["mean"] == 1.0
    assert out["results"]["raw"]["probe"]["mean"] < 0.6
    full = evaluate_shots({"encoder": enc}, y_tr, y_te, fraction=1.0)
    assert full["draws"] == 1
