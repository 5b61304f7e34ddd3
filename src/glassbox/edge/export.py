"""ONNX export of a trained glassbox classifier, checked against PyTorch before anyone relies on it.

``export_onnx`` goes through ``torch.onnx.export`` with the dynamo exporter
(onnxscript) and a batch of ``EXAMPLE_BATCH`` rows marked dynamic, because
with a batch-1 example, or code that turns the batch size into a Python int,
the exporter can freeze the batch dimension into the graph without a word;
``batch_dim`` reads the saved graph back and the export is refused unless the
batch came out symbolic. ``slim`` drops what ONNX Runtime does not need to
run the graph (doc strings with stack traces, node metadata, intermediate
shape annotations) so that the file size measures the model, not the tracer.

``export_run`` (the ``glassbox export RUN`` verb) builds everything in a
scratch folder, validates it on the run's test split (largest absolute
difference of the logits, predictions that changed, accuracy, and the same
predictions at batch sizes 1, 2 and 33), applies the int8 accuracy gate, and
only then moves the files into ``RUN/export/``, records them in the ledger
as one ``export`` entry and rebuilds the report: a refused export leaves the
folder as it was.

>>> import tempfile
>>> from glassbox.config import load_recipe
>>> from glassbox.pipeline import run_recipe
>>> r = load_recipe(None, ["data.source=iris", "preset=fast", "train.epochs=2"])
>>> run = run_recipe(r, tempfile.mkdtemp(), progress=False)
>>> summary = export_run(run.path, int8=True)
>>> summary["float"]["changed_predictions"], summary["batch_dim"]
(0, 'batch')
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glassbox.errors import UserError

if TYPE_CHECKING:
    import onnxruntime
    import torch

    from glassbox.data.base import Dataset
    from glassbox.nn.models import Transformer

INPUT, OUTPUT = "x", "logits"
EXPORT_DIR = "export"
FLOAT_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
SUMMARY_FILE = "export.json"  # what the export did and measured; latency goes to report.json
EXAMPLE_BATCH = 2  # >= 2: a batch-1 example lets the exporter freeze the batch dimension to 1
BATCH_CHECKS = (1, 2, 33)  # 33: not a power of two and larger than the example
FLOAT_ATOL = 1e-3  # float ONNX vs PyTorch logits; kernels differ in summation order, not more
GATE_POINTS = 1.0  # int8 test accuracy may fall at most this many points below float
EVAL_CHUNK = 256
MIN_OPSET = 18  # torch.onnx's dynamo exporter writes nothing older


def need_edge() -> None:
    """Fail with the install line when the edge extra is missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"export needs {', '.join(missing)}: pip install 'glassbox[edge]'")


def check_exportable(model: Transformer) -> None:
    spec = model.spec_
    if spec.get("task") != "classification" or spec.get("kind") not in ("tabular", "image"):
        raise UserError(
            f"export covers tabular and image classifiers; this run's model is a {spec.get('kind')}"
            f" {spec.get('task')} model, which glassbox cannot export yet"
        )
    head = spec.get("model", {}).get("head", "linear")
    if head == "quantum":
        # PennyLane's TorchLayer runs a simulator in Python; no ONNX operator stands for it.
        raise UserError(
            "the quantum head (model.head: quantum) is a simulated circuit that ONNX cannot express;"
            " export a model trained with model.head: linear or classical_small"
        )


def example_input(model: Transformer, batch: int = EXAMPLE_BATCH) -> torch.Tensor:
    """Zeros of the shape the model reads: ``(B, n_features)`` or ``(B, C, H, W)``, float32."""
    import torch

    spec = model.spec_
    shape = [spec["n_features"]] if spec["kind"] == "tabular" else list(spec["image_shape"])
    return torch.zeros(batch, *shape)


def input_schema(model: Transformer) -> dict[str, Any]:
    """What the ONNX model reads and returns, in words a client can follow."""
    spec = model.spec_
    schema: dict[str, Any] = {
        "input": INPUT,
        "output": OUTPUT,
        "kind": spec["kind"],
        "dtype": "float32",
        "classes": spec["classes"],
    }
    if spec["kind"] == "tabular":
        schema.update(shape=["batch", spec["n_features"]], feature_names=spec["feature_names"])
    else:
        schema.update(shape=["batch", *spec["image_shape"]])
    return schema


# -- export and the file itself -------------------------------------------------------------
def export_onnx(model: Transformer, path: str | Path, *, opset: int | None = None) -> dict[str, Any]:
    """Write ``model`` to ``path`` as one ONNX file with a dynamic batch dimension; returns its facts."""
    import onnx
    import torch
    from torch.export import Dim

    check_exportable(model)
    path = Path(path)
    model.eval()
    if opset is not None and opset < MIN_OPSET:
        raise UserError(f"--opset {opset}: the dynamo exporter writes opset {MIN_OPSET} or newer; choose one")
    options: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    try:
        # On failure the exporter prints whole FX graphs; the first line of its error is what helps.
        noise = io.StringIO()
        with warnings.catch_warnings(), _quiet("torch.onnx", "onnxscript", "torch.export"):
            warnings.simplefilter("ignore")
            stack = contextlib.ExitStack()
            stack.enter_context(contextlib.redirect_stdout(noise))
            stack.enter_context(contextlib.redirect_stderr(noise))
            with stack:
                program = torch.onnx.export(
                    model,
                    (example_input(model),),
                    dynamo=True,
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                    dynamic_shapes=({0: Dim("batch")},),
                    verbose=False,
                    **options,
                )
    except Exception as err:  # the exporter's own errors name the op it could not convert
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"the ONNX exporter could not convert this model"
            f" ({model.spec_.get('attention')} attention): {detail}"
        ) from None
    # One file: these models are far below protobuf's 2 GB limit, so no external .data to lose.
    program.save(str(path), external_data=False)
    slim(path)
    got = batch_dim(path)
    if not isinstance(got, str):
        path.unlink(missing_ok=True)
        raise UserError(
            f"the exported graph froze the batch dimension to {got}; this is an exporter or model bug"
            " (a Python int taken from a tensor shape): please report it with the run's model.json"
        )
    m = onnx.load(str(path), load_external_data=False)
    opset_used = int(next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))
    if opset is not None and opset_used != opset:
        path.unlink(missing_ok=True)
        wrote = f"the exporter wrote opset {opset_used} instead"
        raise UserError(f"--opset {opset}: {wrote}; choose {opset_used}, or leave --opset out")
    return {"opset": opset_used, "batch_dim": got}


def slim(path: str | Path) -> None:
    """Strip doc strings, node metadata and intermediate shape annotations: ORT rebuilds what it needs."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    m.doc_string = ""
    for node in m.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    del m.graph.value_info[:]
    onnx.save(m, str(path))


def batch_dim(path: str | Path) -> str | int:
    """The input's first dimension as the graph states it: a name when dynamic, a number when frozen."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    dim = m.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param if dim.dim_param else int(dim.dim_value)


def model_files(path: str | Path) -> dict[str, int]:
    """Bytes of the ONNX file and of every external-data file it points to (a model is all of them)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    path = Path(path)
    m = onnx.load(str(path), load_external_data=False)
    sizes = {path.name: path.stat().st_size}
    tensors = list(m.graph.initializer) + [
        a.t for n in m.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
    ]
    for t in tensors:
        if uses_external_data(t):
            location = ExternalDataInfo(t).location
            data = path.parent / location
            if not data.is_file():
                raise UserError(f"{path} points to external data {location}, which is missing; re-export")
            sizes[location] = data.stat().st_size
    return sizes


# -- running it -----------------------------------------------------------------------------
def session(path: str | Path, threads: int = 1, *, spin: bool = True) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (0: as many as ORT likes).

    ``spin=False`` stops ORT's worker threads from busy-waiting between calls:
    needed when anything else computes in the same process (timing beside
    PyTorch), where spinning threads take the cores the other one needs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one graph, one request at a time: parallelism inside ops only
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: the CPU provider's notes are not the user's problem
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(sess: onnxruntime.InferenceSession, X: np.ndarray, chunk: int = EVAL_CHUNK) -> np.ndarray:
    """Logits ``(N, K)`` of ``X`` through ``sess``, ``chunk`` rows per call."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    return np.concatenate([sess.run([OUTPUT], {INPUT: X[i : i + chunk]})[0] for i in range(0, len(X), chunk)])


def torch_logits(model: Transformer, X: torch.Tensor, chunk: int = EVAL_CHUNK) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(X[i : i + chunk]) for i in range(0, len(X), chunk)]).numpy()


def compare(reference: np.ndarray, logits: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """How far ``logits`` are from the PyTorch ``reference`` on the same rows, and both accuracies."""
    ref_pred, pred = reference.argmax(1), logits.argmax(1)
    changed = np.flatnonzero(ref_pred != pred)
    return {
        "rows": len(y),
        "max_abs_diff": float(np.abs(logits - reference).max()),
        "changed_predictions": len(changed),
        "changed_rows": changed.tolist()[:50],  # test-split positions; the first 50 suffice to look at
        "accuracy": float((pred == y).mean()),
        "torch_accuracy": float((ref_pred == y).mean()),
    }


def batch_checks(sess: onnxruntime.InferenceSession, model: Transformer, X: torch.Tensor) -> dict[str, int]:
    """Predictions that differ from PyTorch when the ONNX model runs at each of ``BATCH_CHECKS``."""
    import torch

    n = max(BATCH_CHECKS)
    rows = X[torch.arange(n) % len(X)]  # a small test split repeats its rows to fill 33
    ref = torch_logits(model, rows).argmax(1)
    out = {}
    for b in BATCH_CHECKS:
        got = onnx_logits(sess, rows.numpy(), chunk=b).argmax(1)
        out[str(b)] = int((got != ref).sum())
    return out


# -- the verb -------------------------------------------------------------------------------
def export_run(
    path: str | Path,
    *,
    int8: bool = False,
    opset: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """``glassbox export RUN``: ONNX (and int8) models of the run's model into ``RUN/export/``.

    Returns the summary also written to ``export/export.json``. Raises
    UserError, leaving the run folder untouched, when the float model
    disagrees with PyTorch or the int8 model fails the accuracy gate
    (unless ``force``).
    """
    need_edge()
    if opset is not None and opset < MIN_OPSET:  # before the slow part
        raise UserError(f"--opset {opset}: the dynamo exporter writes opset {MIN_OPSET} or newer; choose one")
    from glassbox.analysis import open_run, write_run_report
    from glassbox.edge.quantize import quantization_method, quantize
    from glassbox.ledger.chain import file_sha256

    run, recipe, data, model = open_run(path)
    check_exportable(model)
    test, train = data["test"], data["train"]
    say = print if progress else (lambda *a, **k: None)
    scratch = Path(tempfile.mkdtemp(prefix="glassbox-export-"))
    try:
        say(f"exporting {run.path.name} to ONNX (dynamo exporter)")
        facts = export_onnx(model, scratch / FLOAT_FILE, opset=opset)
        reference = torch_logits(model, test.X)
        y = test.y.numpy()
        summary: dict[str, Any] = {
            **facts,
            "input_schema": input_schema(model),
            "attention": model.spec_.get("attention"),
            "example_batch": EXAMPLE_BATCH,
            "validated_on": f"test split, {len(test)} rows",
        }
        fsess = session(scratch / FLOAT_FILE)
        summary["float"] = compare(reference, onnx_logits(fsess, test.X.numpy()), y)
        summary["batch_checks"] = batch_checks(fsess, model, test.X)
        _check_float(summary)
        files = [FLOAT_FILE]
        if int8:
            method = quantization_method(model)
            say(f"quantizing to int8 ({method})")
            summary["int8_method"] = method
            summary["quantization"] = quantize(
                scratch / FLOAT_FILE, scratch / INT8_FILE, method=method, calibration=_calibration(train)
            )
            qsess = session(scratch / INT8_FILE)
            summary["int8"] = compare(reference, onnx_logits(qsess, test.X.numpy()), y)
            summary["int8_batch_checks"] = batch_checks(qsess, model, test.X)
            summary["gate"] = _gate(summary["float"]["accuracy"], summary["int8"]["accuracy"], force)
            files.append(INT8_FILE)
        summary["files"] = {}
        for name in files:
            for part, size in model_files(scratch / name).items():
                summary["files"][part] = {"bytes": size, "sha256": file_sha256(scratch / part)}
        summary["float"]["bytes"] = sum(model_files(scratch / FLOAT_FILE).values())
        if int8:
            summary["int8"]["bytes"] = sum(model_files(scratch / INT8_FILE).values())
            summary["int8"]["size_vs_float"] = summary["int8"]["bytes"] / summary["float"]["bytes"]
        (scratch / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        with run:
            _install(run, scratch, summary)
            if recipe.report.enabled:
                write_run_report(run, recipe, data)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary


def _check_float(summary: dict[str, Any]) -> None:
    f = summary["float"]
    wrong_batches = {b: n for b, n in summary["batch_checks"].items() if n}
    if f["max_abs_diff"] > FLOAT_ATOL or f["changed_predictions"] or wrong_batches:
        raise UserError(
            f"the ONNX model disagrees with PyTorch (largest logit difference {f['max_abs_diff']:.2g},"
            f" {f['changed_predictions']} changed test predictions, by batch size {wrong_batches or 'none'});"
            " nothing was written: please report it with the run's model.json"
        )


def _gate(float_acc: float, int8_acc: float, force: bool) -> dict[str, Any]:
    drop = 100 * (float_acc - int8_acc)
    passed = drop <= GATE_POINTS
    gate = {"max_drop_points": GATE_POINTS, "drop_points": drop, "passed": passed, "forced": False}
    if not gate["passed"]:
        if not force:
            raise UserError(
                f"int8 refused: test accuracy {100 * int8_acc:.2f} % is {drop:.2f} points below float"
                f" {100 * float_acc:.2f} % (the gate allows {GATE_POINTS:g}); nothing was written:"
                " export without --int8, or add --force to keep it anyway"
            )
        gate["forced"] = True
    return gate


def _calibration(train: Dataset, rows: int = 256) -> np.ndarray:
    """Training rows for static calibration: a seeded sample, so an export is reproducible."""
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(train), size=min(rows, len(train)), replace=False))
    return train.X.numpy()[pick].astype(np.float32)


def _install(run: Any, scratch: Path, summary: dict[str, Any]) -> None:
    """Move the scratch files into ``export/`` (replacing an earlier export) and record one entry."""
    folder = run.path / EXPORT_DIR
    folder.mkdir(exist_ok=True)
    new = [*summary["files"], SUMMARY_FILE]
    stale = [p.name for p in folder.iterdir() if p.is_file() and p.name not in new]
    for name in stale:
        (folder / name).unlink()
    for name in new:
        shutil.move(str(scratch / name), str(folder / name))
    run.record(
        "export",
        [f"{EXPORT_DIR}/{n}" for n in new],
        data={"files": {n: f["bytes"] for n, f in summary["files"].items()}, "int8": "int8" in summary},
        removed=[f"{EXPORT_DIR}/{n}" for n in stale if run.ledger.live_.get(f"{EXPORT_DIR}/{n}")],
    )


class _quiet:
    """Silence chatty loggers (the exporter's progress lines) for a block."""

    def __init__(self, *names: str) -> None:
        self.loggers = [logging.getLogger(n) for n in names]
        self.levels: list[int] = []

    def __enter__(self) -> None:
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for lg, level in zip(self.loggers, self.levels, strict=True):
            lg.setLevel(level)
