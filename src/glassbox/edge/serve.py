"""A low-latency prediction server over a run's exported ONNX model: FastAPI in front, ONNX Runtime behind.

``create_app(RUN)`` refuses to start unless the run's ledger verifies and
the file it would serve is the one the ledger recorded, so ``/metadata``'s
hash and Merkle root are facts about what answers, not about what was once
exported. Endpoints:

- ``POST /predict``: ``{"rows": [{"feature": value, ...}, ...]}`` for tables
  by feature name (one object alone is one row), or ``{"inputs": [...]}``
  with arrays of the model's input shape (one row, or a batch of them).
  Answers ``predictions`` (class names) and ``probabilities`` per row.
- ``GET /health``: ``ok`` and how many requests were answered.
- ``GET /metadata``: the served file, its SHA-256, the ledger's root, the input schema.

The request body is parsed here, not by pydantic models, so that every
problem gets a message naming it: 400 for a body that is not JSON, 413 for a
body or batch over the limits, 422 for JSON of the wrong shape (unknown or
missing feature names, wrong counts, NaN or infinity, strings or booleans
where numbers go). Nothing a client sends reaches ONNX Runtime unchecked, and
an error inside it is a 500 with its message: the server keeps serving.

The endpoint is ``async`` and calls ONNX Runtime inline: a single-row
inference takes well under a millisecond, less than a hop to a thread pool.

>>> import tempfile
>>> from fastapi.testclient import TestClient
>>> from glassbox.config import load_recipe
>>> from glassbox.edge.export import export_run
>>> from glassbox.pipeline import run_recipe
>>> run = run_recipe(load_recipe(None, ["data.source=iris", "preset=fast", "train.epochs=2"]),
...                  tempfile.mkdtemp(), progress=False)
>>> _ = export_run(run.path)
>>> client = TestClient(create_app(run.path))
>>> client.post("/predict", json={"inputs": [5.1, 3.5, 1.4, 0.2]}).status_code
200
>>> client.post("/predict", json={"inputs": [5.1, "x", 1.4, 0.2]}).json()["error"]
'inputs[0][1] is a str, not a number'
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints'
# annotations at definition time, and Request is imported inside create_app.
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glassbox.errors import UserError

if TYPE_CHECKING:
    from fastapi import FastAPI

MAX_BATCH = 1024  # rows per request; larger batches belong in a batch job, not a latency server
MAX_BODY = 8 * 1024 * 1024  # bytes; a batch of MAX_BATCH 8x8 images in JSON is about 1 MiB


class BadRequest(Exception):
    """A client error: its status and the message that names the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _reject_constant(name: str) -> float:
    raise BadRequest(422, f"{name} is not a number a model can read; send finite numbers only")


def parse_body(body: bytes) -> Any:
    """The request's JSON, with NaN and Infinity literals refused (Python's json would accept them)."""
    if len(body) > MAX_BODY:
        raise BadRequest(413, f"request body is {len(body)} bytes; the limit is {MAX_BODY}")
    if not body.strip():
        raise BadRequest(400, 'empty body; send JSON such as {"rows": [{"feature": 1.0}]}')
    try:
        # Decode first: json.loads on bytes guesses UTF-16 and UTF-32 from the first bytes.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "body is not UTF-8 text; send JSON") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise BadRequest(400, f"body is not valid JSON: {err.msg} at {where}") from None


def _number(value: Any, where: str) -> float:
    # bool is an int in Python; true/false where a measurement goes is a client bug.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(422, f"{where} is a {_json_type(value)}, not a number")
    if not math.isfinite(value):
        raise BadRequest(422, f"{where} is {value}; send finite numbers only")
    return float(value)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "str", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class Predictor:
    """Turns request JSON into an input array, runs the session, shapes the answer."""

    def __init__(self, session: Any, schema: dict[str, Any], max_batch: int = MAX_BATCH) -> None:
        self.session = session
        self.schema = schema
        self.max_batch = max_batch
        self.row_shape = tuple(int(s) for s in schema["shape"][1:])
        self.names = list(schema.get("feature_names") or [])
        self.index = {n: i for i, n in enumerate(self.names)}
        self.classes = list(schema["classes"])

    def inputs(self, payload: Any) -> np.ndarray:
        """The ``(B, *row_shape)`` float32 array a valid payload describes; BadRequest otherwise."""
        if not isinstance(payload, dict):
            kind = _json_type(payload)
            raise BadRequest(422, f'body is a JSON {kind}; send an object with "rows" or "inputs"')
        keys = set(payload) & {"rows", "inputs"}
        if len(keys) != 1 or set(payload) - keys:
            extra = sorted(set(payload) - {"rows", "inputs"})
            hint = f" (unknown: {', '.join(map(repr, extra))})" if extra else ""
            raise BadRequest(422, f'send exactly one of "rows" (by feature name) or "inputs" (arrays){hint}')
        if "rows" in payload:
            return self._rows(payload["rows"])
        return self._arrays(payload["inputs"])

    def _check_batch(self, n: int) -> None:
        if n == 0:
            raise BadRequest(422, "the batch is empty; send at least one row")
        if n > self.max_batch:
            raise BadRequest(413, f"batch of {n} rows; the limit is {self.max_batch} per request")

    def _rows(self, rows: Any) -> np.ndarray:
        if not self.names:
            raise BadRequest(422, 'this model reads images; send "inputs" arrays, not "rows" by name')
        rows = [rows] if isinstance(rows, dict) else rows
        if not isinstance(rows, list):
            raise BadRequest(422, f'"rows" is a {_json_type(rows)}; send an object or an array of objects')
        self._check_batch(len(rows))
        out = np.empty((len(rows), len(self.names)), dtype=np.float32)
        for r, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadRequest(422, f"rows[{r}] is a {_json_type(row)}, not an object of feature: value")
            unknown = [k for k in row if k not in self.index]
            if unknown:
                from glassbox.errors import did_you_mean

                raise BadRequest(
                    422, f"rows[{r}]: unknown feature {unknown[0]!r} ({did_you_mean(unknown[0], self.names)})"
                )
            if len(row) != len(self.names):
                missing = [n for n in self.names if n not in row]
                shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
                raise BadRequest(
                    422, f"rows[{r}] has {len(row)} of the {len(self.names)} features; missing {shown}"
                )
            for name, value in row.items():
                out[r, self.index[name]] = _number(value, f"rows[{r}][{name!r}]")
        return out

    def _arrays(self, inputs: Any) -> np.ndarray:
        if not isinstance(inputs, list):
            raise BadRequest(422, f'"inputs" is a {_json_type(inputs)}; send an array')
        if _depth(inputs) == len(self.row_shape):
            inputs = [inputs]  # one row on its own
        self._check_batch(len(inputs))
        out = np.empty((len(inputs), *self.row_shape), dtype=np.float32)
        for r, row in enumerate(inputs):
            self._fill(out[r], row, f"inputs[{r}]", 0)
        return out

    def _fill(self, out: np.ndarray, value: Any, where: str, axis: int) -> None:
        want = self.row_shape[axis]
        if not isinstance(value, list):
            raise BadRequest(
                422, f"{where} is a {_json_type(value)}; each row is an array of shape {list(self.row_shape)}"
            )
        if len(value) != want:
            raise BadRequest(
                422,
                f"{where} has {len(value)} values, the model reads {want} there"
                f" (row shape {list(self.row_shape)})",
            )
        last = axis == len(self.row_shape) - 1
        for i, v in enumerate(value):
            if last:
                out[i] = _number(v, f"{where}[{i}]")
            else:
                self._fill(out[i], v, f"{where}[{i}]", axis + 1)

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        from glassbox.edge.export import INPUT, OUTPUT

        logits = self.session.run([OUTPUT], {INPUT: x})[0]  # (B, K)
        z = logits - logits.max(1, keepdims=True)
        prob = np.exp(z)
        prob /= prob.sum(1, keepdims=True)
        return {
            "predictions": [self.classes[k] for k in prob.argmax(1)],
            "probabilities": [dict(zip(self.classes, map(float, p), strict=True)) for p in prob],
        }


def _depth(value: Any) -> int:
    d = 0
    while isinstance(value, list) and value:
        value, d = value[0], d + 1
    return d


def served_model(run_path: str | Path, int8: bool = False) -> tuple[Path, dict[str, Any], Any]:
    """The export to serve, checked against the ledger: its path, metadata and the verdict."""
    from glassbox.edge.export import EXPORT_DIR, FLOAT_FILE, INT8_FILE, SUMMARY_FILE
    from glassbox.ledger import verify_run
    from glassbox.ledger.chain import file_sha256

    run_path = Path(run_path)
    folder = run_path / EXPORT_DIR
    name = INT8_FILE if int8 else FLOAT_FILE
    if not (folder / SUMMARY_FILE).is_file() or not (folder / name).is_file():
        flag = " --int8" if int8 else ""
        raise UserError(f"{run_path} has no exported {name}; run: glassbox export {run_path}{flag}")
    verdict = verify_run(run_path)
    if not verdict.ok:
        raise UserError(f"refusing to serve: the ledger of {run_path} does not verify: {verdict.problems[0]}")
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    digest = file_sha256(folder / name)
    meta = {
        "run": str(run_path),
        "model": f"{EXPORT_DIR}/{name}",
        "sha256": digest,
        "bytes": (folder / name).stat().st_size,
        "ledger_root": verdict.root,
        "ledger_entries": verdict.entries,
        "input_schema": summary["input_schema"],
        "validation": summary.get("int8" if int8 else "float"),
        "max_batch": MAX_BATCH,
    }
    return folder / name, meta, verdict


def create_app(run_path: str | Path, *, int8: bool = False, threads: int = 1) -> "FastAPI":
    """The FastAPI app serving RUN's exported model (``int8``: the quantized one)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from glassbox.edge.export import need_edge, session

    need_edge()
    path, meta, _ = served_model(run_path, int8)
    predictor = Predictor(session(path, threads), meta["input_schema"])
    counts = {"answered": 0, "rejected": 0, "failed": 0}
    started = time.time()
    app = FastAPI(title=f"glassbox: {Path(run_path).name}", docs_url=None, redoc_url=None)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        try:
            x = predictor.inputs(parse_body(await request.body()))
        except BadRequest as err:
            counts["rejected"] += 1
            return JSONResponse({"error": err.message}, status_code=err.status)
        try:
            answer = predictor.predict(x)
        except Exception as err:  # ORT failing on a checked input is a bug, of one request, not the server
            counts["failed"] += 1
            return JSONResponse({"error": f"inference failed: {err}"}, status_code=500)
        counts["answered"] += 1
        return JSONResponse(answer)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": meta["model"], "uptime_s": round(time.time() - started, 1), **counts}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return meta

    return app


def serve(
    run_path: str | Path, *, host: str = "127.0.0.1", port: int = 8000, int8: bool = False, threads: int = 1
) -> None:
    """Serve until Ctrl-C or SIGTERM; requests in flight finish first (uvicorn's graceful shutdown)."""
    import socket

    import uvicorn

    with socket.socket() as probe:  # uvicorn logs a bind failure and exits; say it in one line instead
        try:
            probe.bind((host, port))
        except OSError as err:
            why = f"cannot listen on {host}:{port}: {err.strerror}"
            raise UserError(f"{why}; choose another --port") from None
    app = create_app(run_path, int8=int8, threads=threads)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # a line per request costs more than the inference
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    model = "int8" if int8 else "float"
    print(
        f"serving {Path(run_path)} ({model} ONNX) at http://{host}:{port}  (POST /predict, GET /health,"
        " GET /metadata; Ctrl-C stops)",
        flush=True,
    )
    server.run()
    print("stopped", flush=True)
