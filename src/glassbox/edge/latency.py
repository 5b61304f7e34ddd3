"""Latency of an exported run, measured honestly: PyTorch eager, ONNX Runtime float and int8, side by side.

``measure`` times one inference call at a time for every combination of
batch size and thread count. Within a combination the variants are
interleaved (rep ``i`` runs them in an order rotated by ``i``), so a burst
of load from a neighbour on a shared machine hits all of them alike and the
ratios stay fair even when the absolute numbers move. Each variant first
runs ``warmup`` calls (ORT allocates its arenas and PyTorch its caches on the
first ones). Reported per cell: p50, p90, p99 and the mean in milliseconds,
p50 as a ratio to PyTorch eager, and the load average before and after, so
a reader can tell a quiet machine from a busy one.

``bench_export`` (``glassbox bench export RUN``) writes the result to
``RUN/export/report.json`` through the run (into the ledger) and rebuilds
the report with it.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glassbox.errors import UserError

REPORT_FILE = "report.json"  # in export/
BATCHES = (1, 32)
REPS, WARMUP = 300, 30
QUICK_REPS, QUICK_WARMUP = 60, 10  # the demo's: enough for a stable p50, not for a p99


def _percentiles(times_ns: Sequence[int]) -> dict[str, float]:
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(ms.mean())}


def time_interleaved(
    calls: dict[str, Callable[[], Any]], *, reps: int = REPS, warmup: int = WARMUP
) -> dict[str, dict[str, float]]:
    """Per call name, percentiles of ``reps`` timed calls, interleaved with the others.

    >>> stats = time_interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(1000))}, reps=20)
    >>> stats["a"]["p50_ms"] < stats["b"]["p50_ms"]
    True
    """
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[int]] = {n: [] for n in names}
    for i in range(reps):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter_ns()
            calls[name]()
            times[name].append(time.perf_counter_ns() - t0)
    return {n: {**_percentiles(t), "reps": reps} for n, t in times.items()}


def measure(
    run_path: str | Path,
    *,
    batches: Sequence[int] = BATCHES,
    threads: Sequence[int] | None = None,
    reps: int = REPS,
    warmup: int = WARMUP,
    progress: bool = False,
) -> dict[str, Any]:
    """Latency of RUN's model as PyTorch eager and as its exported ONNX files (float, int8 when present)."""
    import torch

    from glassbox.edge.export import (
        EXPORT_DIR,
        FLOAT_FILE,
        INPUT,
        INT8_FILE,
        OUTPUT,
        example_input,
        model_files,
        need_edge,
        session,
    )
    from glassbox.nn import load_model

    need_edge()
    run_path = Path(run_path)
    folder = run_path / EXPORT_DIR
    if not (folder / FLOAT_FILE).is_file():
        raise UserError(f"{run_path} has no export yet; run first: glassbox export {run_path} --int8")
    cpus = os.cpu_count() or 1
    threads = list(threads) if threads else sorted({1, cpus})
    model = load_model(run_path)
    files = {"onnx float": folder / FLOAT_FILE}
    if (folder / INT8_FILE).is_file():
        files["onnx int8"] = folder / INT8_FILE
    rng = np.random.default_rng(0)
    before = os.getloadavg()
    torch_threads = torch.get_num_threads()
    results = []
    try:
        for t in threads:
            torch.set_num_threads(t)
            # No spinning: ORT's idle workers would busy-wait on the cores PyTorch's calls need.
            sessions = {name: session(path, t, spin=False) for name, path in files.items()}
            for b in batches:
                # Inputs of the model's shape: latency does not depend on the values.
                shape = tuple(example_input(model, b).shape)
                x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
                xn = x.numpy()

                def eager(x: torch.Tensor = x) -> Any:
                    with torch.inference_mode():
                        return model(x)

                calls: dict[str, Callable[[], Any]] = {"torch eager": eager}
                for name, sess in sessions.items():
                    calls[name] = lambda sess=sess, xn=xn: sess.run([OUTPUT], {INPUT: xn})
                if progress:
                    print(f"  batch {b}, {t} thread(s): {', '.join(calls)} x {reps}", flush=True)
                stats = time_interleaved(calls, reps=reps, warmup=warmup)
                base = stats["torch eager"]["p50_ms"]
                for name, s in stats.items():
                    results.append(
                        {"variant": name, "batch": b, "threads": t, **s, "vs_torch_p50": s["p50_ms"] / base}
                    )
    finally:
        torch.set_num_threads(torch_threads)
    sizes = {}
    for name, path in files.items():
        parts = model_files(path)
        sizes[name] = {"files": parts, "bytes": sum(parts.values())}
    import onnxruntime

    return {
        "results": results,
        "sizes": sizes,
        "settings": {"batches": list(batches), "threads": threads, "reps": reps, "warmup": warmup},
        "machine": {
            "cpus": cpus,
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "load_average_before": [round(v, 2) for v in before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "method": "one call per timing, variants interleaved, warm-up first; milliseconds",
    }


def bench_export(
    run_path: str | Path, *, quick: bool = False, threads: Sequence[int] | None = None, progress: bool = True
) -> dict[str, Any]:
    """``glassbox bench export RUN``: ``measure``, write ``export/report.json``, rebuild the report."""
    from glassbox.analysis import open_run, write_run_report
    from glassbox.edge.export import EXPORT_DIR

    run, recipe, data, _ = open_run(run_path)
    reps, warmup = (QUICK_REPS, QUICK_WARMUP) if quick else (REPS, WARMUP)
    if progress:
        print(f"timing {run.path.name}: {reps} interleaved calls per variant after {warmup} warm-up")
    result = measure(run.path, threads=threads, reps=reps, warmup=warmup, progress=progress)
    with run:
        run.write_json(f"{EXPORT_DIR}/{REPORT_FILE}", result)
        if recipe.report.enabled:
            write_run_report(run, recipe, data)
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The latency table as text lines, for the terminal."""
    head = f"{'variant':<12}{'batch':>6}{'threads':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'x torch':>9}"
    lines = [head]
    for r in result["results"]:
        lines.append(
            f"{r['variant']:<12}{r['batch']:>6}{r['threads']:>8}{r['p50_ms']:>9.3f}{r['p90_ms']:>9.3f}"
            f"{r['p99_ms']:>9.3f}{r['vs_torch_p50']:>9.2f}"
        )
    for name, s in result["sizes"].items():
        lines.append(f"{name}: {s['bytes'] / 1024:.1f} KiB ({', '.join(s['files'])})")
    m = result["machine"]
    lines.append(f"load average before {m['load_average_before']}, after {m['load_average_after']}")
    return lines
