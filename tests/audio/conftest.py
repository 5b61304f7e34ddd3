"""Audio tests share one tiny spoken-digits configuration and a cache of their own."""

import pytest

TINY = {"voices": 6, "takes": 1, "words": ["zero", "one", "two"], "seconds": 0.5}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    # One cache for the whole session (generation is the slow part), never the user's own.
    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path_factory.getbasetemp() / "glassbox-cache"))


@pytest.fixture
def espeak():
    pytest.importorskip("espeakng_loader", reason="spoken-digits needs the audio extra")
