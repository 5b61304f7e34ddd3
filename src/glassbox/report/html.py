"""Assemble one self-contained HTML report from plain data and write it atomically.

This layer knows nothing about training: it takes dicts, lists and arrays,
so a run, a notebook or a test can all produce the same report. Plots are
embedded as base64 PNG data URIs and the CSS is inline, so the file can be
mailed, archived or opened offline and still show everything.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glassbox.report import plots
from glassbox.run import atomic_write_text

if TYPE_CHECKING:
    import jinja2

# Long lists (a vocabulary, a per-row array) would drown a table; the tail is summarised.
_MAX_ITEMS = 20
# Metric names whose plain-English form is not just the words of the key.
_NAMES = {"auroc": "AUROC", "ece": "ECE", "macro_f1": "macro F1", "f1": "F1", "mse": "MSE", "mae": "MAE"}


def write_report(
    path: str | Path,
    *,
    title: str,
    config_yaml: str,
    data_summary: dict,
    history: list[dict],
    test_metrics: dict,
    y_true: np.ndarray | None = None,
    y_prob: np.ndarray | None = None,
    classes: list[str] | None = None,
    meta: dict | None = None,
    extra_sections: list[dict] | None = None,
) -> Path:
    """Write the report of one run to ``path`` as a single HTML file and return its path.

    ``history`` holds one dict per logged record; a record may carry only some
    keys (per-step ``train_loss``/``lr``, per-epoch ``val_*``). ``y_true``
    (int labels, ``(N,)``) and ``y_prob`` (class probabilities, ``(N, K)``)
    add the classification sections; leave them None for a language model.
    ``extra_sections`` are ``{"title": str, "html": str}`` whose ``html`` is
    trusted and inserted as is, so later analyses can add their own sections;
    ``"lead": True`` puts one first (the model card).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = write_report(
    ...         Path(d) / "report.html",
    ...         title="demo",
    ...         config_yaml="seed: 0",
    ...         data_summary={"name": "toy", "rows": 4},
    ...         history=[{"epoch": 1, "train_loss": 0.7}, {"epoch": 2, "train_loss": 0.5}],
    ...         test_metrics={"accuracy": 0.75},
    ...         y_true=np.array([0, 1, 1, 0]),
    ...         y_prob=np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]]),
    ...         classes=["no", "yes"],
    ...     )
    ...     text = out.read_text()
    >>> out.name, "ROC" in text, text.count("data:image/png;base64,")
    ('report.html', True, 4)
    """
    path = Path(path)
    sections = _extra_sections(extra_sections)
    classification = None if y_true is None else _classification(y_true, y_prob, classes)
    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            test_metrics=_tree(test_metrics),
            curves=_curves(history),
            classification=classification,
            data_summary=_tree(data_summary),
            meta=_tree(meta or {}),
            config_yaml=config_yaml,
            extra_sections=sections,
        )
    )
    atomic_write_text(path, html)
    return path


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("glassbox.report", "templates"),
        # Explicit: select_autoescape would not recognise the .html.j2 suffix and leave it off.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _figure(title: str, png: bytes, anchor: str | None = None) -> dict[str, str | None]:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return {"title": title, "uri": uri, "id": anchor}


def figures_html(figures: Sequence[Mapping[str, Any]]) -> str:
    """Figures (``_figure`` dicts) as the template's figure markup, for sections built in Python."""
    from html import escape

    items = []
    for fig in figures:
        anchor = f' id="{escape(fig["id"])}"' if fig.get("id") else ""
        title = escape(fig["title"])
        items.append(
            f'<figure{anchor}><img src="{fig["uri"]}" alt="{title}"><figcaption>{title}</figcaption></figure>'
        )
    return '<div class="figures">\n' + "\n".join(items) + "\n</div>"


def _curves(history: Sequence[Mapping[str, Any]]) -> list[dict[str, str | None]]:
    figures = []
    for group, keys in plots.curve_groups(history).items():
        if group == "lr":
            title, ylabel = "Learning rate", "learning rate"
        else:
            ylabel = _NAMES.get(group, group.replace("_", " "))
            title = ylabel[:1].upper() + ylabel[1:]
        png = plots.curve_plot(history, keys, title=title, ylabel=ylabel)
        if png is not None:
            figures.append(_figure(title, png))
    return figures


def _classification(y_true: Any, y_prob: Any, classes: Sequence[str] | None) -> dict[str, Any]:
    from sklearn.metrics import classification_report, roc_auc_score

    y_true, prob, classes = _check_classification(y_true, y_prob, classes)
    y_pred = prob.argmax(axis=1)
    figures = [
        _figure("Confusion matrix", plots.confusion_matrix_plot(y_true, y_pred, classes), "confusion-matrix")
    ]
    roc: dict[str, str] | None = None
    note = None
    if len(classes) == 2:
        if len(np.unique(y_true)) == 2:
            score = prob[:, 1]
            roc = {"auc": _fmt_float(float(roc_auc_score(y_true, score))), "positive": classes[1]}
            figures.append(_figure("ROC curve", plots.roc_plot(y_true, score, positive=classes[1]), "roc"))
            figures.append(_figure("Reliability", plots.calibration_plot(y_true, score), "reliability"))
        else:
            note = "The test labels hold only one class, so there is no ROC curve or AUC."
    report = classification_report(
        y_true,
        y_pred,
        labels=np.arange(len(classes)),
        target_names=classes,
        output_dict=True,
        zero_division=0,
    )
    return {
        "rows": len(y_true),
        "n_classes": len(classes),
        "figures": figures,
        "roc": roc,
        "note": note,
        "per_class": _per_class_rows(report, total=len(y_true)),
    }


def _check_classification(
    y_true: Any, y_prob: Any, classes: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    # A report is often the last step of a long run; a clear error beats a
    # confusing plot of logits or of misaligned rows.
    if y_prob is None:
        raise ValueError("y_prob is required with y_true")
    y_true = np.asarray(y_true)
    prob = np.asarray(y_prob, dtype=np.float64)
    if prob.ndim == 1:  # the positive class's probability of a binary task
        prob = np.column_stack([1.0 - prob, prob])
    if y_true.ndim != 1 or prob.ndim != 2 or len(prob) != len(y_true):
        raise ValueError(f"y_true must be (N,) and y_prob (N, K); got {y_true.shape} and {prob.shape}")
    if len(y_true) == 0:
        raise ValueError("y_true is empty")
    if not np.issubdtype(y_true.dtype, np.integer):
        raise ValueError(f"y_true must hold integer class ids, not {y_true.dtype}")
    k = prob.shape[1]
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"y_true holds class ids outside 0..{k - 1}")
    if not np.isfinite(prob).all() or prob.min() < -1e-6 or prob.max() > 1 + 1e-6:
        raise ValueError("y_prob must hold probabilities in [0, 1] (apply softmax to logits first)")
    if not np.allclose(prob.sum(axis=1), 1.0, atol=1e-2):
        raise ValueError("each row of y_prob must sum to 1 (apply softmax to logits first)")
    names = [str(i) for i in range(k)] if classes is None else [str(c) for c in classes]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} columns of y_prob")
    if len(set(names)) != k:
        raise ValueError("class names must be unique")
    return y_true.astype(np.int64), prob, names


def _per_class_rows(report: Mapping[str, Any], *, total: int) -> list[dict[str, str]]:
    rows = []
    for name, value in report.items():
        if isinstance(value, Mapping):
            rows.append(
                {
                    "label": name,
                    "precision": _fmt_float(value["precision"]),
                    "recall": _fmt_float(value["recall"]),
                    "f1": _fmt_float(value["f1-score"]),
                    "support": str(int(value["support"])),
                    "summary": name.endswith(" avg"),
                }
            )
        else:  # "accuracy" is a bare number; sklearn's own text report puts it under f1-score
            rows.append(
                {
                    "label": name,
                    "precision": "",
                    "recall": "",
                    "f1": _fmt_float(value),
                    "support": str(total),
                    "summary": True,
                }
            )
    return rows


def _extra_sections(sections: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    from markupsafe import Markup

    out = []
    for i, section in enumerate(sections or []):
        if not isinstance(section, Mapping) or not isinstance(section.get("title"), str):
            raise ValueError(f"extra_sections[{i}] needs a str 'title'")
        if not isinstance(section.get("html"), str):
            raise ValueError(f"extra_sections[{i}] needs a str 'html'")
        # The fragment comes from glassbox's own analyses, which escape what they embed.
        out.append(
            {
                "id": f"extra-{i + 1}",
                "title": section["title"],
                "html": Markup(section["html"]),
                "lead": bool(section.get("lead", False)),  # shown first, before the test metrics
            }
        )
    return out


def _fmt_float(value: float) -> str:
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return str(value)
    if abs(value) >= 1000:
        return f"{value:.1f}"
    if abs(value) >= 1e-3:
        return f"{value:.4g}"
    return f"{value:.3e}"


def _scalar(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return _fmt_float(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _tree(value: Any) -> Any:
    """``value`` as the template shows it: dicts stay dicts, leaves become display strings.

    Lists of scalars (a shape, a few names) read best on one line; lists of
    dicts stay lists so that each item gets its own table.
    """
    if isinstance(value, Mapping):
        return {str(k): _tree(v) for k, v in value.items()}
    if hasattr(value, "shape") and hasattr(value, "tolist"):  # numpy or torch, without importing torch
        size = math.prod(value.shape)
        if size > _MAX_ITEMS:
            return f"array of shape {tuple(value.shape)}, {getattr(value, 'dtype', '')}"
        value = value.tolist()
    if isinstance(value, set | frozenset):
        value = sorted(value, key=str)
    if isinstance(value, list | tuple):
        head, rest = list(value[:_MAX_ITEMS]), len(value) - _MAX_ITEMS
        more = [f"… {rest} more"] if rest > 0 else []
        if all(not isinstance(v, Mapping | list | tuple | set | frozenset) for v in head):
            return "[" + ", ".join([_scalar(v) for v in head] + more) + "]"
        return [_tree(v) for v in head] + more
    return _scalar(value)
