"""The "Self-supervised pretraining" report section: the loss curve and the few-shot table.

>>> record = {"method": "contrastive", "rows": 100, "seconds": 3.0,
...           "history": [{"epoch": 1, "step": 1, "pretrain_loss": 5.0}]}
>>> results = {"encoder": {"probe": {"mean": 0.8, "std": 0.01}}, "raw": {"probe": {"mean": 0.6, "std": 0.02}}}
>>> s = pretrain_section(record, [{"shots": 1, "draws": 2, "results": results}])
>>> s["title"], "80.0" in s["html"]
('Self-supervised pretraining', True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

NAMES = {
    "contrastive": "contrastive (NT-Xent; SCARF views for tables, SimCLR augmentations for images)",
    "vicreg": "VICReg",
    "masked": "masked modeling (VIME for tables, MAE for images, masked bytes for text)",
}


def fewshot_table(results: Sequence[Mapping[str, Any]]) -> str:
    """HTML table: one row per setting (K shots or a label fraction), a column per feature x classifier."""
    if not results:
        return ""
    cols = [(f, c) for f, cs in results[0]["results"].items() for c in cs]
    head = "".join(f"<th>{escape(c)} on {escape(f)}</th>" for f, c in cols)
    rows = []
    for r in results:
        label = f"{r['shots']} per class" if "shots" in r else f"{100 * r['fraction']:g} % of labels"
        cells = "".join(
            f"<td>{100 * r['results'][f][c]['mean']:.1f} ± {100 * r['results'][f][c]['std']:.1f}</td>"
            for f, c in cols
        )
        rows.append(f"<tr><td>{escape(label)} ({r['draws']} draws)</td>{cells}</tr>")
    return f"<table><tr><th>labels</th>{head}</tr>{''.join(rows)}</table>"


def pretrain_section(record: Mapping[str, Any], fewshot: Sequence[Mapping[str, Any]] | None = None) -> dict:
    """Section dict for ``write_report``: what was pretrained on how much, the curve, the few-shot table."""
    from glassbox.report.html import _figure, figures_html
    from glassbox.report.plots import curve_plot

    history = list(record.get("history", []))
    method = str(record.get("method", "?"))
    terms = sorted({k for h in history for k in h} - {"epoch", "step", "seconds"})
    parts = [
        f"<p>{escape(NAMES.get(method, method))} on {record.get('rows', '?')} unlabeled training rows "
        f"(labels unused), {len(history)} epochs in {float(record.get('seconds', 0)):.0f} s.</p>"
    ]
    figures = []
    png = curve_plot(history, ["pretrain_loss"], title="Pretraining loss", ylabel="loss")
    if png is not None:
        figures.append(_figure("Pretraining loss by step", png, "pretrain-loss"))
    others = [t for t in terms if t != "pretrain_loss"]
    if len(others) > 1:
        png = curve_plot(history, others, title="Terms of the objective", ylabel="value")
        if png is not None:
            figures.append(_figure("Terms of the objective", png, "pretrain-terms"))
    if figures:
        parts.append(figures_html(figures))
    if fewshot:
        parts.append(
            "<p>Few-shot test accuracy (%, mean ± std over seeded draws of the labeled rows): "
            "class-mean prototypes and a logistic-regression probe on the frozen encoder's "
            "embeddings, beside the same classifiers on the raw features.</p>"
        )
        parts.append(fewshot_table(fewshot))
    return {"title": "Self-supervised pretraining", "html": "\n".join(parts)}
