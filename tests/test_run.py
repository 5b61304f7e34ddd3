from __future__ import annotations

import json

import pytest

from glassbox.run import Run, atomic_write_text


def test_run_folders_are_fresh_and_never_reused(tmp_path):
    a = Run.create(tmp_path, "x")
    b = Run.create(tmp_path, "x")
    assert a.path != b.path
    assert a.meta()["status"] == "running"
    for key in (
        "command",
        "glassbox_version",
        "torch",
        "host",
        "started",
    ):
        assert key in a.meta()


def test_failed_run_is_marked_failed(tmp_path):
    with pytest.raises(RuntimeError):
        with Run.create(tmp_path, "boom") as run:
            raise RuntimeError("disk on fire")
    meta = run.meta()
    assert meta["status"] == "failed"
    assert "disk on fire" in meta["error"]
    assert meta["ended"] is not None


def test_metrics_append_and_read(tmp_path):
    with Run.create(tmp_path, "m") as run:
        run.log({"step": 1, "train_loss": 0.5})
        run.log({"step": 2, "train_loss": 0.25})
    assert [r["step"] for r in run.metrics()] == [1, 2]
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
