"""Explanations, audit and model card end to end: in a recipe run, and through the later verbs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from glassbox.analysis import groups_for
from glassbox.cli.main import main
from glassbox.config import load_recipe
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.ledger import verify_run
from glassbox.pipeline import run_recipe

FAST = ["preset=fast", "train.epochs=2"]
FRAUD = ["data.source=fraud", "preset=fast", "train.epochs=1", "train.max_steps_per_epoch=15",
         "train.batch_size=256", "train.class_weight=balanced", "train.monitor=val_auroc"]  # fmt: skip


@pytest.fixture(scope="module")
def fraud_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = load_recipe(None, [*FRAUD, "audit.n_boot=100", "report.intended_use=Testing the card."])
    return run_recipe(recipe, tmp_path_factory.mktemp("runs"), progress=False).path


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = load_recipe(None, ["data.source=breast-cancer", *FAST])
    return run_recipe(recipe, tmp_path_factory.mktemp("runs"), progress=False).path


def test_recipe_audit_lands_in_card_report_and_ledger(fraud_run: Path) -> None:
    audit = json.loads((fraud_run / "audit.json").read_text())
    dp = audit["mitigation"]["demographic_parity"]
    assert set(audit["by_group"]) == {"A", "B", "C"}
    assert dp["before"]["dp_difference"] > dp["after"]["dp_difference"]
    card = json.loads((fraud_run / "model_card.json").read_text())
    assert card["intended_use"] == "Testing the card."
    assert set(card["metrics"]["by_group"]["groups"]) == {"A", "B", "C"}
    html = (fraud_run / "report.html").read_text()
    assert "Model card" in html and "Fairness audit" in html and "demographic parity" in html.lower()
    # The card's Merkle root is one of the ledger's tree heads, and the folder verifies.
    heads = [json.loads(line) for line in (fraud_run / "ledger.jsonl").read_text().splitlines()]
    roots = {e["data"]["root"] for e in heads if e["kind"] == "tree-head"}
    assert card["provenance"]["merkle_root"] in roots
    assert card["provenance"]["merkle_root"] in html
    assert verify_run(fraud_run).ok


def test_explain_verb_adds_a_signed_section(bc_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", str(bc_run), "--rows", "0,3", "--methods", "integrated_gradients,rollout"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "integrated_gradients" in out and "rollout" in out
    result = json.loads((bc_run / "explanations.json").read_text())
    assert result["rows"] == [0, 3] and sorted(result["methods"]) == ["integrated_gradients", "rollout"]
    ig = result["methods"]["integrated_gradients"]
    assert ig["info"]["converged"] and ig["quality"]["completeness_max"] <= 0.05
    assert "Explanations" in (bc_run / "report.html").read_text()
    assert main(["verify", str(bc_run)]) == 0


def test_audit_verb(fraud_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(fraud_run), "--sensitive", "group", "--threshold", "0.6", "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)
    assert digest["threshold"] == 0.6 and digest["sensitive"] == "group"
    assert verify_run(fraud_run).ok


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "{bc}"], "has no sensitive column"),
        (["audit", "{bc}", "--sensitive", "mean radius"], "distinct values"),
        (["audit", "{fraud}", "--sensitive", "grup"], "did you mean 'group'"),
        (["explain", "{bc}", "--rows", "0,999"], "not in the test split"),
        (["explain", "{bc}", "--rows", "a,b"], "--rows"),
        (["explain", "{bc}", "--methods", "shap"], "methods"),
        (["explain", "{bc}", "--rows", "1", "--sample", "3"], "not both"),
        (["explain", "{nowhere}"], "not a glassbox run folder"),
    ],
)
def test_bad_input_exits_2(args, message, bc_run, fraud_run, tmp_path, capsys) -> None:
    paths = {"bc": bc_run, "fraud": fraud_run, "nowhere": tmp_path}
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_iris_audit_section_refused_before_any_folder(tmp_path: Path) -> None:
    recipe = load_recipe(None, ["data.source=iris", *FAST, "audit.sensitive=x"])
    with pytest.raises(UserError, match="binary classifiers"):
        run_recipe(recipe, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_groups_from_features() -> None:
    X = torch.tensor([[1.0, 0.0, 3.0], [0.0, 1.0, 3.0], [1.0, 0.0, 5.0]])
    data = Dataset("t", "tabular", "classification", X, torch.tensor([0, 1, 0]),
                   feature_names=["sex=f", "sex=m", "rooms"], classes=["0", "1"])  # fmt: skip
    assert groups_for(data, "sex")[1].tolist() == ["f", "m", "f"]
    assert groups_for(data, "rooms")[1].tolist() == ["3", "3", "5"]
    with pytest.raises(UserError, match="did you mean 'sex'"):
        groups_for(data, "sexx")
    data.sensitive, data.sensitive_name = np.array(["a", "b", "a"]), "site"
    name, groups = groups_for(data, None)
    assert name == "site" and groups.tolist() == ["a", "b", "a"]


def test_demo_ends_with_a_verified_ledger_and_a_full_report(demo_run) -> None:
    code, out = demo_run
    assert code == 0
    assert out["status"] == "completed" and out["verify"]["ok"] and out["verify"]["problems"] == []
    run = Path(out["run"])
    html = (run / "report.html").read_text()
    for title in ("Model card", "Explanations", "Data values", "Provenance", "Intended use"):
        assert title in html, title
    card = json.loads((run / "model_card.json").read_text())
    assert card["provenance"]["merkle_root"] in html
    assert "integrated_gradients" in card["explanations"]["methods"]
    # It ends with an int8 export: sizes, latency and the accuracy gate in the report, all in the ledger.
    edge = out["export"]
    assert edge["gate"]["passed"] and edge["int8"]["bytes"] < edge["float"]["bytes"]
    for piece in ("Edge export", "edge-files", "edge-latency-table", "Accuracy gate", "model.int8.onnx"):
        assert piece in html, piece
    assert (run / "export" / "report.json").is_file()
