"""Shared by the tests and the doctests in src/: no test signs with the user's own ledger key."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _ledger_key(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("GLASSBOX_LEDGER_KEY", str(tmp_path_factory.mktemp("key") / "ledger.key"))
    yield
    mp.undo()
