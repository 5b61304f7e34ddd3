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


def pretrain_section(
    record: Mapping[str, Any],
    fewshot: Sequence[Mapping[str, Any]] | None = None,
    extra_figures: Sequence[Mapping[str, Any]] = (),
) -> dict:
    """Section dict for ``write_report``: what was pretrained on how much, the curve, the few-shot table.

    ``extra_figures`` (``html._figure`` dicts, e.g. from ``encoder_figures``) join the curves.
    """
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
    figures += list(extra_figures)
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


def encoder_figures(model: Any, test: Any, pool: Any, cfg: Any, seed: int = 0) -> list[dict]:
    """What a reader would rather look at: test embeddings by class, and for images, a few views."""
    import numpy as np
    import torch

    from glassbox.report.html import _figure
    from glassbox.report.plots import embedding_plot, image_grid_plot
    from glassbox.ssl.base import embed

    figures = []
    if test.task == "classification" and len(test) >= 3:
        Z = embed(model, test.X).numpy()
        png = embedding_plot(Z, test.y.numpy(), [str(c) for c in test.classes], title="Test embeddings")
        figures.append(_figure("Test embeddings of the frozen encoder, first two principal components", png,
                               "pretrain-embeddings"))  # fmt: skip
    if pool.kind == "image":
        from glassbox.ssl.base import make_view

        g = torch.Generator().manual_seed(seed)
        x = pool.X[:4]
        views = [x, make_view("image", x, g, None, cfg), make_view("image", x, g, None, cfg)]
        grid = torch.stack(views, 1).flatten(0, 1).numpy()  # (12, C, H, W): each image, then two views
        lo, hi = grid.min(axis=(1, 2, 3), keepdims=True), grid.max(axis=(1, 2, 3), keepdims=True)
        grid = (grid - lo) / np.maximum(hi - lo, 1e-8)
        captions = [
            f"row {int(r)}\n{name}" for r in pool.index[:4] for name in ("original", "view 1", "view 2")
        ]
        png = image_grid_plot(grid, captions, title="Two random views of each image", columns=6)
        figures.append(_figure("Views the contrastive objective compares", png, "pretrain-views"))
    return figures
