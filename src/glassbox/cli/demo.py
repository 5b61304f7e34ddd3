"""``glassbox demo``: the healthcare recipe end to end on embedded data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from glassbox.cli.common import print_run, resolve_recipe


def demo(
    out: Annotated[str, typer.Option(metavar="DIR", help="Folder that receives the run folder.")] = "runs",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Example: glassbox demo --out runs

    Train the breast-cancer (healthcare) recipe end to end on embedded data:
    data values, explanations scored against random, a model card, and a
    signed ledger; then an int8 ONNX export (accuracy-gated) with its
    latency beside PyTorch, and the ledger verified; about a minute on a CPU.
    """
    from glassbox.cli.common import print_json, summarize_run
    from glassbox.config import load_recipe
    from glassbox.ledger import verify_run
    from glassbox.pipeline import run_recipe

    run = run_recipe(load_recipe(resolve_recipe("healthcare")), out)
    edge = _edge(run.path, quiet=as_json)
    verdict = verify_run(run.path)
    if as_json:
        print_json({**summarize_run(run), "export": edge, "verify": verdict.to_dict()})
    else:
        print_run(run, False)
        for line in edge.get("lines", []):
            print(line)
        if verdict.ok:
            print(f"ledger: verified, {verdict.entries} signed entries, Merkle root {verdict.root}")
            print(f"check it yourself: glassbox verify {run.path}")
        else:
            print(f"ledger: FAILED: {verdict.problems[0]}")
    if not verdict.ok:
        raise typer.Exit(1)


def _edge(run: Path, quiet: bool) -> dict[str, Any]:
    """The demo's last step: int8 export and a quick latency measurement, or why it was skipped."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        why = f"export skipped: {', '.join(missing)} not installed (pip install 'glassbox[edge]')"
        return {"skipped": why, "lines": [why]}
    from glassbox.edge.export import export_run
    from glassbox.edge.latency import bench_export

    if not quiet:
        print("export: int8 ONNX, then latency beside PyTorch (glassbox bench export)")
    summary = export_run(run, int8=True)
    latency = bench_export(run, quick=True, threads=[1], progress=False)
    cell = {r["variant"]: r for r in latency["results"] if r["batch"] == 1 and r["threads"] == 1}
    f, q, gate = summary["float"], summary["int8"], summary["gate"]
    lines = [
        f"export: int8 {q['bytes'] / 1024:.1f} KiB ({q['size_vs_float']:.2f}x float),"
        f" accuracy {100 * q['accuracy']:.2f} % vs {100 * f['accuracy']:.2f} % float"
        f" (gate {'passed' if gate['passed'] else 'failed'}), {q['changed_predictions']} predictions changed",
        f"latency, batch 1, 1 thread, p50: PyTorch {cell['torch eager']['p50_ms']:.3f} ms,"
        f" ONNX int8 {cell['onnx int8']['p50_ms']:.3f} ms ({cell['onnx int8']['vs_torch_p50']:.2f}x)",
        f"serve it: glassbox serve {run} --int8",
    ]
    return {"float": f, "int8": q, "gate": gate, "latency_batch1": cell, "lines": lines}


def register(app: typer.Typer) -> None:
    app.command("demo", short_help="The healthcare recipe end to end on embedded data.")(demo)
