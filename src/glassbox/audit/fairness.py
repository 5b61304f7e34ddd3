"""Fairness audit of a binary classifier's scores by a sensitive group, with Fairlearn.

Given the model's probability of the positive class on the test split, the
true labels and a group label per row (the fraud set's ``group``, say),
:func:`fairness_audit` measures, per group and overall, the base rate,
accuracy, selection rate (share predicted positive), true positive rate and
false positive rate at a threshold, each with a 95 % bootstrap confidence
interval; the demographic-parity and equalized-odds differences between the
groups, with intervals too; what Fairlearn's ``ThresholdOptimizer`` does to
them (fitted on the validation split, reported on test); and a trade-off
curve of accuracy against the demographic-parity difference, from
group-specific thresholds chosen on validation.

The result is a JSON-able dict; :func:`summary` shrinks it for a model card
and ``glassbox.report.audit.audit_section`` turns it into a report section.
Nothing here writes files. Fairlearn (and pandas) are imported when an audit
runs, not when this module is imported.

>>> rng = np.random.default_rng(0)
>>> def split(n):
...     g = rng.choice(["A", "B"], size=n)
...     y = (rng.random(n) < np.where(g == "B", 0.5, 0.2)).astype(int)
...     return y, np.clip(0.3 * y + 0.2 * (g == "B") + rng.random(n) * 0.6, 0, 1), g
>>> (y, s, g), (vy, vs, vg) = split(400), split(400)
>>> out = fairness_audit(y, s, g, val_y=vy, val_score=vs, val_groups=vg, n_boot=200)
>>> out["groups"], out["by_group"]["A"]["n"] + out["by_group"]["B"]["n"]
(['A', 'B'], 400)
>>> dp = out["mitigation"]["demographic_parity"]
>>> dp["after"]["dp_difference"] < dp["before"]["dp_difference"]
True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from glassbox.errors import UserError

# A group with fewer test rows than this gets a warning: its rates swing with a handful of rows.
MIN_GROUP = 20
CONFIDENCE = 0.95
# The rates reported per group and overall, in table order.
METRICS = ("base_rate", "accuracy", "selection_rate", "tpr", "fpr")
CONSTRAINTS = ("demographic_parity", "equalized_odds")
OBJECTIVES = ("accuracy", "balanced_accuracy")
# Candidate thresholds per group for the trade-off curve (two grids of this many quantiles each).
CANDIDATES = 50
N_EPS = 21


def fairness_audit(
    y_true: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
    *,
    val_y: np.ndarray,
    val_score: np.ndarray,
    val_groups: np.ndarray,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    sensitive_name: str = "group",
    positive: str = "1",
    objective: str = "accuracy",
    eps_grid: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Audit binary scores on test by group; the validation split only fits the mitigations.

    ``y_true`` holds 0/1 labels (1 = ``positive``), ``score`` the model's
    probability of the positive class (``(N,)``, or ``(N, 2)`` class
    probabilities), ``groups`` one group label per row; ``val_*`` the same on
    the validation split. A row is predicted positive when its score is at
    least ``threshold``.

    Confidence intervals are 95 % bootstrap percentile intervals over
    ``n_boot`` resamples, drawn within each group (so each keeps its size) and
    seeded by ``seed``. A rate that is undefined in a resample (a TPR with no
    positive row) skips that resample; ``n_valid`` says how many counted.
    ``objective`` (``accuracy`` or ``balanced_accuracy``, the mean of TPR and
    TNR, which suits an imbalanced task) is what the mitigations and the
    trade-off curve maximize. ``eps_grid`` are the tolerances of the trade-off curve; by default 21
    steps from 0 to the unmitigated validation gap.

    Raises UserError for a task that is not binary, mismatched lengths, a
    single group, or groups that differ between the splits. Small groups and
    groups without positives give entries in ``result["warnings"]`` instead.
    """
    if not math.isfinite(float(threshold)):
        raise UserError(f"fairness threshold must be a finite number, not {threshold!r}")
    if objective not in OBJECTIVES:
        raise UserError(f"fairness objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if int(n_boot) < 1:
        raise UserError(f"fairness n_boot must be at least 1, not {n_boot!r}; 1000 is usual")
    y, s, g = _check(y_true, score, groups, "test", sensitive_name)
    vy, vs, vg = _check(val_y, val_score, val_groups, "validation", sensitive_name)
    names = sorted(set(g.tolist()))
    val_names = sorted(set(vg.tolist()))
    if names != val_names:
        only_test = sorted(set(names) - set(val_names))
        only_val = sorted(set(val_names) - set(names))
        raise UserError(
            f"'{sensitive_name}' groups differ between the splits (only in test: {only_test}, only in"
            f" validation: {only_val}); split so that every group is in both, or merge the rare groups"
        )
    if len(np.unique(vy)) < 2:
        raise UserError(
            "the validation split holds only one class, so no mitigation can be fitted;"
            " use a larger validation fraction"
        )
    one_class = [n for n in names if len(np.unique(vy[vg == n])) < 2]
    if one_class:
        raise UserError(
            f"'{sensitive_name}' groups {', '.join(one_class)} hold only one class in the validation"
            " split, so no mitigation can fit their thresholds; use a larger validation fraction or merge"
            " rare groups"
        )
    notes = _warnings(y, g, vy, vg, names, sensitive_name)

    pred = (s >= threshold).astype(np.int64)
    point = _metric_frame(y, pred, g)
    boot = _bootstrap(y, pred, g, names, int(n_boot), int(seed))
    by_group = {
        name: {"n": int(point["by_group"][name]["n"])}
        | {m: _interval(point["by_group"][name][m], boot["by_group"][name][m]) for m in METRICS}
        for name in names
    }
    overall = {"n": len(y)} | {m: _interval(point["overall"][m], boot["overall"][m]) for m in METRICS}
    differences = {
        "demographic_parity": _interval(point["dp_difference"], boot["dp_difference"]),
        "equalized_odds": _interval(point["eo_difference"], boot["eo_difference"]),
    }

    before = _outcome(y, pred, g, names)
    mitigation = {}
    for constraint in CONSTRAINTS:
        after_pred = _threshold_optimizer(constraint, objective, vy, vs, vg, s, g, seed=int(seed))
        mitigation[constraint] = {"before": before, "after": _outcome(y, after_pred, g, names)}

    tradeoff = _tradeoff(
        (vy, vs, vg), (y, s, g), names, float(threshold), objective, eps_grid, before, mitigation
    )
    return {
        "sensitive_name": str(sensitive_name),
        "positive": str(positive),
        "threshold": float(threshold),
        "objective": objective,
        "groups": names,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "confidence": CONFIDENCE,
        "overall": overall,
        "by_group": by_group,
        "differences": differences,
        "mitigation": mitigation,
        "tradeoff": tradeoff,
        "warnings": notes,
    }


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The audit in brief, for a model card: rates by group and the gaps before and after mitigation.

    >>> rng = np.random.default_rng(1)
    >>> g = np.array(["A", "B"] * 100)
    >>> y = (rng.random(200) < 0.3).astype(int)
    >>> s = np.clip(0.5 * y + 0.2 * (g == "B") + 0.4 * rng.random(200), 0, 1)
    >>> card = summary(fairness_audit(y, s, g, val_y=y, val_score=s, val_groups=g, n_boot=50))
    >>> sorted(card)
    ['by_group', 'differences', 'mitigation', 'objective', 'sensitive', 'threshold', 'warnings']
    >>> sorted(card["mitigation"]["demographic_parity"]["dp_difference"])
    ['after', 'before']
    """
    by_group = {
        name: {"n": row["n"]} | {m: row[m]["value"] for m in METRICS}
        for name, row in result["by_group"].items()
    }
    mitigation = {}
    for constraint, outcome in result["mitigation"].items():
        mitigation[constraint] = {
            key: {"before": outcome["before"][key], "after": outcome["after"][key]}
            for key in ("accuracy", "balanced_accuracy", "dp_difference", "eo_difference")
        }
    differences = {
        key: {"value": d["value"], "ci": [d["low"], d["high"]]} for key, d in result["differences"].items()
    }
    return {
        "sensitive": result["sensitive_name"],
        "threshold": result["threshold"],
        "objective": result["objective"],
        "by_group": by_group,
        "differences": differences,
        "mitigation": mitigation,
        "warnings": list(result["warnings"]),
    }


# ---- checks -------------------------------------------------------------------------------------


def _check(y: Any, score: Any, groups: Any, split: str, name: str) -> tuple[np.ndarray, ...]:
    y = np.asarray(y)
    s = np.asarray(score, dtype=np.float64)
    g = np.asarray(groups)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]  # class probabilities: the positive class is the second column
    elif s.ndim == 2 and s.shape[1] > 2:
        raise UserError(
            f"fairness audit needs a binary task, but the {split} scores have {s.shape[1]} classes;"
            " audit a two-class dataset (such as fraud) or one class against the rest"
        )
    if y.ndim != 1 or s.ndim != 1 or g.ndim != 1:
        raise UserError(
            f"{split} labels, scores and '{name}' groups must be one value per row; got shapes"
            f" {y.shape}, {s.shape} and {g.shape}"
        )
    if not len(y) == len(s) == len(g):
        raise UserError(
            f"{split} split has {len(y)} labels, {len(s)} scores and {len(g)} '{name}' values;"
            " pass one of each per row, from the same rows in the same order"
        )
    if len(y) == 0:
        raise UserError(f"the {split} split is empty; use a larger {split} fraction")
    values = np.unique(y)
    if not np.isin(values, [0, 1]).all():
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise UserError(
            f"fairness audit needs binary 0/1 labels, but the {split} labels hold {len(values)} values"
            f" ({shown}); audit a two-class dataset (such as fraud) or one class against the rest"
        )
    if not np.isfinite(s).all():
        raise UserError(f"the {split} scores hold NaN or infinite values; pass the model's probabilities")
    g = g.astype(str)
    if split == "test" and len(np.unique(g)) < 2:
        raise UserError(
            f"'{name}' has a single value ({str(g[0])!r}) in the test split; a fairness audit compares"
            " groups, so pass a sensitive column with at least two groups"
        )
    return y.astype(np.int64), s, g


def _warnings(
    y: np.ndarray, g: np.ndarray, vy: np.ndarray, vg: np.ndarray, names: list[str], sensitive: str
) -> list[str]:
    notes = []
    for name in names:
        rows = g == name
        n = int(rows.sum())
        if n < MIN_GROUP:
            notes.append(
                f"{sensitive} {name} has only {n} test rows (fewer than {MIN_GROUP}):"
                " its rates and intervals are unreliable"
            )
        pos = int(y[rows].sum())
        if pos == 0:
            notes.append(
                f"{sensitive} {name} has no positive test row: its TPR is undefined (Fairlearn counts it as 0"
                " in the equalized-odds difference)"
            )
        elif pos == n:
            notes.append(
                f"{sensitive} {name} has no negative test row: its FPR is undefined (Fairlearn counts it as 0"
                " in the equalized-odds difference)"
            )
    return notes


# ---- metrics ------------------------------------------------------------------------------------


def _base_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true))


def _metric_frame(y: np.ndarray, pred: np.ndarray, g: np.ndarray) -> dict[str, Any]:
    """Point estimates from Fairlearn's MetricFrame; undefined TPR/FPR become NaN, not Fairlearn's 0."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    metrics = {
        "n": count,
        "base_rate": _base_rate,
        "accuracy": accuracy_score,
        "selection_rate": selection_rate,
        "tpr": true_positive_rate,
        "fpr": false_positive_rate,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = MetricFrame(metrics=metrics, y_true=y, y_pred=pred, sensitive_features=g)
        dp = demographic_parity_difference(y, pred, sensitive_features=g)
        eo = equalized_odds_difference(y, pred, sensitive_features=g)

    def _defined(rates: dict[str, float], labels: np.ndarray) -> dict[str, float]:
        rates = {k: float(v) for k, v in rates.items()}
        if not labels.any():
            rates["tpr"] = math.nan
        if labels.all():
            rates["fpr"] = math.nan
        return rates

    by_group = {
        str(name): _defined(row.to_dict(), y[g == name] == 1) for name, row in frame.by_group.iterrows()
    }
    return {
        "overall": _defined(frame.overall.to_dict(), y == 1),
        "by_group": by_group,
        "dp_difference": float(dp),
        "eo_difference": float(eo),
    }


def _rates(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    """The audited rates from confusion counts of any shape; NaN where a rate is undefined."""
    tp, fp, fn, tn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    pos, neg = tp + fn, fp + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "base_rate": pos / n,
            "accuracy": (tp + tn) / n,
            "selection_rate": (tp + fp) / n,
            "tpr": np.where(pos > 0, tp / pos, np.nan),
            "fpr": np.where(neg > 0, fp / neg, np.nan),
        }


def _counts(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(TP, FP, FN, TN) of one group."""
    tp = int(np.sum((y == 1) & (pred == 1)))
    fp = int(np.sum((y == 0) & (pred == 1)))
    fn = int(np.sum((y == 1) & (pred == 0)))
    return np.array([tp, fp, fn, len(y) - tp - fp - fn])


def _bootstrap(
    y: np.ndarray, pred: np.ndarray, g: np.ndarray, names: list[str], n_boot: int, seed: int
) -> dict[str, Any]:
    """Resampled rates and gaps, shape (n_boot,) each, resampling rows within each group.

    Every audited quantity is a function of each group's confusion counts
    (TP, FP, FN, TN), and the counts of n rows drawn with replacement from a
    group are multinomial(n, the group's cell shares). Drawing those counts
    directly is the same distribution as resampling row indices, without the
    (n_boot, n) index matrix: 1000 resamples of any number of rows cost
    microseconds per group.
    """
    rng = np.random.default_rng(seed)
    cells = {}
    for name in names:
        counts = _counts(y[g == name], pred[g == name])
        n = int(counts.sum())
        cells[name] = rng.multinomial(n, counts / n, size=n_boot)  # (B, 4)
    by_group = {name: _rates(*c.T) for name, c in cells.items()}
    overall = _rates(*sum(cells.values()).T)
    sel = np.stack([by_group[n]["selection_rate"] for n in names], axis=1)  # (B, G)
    tpr = np.stack([by_group[n]["tpr"] for n in names], axis=1)
    fpr = np.stack([by_group[n]["fpr"] for n in names], axis=1)
    # max - min is NaN as soon as one group's rate is: that resample is skipped for the gap.
    eo = np.maximum(tpr.max(1) - tpr.min(1), fpr.max(1) - fpr.min(1))
    return {
        "by_group": by_group,
        "overall": overall,
        "dp_difference": sel.max(1) - sel.min(1),
        "eo_difference": eo,
    }


def _interval(value: float, samples: np.ndarray) -> dict[str, Any]:
    valid = samples[np.isfinite(samples)]
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(valid, [tail, 100 - tail]) if len(valid) else (math.nan, math.nan)
    return {"value": _num(value), "low": _num(low), "high": _num(high), "n_valid": len(valid)}


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _gaps(y: np.ndarray, pred: np.ndarray, g: np.ndarray, names: list[str]) -> tuple[float, float]:
    """(demographic-parity difference, equalized-odds difference) as Fairlearn defines them.

    Fairlearn counts an undefined TPR or FPR as 0; so does this, so the curve
    and the headline numbers agree.
    """
    rates = [_rates(*_counts(y[g == n], pred[g == n])) for n in names]
    sel = [float(r["selection_rate"]) for r in rates]
    tpr = [float(np.nan_to_num(r["tpr"])) for r in rates]
    fpr = [float(np.nan_to_num(r["fpr"])) for r in rates]
    return max(sel) - min(sel), max(max(tpr) - min(tpr), max(fpr) - min(fpr))


def _balanced(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean of TPR and TNR, as sklearn's balanced_accuracy_score; one class alone counts its rate only."""
    rates = [np.mean(pred[y == c] == c) for c in (0, 1) if (y == c).any()]
    return float(np.mean(rates))


def _outcome(y: np.ndarray, pred: np.ndarray, g: np.ndarray, names: list[str]) -> dict[str, Any]:
    rates = {n: _rates(*_counts(y[g == n], pred[g == n])) for n in names}
    dp, eo = _gaps(y, pred, g, names)
    return {
        "accuracy": float(np.mean(y == pred)),
        "balanced_accuracy": _balanced(y, pred),
        "selection_rate": {n: _num(r["selection_rate"]) for n, r in rates.items()},
        "tpr": {n: _num(r["tpr"]) for n, r in rates.items()},
        "fpr": {n: _num(r["fpr"]) for n, r in rates.items()},
        "dp_difference": dp,
        "eo_difference": eo,
    }


# ---- mitigation ---------------------------------------------------------------------------------


def _score_column() -> Any:
    from sklearn.base import BaseEstimator

    class ScoreColumn(BaseEstimator):
        """A 'model' whose prediction is its input's first column: the real model's scores."""

        def fit(self, X: Any, y: Any = None) -> ScoreColumn:
            self.fitted_ = True
            return self

        def predict(self, X: Any) -> np.ndarray:
            return np.asarray(X, dtype=np.float64)[:, 0]

    return ScoreColumn().fit(None)


def _threshold_optimizer(
    constraint: str,
    objective: str,
    vy: np.ndarray,
    vs: np.ndarray,
    vg: np.ndarray,
    s: np.ndarray,
    g: np.ndarray,
    *,
    seed: int,
) -> np.ndarray:
    """Test predictions of ThresholdOptimizer fitted on the validation scores, labels and groups."""
    from fairlearn.postprocessing import ThresholdOptimizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas and Fairlearn warn about dtypes and future changes
        opt = ThresholdOptimizer(
            estimator=_score_column(),
            constraints=constraint,
            objective=f"{objective}_score",
            prefit=True,
            predict_method="predict",
        )
        opt.fit(vs[:, None], vy, sensitive_features=vg)
        # It randomizes between two thresholds per group: a fixed state makes the audit reproducible.
        pred = opt.predict(s[:, None], sensitive_features=g, random_state=seed)
    return np.asarray(pred).astype(np.int64)


# ---- trade-off curve ----------------------------------------------------------------------------


def _group_table(
    y: np.ndarray, s: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(selection rate, TP, TN) at each threshold, predicting positive at score >= t."""
    order = np.sort(s)
    pos = np.sort(s[y == 1])
    n, n_neg = len(s), int((y == 0).sum())
    selected = n - np.searchsorted(order, thresholds, side="left")
    tp = len(pos) - np.searchsorted(pos, thresholds, side="left")
    fp = selected - tp
    return selected / n, tp, n_neg - fp


def _candidates(s: np.ndarray, threshold: float, top: float) -> np.ndarray:
    """Candidate thresholds for one group: quantiles of its scores, the global threshold, and 'none'.

    One grid of quantiles spans all scores; a second is dense in the top
    ``top`` share, where an imbalanced task's useful thresholds are (at 2 %
    fraud, an even grid of 50 quantiles would step 2 % of the rows at a time).
    """
    levels = np.concatenate([np.linspace(0, 1, CANDIDATES), 1 - np.linspace(0, top, CANDIDATES)])
    none = np.nextafter(max(float(s.max()), threshold), math.inf)  # selects no row
    return np.unique(np.concatenate([np.quantile(s, levels), [threshold, none]]))


def _best_thresholds(
    tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]], eps: float
) -> tuple[list[float], float] | None:
    """Per-group thresholds that maximize the objective with selection rates within ``eps`` of each other.

    ``tables`` hold (thresholds, selection rates, gain) per group, where the
    objective is the sum of the groups' gains (accuracy and balanced accuracy
    both split that way over groups).

    Exact over the candidate grid, without enumerating its C^G combinations:
    the selection rates of a feasible choice all lie in a window [L, L + eps]
    whose low end L is the smallest of them, so L is one of the candidates'
    rates. For each such anchor L every group independently takes its most
    accurate candidate inside the window; the best anchor wins. That costs
    (G*C) anchors x G groups x C candidates, vectorized per group.
    Returns (thresholds, objective) or None when nothing is feasible.
    """
    anchors = np.unique(np.concatenate([sel for _, sel, _ in tables]))  # (A,)
    total = np.zeros(len(anchors))
    picks = []
    tol = 1e-12
    for _, sel, gain in tables:
        inside = (sel[None, :] >= anchors[:, None] - tol) & (sel[None, :] <= anchors[:, None] + eps + tol)
        scored = np.where(inside, gain[None, :], -np.inf)  # (A, C)
        best = scored.argmax(1)
        total += scored[np.arange(len(anchors)), best]
        picks.append(best)
    a = int(np.argmax(total))
    if not np.isfinite(total[a]):
        return None
    return [float(t[p[a]]) for (t, _, _), p in zip(tables, picks, strict=True)], float(total[a])


def _tradeoff(
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    names: list[str],
    threshold: float,
    objective: str,
    eps_grid: Sequence[float] | None,
    before: dict[str, Any],
    mitigation: dict[str, Any],
) -> dict[str, Any]:
    vy, vs, vg = val
    y, s, g = test
    val_pred = (vs >= threshold).astype(np.int64)
    val_dp, _ = _gaps(vy, val_pred, vg, names)
    top_sel = max(_rates(*_counts(vy[vg == n], val_pred[vg == n]))["selection_rate"] for n in names)
    top = float(min(1.0, max(0.05, 3 * float(top_sel))))
    n_pos, n_neg = int(vy.sum()), int((vy == 0).sum())
    tables = []
    for name in names:
        rows = vg == name
        thresholds = _candidates(vs[rows], threshold, top)
        sel, tp, tn = _group_table(vy[rows], vs[rows], thresholds)
        if objective == "accuracy":
            gain = (tp + tn) / len(vy)
        else:  # balanced accuracy = (TP / P + TN / N) / 2, summed over groups with the split's P and N
            gain = 0.5 * (tp / n_pos + tn / n_neg)
        tables.append((thresholds, sel, gain))
    if eps_grid is None:
        eps_grid = np.linspace(0.0, val_dp, N_EPS) if val_dp > 0 else [0.0]
    curve = []
    for eps in sorted({float(e) for e in eps_grid}):
        found = _best_thresholds(tables, eps)
        if found is None:
            continue
        chosen, value = found
        by_name = dict(zip(names, chosen, strict=True))
        cut_val = np.array([by_name[n] for n in vg])
        cut = np.array([by_name[n] for n in g])
        pred_val = (vs >= cut_val).astype(np.int64)
        pred = (s >= cut).astype(np.int64)
        dp, eo = _gaps(y, pred, g, names)
        curve.append(
            {
                "eps": eps,
                "thresholds": by_name,
                "val_objective": value,
                "val_accuracy": float(np.mean(pred_val == vy)),
                "val_dp_difference": _gaps(vy, pred_val, vg, names)[0],
                "accuracy": float(np.mean(pred == y)),
                "balanced_accuracy": _balanced(y, pred),
                "dp_difference": dp,
                "eo_difference": eo,
            }
        )
    return {
        "method": (
            "group-specific thresholds from each group's validation score quantiles, chosen to maximize"
            f" validation {objective.replace('_', ' ')} subject to validation demographic-parity"
            " difference <= eps (exact search over the candidates), then applied to test"
        ),
        "unmitigated": {
            "accuracy": before["accuracy"],
            "dp_difference": before["dp_difference"],
            "balanced_accuracy": before["balanced_accuracy"],
            "val_objective": float(np.mean(val_pred == vy))
            if objective == "accuracy"
            else _balanced(vy, val_pred),
            "val_accuracy": float(np.mean(val_pred == vy)),
            "val_dp_difference": val_dp,
        },
        "curve": curve,
        "threshold_optimizer": {
            c: {key: m["after"][key] for key in ("accuracy", "balanced_accuracy", "dp_difference")}
            for c, m in mitigation.items()
        },
    }
