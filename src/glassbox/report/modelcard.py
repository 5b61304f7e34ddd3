"""The model card as a report section: ``card_section(model_card(...))``.

Everything from the card is HTML-escaped here; numbers are shown to four
places. The section comes first in the report, because it is what a
reviewer reads before anything else.

>>> from glassbox.audit.modelcard import model_card
>>> card = model_card(recipe={"name": "toy", "report": {}}, meta={"results": {"test_accuracy": 0.9}},
...                   data={"summary": {"name": "iris"}, "splits": {"test": 30}},
...                   ledger={"merkle_root": "ab" * 32, "tree_size": 3, "public_key_sha256": "cd" * 32})
>>> s = card_section(card)
>>> s["title"], "abab" in s["html"], "Intended use" in s["html"]
('Model card', True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from glassbox.report.html import _fmt_float


def _v(value: Any) -> str:
    if isinstance(value, float):
        return _fmt_float(value)
    return escape("" if value is None else str(value))


def _dl(items: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{_v(v)}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def _groups(by_group: Mapping[str, Any]) -> str:
    metrics = sorted({m for row in by_group.values() for m in row})
    head = "".join(f"<th>{escape(m.replace('_', ' '))}</th>" for m in metrics)
    body = "".join(
        f"<tr><th>{escape(str(g))}</th>" + "".join(f"<td>{_v(row.get(m))}</td>" for m in metrics) + "</tr>"
        for g, row in by_group.items()
    )
    return f"<table><tr><th>group</th>{head}</tr>{body}</table>"


def _fairness(fairness: Mapping[str, Any]) -> str:
    rows = []
    for constraint, outcome in (fairness.get("mitigation") or {}).items():
        for key, pair in outcome.items():
            rows.append(
                f"<tr><td>{escape(constraint.replace('_', ' '))}</td><td>{escape(key.replace('_', ' '))}</td>"
                f"<td>{_v(pair.get('before'))}</td><td>{_v(pair.get('after'))}</td></tr>"
            )
    table = (
        "<table><tr><th>mitigation (ThresholdOptimizer)</th><th>measure</th>"
        "<th>before</th><th>after</th></tr>" + "".join(rows) + "</table>"
    )
    diffs = fairness.get("differences") or {}
    line = "; ".join(
        f"{escape(k.replace('_', ' '))} {_v(d.get('value'))} (95% CI {_v(d['ci'][0])} to {_v(d['ci'][1])})"
        for k, d in diffs.items()
    )
    return f"<p>Without mitigation: {line}.</p>{table}"


def _explanations(expl: Mapping[str, Any]) -> str:
    methods = expl.get("methods", {})
    keys = sorted({k for m in methods.values() for k in (m.get("ratios") or {})})
    head = "".join(f"<th>{escape(k.replace('_', ' '))} vs random</th>" for k in keys)
    body = "".join(
        f"<tr><th>{escape(name)}</th>"
        + "".join(f"<td>{_v((m.get('ratios') or {}).get(k))}x</td>" for k in keys)
        + "</tr>"
        for name, m in methods.items()
    )
    out = (
        f"<p>{int(expl.get('rows', 0))} test rows explained. How many times better than random "
        "attributions each method scores (above 1 is better):</p>"
        f"<table><tr><th>method</th>{head}</tr>{body}</table>"
    )
    top = expl.get("top_features")
    if top:
        feats = ", ".join(escape(str(f.get("feature"))) for f in top.get("features", []))
        out += f"<p>Most important features ({escape(str(top.get('method')))}): {feats}.</p>"
    return out


def card_section(card: Mapping[str, Any]) -> dict[str, str]:
    """The ``{"title", "html"}`` section of ``card`` for ``write_report(extra_sections=...)``."""
    model, data, prov = card.get("model", {}), card.get("data", {}), card.get("provenance", {})
    parts = [
        "<h3>Intended use</h3>",
        f"<p>{_v(card.get('intended_use'))}</p>",
        "<h3>Model</h3>",
        _dl({k: v for k, v in model.items() if k != "config"}),
        "<h3>Data</h3>",
        _dl(
            {
                "source": data.get("name"),
                "rows": data.get("rows"),
                "splits": ", ".join(f"{k} {v}" for k, v in (data.get("splits") or {}).items()),
                "label noise": data.get("label_noise"),
                "ledger entry": (data.get("ledger") or {}).get("dataset_entry"),
                "entry SHA-256": (data.get("ledger") or {}).get("dataset_entry_sha256"),
            }
        ),
        "<h3>Metrics</h3>",
        _dl(card.get("metrics", {}).get("overall", {})),
    ]
    if card.get("baselines"):
        b = card["baselines"]
        parts += ["<h3>Against baselines</h3>", f"<p id='baseline-verdict'>{_v(b.get('verdict'))}.</p>"]
    by_group = card.get("metrics", {}).get("by_group")
    if by_group:
        parts += [
            f"<p>By {escape(str(by_group.get('sensitive')))} (test split):</p>",
            _groups(by_group["groups"]),
        ]
    if card.get("fairness"):
        parts += ["<h3>Fairness</h3>", _fairness(card["fairness"])]
    if card.get("explanations"):
        parts += ["<h3>Explanations</h3>", _explanations(card["explanations"])]
    parts += [
        "<h3>Limitations</h3>",
        "<ul>" + "".join(f"<li>{escape(str(x))}</li>" for x in card.get("limitations", [])) + "</ul>",
        "<h3>Provenance</h3>",
        _dl(
            {
                "Merkle root": prov.get("merkle_root"),
                "over ledger entries": f"0 to {int(prov.get('tree_size') or 0) - 1} (tree head entry "
                f"{prov.get('tree_head_entry')})",
                "signing key (SHA-256)": prov.get("public_key_sha256"),
                "check": prov.get("check"),
            }
        ),
        f"<pre>{escape(str(prov.get('public_key_pem') or ''))}</pre>" if prov.get("public_key_pem") else "",
        "<p>The root covers the data, code, config, model and analyses above; this report and the final "
        "meta.json are covered by the ledger's next tree head, which glassbox verify checks.</p>",
    ]
    return {"title": "Model card", "html": "\n".join(parts), "lead": True}
