"""ONNX export: every attention kind keeps a dynamic batch and matches PyTorch; the verb is atomic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from glassbox.cli.main import main
from glassbox.config import ModelConfig, load_recipe
from glassbox.data.base import Dataset
from glassbox.edge import export as ex
from glassbox.edge.quantize import quantization_method, quantize, quantize_weights_only
from glassbox.errors import UserError
from glassbox.ledger import verify_run
from glassbox.nn.attention import KINDS
from glassbox.nn.models import build_model
from glassbox.pipeline import run_recipe

FAST = ["preset=fast", "train.epochs=2"]


def _table(n: int = 40, f: int = 5, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, f, generator=g) * 3 + 1
    y = torch.randint(0, 3, (n,), generator=g)
    return Dataset("toy", "tabular", "classification", X, y, feature_names=list("abcdefgh"[:f]),
                   classes=["x", "y", "z"])  # fmt: skip


def _images(n: int = 24) -> Dataset:
    g = torch.Generator().manual_seed(1)
    X = torch.rand(n, 1, 8, 8, generator=g) * 16
    return Dataset("toy-img", "image", "classification", X, torch.randint(0, 2, (n,), generator=g),
                   classes=["a", "b"])  # fmt: skip


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = load_recipe(None, ["data.source=breast-cancer", *FAST])
    return run_recipe(recipe, tmp_path_factory.mktemp("runs"), progress=False).path


# -- the model family -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", [k for k in KINDS.names() if k != "auto"])
def test_every_attention_kind_exports_with_a_dynamic_batch(kind: str, tmp_path: Path) -> None:
    data = _table()
    model = build_model(ModelConfig(dim=16, depth=1, heads=2, attention=kind), data).eval()
    facts = ex.export_onnx(model, tmp_path / "m.onnx")
    assert isinstance(facts["batch_dim"], str) and facts["batch_dim"]
    sess = ex.session(tmp_path / "m.onnx")
    for b in (1, 2, 33):
        got = ex.onnx_logits(sess, data.X[:b].numpy())
        np.testing.assert_allclose(got, ex.torch_logits(model, data.X[:b]), atol=1e-4, rtol=1e-4)


def test_image_model_with_conv_stem_exports_and_quantizes_statically(tmp_path: Path) -> None:
    data = _images()
    model = build_model(ModelConfig(dim=16, depth=1, heads=2, patch=2, conv_stem=True), data).eval()
    ex.export_onnx(model, tmp_path / "m.onnx")
    assert quantization_method(model) == "static"
    facts = quantize(tmp_path / "m.onnx", tmp_path / "q.onnx", method="static", calibration=data.X.numpy())
    assert facts["calibration_rows"] == len(data) and facts["quantized_nodes"] > 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    ref = ex.torch_logits(model, data.X)
    got = ex.onnx_logits(ex.session(tmp_path / "q.onnx"), data.X.numpy())
    assert np.abs(got - ref).max() < 0.25 * np.abs(ref).max() + 0.05  # int8: close, not equal


def test_feature_embeddings_are_stored_int8_weight_only(tmp_path: Path) -> None:
    # 30 features at width 64: the tokenizer's two (30, 64) tables pass WEIGHT_ONLY_MIN; norms do not.
    data = _table(n=40, f=5)
    data = Dataset("wide", "tabular", "classification", torch.randn(40, 30) * 2, data.y,
                   feature_names=[f"f{i}" for i in range(30)], classes=data.classes)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(ModelConfig(dim=64, depth=1, heads=2), data).eval()
    ex.export_onnx(model, tmp_path / "m.onnx")
    float_graph = onnx.load(str(tmp_path / "m.onnx")).graph
    before = {t.name: onnx.numpy_helper.to_array(t) for t in float_graph.initializer}
    facts = quantize(tmp_path / "m.onnx", tmp_path / "q.onnx", method="dynamic")
    done = facts["weight_only"]
    assert set(done) == {"tokenizer.weight", "tokenizer.bias"}  # the MatMul weights were int8 already
    assert quantize_weights_only(tmp_path / "q.onnx") == []  # nothing large is left float
    m = onnx.load(str(tmp_path / "q.onnx"))
    after = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    for name in done:
        assert name not in after and after[f"{name}_int8"].dtype == np.int8
        # The exact dequantization, by hand: int8 times the row's scale is within half a step of the float.
        w, q, scale = before[name], after[f"{name}_int8"], after[f"{name}_int8_scale"]
        assert np.abs(q.astype(np.float32) * scale[:, None] - w).max() <= 0.5 * scale.max() + 1e-7
        assert np.abs(q).max(axis=1).min() == 127  # each row's peak maps to the end of the range
    got = ex.onnx_logits(ex.session(tmp_path / "q.onnx"), data.X.numpy())
    ref = ex.torch_logits(model, data.X)
    assert 0 < np.abs(got - ref).max() < 0.1 * np.abs(ref).max()  # int8 weights and activations: close


def test_a_batch_frozen_into_the_graph_is_refused(tmp_path: Path) -> None:
    data = _table()
    model = build_model(ModelConfig(dim=16, depth=1, heads=2), data).eval()
    inner = model.tokenizer.forward

    def frozen(x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        h = inner(x, offset)
        return h.reshape(int(x.shape[0]), *h.shape[1:])  # a Python int from a shape: the classic bug

    model.tokenizer.forward = frozen
    with pytest.raises(UserError, match="froze the batch dimension to 2"):
        ex.export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_batch_dim_reads_the_graph(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "fixed.onnx"))
    assert ex.batch_dim(tmp_path / "fixed.onnx") == 1


def test_model_size_counts_external_data_files(tmp_path: Path) -> None:
    data = _table()
    model = build_model(ModelConfig(dim=32, depth=1, heads=2), data).eval()
    ex.export_onnx(model, tmp_path / "one.onnx")
    m = onnx.load(str(tmp_path / "one.onnx"))
    onnx.save(m, str(tmp_path / "split.onnx"), save_as_external_data=True, location="split.onnx.data",
              size_threshold=0)  # fmt: skip
    sizes = ex.model_files(tmp_path / "split.onnx")
    assert set(sizes) == {"split.onnx", "split.onnx.data"}
    assert sizes["split.onnx.data"] == (tmp_path / "split.onnx.data").stat().st_size
    assert sum(sizes.values()) >= (tmp_path / "one.onnx").stat().st_size * 0.9
    (tmp_path / "split.onnx.data").unlink()
    with pytest.raises(UserError, match="missing"):
        ex.model_files(tmp_path / "split.onnx")


def test_non_classifiers_are_refused_clearly() -> None:
    text = Dataset("t", "text", "lm", torch.randint(0, 256, (8, 17)), torch.zeros(8))
    model = build_model(ModelConfig(dim=16, depth=1, heads=2), text)
    with pytest.raises(UserError, match="tabular and image classifiers"):
        ex.check_exportable(model)


# -- the verb on a run folder ----------------------------------------------------------------
def test_export_run_validates_signs_and_reports(run_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(run_path), "--int8"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "int8 (dynamic)" in out and "gate passed" in out
    summary = json.loads((run_path / "export" / "export.json").read_text())
    assert summary["batch_dim"] and summary["float"]["changed_predictions"] == 0
    assert summary["float"]["max_abs_diff"] < ex.FLOAT_ATOL
    assert summary["batch_checks"] == {"1": 0, "2": 0, "33": 0}
    assert summary["int8"]["bytes"] < summary["float"]["bytes"]
    for name, f in summary["files"].items():
        assert (run_path / "export" / name).stat().st_size == f["bytes"]
    # One signed export entry covers the models and the summary; the folder verifies.
    entries = [json.loads(line) for line in (run_path / "ledger.jsonl").read_text().splitlines()]
    export_entries = [e for e in entries if e["kind"] == "export"]
    assert set(export_entries[-1]["artifacts"]) == {"export/model.onnx", "export/model.int8.onnx",
                                                    "export/export.json"}  # fmt: skip
    assert verify_run(run_path).ok
    assert "Edge export" in (run_path / "report.html").read_text()


def test_a_failed_gate_writes_nothing(run_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (run_path / "ledger.jsonl").read_bytes()
    folder = run_path / "export"
    listing = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    monkeypatch.setattr(ex, "GATE_POINTS", -1.0)  # any int8 model now falls "more than" the allowance
    with pytest.raises(UserError, match=r"int8 refused: test accuracy .* points below float"):
        ex.export_run(run_path, int8=True)
    assert (run_path / "ledger.jsonl").read_bytes() == before
    now = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert now == listing
    summary = ex.export_run(run_path, int8=True, force=True)
    assert summary["gate"] == {**summary["gate"], "passed": False, "forced": True}
    assert verify_run(run_path).ok


def test_gate_numbers() -> None:
    assert ex._gate(0.95, 0.945, force=False)["passed"]
    with pytest.raises(UserError, match="2.00 points below"):
        ex._gate(0.95, 0.93, force=False)


def test_reexport_without_int8_removes_the_old_int8_on_record(run_path: Path) -> None:
    if not (run_path / "export" / "model.int8.onnx").exists():
        ex.export_run(run_path, int8=True)
    ex.export_run(run_path, int8=False)
    assert not (run_path / "export" / "model.int8.onnx").exists()
    entries = [json.loads(line) for line in (run_path / "ledger.jsonl").read_text().splitlines()]
    last = [e for e in entries if e["kind"] == "export"][-1]
    assert "export/model.int8.onnx" in last.get("removed", [])
    assert verify_run(run_path).ok
