"""Baselines beside every model: the same split, the same scores, in the report and the card; --seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glassbox.baselines import comparison, fit_baselines, scores
from glassbox.cli.main import main
from glassbox.config import load_recipe
from glassbox.data import load_dataset, split_dataset
from glassbox.pipeline import run_recipe


def test_scores_match_sklearn():
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    p = rng.dirichlet(np.ones(3), 50)
    s = scores(y, p, 3)
    assert s["accuracy"] == accuracy_score(y, p.argmax(1))
    assert s["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1, 2]))
    assert s["roc_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))


def test_baselines_use_the_runs_split_and_are_good():
    tr, _, te = split_dataset(load_dataset("breast-cancer"), 0.15, 0.2, seed=0)
    rows = fit_baselines(tr, te, seed=0)
    assert [r["name"] for r in rows][:2] == ["logistic regression", "HistGradientBoosting"]
    assert rows[0]["test"]["accuracy"] > 0.95
    tr, _, te = split_dataset(load_dataset("digits"), 0.15, 0.2, seed=0)
    assert [r["name"] for r in fit_baselines(tr, te, seed=0)] == ["logistic regression", "RBF SVC"]


def test_comparison_says_who_wins():
    rows = [{"name": "a", "test": {"accuracy": 0.9}}, {"name": "b", "test": {"accuracy": 0.95}}]
    assert comparison({"accuracy": 0.97}, rows)["verdict"].startswith(
        "glassbox beats the best baseline (b) by 2.0"
    )
    assert comparison({"accuracy": 0.93}, rows)["verdict"].startswith(
        "the best baseline (b) beats glassbox by 2.0"
    )


def test_every_report_shows_the_baselines_table(tmp_path):
    r = load_recipe(None, ["data.source=wine", "preset=fast", "train.epochs=3"])
    run = run_recipe(r, tmp_path)
    record = json.loads((run.path / "baselines.json").read_text())
    assert {b["name"] for b in record["baselines"]} >= {"logistic regression", "HistGradientBoosting"}
    html = (run.path / "report.html").read_text()
    assert html.index("Against baselines") < html.index("Test metrics")
    assert "id='baselines'" in html and "id='baseline-verdict'" in html
    card = json.loads((run.path / "model_card.json").read_text())
    assert card["baselines"]["best_baseline"] in card["baselines"]["accuracy"]
    off = run_recipe(load_recipe(None, ["data.source=wine", "preset=fast", "train.epochs=1",
                                         "report.baselines=false"]), tmp_path)  # fmt: skip
    assert not (off.path / "baselines.json").exists()


def test_seeds_report_mean_and_spread(tmp_path, capsys):
    argv = ["train", "digits", "--set", "preset=fast", "--set", "train.epochs=1",
            "--set", "report.enabled=false",
            "--set", "model.conv_stem=false", "--seeds", "2", "--out", str(tmp_path), "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0, 1] and len(out["runs"]) == 2
    acc = out["summary"]["glassbox"]["accuracy"]
    assert len(acc["per_seed"]) == 2 and acc["std"] >= 0
    assert set(out["summary"]) == {"glassbox", "logistic regression", "RBF SVC"}
    assert json.loads(open(out["file"]).read())["seeds"] == [0, 1]
