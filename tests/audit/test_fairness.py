"""The fairness audit: metrics against hand and numpy computation, bootstrap intervals, fraud mitigation."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from glassbox.audit import fairness_audit, summary
from glassbox.errors import UserError


def _audit(y, s, g, **kw):
    kw.setdefault("n_boot", 200)
    return fairness_audit(y, s, g, val_y=y, val_score=s, val_groups=g, **kw)


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.choice(["A", "B", "C"], size=n, p=[0.5, 0.3, 0.2])
    y = (rng.random(n) < np.where(g == "C", 0.4, 0.2)).astype(int)
    s = np.clip(0.35 * y + 0.15 * (g == "C") + 0.6 * rng.random(n), 0, 1)
    return y, s, g


# ---- point estimates ----------------------------------------------------------------------------


def test_tiny_example_matches_hand_computation() -> None:
    # A: pred [1, 0, 1, 0] -> selection 1/2, TPR 1/2, FPR 1/2, accuracy 1/2.
    # B: pred [1, 1, 1, 0] -> selection 3/4, TPR 1, FPR 2/3, accuracy 1/2.
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.6, 0.1, 0.8, 0.7, 0.6, 0.3])
    g = np.array(["A"] * 4 + ["B"] * 4)
    out = _audit(y, s, g)
    a, b = out["by_group"]["A"], out["by_group"]["B"]
    assert [a[m]["value"] for m in ("selection_rate", "tpr", "fpr", "accuracy", "base_rate")] == [
        0.5,
        0.5,
        0.5,
        0.5,
        0.5,
    ]
    assert b["selection_rate"]["value"] == 0.75 and b["tpr"]["value"] == 1.0
    assert b["fpr"]["value"] == pytest.approx(2 / 3) and b["base_rate"]["value"] == 0.25
    # DP: |3/4 - 1/2|; EO: max(|1 - 1/2|, |2/3 - 1/2|).
    assert out["differences"]["demographic_parity"]["value"] == pytest.approx(0.25)
    assert out["differences"]["equalized_odds"]["value"] == pytest.approx(0.5)
    assert out["mitigation"]["demographic_parity"]["before"]["dp_difference"] == pytest.approx(0.25)
    assert out["mitigation"]["equalized_odds"]["before"]["eo_difference"] == pytest.approx(0.5)
    # Both groups are far below the size at which rates mean much.
    assert len([w for w in out["warnings"] if "only 4 test rows" in w]) == 2


def test_group_metrics_equal_numpy() -> None:
    y, s, g = _synthetic(900)
    out = _audit(y, s, g, threshold=0.45)
    pred = s >= 0.45
    for name in ("A", "B", "C"):
        rows = g == name
        yy, pp = y[rows] == 1, pred[rows]
        row = out["by_group"][name]
        assert row["n"] == rows.sum()
        assert row["base_rate"]["value"] == pytest.approx(yy.mean())
        assert row["accuracy"]["value"] == pytest.approx((yy == pp).mean())
        assert row["selection_rate"]["value"] == pytest.approx(pp.mean())
        assert row["tpr"]["value"] == pytest.approx(pp[yy].mean())
        assert row["fpr"]["value"] == pytest.approx(pp[~yy].mean())
    assert out["overall"]["accuracy"]["value"] == pytest.approx(((y == 1) == pred).mean())
    sel = [pred[g == n].mean() for n in "ABC"]
    tpr = [pred[(g == n) & (y == 1)].mean() for n in "ABC"]
    fpr = [pred[(g == n) & (y == 0)].mean() for n in "ABC"]
    assert out["differences"]["demographic_parity"]["value"] == pytest.approx(max(sel) - min(sel))
    eo = max(max(tpr) - min(tpr), max(fpr) - min(fpr))
    assert out["differences"]["equalized_odds"]["value"] == pytest.approx(eo)


# ---- bootstrap ----------------------------------------------------------------------------------


def test_intervals_contain_the_estimate_and_shrink_with_more_data() -> None:
    small = _audit(*_synthetic(300, seed=1))
    large = _audit(*_synthetic(3000, seed=1))
    for out in (small, large):
        entries = [out["overall"][m] for m in ("accuracy", "selection_rate", "tpr", "fpr")]
        entries += [out["by_group"][n][m] for n in "ABC" for m in ("selection_rate", "tpr", "fpr")]
        entries += list(out["differences"].values())
        for e in entries:
            assert e["low"] <= e["value"] <= e["high"]
            assert e["n_valid"] == 200
    for key in ("demographic_parity", "equalized_odds"):
        width = {
            k: o["differences"][key]["high"] - o["differences"][key]["low"]
            for k, o in [("s", small), ("l", large)]
        }
        assert width["l"] < 0.6 * width["s"]
    for m in ("selection_rate", "tpr", "fpr"):
        w_small = small["by_group"]["A"][m]["high"] - small["by_group"]["A"][m]["low"]
        w_large = large["by_group"]["A"][m]["high"] - large["by_group"]["A"][m]["low"]
        assert w_large < 0.6 * w_small


def test_bootstrap_is_reproducible_with_the_seed() -> None:
    data = _synthetic(500, seed=2)
    first, again, other = _audit(*data, seed=3), _audit(*data, seed=3), _audit(*data, seed=4)
    assert first == again
    assert first["differences"] != other["differences"]


def test_bootstrap_matches_row_resampling() -> None:
    """The multinomial draw of confusion counts has the spread of resampling rows within each group."""
    y, s, g = _synthetic(600, seed=5)
    out = _audit(y, s, g, n_boot=2000)
    pred = (s >= 0.5).astype(int)
    rng = np.random.default_rng(0)
    sel = []
    for name in "ABC":
        rows = np.flatnonzero(g == name)
        picks = rows[rng.integers(0, len(rows), size=(2000, len(rows)))]
        sel.append(pred[picks].mean(1))
    dp = np.max(sel, axis=0) - np.min(sel, axis=0)
    lo, hi = np.percentile(dp, [2.5, 97.5])
    ours = out["differences"]["demographic_parity"]
    assert ours["low"] == pytest.approx(lo, abs=0.02) and ours["high"] == pytest.approx(hi, abs=0.02)


def test_undefined_rates_skip_resamples() -> None:
    y, s, g = _synthetic(600, seed=6)
    rare = np.flatnonzero(g == "C")
    y[rare] = 0
    y[rare[0]] = 1  # one positive: about a third of the resamples of C have none
    val = {"val_y": _synthetic(600, seed=6)[0], "val_score": s, "val_groups": g}
    out = fairness_audit(y, s, g, n_boot=500, **val)
    tpr = out["by_group"]["C"]["tpr"]
    assert 200 < tpr["n_valid"] < 450
    assert out["differences"]["equalized_odds"]["n_valid"] == tpr["n_valid"]
    assert out["by_group"]["C"]["fpr"]["n_valid"] == 500
    y[rare[0]] = 0
    out = fairness_audit(y, s, g, n_boot=50, **val)
    assert out["by_group"]["C"]["tpr"]["value"] is None and out["by_group"]["C"]["tpr"]["n_valid"] == 0
    assert any("no positive test row" in w for w in out["warnings"])
    json.dumps(out, allow_nan=False)


# ---- fraud ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fraud_scores() -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from glassbox.data import load_dataset, split_dataset

    full = load_dataset("fraud")
    train, val, test = split_dataset(full, 0.2, 0.2, seed=0)
    # Class-weighted like the fraud recipe: unweighted, it flags almost nothing at 0.5.
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced"))
    model.fit(train.X.numpy(), train.y.numpy())

    def split(d):
        return d.y.numpy(), model.predict_proba(d.X.numpy())[:, 1], d.sensitive

    return {"test": split(test), "val": split(val), "name": full.sensitive_name, "positive": full.classes[1]}


def _fraud_audit(scores: dict, objective: str) -> dict:
    y, s, g = scores["test"]
    vy, vs, vg = scores["val"]
    return fairness_audit(
        y,
        s,
        g,
        val_y=vy,
        val_score=vs,
        val_groups=vg,
        n_boot=300,
        objective=objective,
        sensitive_name=scores["name"],
        positive=scores["positive"],
    )


@pytest.mark.parametrize("objective", ["balanced_accuracy", "accuracy"])
def test_fraud_audit_finds_the_gap_and_mitigation_narrows_it(fraud_scores: dict, objective: str) -> None:
    out = _fraud_audit(fraud_scores, objective)
    json.dumps(out, allow_nan=False)
    assert out["groups"] == ["A", "B", "C"] and out["positive"] == "fraud" and out["warnings"] == []
    dp = out["differences"]["demographic_parity"]
    # Group C is flagged far more often: the gap is large and its interval excludes zero.
    assert dp["value"] > 0.1 and dp["low"] > 0.05
    sel = {n: out["by_group"][n]["selection_rate"]["value"] for n in out["groups"]}
    assert sel["C"] > sel["A"]
    mitigated = out["mitigation"]["demographic_parity"]
    assert mitigated["after"]["dp_difference"] < 0.5 * mitigated["before"]["dp_difference"]

    trade = out["tradeoff"]
    curve = trade["curve"]
    assert len(curve) >= 10
    # On validation, where the thresholds were chosen, the search is exact over a growing feasible set:
    # the objective never falls as eps grows, and every point keeps its tolerance.
    values = [p["val_objective"] for p in curve]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    assert all(p["val_dp_difference"] <= p["eps"] + 1e-9 for p in curve)
    # The loosest tolerance admits the unmitigated threshold, so it does at least as well on validation.
    assert values[-1] >= trade["unmitigated"]["val_objective"] - 1e-12
    # On test only the gap's direction carries over: tight tolerances give smaller gaps than none.
    tight = [p for p in curve if p["eps"] <= 0.25 * curve[-1]["eps"]]
    assert all(p["dp_difference"] < trade["unmitigated"]["dp_difference"] for p in tight)

    card = summary(out)
    assert card["mitigation"]["demographic_parity"]["dp_difference"]["after"] < dp["value"]
    assert set(card["by_group"]) == {"A", "B", "C"}
    json.dumps(card, allow_nan=False)


# ---- bad input ------------------------------------------------------------------------------------


def _case() -> dict:
    y, s, g = _synthetic(200, seed=7)
    return {"y_true": y, "score": s, "groups": g, "val_y": y, "val_score": s, "val_groups": g, "n_boot": 20}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_true": np.arange(200) % 3}, "binary 0/1 labels, but the test labels hold 3 values"),
        ({"score": np.full((200, 3), 1 / 3)}, "binary task, but the test scores have 3 classes"),
        ({"score": np.zeros(199)}, "test split has 200 labels, 199 scores and 200 'group' values"),
        ({"val_groups": np.array(["A"] * 100)}, "validation split has 200 labels"),
        ({"groups": np.array(["A"] * 200)}, "'group' has a single value ('A') in the test split"),
        ({"val_groups": np.array(["A", "B"] * 100)}, "groups differ between the splits"),
        ({"val_y": np.zeros(200, dtype=int)}, "validation split holds only one class"),
        ({"val_y": np.where(_case()["groups"] == "C", 0, _case()["val_y"])}, "groups C hold only one class"),
        ({"score": np.full(200, np.nan)}, "NaN or infinite"),
        ({"objective": "f1"}, "objective must be one of accuracy, balanced_accuracy"),
        ({"n_boot": 0}, "n_boot must be at least 1"),
    ],
)
def test_bad_input_raises_one_clear_line(change: dict, message: str) -> None:
    case = _case() | change
    y, s, g = case.pop("y_true"), case.pop("score"), case.pop("groups")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        fairness_audit(y, s, g, **case)
    assert "\n" not in str(err.value)


def test_two_column_probabilities_are_taken_as_the_positive_class() -> None:
    y, s, g = _synthetic(300, seed=8)
    flat = _audit(y, s, g, n_boot=20)
    pair = _audit(y, np.stack([1 - s, s], axis=1), g, n_boot=20)
    assert flat["by_group"] == pair["by_group"]


def test_small_group_is_a_warning_not_an_error() -> None:
    y, s, g = _synthetic(400, seed=9)
    keep = (g != "C") | (np.cumsum(g == "C") <= 12)
    out = _audit(y[keep], s[keep], g[keep], n_boot=20)
    assert out["by_group"]["C"]["n"] == 12
    assert any("C has only 12 test rows" in w for w in out["warnings"])
