"""The "Explanations" report section: how good each attribution method is, and what it says.

``explain_section(result)`` takes the dict ``glassbox.explain.explain``
returns and gives ``{"title", "html"}`` for ``write_report(extra_sections=...)``:
a quality table (each method against a random-attribution control, and the
ratio), deletion and insertion curves, and, for tables, global feature
importance and the top features of a few rows; for images, attribution heat
maps over the images (pass them as ``images``, aligned with ``result["rows"]``).
Every data-derived string is HTML-escaped.

>>> q = {"infidelity": 0.1, "deletion_auc": 0.2, "insertion_auc": 0.8}
>>> rand = {"infidelity": 0.2, "deletion_auc": 0.5, "insertion_auc": 0.5}
>>> curves = {"fractions": [0, 0.5, 1], "deletion": [0.9, 0.4, 0.1], "insertion": [0.1, 0.8, 0.9],
...           "random_deletion": [0.9, 0.6, 0.1], "random_insertion": [0.1, 0.5, 0.9]}
>>> method = {"attributions": [[0.7, 0.3]], "quality": q, "random": rand, "curves": curves,
...           "ratios": {"infidelity": 2.0, "deletion_auc": 2.5, "insertion_auc": 1.6}}
>>> importance = [{"feature": "a", "importance": 0.7}, {"feature": "b", "importance": 0.3}]
>>> result = {"kind": "tabular", "rows": [0], "source_rows": [7], "targets": [1], "target_names": ["yes"],
...           "predicted_probability": [0.9], "feature_names": ["a", "b"], "skipped": {},
...           "methods": {"rollout": method}, "global_importance": {"rollout": importance}}
>>> section = explain_section(result)
>>> section["title"], "Attention rollout" in section["html"], section["html"].count("data:image/png;base64,")
('Explanations', True, 2)
"""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np

from glassbox.report import plots
from glassbox.report.html import _figure, _fmt_float, figures_html

NAMES = {
    "integrated_gradients": "Integrated Gradients",
    "deeplift": "DeepLift",
    "kernel_shap": "KernelSHAP",
    "rollout": "Attention rollout",
    "grad_rollout": "Gradient-weighted rollout",
}
METRICS = [
    ("completeness_max", "completeness", "completeness error (max)", "lower"),
    ("infidelity", "infidelity", "infidelity", "lower"),
    ("infidelity_baseline", "infidelity_baseline", "infidelity, baseline-relative", "lower"),
    ("max_sensitivity", "max_sensitivity", "max-sensitivity", "lower"),
    ("deletion_auc", "deletion_auc", "deletion AUC", "lower"),
    ("insertion_auc", "insertion_auc", "insertion AUC", "higher"),
]
ROWS_SHOWN = 4
TOP = 5
_INTRO = (
    "Each method attributes the predicted class's logit to the inputs. Their quality is measured "
    "against a control of random attributions: completeness error (how far the attributions' sum is "
    "from the change in the logit, for methods that promise it), infidelity (how badly the "
    "attributions predict the effect of small random perturbations), max-sensitivity (how much they "
    "change when the input barely moves), and deletion/insertion AUC (the predicted-class "
    "probability as the most important inputs are removed, or added back, first). Lower is better "
    "for all but insertion, where higher is better. A ratio above 1 means better than random."
)


def method_name(key: str) -> str:
    """Display name of an explanation method; unknown keys are shown as given.

    >>> method_name("deeplift"), method_name("mine")
    ('DeepLift', 'mine')
    """
    return NAMES.get(key, key)


def _num(v: Any) -> str:
    return "—" if v is None or not np.isfinite(float(v)) else escape(_fmt_float(float(v)))


def _quality_table(methods: dict[str, Any]) -> str:
    present = [m for m in METRICS if any(d["quality"].get(m[0]) is not None for d in methods.values())]
    head = "<th>method</th>" + "".join(
        f"<th>{escape(label)} ({better} is better)<br>method / random / ratio</th>"
        for _, _, label, better in present
    )
    rows = []
    for name, d in methods.items():
        cells = [f"<td>{escape(method_name(name))}</td>"]
        for key, rkey, _, _ in present:
            q, r, ratio = d["quality"].get(key), d["random"].get(key), d.get("ratios", {}).get(rkey)
            cells.append(f"<td class='n'>{_num(q)} / {_num(r)} / <strong>{_num(ratio)}</strong></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div style="overflow-x:auto"><table class="num" id="explain-quality">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _curves_png(name: str, curves: dict[str, Any]) -> bytes:
    fig = plots._figure(5.6, 3.3)
    for i, which in enumerate(("deletion", "insertion")):
        ax = fig.add_subplot(1, 2, i + 1)
        x = curves["fractions"]
        ax.plot(x, curves[which], label=method_name(name), color="#1f77b4")
        ax.plot(x, curves[f"random_{which}"], label="random", color="#7f7f7f", linestyle="--")
        ax.set_title(f"{which.capitalize()} ({'lower' if which == 'deletion' else 'higher'} is better)")
        ax.set_xlabel("fraction of inputs " + ("removed" if which == "deletion" else "inserted"))
        ax.set_ylabel("predicted-class probability")
        ax.set_ylim(0, 1.02)
        plots._tidy(ax)
        if i == 0:
            ax.legend(frameon=False, fontsize=8)
    return plots._png(fig)


def _importance_png(name: str, importance: list[dict[str, Any]], top: int = 15) -> bytes:
    items = importance[:top][::-1]
    fig = plots._figure(5.6, 0.5 + 0.25 * len(items))
    ax = fig.add_subplot()
    ax.barh(
        [plots._short(str(i["feature"]), 28) for i in items],
        [i["importance"] for i in items],
        color="#1f77b4",
    )
    ax.set_xlabel("mean |attribution|")
    ax.set_title(f"Global importance ({method_name(name)})")
    plots._tidy(ax)
    return plots._png(fig)


def _heatmaps_png(result: dict[str, Any], images: np.ndarray) -> bytes:
    names = list(result["methods"])
    k = min(ROWS_SHOWN, len(images))
    fig = plots._figure(1.4 * (len(names) + 1), 1.5 * k + 0.3)
    for r in range(k):
        img = np.asarray(images[r], dtype=float)
        gray = img.mean(0) if img.ndim == 3 else img
        ax = fig.add_subplot(k, len(names) + 1, r * (len(names) + 1) + 1)
        ax.imshow(gray, cmap="gray")
        ax.set_axis_off()
        label = result.get("target_names", result["targets"])[r]
        ax.set_title(plots._short(f"row {result['source_rows'][r]}: {label}", 16), fontsize=7)
        for c, name in enumerate(names):
            a = np.asarray(result["methods"][name]["attributions"][r], dtype=float)
            a = a.sum(0) if a.ndim == 3 else a
            lim = float(np.abs(a).max()) or 1.0
            ax = fig.add_subplot(k, len(names) + 1, r * (len(names) + 1) + c + 2)
            ax.imshow(gray, cmap="gray")
            ax.imshow(a, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.6)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(plots._short(method_name(name), 16), fontsize=7)
    return plots._png(fig)


def _top_rows(result: dict[str, Any], name: str) -> str:
    feats = result.get("feature_names", [])
    attrs = np.asarray(result["methods"][name]["attributions"], dtype=float)
    rows = []
    for r in range(min(ROWS_SHOWN, len(attrs))):
        order = np.argsort(-np.abs(attrs[r]), kind="stable")[:TOP]
        top = ", ".join(
            f"{escape(str(feats[j]) if j < len(feats) else f'x{j}')} ({escape(_fmt_float(attrs[r, j]))})"
            for j in order
        )
        label = result.get("target_names", result["targets"])[r]
        prob = result["predicted_probability"][r]
        rows.append(
            f"<tr><td class='n'>{escape(str(result['source_rows'][r]))}</td><td>{escape(str(label))}</td>"
            f"<td class='n'>{_num(prob)}</td><td>{top}</td></tr>"
        )
    return (
        f"<h3>Top features of a few rows ({escape(method_name(name))})</h3>"
        '<table class="num"><thead><tr><th>row</th><th>predicted</th><th>probability</th>'
        f"<th>top {TOP} features (attribution)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def explain_section(result: dict[str, Any], *, images: np.ndarray | None = None) -> dict[str, str]:
    """The "Explanations" section, ``{"title": "Explanations", "html": ...}``, from ``explain``'s result.

    ``images`` ``(N, C, H, W)`` are the explained rows' images, in ``result["rows"]`` order
    (image results only); without them no heat maps are drawn.
    """
    methods = result.get("methods", {})
    parts = [f"<p>{escape(_INTRO)}</p>"]
    n = len(result.get("rows", []))
    parts.append(f'<p class="headline">{n} rows of the test split explained, {len(methods)} methods.</p>')
    for name, reason in result.get("skipped", {}).items():
        parts.append(f'<p class="muted">{escape(method_name(name))} skipped: {escape(str(reason))}</p>')
    if not methods:
        return {"title": "Explanations", "html": "\n".join(parts)}
    parts.append(_quality_table(methods))
    first = next(iter(methods))
    figures = []
    curves = methods[first].get("curves")
    if curves:
        title = f"Deletion and insertion curves: {method_name(first)} vs random"
        figures.append(_figure(title, _curves_png(first, curves), "explain-curves"))
    importance = result.get("global_importance") or {}
    if result.get("kind") == "tabular" and importance.get(first):
        figures.append(
            _figure(
                "Global feature importance", _importance_png(first, importance[first]), "explain-importance"
            )
        )
    if result.get("kind") == "image" and images is not None and len(images):
        figures.append(
            _figure(
                "Attribution heat maps (red: for the prediction, blue: against)",
                _heatmaps_png(result, images),
                "explain-heatmaps",
            )
        )
    parts.append(figures_html(figures))
    if result.get("kind") == "tabular":
        parts.append(_top_rows(result, first))
    return {"title": "Explanations", "html": "\n".join(parts)}
