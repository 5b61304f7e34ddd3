"""Shared by the tests and the doctests in src/: no test signs with the user's own ledger key.

``make test`` runs one pytest-xdist worker per core. Each worker is held to
one torch (and OpenMP) thread: two workers with a thread per core each
oversubscribe a 2-core machine, and torch's spinning OpenMP threads then run
far slower than one thread does (measured on the tracker: 20x). Child
processes (torchrun workers, Flower clients) inherit the limit through the
environment. A run without xdist keeps torch's default.
"""

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _ledger_key(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("GLASSBOX_LEDGER_KEY", str(tmp_path_factory.mktemp("key") / "ledger.key"))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict]:
    """``glassbox demo --json`` once per session (the healthcare recipe, ~80 s): exit status, JSON summary.

    The demo's own test, the healthcare recipe's accuracy test and its explanation-quality test read
    this one run. Under xdist the workers share it: the first to ask builds it under a file lock in
    the session's common temporary folder, the others wait and read its summary (the pattern
    pytest-xdist documents for session fixtures).
    """
    import contextlib
    import io
    import json

    from filelock import FileLock

    from glassbox.cli.main import main

    def build(out: str) -> tuple[int, dict]:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["demo", "--out", out, "--json"])
        return code, json.loads(buf.getvalue())

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(str(tmp_path_factory.mktemp("demo")))
    shared = tmp_path_factory.getbasetemp().parent  # one folder per session, common to its workers
    summary = shared / "demo.json"
    with FileLock(str(shared / "demo.lock")):
        if not summary.is_file():
            code, out = build(str(shared / "demo"))
            summary.write_text(json.dumps({"code": code, "out": out}))
    saved = json.loads(summary.read_text())
    return saved["code"], saved["out"]
