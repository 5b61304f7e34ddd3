"""Latency measurement: interleaved, every cell reported, written into the run and its report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from glassbox.config import load_recipe
from glassbox.edge.export import export_run
from glassbox.edge.latency import bench_export, time_interleaved
from glassbox.errors import UserError
from glassbox.ledger import verify_run
from glassbox.pipeline import run_recipe


def test_interleaving_spreads_a_slow_period_over_every_variant() -> None:
    # A "neighbour" slows every call made between calls 40 and 80 of the whole sequence;
    # interleaved, both variants see their share, so their p90s move together.
    counter = {"n": 0}

    def call() -> None:
        counter["n"] += 1
        time.sleep(0.002 if 40 <= counter["n"] < 80 else 0.0)

    stats = time_interleaved({"a": call, "b": call}, reps=60, warmup=0)
    assert stats["a"]["reps"] == stats["b"]["reps"] == 60
    assert stats["a"]["p90_ms"] > 1.5 and stats["b"]["p90_ms"] > 1.5
    assert stats["a"]["p50_ms"] <= stats["a"]["p90_ms"] <= stats["a"]["p99_ms"]


def test_bench_export_writes_report_json_and_section(tmp_path: Path) -> None:
    recipe = load_recipe(None, ["data.source=iris", "preset=fast", "train.epochs=1"])
    run = run_recipe(recipe, tmp_path, progress=False)
    with pytest.raises(UserError, match="no export yet"):
        bench_export(run.path, quick=True, progress=False)
    export_run(run.path, int8=True)
    result = bench_export(run.path, quick=True, threads=[1], progress=False)
    cells = {(r["variant"], r["batch"], r["threads"]) for r in result["results"]}
    assert cells == {(v, b, 1) for v in ("torch eager", "onnx float", "onnx int8") for b in (1, 32)}
    assert all(r["vs_torch_p50"] == 1.0 for r in result["results"] if r["variant"] == "torch eager")
    saved = json.loads((run.path / "export" / "report.json").read_text())
    assert saved["sizes"]["onnx int8"]["bytes"] == (run.path / "export" / "model.int8.onnx").stat().st_size
    assert len(saved["machine"]["load_average_before"]) == 3
    html = (run.path / "report.html").read_text()
    assert "edge-latency-table" in html and "Latency p50 by variant" in html
    assert verify_run(run.path).ok
