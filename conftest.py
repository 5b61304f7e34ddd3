"""Shared by the tests and the doctests in src/: no test signs with the user's own ledger key."""

import pytest


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
    this one run.
    """
    import contextlib
    import io
    import json

    from glassbox.cli.main import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", "--out", str(tmp_path_factory.mktemp("demo")), "--json"])
    return code, json.loads(buf.getvalue())
