"""preset best: an Optuna search on the training split alone, recorded in the run folder and ledger."""

from __future__ import annotations

import json

from glassbox.cli.main import main
from glassbox.config import load_recipe
from glassbox.pipeline import run_recipe
from glassbox.train import Trainer

TINY = ["data.source=wine", "preset=best", "tune.trials=3", "tune.epochs=2", "tune.folds=2",
        "train.epochs=2", "model.heads=2", "report.enabled=false"]  # fmt: skip


def test_the_search_never_sees_a_test_row(tmp_path, monkeypatch):
    seen: list[set[int]] = []
    real_fit = Trainer.fit

    def spy(self, train, val=None, **kw):
        seen.append(set(train.index.tolist()) | (set(val.index.tolist()) if val is not None else set()))
        return real_fit(self, train, val, **kw)

    monkeypatch.setattr(Trainer, "fit", spy)
    run = run_recipe(load_recipe(None, TINY), tmp_path)
    test_rows = set(json.loads((run.path / "splits.json").read_text())["test"]["source_rows"])
    assert len(seen) >= 1 + 2  # at least one trial of two folds, then the final training
    for rows in seen:
        assert not rows & test_rows, "a trial or the final training touched a test row"
    tune = json.loads((run.path / "tune.json").read_text())
    assert 1 <= len(tune["trials"]) <= 3 and tune["settings"]["folds_used"] == 2
    assert set(tune["best_params"]) >= {"model.dim", "model.depth", "train.lr"}
    tuned = (run.path / "config_tuned.yaml").read_text()
    assert f"dim: {tune['best_params']['model.dim']}" in tuned and "tune: null" in tuned
    kinds = [json.loads(line)["kind"] for line in (run.path / "ledger.jsonl").read_text().splitlines()]
    assert kinds.count("config") >= 3  # config.yaml, tune.json, config_tuned.yaml
    assert main(["verify", str(run.path)]) == 0
    # The first trial is the recipe's own configuration (the tuned defaults).
    recipe = load_recipe(None, TINY)
    first = tune["trials"][0]["params"]
    assert first["model.dim"] == recipe.model.dim and first["train.lr"] == recipe.train.lr
