"""The "Fairness audit" report section: rates by group with intervals, the gaps, and what mitigation costs.

:func:`audit_section` takes the dict that ``glassbox.audit.fairness_audit``
returns (plain data, so a saved JSON works as well) and gives a
``{"title", "html"}`` section for ``write_report(extra_sections=...)``: a
table of the rates per group with 95 % bootstrap intervals, a bar chart of
selection rate, TPR and FPR per group with error bars, the before/after table
of Fairlearn's ThresholdOptimizer, and the trade-off between the objective
(accuracy) and the demographic-parity difference.

Every string that comes from the data (group names, the sensitive column's
name, the positive class, warnings) is HTML-escaped here, because the report
inserts a section's ``html`` as is. matplotlib loads only when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

import numpy as np

from glassbox.report import plots
from glassbox.report.html import _figure, _fmt_float, figures_html

_NAMES = {
    "base_rate": "base rate",
    "accuracy": "accuracy",
    "selection_rate": "selection rate",
    "tpr": "TPR",
    "fpr": "FPR",
}
_CONSTRAINTS = {"demographic_parity": "demographic parity", "equalized_odds": "equalized odds"}
_BARS = (("selection_rate", "#1f77b4"), ("tpr", "#2ca02c"), ("fpr", "#d62728"))
_MEANING = (
    "Demographic parity asks that every group is flagged (predicted positive) at the same rate, whatever "
    "its base rate; its difference is the largest gap in selection rate between two groups. Equalized odds "
    "asks that the model is equally right and equally wrong for every group: the same true positive rate "
    "(share of real positives caught) and the same false positive rate (share of negatives wrongly "
    "flagged); its difference is the larger of the two gaps. When base rates differ, the two cannot both "
    "hold for an imperfect model, and enforcing either moves thresholds away from the most accurate ones: "
    "the mitigation table above shows how much that costs here."
)


def audit_section(result: Mapping[str, Any]) -> dict[str, str]:
    """The "Fairness audit" section, as ``{"title": ..., "html": ...}``, from a fairness audit's result.

    >>> from glassbox.audit import fairness_audit
    >>> rng = np.random.default_rng(0)
    >>> g = np.array(["A", "B <b>"] * 100)
    >>> y = (rng.random(200) < 0.3).astype(int)
    >>> s = np.clip(0.5 * y + 0.2 * (g == "A") + 0.4 * rng.random(200), 0, 1)
    >>> out = audit_section(fairness_audit(y, s, g, val_y=y, val_score=s, val_groups=g, n_boot=50))
    >>> out["title"], out["html"].count("data:image/png;base64,"), "B &lt;b&gt;" in out["html"]
    ('Fairness audit', 2, True)
    """
    sensitive = escape(str(result.get("sensitive_name", "group")))
    positive = escape(str(result.get("positive", "1")))
    objective = str(result.get("objective", "accuracy"))
    confidence = f"{100 * float(result.get('confidence', 0.95)):.3g} %"
    dp = result["differences"]["demographic_parity"]
    eo = result["differences"]["equalized_odds"]
    n_test = result["overall"]["n"]

    parts = [
        f"<p>Scores of the positive class <strong>{positive}</strong> on the {n_test} test rows, "
        f"thresholded at {_fmt_float(result['threshold'])}, compared across the groups of "
        f"<strong>{sensitive}</strong>. Intervals are {confidence} bootstrap percentile intervals over "
        f"{int(result['n_boot'])} resamples drawn within each group.</p>",
        f'<p class="headline">Demographic-parity difference <strong>{_num(dp["value"])}</strong> '
        f"{_ci(dp)}; equalized-odds difference <strong>{_num(eo['value'])}</strong> {_ci(eo)}.</p>",
    ]
    notes = [str(w) for w in result.get("warnings", [])]
    if notes:
        items = "".join(f"<li>{escape(w)}</li>" for w in notes)
        parts.append(f'<ul class="warnings">{items}</ul>')
    parts.append(_group_table(result))

    figures = [
        _figure("Rates by group, with intervals", _rates_plot(result), "fairness-rates"),
        _figure(
            f"{_label(objective).capitalize()} against demographic-parity difference",
            _tradeoff_plot(result),
            "fairness-tradeoff",
        ),
    ]
    parts.append(figures_html(figures))
    parts.append("<h3>Mitigation: Fairlearn ThresholdOptimizer</h3>")
    parts.append(
        "<p>Group-specific (and partly randomized) thresholds fitted on the validation split to maximize "
        f"{escape(_label(objective))} under each constraint, then applied to the test split.</p>"
    )
    parts.append(_mitigation_table(result))
    parts.append(f"<p>{escape(_MEANING)}</p>")
    parts.append(f"<p>{_cost(result)}</p>")
    method = result.get("tradeoff", {}).get("method")
    if method:
        parts.append(f'<p class="muted">Trade-off curve: {escape(str(method))}.</p>')
    return {"title": "Fairness audit", "html": "\n".join(parts)}


# ---- tables -------------------------------------------------------------------------------------


def _group_table(result: Mapping[str, Any]) -> str:
    metrics = list(_NAMES)
    head = "".join(f"<th>{escape(_NAMES[m])}</th>" for m in metrics)
    rows = []
    for name, row in [*result["by_group"].items(), ("overall", result["overall"])]:
        cells = "".join(f"<td class='n'>{_num(row[m]['value'])} {_ci(row[m])}</td>" for m in metrics)
        label = f"<em>{escape(name)}</em>" if name == "overall" and row is result["overall"] else escape(name)
        rows.append(f"<tr><td>{label}</td><td class='n'>{int(row['n'])}</td>{cells}</tr>")
    return (
        f'<table class="num" id="fairness-groups"><thead><tr><th>{escape(str(result["sensitive_name"]))}</th>'
        f"<th>rows</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _mitigation_table(result: Mapping[str, Any]) -> str:
    groups = list(result["groups"])
    mitigation = result["mitigation"]
    first = next(iter(mitigation.values()))
    entries = [("unmitigated", first["before"])]
    entries += [(f"ThresholdOptimizer ({_CONSTRAINTS.get(c, c)})", m["after"]) for c, m in mitigation.items()]
    head = (
        "<tr><th>predictions</th><th>accuracy</th><th>balanced accuracy</th>"
        + "".join(f"<th>selection rate {escape(g)}</th>" for g in groups)
        + "<th>DP difference</th><th>EO difference</th></tr>"
    )
    rows = []
    for label, out in entries:
        sel = "".join(f"<td class='n'>{_num(out['selection_rate'].get(g))}</td>" for g in groups)
        rows.append(
            f"<tr><td>{escape(label)}</td><td class='n'>{_num(out['accuracy'])}</td>"
            f"<td class='n'>{_num(out.get('balanced_accuracy'))}</td>{sel}"
            f"<td class='n'>{_num(out['dp_difference'])}</td>"
            f"<td class='n'>{_num(out['eo_difference'])}</td></tr>"
        )
    return (
        f'<table class="num" id="fairness-mitigation"><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _cost(result: Mapping[str, Any]) -> str:
    """One sentence per constraint: the gap it closed and the objective it cost, on test."""
    objective = str(result.get("objective", "accuracy"))
    sentences = []
    for constraint, m in result["mitigation"].items():
        before, after = m["before"], m["after"]
        gap = "dp_difference" if constraint == "demographic_parity" else "eo_difference"
        change = after[objective] - before[objective]
        word = "cost" if change < 0 else "gained"
        sentences.append(
            f"Enforcing {escape(_CONSTRAINTS.get(constraint, constraint))} took its difference from "
            f"{_num(before[gap])} to {_num(after[gap])} and {word} {_points(abs(change))} of "
            f"{escape(_label(objective))} ({_num(before[objective])} → {_num(after[objective])})."
        )
    return " ".join(sentences)


# ---- plots --------------------------------------------------------------------------------------


def _rates_plot(result: Mapping[str, Any]) -> bytes:
    groups = list(result["by_group"])
    x = np.arange(len(groups))
    width = 0.8 / len(_BARS)
    fig = plots._figure(max(4.6, 1.4 * len(groups) + 2.0), 3.8)
    ax = fig.add_subplot()
    for i, (metric, color) in enumerate(_BARS):
        value, low, high = (
            np.array([_float(result["by_group"][g][metric][k]) for g in groups])
            for k in ("value", "low", "high")
        )
        # An undefined rate has no bar and no error bar; a missing bound draws no whisker on that side.
        err = np.array([np.nan_to_num(value - low), np.nan_to_num(high - value)]).clip(min=0)
        ax.bar(
            x + (i - (len(_BARS) - 1) / 2) * width,
            value,
            width,
            yerr=err,
            capsize=3,
            color=color,
            alpha=0.85,
            label=_NAMES[metric],
            error_kw={"elinewidth": 1, "ecolor": "#333333"},
        )
    ax.set_xticks(x, [plots._short(g) for g in groups])
    ax.set_xlabel(str(result.get("sensitive_name", "group")))
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Rates by group ({100 * float(result.get('confidence', 0.95)):.3g} % intervals)")
    plots._tidy(ax)
    ax.legend(frameon=False, ncols=3, loc="upper left")
    return plots._png(fig)


def _tradeoff_plot(result: Mapping[str, Any]) -> bytes:
    objective = str(result.get("objective", "accuracy"))
    trade = result["tradeoff"]
    fig = plots._figure(5.2, 4.2)
    ax = fig.add_subplot()
    curve = sorted(trade["curve"], key=lambda p: p["dp_difference"])
    if curve:
        ax.plot(
            [p["dp_difference"] for p in curve],
            [p[objective] for p in curve],
            marker="o",
            markersize=3.5,
            linewidth=1.5,
            color="#1f77b4",
            label="group thresholds (tolerance chosen on validation)",
        )
    base = trade["unmitigated"]
    ax.scatter([base["dp_difference"]], [base[objective]], s=70, color="black", zorder=3, label="unmitigated")
    markers = {"demographic_parity": ("D", "#d62728"), "equalized_odds": ("s", "#ff7f0e")}
    for constraint, point in trade["threshold_optimizer"].items():
        marker, color = markers.get(constraint, ("^", "#9467bd"))
        ax.scatter(
            [point["dp_difference"]],
            [point[objective]],
            s=70,
            marker=marker,
            color=color,
            zorder=3,
            label=f"ThresholdOptimizer ({_CONSTRAINTS.get(constraint, constraint)})",
        )
    ax.set_xlabel("demographic-parity difference (test)")
    ax.set_ylabel(f"{_label(objective)} (test)")
    ax.set_title("What parity costs")
    plots._tidy(ax)
    ax.legend(frameon=False, fontsize=8)
    return plots._png(fig)


# ---- formatting ---------------------------------------------------------------------------------


def _label(objective: str) -> str:
    return objective.replace("_", " ")


def _float(value: Any) -> float:
    return np.nan if value is None else float(value)


def _num(value: Any) -> str:
    return "—" if value is None else _fmt_float(value)


def _ci(entry: Mapping[str, Any]) -> str:
    low, high = entry.get("low"), entry.get("high")
    if low is None or high is None:
        return '<span class="muted">[no interval]</span>'
    return f'<span class="muted">[{_fmt_float(low)}, {_fmt_float(high)}]</span>'


def _points(value: float) -> str:
    return f"{100 * value:.3g} points"
