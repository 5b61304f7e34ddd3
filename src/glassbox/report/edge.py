"""The "Edge export" report section: the ONNX files, how close they stay to PyTorch, the int8 gate, latency.

:func:`edge_section` takes ``export/export.json`` (written by
``glassbox export``) and, when present, ``export/report.json`` (written by
``glassbox bench export``), as plain dicts, and gives a ``{"title", "html"}``
section: a table of the files with sizes and SHA-256, the validation on the
test split (largest logit difference, changed predictions, accuracy, the
predictions at batch sizes 1, 2 and 33), the accuracy gate's verdict, and
the latency table with a chart of p50 by variant.

Every string from the files is HTML-escaped: the report inserts ``html`` as is.

>>> s = edge_section({"opset": 20, "batch_dim": "batch", "validated_on": "test split, 4 rows",
...     "float": {"rows": 4, "max_abs_diff": 1e-6, "changed_predictions": 0, "accuracy": 1.0,
...               "torch_accuracy": 1.0, "bytes": 2048},
...     "batch_checks": {"1": 0, "2": 0, "33": 0}, "files": {"model.onnx": {"bytes": 2048, "sha256": "ab"}}})
>>> s["title"], "model.onnx" in s["html"]
('Edge export', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from glassbox.report.html import _figure, figures_html

_VARIANT_COLORS = {"torch eager": "#7f7f7f", "onnx float": "#1f77b4", "onnx int8": "#2ca02c"}


def edge_section(export: Mapping[str, Any], latency: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The report section for an export (and its latency measurement, when there is one)."""
    parts = [_intro(export), _files_table(export), _validation_table(export)]
    if "gate" in export:
        parts.append(_gate(export))
    if latency is not None:
        parts.append(_latency_table(latency))
        png = latency_plot(latency)
        if png is not None:
            parts.append(figures_html([_figure("Latency p50 by variant (1 thread)", png, "edge-latency")]))
    else:
        parts.append("<p>No latency measured yet: <code>glassbox bench export RUN</code> adds it here.</p>")
    return {"title": "Edge export", "html": "\n".join(parts)}


def _kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


def _intro(export: Mapping[str, Any]) -> str:
    text = (
        f"ONNX opset {int(export['opset'])} through the dynamo exporter; the batch dimension is dynamic"
        f" (<code>{escape(str(export['batch_dim']))}</code>), checked in the saved graph."
        f" Validated on the {escape(str(export['validated_on']))} against PyTorch."
    )
    if "int8" in export:
        q = export.get("quantization", {})
        ops = ", ".join(map(str, q.get("op_types", [])))
        how = (
            "dynamic quantization (weights int8 per channel, activations per call)"
            if export.get("int8_method") == "dynamic"
            else f"static QDQ quantization calibrated on {q.get('calibration_rows')} training rows"
        )
        text += f" The int8 model: ONNX Runtime {how}, on {escape(ops)}."
    return f"<p>{text}</p>"


def _files_table(export: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>export/{escape(name)}</code></td><td class='n'>{_kib(f['bytes'])}</td>"
        f"<td><code>{escape(str(f['sha256']))[:16]}…</code></td></tr>"
        for name, f in export["files"].items()
    )
    ratio = ""
    if "int8" in export:
        ratio = f"<p>int8 is {export['int8']['size_vs_float']:.2f}x the float model's size.</p>"
    return (
        '<table id="edge-files"><thead><tr><th>file</th><th>size</th><th>SHA-256</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>{ratio}"
    )


def _validation_table(export: Mapping[str, Any]) -> str:
    variants = [("float", export["float"], export.get("batch_checks", {}))]
    if "int8" in export:
        variants.append(("int8", export["int8"], export.get("int8_batch_checks", {})))
    rows = []
    for name, v, batches in variants:
        by_batch = ", ".join(f"{b}: {n}" for b, n in batches.items()) or "-"
        rows.append(
            f"<tr><td>ONNX {name}</td><td class='n'>{v['max_abs_diff']:.2g}</td>"
            f"<td class='n'>{int(v['changed_predictions'])} of {int(v['rows'])}</td>"
            f"<td class='n'>{100 * v['accuracy']:.2f} %</td>"
            f"<td class='n'>{100 * v['torch_accuracy']:.2f} %</td>"
            f"<td>{escape(by_batch)}</td></tr>"
        )
    head = (
        "<tr><th>model</th><th>largest logit difference</th><th>changed predictions</th>"
        "<th>test accuracy</th><th>PyTorch accuracy</th><th>changed, by batch size</th></tr>"
    )
    body = "".join(rows)
    return f'<table class="num" id="edge-validation"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _gate(export: Mapping[str, Any]) -> str:
    g = export["gate"]
    if g["passed"]:
        verdict = "<strong>passed</strong>"
    else:
        verdict = "<strong>FAILED</strong>, kept by <code>--force</code>"
    return (
        f"<p>Accuracy gate: int8 may lose at most {g['max_drop_points']:g} point of test accuracy;"
        f" it lost {g['drop_points']:.2f}: {verdict}.</p>"
    )


def _latency_table(latency: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(r['variant'])}</td><td class='n'>{int(r['batch'])}</td>"
        f"<td class='n'>{int(r['threads'])}</td><td class='n'>{r['p50_ms']:.3f}</td>"
        f"<td class='n'>{r['p90_ms']:.3f}</td><td class='n'>{r['p99_ms']:.3f}</td>"
        f"<td class='n'>{r['vs_torch_p50']:.2f}x</td></tr>"
        for r in latency["results"]
    )
    m, s = latency["machine"], latency["settings"]
    head = (
        "<tr><th>variant</th><th>batch</th><th>threads</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th>"
        "<th>p50 vs PyTorch</th></tr>"
    )
    note = (
        f"<p>{int(s['reps'])} timed calls per cell after {int(s['warmup'])} warm-up, variants interleaved;"
        f" {int(m['cpus'])} CPUs, PyTorch {escape(str(m['torch']))}, ONNX Runtime"
        f" {escape(str(m['onnxruntime']))}; load average {escape(str(m['load_average_before']))} before,"
        f" {escape(str(m['load_average_after']))} after.</p>"
    )
    table = f'<table class="num" id="edge-latency-table"><thead>{head}</thead><tbody>{rows}</tbody></table>'
    return table + note


def latency_plot(latency: Mapping[str, Any]) -> bytes | None:
    """p50 per variant at one thread, a panel per batch size (each on its own scale), values on the bars."""
    from glassbox.report import plots

    rows = [r for r in latency["results"] if r["threads"] == 1]
    if not rows:
        return None
    batches = sorted({r["batch"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig = plots._figure(2.9 * len(batches), 3.0)
    for i, b in enumerate(batches):
        ax = fig.add_subplot(1, len(batches), i + 1)
        p50 = {r["variant"]: r["p50_ms"] for r in rows if r["batch"] == b}
        ys = [p50.get(v, 0.0) for v in variants]
        bars = ax.bar(range(len(variants)), ys, color=[_VARIANT_COLORS.get(v, "#8c564b") for v in variants])
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=8)
        ax.set_xticks(range(len(variants)), [v.replace(" ", "\n") for v in variants], fontsize=8)
        ax.set_title(f"batch {b}")
        if i == 0:
            ax.set_ylabel("p50 latency (ms)")
        ax.margins(y=0.15)
        plots._tidy(ax)
    return plots._png(fig)
