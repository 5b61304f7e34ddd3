"""The "Average sensitivity" report section: how many one-position changes flip the model's decisions.

From an ``glassbox.audit.sensitivity.average_sensitivity`` result (optionally
with ``true``, the sensitivity of the function the labels come from) and the
``sensitivity`` records ``SensitivityTracker`` logs: the value with its
standard error and its scale (0 for a constant, ``n`` when every position
matters), the rate at which each position changes the decision (a heat map
over the patches of an image), and the measurement by epoch.

>>> result = {"kind": "boolean", "mean": 3.4, "stderr": 0.05, "n": 20, "normalized": 0.17, "rows": 500,
...           "draws": 1, "per_position": [0.17] * 20, "true": 3.52}
>>> history = [{"epoch": 1, "step": 10, "sensitivity": 2.0, "sensitivity_normalized": 0.1}]
>>> s = sensitivity_section(result, history)
>>> s["title"], "3.40" in s["html"], s["html"].count("data:image/png;base64,")
('Average sensitivity', True, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

PERTURBATIONS = {
    "boolean": "flipping one bit (every bit of every row tried)",
    "tabular": "replacing one feature by its value in a random training row",
    "image": "replacing one {p} x {p} patch by the same patch of a random training image",
    "sequence": "replacing one token by a random token of the training vocabulary",
}


def position_plot(rates: Sequence[float], grid: Sequence[int] | None = None, *, title: str) -> bytes:
    """Per-position change rates: bars, or for image patches (``grid`` rows x columns) a heat map."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    from glassbox.report.plots import _figure, _png, _tidy

    r = np.asarray(rates, dtype=float)
    if grid is not None:
        fig = _figure(4.2, 3.6)
        ax = fig.add_subplot()
        im = ax.imshow(r.reshape(grid), cmap="viridis", vmin=0.0, vmax=max(float(r.max()), 1e-9))
        fig.colorbar(im, ax=ax, label="decision changes")
        ax.set_xticks(range(grid[1]))
        ax.set_yticks(range(grid[0]))
        ax.set_xlabel("patch column")
        ax.set_ylabel("patch row")
    else:
        fig = _figure(max(4.0, min(9.0, 0.25 * len(r) + 2)), 3.2)
        ax = fig.add_subplot()
        ax.bar(np.arange(len(r)), r, color="#1f77b4")
        ax.set_xlabel("position")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("decision changes")
        ax.set_ylim(0, max(1e-9, float(r.max())) * 1.1)
        _tidy(ax)
    ax.set_title(title)
    return _png(fig)


def sensitivity_section(
    result: Mapping[str, Any], history: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, str]:
    """Section dict for ``write_report``: the measured sensitivity, where it comes from, and by epoch."""
    from glassbox.report.html import _figure, figures_html
    from glassbox.report.plots import curve_plot

    kind = str(result.get("kind", "?"))
    n = int(result["n"])
    how = PERTURBATIONS.get(kind, kind).format(p=result.get("patch", "?"))
    draws = int(result.get("draws", 1))
    per_row = "" if kind == "boolean" or draws == 1 else f", {draws} draws per position"
    parts = [
        f"<p>Average sensitivity <b>{result['mean']:.2f} ± {result['stderr']:.2f}</b> (standard error) of"
        f" {n} positions, {100 * result['normalized']:.1f} % of them: the expected number of single"
        f" changes of an input, {escape(how)}, that change the predicted class, over"
        f" {result.get('rows', '?')} rows{per_row}. A constant has 0; a decision that every position"
        f" flips, like parity, has {n}.</p>"
    ]
    if kind == "boolean":
        parts.append(
            f"<p>A random boolean function has {n / 2:g} on average. Transformers learn"
            " low-sensitivity functions (majority, about sqrt(2n/pi), sparse parities) from few"
            " examples and high-sensitivity ones (parity) hardly at all.</p>"
        )
    if result.get("true") is not None:
        parts.append(
            f"<p>The function the labels come from has sensitivity {float(result['true']):.2f}; the"
            f" model's is {result['mean'] - float(result['true']):+.2f} from it.</p>"
        )
    figures = []
    rates = result.get("per_position")
    if rates:
        grid = result.get("grid")
        png = position_plot(rates, grid, title="Decision changes by position")
        caption = "Rate at which changing each " + ("patch" if grid else "position") + " changes the decision"
        figures.append(_figure(caption, png, "sensitivity-positions"))
    records = [r for r in history or [] if "sensitivity" in r]
    if records:
        title = "Average sensitivity on the probe"
        png = curve_plot(records, ["sensitivity"], title=title, ylabel="positions")
        if png is not None:
            figures.append(_figure(title + ", at each epoch's end", png, "sensitivity-curve"))
    if figures:
        parts.append(figures_html(figures))
    return {"title": "Average sensitivity", "html": "\n".join(parts)}
