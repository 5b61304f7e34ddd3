"""A recipe's sensitivity: section and a quantum head's classical twin, end to end in a run folder."""

import json

import pytest

from glassbox.cli.main import main
from glassbox.config import load_recipe
from glassbox.errors import UserError
from glassbox.pipeline import run_recipe

TINY = ["model.dim=16", "model.depth=1", "model.heads=2", "train.epochs=3"]


def test_sensitivity_section_of_a_run(tmp_path):
    r = load_recipe(None, ["data.source=digits", *TINY, "sensitivity={rows: 40, probes: 8}"])
    run = run_recipe(r, tmp_path)
    res = json.loads((run.path / "sensitivity.json").read_text())
    assert res["kind"] == "image" and res["n"] == 16 and res["rows"] == 40  # 2x2 patches of 8x8
    assert 0 <= res["mean"] <= 16 and len(res["per_position"]) == 16
    curve = [m for m in run.metrics() if "sensitivity" in m]
    assert [m["epoch"] for m in curve] == [1, 2, 3]
    assert "Average sensitivity" in (run.path / "report.html").read_text()
    assert main(["verify", str(run.path)]) == 0


def test_binary_tables_are_flipped_not_resampled():
    from glassbox.analysis import sensitivity_kind
    from glassbox.audit.sensitivity import boolean_task
    from glassbox.data import load_dataset

    assert sensitivity_kind(boolean_task("majority", 5, rows=20, seed=0)) == "boolean"
    assert sensitivity_kind(load_dataset("iris")) == "tabular"


def test_sensitivity_refuses_language_models(tmp_path):
    r = load_recipe(None, ["data.source=python-corpus", "data.max_bytes=20000", *TINY, "sensitivity={}"])
    with pytest.raises(UserError, match="remove the sensitivity: section"):
        run_recipe(r, tmp_path)
    assert not any(tmp_path.iterdir())


def test_quantum_head_is_reported_beside_its_classical_twin(tmp_path):
    pytest.importorskip("pennylane")
    r = load_recipe(None, ["data.source=iris", *TINY, "model.head=quantum", "model.qubits=2"])
    run = run_recipe(r, tmp_path)
    twin = json.loads((run.path / "quantum_twin.json").read_text())
    assert set(twin) == {"quantum", "classical_small"}
    q, c = twin["quantum"]["head_parameters"], twin["classical_small"]["head_parameters"]
    assert abs(q - c) <= 4  # the same size, give or take the MLP's rounding
    assert "Quantum head beside a classical head" in (run.path / "report.html").read_text()


def test_export_refuses_a_quantum_head():
    from types import SimpleNamespace

    from glassbox.edge.export import check_exportable

    fake = SimpleNamespace(spec_={"task": "classification", "kind": "tabular", "model": {"head": "quantum"}})
    with pytest.raises(UserError, match="ONNX cannot express"):
        check_exportable(fake)
