"""``glassbox export RUN``: ONNX and int8 models of a finished run, validated and signed into its ledger."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_json


def export(
    run: Annotated[str, typer.Argument(metavar="RUN", help="A finished run folder, runs/<time>-<name>.")],
    int8: Annotated[bool, typer.Option("--int8", help="Also write an int8 model (accuracy-gated).")] = False,
    opset: Annotated[
        int | None, typer.Option(metavar="N", help="ONNX opset version (default: the exporter's).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Keep an int8 model that fails the accuracy gate.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the export summary as JSON.")] = False,
) -> None:
    """Example: glassbox export runs/20261201-120000-healthcare --int8

    Export RUN's model to RUN/export/model.onnx with the dynamo exporter and
    a dynamic batch dimension, and check it against PyTorch on the test split
    (largest logit difference, changed predictions, batch sizes 1, 2 and 33).
    --int8 adds model.int8.onnx (dynamic quantization; static QDQ calibrated
    on training rows for a convolutional stem) and refuses it when its test
    accuracy is more than 1 point below float. The files and export.json are
    recorded in the ledger; the report gains an Edge section. Measure latency
    next with: glassbox bench export RUN
    """
    from glassbox.edge.export import export_run

    summary = export_run(run, int8=int8, opset=opset, force=force, progress=not as_json)
    if as_json:
        print_json(summary)
        return
    f = summary["float"]
    print(
        f"float: {_kib(f['bytes'])}, largest logit difference vs PyTorch {f['max_abs_diff']:.2g},"
        f" {f['changed_predictions']} of {f['rows']} test predictions changed,"
        f" batch dimension '{summary['batch_dim']}' (opset {summary['opset']})"
    )
    if "int8" in summary:
        q, g = summary["int8"], summary["gate"]
        verdict = "passed" if g["passed"] else "FAILED, kept with --force"
        print(
            f"int8 ({summary['int8_method']}): {_kib(q['bytes'])} ({q['size_vs_float']:.2f}x float),"
            f" accuracy {100 * q['accuracy']:.2f} % vs float {100 * f['accuracy']:.2f} %"
            f" (gate {verdict}), {q['changed_predictions']} test predictions changed"
        )
    print(f"written: {run.rstrip('/')}/export/ (in the ledger; check with glassbox verify {run})")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 2**20:.2f} MiB"


def register(app: typer.Typer) -> None:
    app.command("export", short_help="Export a run's model to ONNX (and int8), validated.")(export)
