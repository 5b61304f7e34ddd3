"""The "Against baselines" report section: glassbox's model beside what a data scientist would try first.

>>> s = baselines_section({"glassbox": {"test": {"accuracy": 0.97, "balanced_accuracy": 0.96, "roc_auc": 0.99,
...                                              "log_loss": 0.1}, "fit_seconds": 3.0},
...                         "baselines": [{"name": "logistic regression", "fit_seconds": 0.01,
...                                        "test": {"accuracy": 0.98, "balanced_accuracy": 0.98,
...                                                 "roc_auc": 0.99, "log_loss": 0.08}}],
...                         "comparison": {"verdict": "the best baseline wins"}})
>>> s["title"], s["lead"], "0.980" in s["html"]
('Against baselines', True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

COLUMNS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("roc_auc", "ROC AUC"),
           ("log_loss", "log loss"))  # fmt: skip


def _cell(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def baselines_section(record: Mapping[str, Any]) -> dict[str, Any]:
    """A lead section: one row for glassbox's model and one per baseline, test split, best in bold."""
    rows = [("glassbox (this run's model)", record["glassbox"])] + [
        (r["name"], r) for r in record.get("baselines", [])
    ]
    best = {}
    for key, _ in COLUMNS:
        vals = [r["test"].get(key) for _, r in rows if r["test"].get(key) is not None]
        if vals:
            best[key] = min(vals) if key == "log_loss" else max(vals)
    head = "".join(f"<th>test {escape(label)}</th>" for _, label in COLUMNS)
    body = []
    for name, r in rows:
        cells = []
        for key, _ in COLUMNS:
            v = r["test"].get(key)
            text = _cell(v)
            cells.append(
                f"<td><b>{text}</b></td>" if v is not None and v == best.get(key) else f"<td>{text}</td>"
            )
        body.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}<td>{float(r['fit_seconds']):.2f}</td></tr>")
    verdict = (record.get("comparison") or {}).get("verdict")
    html = (
        (f"<p>{escape(verdict)}.</p>" if verdict else "")
        + f"<table id='baselines'><tr><th>model</th>{head}<th>training seconds</th></tr>"
        + "".join(body)
        + "</table>"
        + "<p>Same training rows and test rows for every model; baselines are scikit-learn's with their"
        " defaults on standardized inputs (gradient boosting on raw ones). Best value per column in bold.</p>"
    )
    return {"title": "Against baselines", "html": html, "lead": True}
