"""The prediction server: right answers, a 4xx naming every bad input, still serving after, clean shutdown."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from glassbox.analysis import open_run
from glassbox.config import load_recipe
from glassbox.edge.export import export_run, torch_logits
from glassbox.edge.serve import MAX_BATCH, create_app, served_model
from glassbox.errors import UserError
from glassbox.ledger.chain import file_sha256
from glassbox.pipeline import run_recipe


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # dropout and monitor pinned: the README example promises this 2-epoch model's answers.
    sets = [
        "data.source=breast-cancer",
        "preset=fast",
        "train.epochs=2",
        "model.dropout=0.1",
        "train.monitor=auto",
    ]
    recipe = load_recipe(None, sets)
    run = run_recipe(recipe, tmp_path_factory.mktemp("runs"), progress=False)
    export_run(run.path, int8=True)
    return run.path


@pytest.fixture(scope="module")
def client(exported: Path) -> TestClient:
    return TestClient(create_app(exported, int8=True))


@pytest.fixture(scope="module")
def rows(exported: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Feature names, test rows, and PyTorch's predicted class per row."""
    _, _, data, model = open_run(exported)
    test = data["test"]
    return list(test.feature_names), test.X.numpy(), torch_logits(model, test.X).argmax(1)


def test_predictions_by_name_and_by_array_match_pytorch(client: TestClient, rows, exported: Path) -> None:
    names, X, ref = rows
    classes = client.get("/metadata").json()["input_schema"]["classes"]
    by_name = [dict(zip(names, map(float, r), strict=True)) for r in X[:33]]
    got = client.post("/predict", json={"rows": by_name}).json()
    summary = json.loads((exported / "export" / "export.json").read_text())
    changed = set(summary["int8"]["changed_rows"])
    assert [classes.index(p) for i, p in enumerate(got["predictions"]) if i not in changed] == [
        int(r) for i, r in enumerate(ref[:33]) if i not in changed
    ]
    arrays = client.post("/predict", json={"inputs": X[:33].tolist()}).json()
    assert arrays["predictions"] == got["predictions"]
    one = client.post("/predict", json={"rows": by_name[0]}).json()  # a lone object is one row
    assert one["predictions"] == got["predictions"][:1]
    assert abs(sum(one["probabilities"][0].values()) - 1) < 1e-5


def test_metadata_and_health_tell_what_is_served(client: TestClient, exported: Path) -> None:
    meta = client.get("/metadata").json()
    assert meta["sha256"] == file_sha256(exported / "export" / "model.int8.onnx")
    heads = [json.loads(x) for x in (exported / "ledger.jsonl").read_text().splitlines()]
    assert meta["ledger_root"] == [h for h in heads if h["kind"] == "tree-head"][-1]["data"]["root"]
    assert meta["input_schema"]["shape"] == ["batch", 30] and len(meta["input_schema"]["feature_names"]) == 30
    assert client.get("/health").json()["status"] == "ok"


def _good(names: list[str]) -> dict[str, float]:
    return {n: 1.0 for n in names}


def _bad_cases(names: list[str]) -> dict[str, tuple[dict, int, str]]:
    """name -> (request kwargs, status, a phrase the message must contain)."""
    row = _good(names)
    wrong = {**{k: v for k, v in row.items() if k != names[0]}, names[0][:-1]: 1.0}
    return {
        "malformed json": ({"content": b'{"rows": [1,'}, 400, "not valid JSON"),
        "empty body": ({"content": b""}, 400, "empty body"),
        "not utf-8": ({"content": b"\xff\xfe{}"}, 400, "UTF-8"),
        "nan literal": ({"content": b'{"inputs": [NaN]}'}, 422, "NaN"),
        "infinity literal": ({"content": b'{"inputs": [[Infinity]]}'}, 422, "Infinity"),
        "misspelt feature": ({"json": {"rows": [wrong]}}, 422, f"did you mean '{names[0]}'"),
        "missing feature": ({"json": {"rows": [dict(list(row.items())[:-1])]}}, 422, "missing"),
        "too few values": ({"json": {"inputs": [[1.0] * 29]}}, 422, "has 29 values, the model reads 30"),
        "too many values": ({"json": {"inputs": [[1.0] * 31]}}, 422, "has 31 values"),
        "string value": ({"json": {"rows": [{**row, names[2]: "7"}]}}, 422, "is a str, not a number"),
        "boolean value": ({"json": {"inputs": [[True] + [1.0] * 29]}}, 422, "boolean"),
        "null value": ({"json": {"inputs": [[None] + [1.0] * 29]}}, 422, "null"),
        "nested too deep": ({"json": {"inputs": [[[1.0]] * 30]}}, 422, "array"),
        "oversized batch": ({"json": {"inputs": [[1.0] * 30] * (MAX_BATCH + 1)}}, 413, "limit"),
        "empty batch": ({"json": {"rows": []}}, 422, "empty"),
        "body is a list": ({"json": [row]}, 422, "send an object"),
        "unknown key": ({"json": {"row": [row]}}, 422, "'row'"),
        "rows is a number": ({"json": {"rows": 3}}, 422, '"rows" is a int'),
    }


def test_every_bad_request_gets_a_4xx_that_names_it(client: TestClient, rows) -> None:
    names = rows[0]
    for case, (kwargs, status, phrase) in _bad_cases(names).items():
        r = client.post("/predict", **kwargs)
        assert r.status_code == status, (case, r.text)
        assert phrase in r.json()["error"], (case, r.json())
    # Still serving, and counting what it refused.
    assert client.post("/predict", json={"rows": [_good(names)]}).status_code == 200
    health = client.get("/health").json()
    assert health["rejected"] >= len(_bad_cases(names)) and health["failed"] == 0


def test_a_tampered_model_is_not_served(exported: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / exported.name
    shutil.copytree(exported, copy)
    path = copy / "export" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not verify"):
        served_model(copy)


def test_real_server_keeps_serving_and_shuts_down_gracefully(exported: Path, rows) -> None:
    import uvicorn

    names = rows[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(exported), host="127.0.0.1", port=port,
                                           log_level="error", timeout_graceful_shutdown=5))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def post(body: bytes) -> tuple[int, dict]:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())

    good = json.dumps({"rows": [_good(names)]}).encode()
    assert post(good)[0] == 200
    for kwargs, status, _ in _bad_cases(names).values():
        body = kwargs.get("content", json.dumps(kwargs.get("json")).encode())
        assert post(body)[0] == status
    assert post(good)[0] == 200  # the same keep-alive connection, after every bad request
    conn.close()
    # The README's client, pointed at this port, gets the answer it promises.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    client_code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "/predict" in b)
    scope: dict = {}
    exec(compile(client_code.replace(":8000/", f":{port}/"), "README.md", "exec"), scope)
    assert scope["answer"]["predictions"] == ["malignant", "malignant"]
    server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_images_are_arrays_of_the_model_shape() -> None:
    from glassbox.edge.serve import BadRequest, Predictor

    class Echo:  # a session stand-in: logits from the sum of each image
        def run(self, _names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            s = feed["x"].reshape(len(feed["x"]), -1).sum(1)
            return [np.stack([-s, s], 1)]

    p = Predictor(Echo(), {"shape": ["batch", 1, 2, 2], "classes": ["dark", "light"]})
    one = [[[1.0, 2.0], [3.0, 4.0]]]  # (C, H, W): one image on its own
    assert p.inputs({"inputs": one}).shape == (1, 1, 2, 2)
    assert p.predict(p.inputs({"inputs": [one, one]}))["predictions"] == ["light", "light"]
    for bad, phrase in [
        ({"inputs": [[[1.0, 2.0], [3.0]]]}, "has 1 values, the model reads 2"),
        ({"rows": [{"a": 1}]}, "reads images"),
        ({"inputs": [[[1.0, 2.0], [3.0, float("nan")]]]}, "nan"),
    ]:
        with pytest.raises(BadRequest, match=phrase):
            p.inputs(bad)
