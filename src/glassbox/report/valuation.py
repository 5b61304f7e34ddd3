"""Report sections about data values: which training rows helped, which hurt, and what cleaning did.

Data valuation gives every training row a number: positive when training on
it lowered the validation loss (it helped), negative when it raised it (it
hurt). The functions here turn those numbers into ``{"title", "html"}``
sections for ``write_report(extra_sections=...)``: a histogram of the values,
the most harmful and most helpful rows (as images, or as a table), and, when
the recipe flipped some labels on purpose, how well low values find them. A
second section compares a run retrained without the lowest-valued rows with
the run it came from.

Like the rest of the report, this layer takes plain arrays and dicts and
knows nothing about training. Every string that comes from the data (class
names, feature names, run folders) is HTML-escaped here, because the report
inserts a section's ``html`` as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from numbers import Real
from typing import Any

import numpy as np

from glassbox.report import plots
from glassbox.report.html import _figure, _fmt_float, figures_html

# How many rows each of the "most harmful" and "most helpful" lists shows.
TOP = 20
# Feature columns beyond this make the tabular lists too wide to read.
MAX_FEATURES = 8
METHOD_NAMES = {
    "inrun": "In-run Data Shapley",
    "knn_shapley": "KNN-Shapley",
    "tracin": "TracIn-CP",
    "loo": "Leave-one-out",
}
_RED = "#d62728"
_INTRO = (
    "Every training row gets a value: positive means training on it lowered the validation loss "
    "(it helped), negative means it raised it (it hurt), and values near zero mean it barely mattered."
)


def method_name(key: str) -> str:
    """The display name of a valuation method; unknown keys are shown as given.

    >>> method_name("inrun"), method_name("my_method")
    ('In-run Data Shapley', 'my_method')
    """
    return METHOD_NAMES.get(key, key)


def valuation_section(
    values: Mapping[str, np.ndarray],
    *,
    source_ids: np.ndarray,
    labels: Sequence[str],
    noisy: np.ndarray | None,
    kind: str,
    examples: np.ndarray | None,
    feature_names: Sequence[str] = (),
    primary: str = "inrun",
    notes: Sequence[str] = (),
) -> dict[str, str]:
    """The "Data values" report section, as ``{"title": ..., "html": ...}``.

    ``values`` maps a method (``inrun``, ``knn_shapley``, ``tracin``, ``loo``
    or any other name) to one float per training row; ``values[primary]`` is
    the one the histogram and the lists of rows show. Every array is aligned
    with the ``N`` training rows: ``source_ids`` are the rows' ids in the
    user's data, ``labels`` their training labels as class names (after any
    flipping) and ``noisy`` (bool, or None when no label noise was injected)
    marks the flipped ones. ``examples`` are what the lists show for ``kind``
    ``"image"`` (``(N, C, H, W)`` in [0, 1]) and ``"tabular"`` (``(N, F)``,
    named by ``feature_names``); other kinds list ids, labels and values only.
    ``notes`` are paragraphs that say how the values were computed.

    NaN and infinite values are left out of the plots and rankings, and the
    section says how many there were.

    >>> rng = np.random.default_rng(0)
    >>> section = valuation_section(
    ...     {"inrun": rng.normal(size=30)},
    ...     source_ids=np.arange(30),
    ...     labels=["ham", "spam"] * 15,
    ...     noisy=None,
    ...     kind="text",
    ...     examples=None,
    ...     notes=["Values are summed over every training step."],
    ... )
    >>> section["title"], section["html"].count("data:image/png;base64,"), section["html"].count("<tr>")
    ('Data values', 1, 32)
    """
    vals, ids, labels, noisy = _check_values(values, source_ids, labels, noisy, primary)
    n = len(ids)
    primary_values = vals[primary]
    primary_name = method_name(primary)
    finite = np.isfinite(primary_values)

    parts = [f"<p>{escape(_INTRO)}</p>"]
    parts += [f"<p>{escape(str(note))}</p>" for note in notes]
    parts.append(f'<p class="headline">{_summary(vals, primary, n, noisy)}</p>')

    figures = []
    if finite.any():
        flipped = None if noisy is None or not noisy.any() else noisy[finite]
        png = plots.value_histogram_plot(
            primary_values[finite], flipped=flipped, title=f"{primary_name} values", xlabel=primary_name
        )
        figures.append(_figure(f"Distribution of {primary_name} values", png, "values-histogram"))
    detection = _detection(vals, noisy, primary) if noisy is not None else None
    if detection is not None and detection["roc"] is not None:
        figures.append(_figure("Finding flipped labels: ROC of each method", detection["roc"], "values-roc"))
    if figures:
        parts.append(figures_html(figures))

    if detection is not None:
        parts.append(detection["html"])
    elif len(vals) > 1:
        parts.append(_methods_table(vals, primary, None))

    harmful, helpful = extremes(primary_values)
    if len(harmful) == 0:
        parts.append(f'<p class="muted">No row has a finite {escape(primary_name)} value to rank.</p>')
    elif kind == "image" and examples is not None:
        parts.append(_image_lists(harmful, helpful, primary_values, ids, labels, noisy, examples, n))
    else:
        features = None
        if kind == "tabular" and examples is not None:
            features = _check_features(examples, n)
        parts.append(
            _table_lists(harmful, helpful, primary_values, ids, labels, noisy, features, feature_names)
        )
    return {"title": "Data values", "html": "\n".join(parts)}


def extremes(values: np.ndarray, top: int = TOP) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``top`` lowest (most harmful first) and ``top`` highest (most helpful first) values.

    Only finite values are ranked. With fewer than ``2 * top`` of them the
    two lists split the rows between them instead of overlapping; ties keep
    the rows' order.

    >>> extremes(np.array([0.3, -1.0, np.nan, 2.0, 0.0]), top=2)
    (array([1, 4]), array([3, 0]))
    """
    values = np.asarray(values, dtype=float)
    rows = np.flatnonzero(np.isfinite(values))
    order = rows[np.argsort(values[rows], kind="stable")]
    n_harmful = min(top, math.ceil(len(order) / 2))
    n_helpful = min(top, len(order) - n_harmful)
    harmful = order[:n_harmful]
    # Descending by value, ties in row order: a stable sort of the negated values.
    helpful = rows[np.argsort(-values[rows], kind="stable")][:n_helpful]
    return harmful, helpful


def cleaning_section(
    *,
    base: Mapping[str, Any],
    cleaned: Mapping[str, Any],
    fraction: float,
    dropped: int,
    flipped_dropped: int | None,
) -> dict[str, str]:
    """The section that compares a run retrained without its lowest-valued rows with the original.

    ``base`` and ``cleaned`` are ``{"run": folder name, "results": {metric: number}}``;
    the table shows each numeric metric of either run and ``cleaned - base``.
    ``fraction`` is the share of training rows dropped (``dropped`` of them),
    ``flipped_dropped`` how many of those had flipped labels, when known.

    >>> section = cleaning_section(
    ...     base={"run": "base", "results": {"test_accuracy": 0.9}},
    ...     cleaned={"run": "clean", "results": {"test_accuracy": 0.93}},
    ...     fraction=0.1,
    ...     dropped=50,
    ...     flipped_dropped=30,
    ... )
    >>> "+0.03" in section["html"], "Dropped 50 of the training rows (10 %)" in section["html"]
    (True, True)
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], not {fraction}")
    if int(dropped) < 0:
        raise ValueError(f"dropped must be >= 0, not {dropped}")
    if flipped_dropped is not None and not 0 <= int(flipped_dropped) <= int(dropped):
        raise ValueError(f"flipped_dropped must be in 0..{dropped}, not {flipped_dropped}")
    base_results = _results(base, "base")
    cleaned_results = _results(cleaned, "cleaned")
    keys = list(base_results) + [k for k in cleaned_results if k not in base_results]

    sentence = f"Dropped {int(dropped)} of the training rows ({float(fraction) * 100:.3g} %)"
    if flipped_dropped is not None:
        sentence += f", of which {int(flipped_dropped)} had flipped labels"
    parts = [f'<p class="headline">{escape(sentence)}.</p>']
    if not keys:
        parts.append('<p class="muted">Neither run recorded numeric test metrics.</p>')
        return {"title": "Cleaning: retrained without the lowest-valued data", "html": "\n".join(parts)}

    head = (
        "<tr><th>metric</th>"
        f'<th>base<br><span class="muted">{escape(str(base.get("run", "")))}</span></th>'
        f'<th>cleaned<br><span class="muted">{escape(str(cleaned.get("run", "")))}</span></th>'
        "<th>cleaned − base</th></tr>"
    )
    rows = []
    for key in keys:
        b, c = base_results.get(key), cleaned_results.get(key)
        diff = _signed(c - b) if b is not None and c is not None else "—"
        rows.append(
            f"<tr><td>{escape(key)}</td><td class='n'>{_number(b)}</td>"
            f"<td class='n'>{_number(c)}</td><td class='n'>{diff}</td></tr>"
        )
    parts.append(f'<table class="num"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')
    return {"title": "Cleaning: retrained without the lowest-valued data", "html": "\n".join(parts)}


# ---- checks -------------------------------------------------------------------------------------


def _check_values(
    values: Mapping[str, Any], source_ids: Any, labels: Sequence[Any], noisy: Any, primary: str
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str], np.ndarray | None]:
    ids = np.asarray(source_ids)
    if ids.ndim != 1:
        raise ValueError(f"source_ids must be (N,); got shape {ids.shape}")
    n = len(ids)
    if not values:
        raise ValueError("values holds no method")
    if primary not in values:
        raise ValueError(f"primary method {primary!r} is not among the values: {sorted(values)}")
    vals = {}
    # The primary method first, so tables and legends lead with it.
    for key in [primary, *(k for k in values if k != primary)]:
        array = np.asarray(values[key], dtype=np.float64)
        if array.shape != (n,):
            raise ValueError(f"values[{key!r}] must be ({n},) like source_ids; got shape {array.shape}")
        vals[str(key)] = array
    names = [str(label) for label in labels]
    if len(names) != n:
        raise ValueError(f"{len(names)} labels for {n} rows")
    flips = None
    if noisy is not None:
        flips = np.asarray(noisy)
        if flips.shape != (n,):
            raise ValueError(f"noisy must be ({n},) like source_ids; got shape {flips.shape}")
        flips = flips.astype(bool)
    return vals, ids, names, flips


def _check_features(examples: Any, n: int) -> np.ndarray:
    features = np.asarray(examples)
    if features.ndim == 1:
        features = features[:, None]
    if features.ndim != 2 or len(features) != n:
        raise ValueError(f"tabular examples must be ({n}, F); got shape {features.shape}")
    return features


def _check_images(examples: Any, n: int) -> np.ndarray:
    images = np.asarray(examples)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or len(images) != n:
        raise ValueError(f"image examples must be ({n}, C, H, W); got shape {images.shape}")
    return images


# ---- parts of the values section ----------------------------------------------------------------


def _summary(vals: Mapping[str, np.ndarray], primary: str, n: int, noisy: np.ndarray | None) -> str:
    v = vals[primary]
    finite = v[np.isfinite(v)]
    neg, pos = int((finite < 0).sum()), int((finite > 0).sum())
    text = (
        f"{n} training rows; {escape(method_name(primary))}: "
        f"<strong>{neg}</strong> negative (harmful), <strong>{pos}</strong> positive (helpful)"
    )
    if len(finite) - neg - pos:
        text += f", {len(finite) - neg - pos} exactly zero"
    text += "."
    if noisy is not None:
        text += f" The recipe flipped the labels of {int(noisy.sum())} rows ({_pct(noisy.sum(), n)})."
    bad = [(key, int((~np.isfinite(a)).sum())) for key, a in vals.items()]
    bad = [(key, count) for key, count in bad if count]
    if bad:
        listed = ", ".join(f"{count} of {escape(method_name(key))}" for key, count in bad)
        text += (
            f' <span class="muted">Values that are not finite (NaN or infinite) are left out of '
            f"the plots and rankings: {listed}.</span>"
        )
    return text


def _detection(vals: Mapping[str, np.ndarray], noisy: np.ndarray, primary: str) -> dict[str, Any]:
    n_flipped, n = int(noisy.sum()), len(noisy)
    if n_flipped == 0 or n_flipped == n:
        what = "No training label was flipped" if n_flipped == 0 else "Every training label was flipped"
        note = f'<p class="muted">{what}, so there is nothing for low values to find.</p>'
        if len(vals) > 1:
            note += _methods_table(vals, primary, None)
        return {"roc": None, "html": note}
    scores = {method_name(key): -v for key, v in vals.items()}
    roc = plots.detection_roc_plot(noisy, scores)
    intro = (
        "<h3>Finding the flipped labels</h3>"
        f"<p>Each method ranks the rows from lowest to highest value; a flipped label should come first. "
        f"AUROC scores the whole ranking (score = −value, positive = flipped); precision is the share of "
        f"flipped rows among the k lowest-valued ones, with k = {n_flipped}, the number of flipped rows. "
        f"A random ranking scores an AUROC of 0.5 and a precision of {_fmt_float(n_flipped / n)}, "
        f"a perfect one 1 on both.</p>"
    )
    return {"roc": roc, "html": intro + _methods_table(vals, primary, noisy)}


def detection_scores(values: np.ndarray, noisy: np.ndarray) -> tuple[float | None, float | None, int]:
    """How well low ``values`` find the ``noisy`` rows: (AUROC, precision among the k lowest, rows used).

    k is the number of flipped rows. Non-finite values are left out; AUROC and
    precision are None when the rows left hold only one class.

    >>> detection_scores(np.array([-2.0, -1.0, 0.5, 1.0]), np.array([True, False, True, False]))
    (0.75, 0.5, 4)
    """
    from sklearn.metrics import roc_auc_score

    values = np.asarray(values, dtype=float)
    keep = np.isfinite(values)
    y, v = np.asarray(noisy, dtype=bool)[keep], values[keep]
    k = int(y.sum())
    if k == 0 or k == len(y):
        return None, None, len(y)
    auroc = float(roc_auc_score(y, -v))
    precision = float(y[np.argsort(v, kind="stable")[:k]].mean())
    return auroc, precision, len(y)


def _methods_table(vals: Mapping[str, np.ndarray], primary: str, noisy: np.ndarray | None) -> str:
    compare = len(vals) > 1
    head = ["method", "rows with a value"]
    if compare:
        head.append(f"rank correlation with {method_name(primary)}")
    if noisy is not None:
        head += ["AUROC", "precision among the k lowest"]
    rows = []
    for key, v in vals.items():
        finite = int(np.isfinite(v).sum())
        cells = [f"<td>{escape(method_name(key))}</td>", f"<td class='n'>{finite}</td>"]
        if compare:
            cells.append(f"<td class='n'>{_number(_spearman(vals[primary], v))}</td>")
        if noisy is not None:
            auroc, precision, _ = detection_scores(v, noisy)
            cells += [f"<td class='n'>{_number(auroc)}</td>", f"<td class='n'>{_number(precision)}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    caption = "" if noisy is not None else "<h3>Methods compared</h3>"
    return (
        f'{caption}<table class="num" id="values-methods"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return None
    return float(spearmanr(a[keep], b[keep]).statistic)


def _image_lists(
    harmful: np.ndarray,
    helpful: np.ndarray,
    values: np.ndarray,
    ids: np.ndarray,
    labels: Sequence[str],
    noisy: np.ndarray | None,
    examples: Any,
    n: int,
) -> str:
    images = _check_images(examples, n)
    figures, tables = [], []
    for group, harm in ((harmful, True), (helpful, False)):
        if len(group) == 0:
            continue
        captions = [
            # "row R · label L · value V", one part a line: a line would not fit under an image.
            f"row {ids[i]}\nlabel {plots._short(labels[i], 12)}\nvalue {_fmt_float(values[i])}"
            for i in group
        ]
        marked = None if noisy is None else noisy[group]
        heading = _heading(len(group), harm)
        png = plots.image_grid_plot(images[group], captions, marked=marked, title=heading)
        figures.append(_figure(heading, png))
        tables.append(
            f"<details><summary>{escape(heading)}, as a table</summary>"
            f"{_rows_table(group, values, ids, labels, noisy, None, ())}</details>"
        )
    parts = ["<h3>Most harmful and most helpful rows</h3>"]
    if noisy is not None:
        parts.append(
            f'<p>A <strong style="color:{_RED}">red frame</strong> marks a row whose label was flipped.</p>'
        )
    parts += [figures_html(figures), *tables]
    return "\n".join(parts)


def _table_lists(
    harmful: np.ndarray,
    helpful: np.ndarray,
    values: np.ndarray,
    ids: np.ndarray,
    labels: Sequence[str],
    noisy: np.ndarray | None,
    features: np.ndarray | None,
    feature_names: Sequence[str],
) -> str:
    parts = []
    if features is not None and features.shape[1] > MAX_FEATURES:
        parts.append(
            f'<p class="muted">The first {MAX_FEATURES} of {features.shape[1]} feature columns are shown.</p>'
        )
    for group, harm in ((harmful, True), (helpful, False)):
        if len(group):
            parts.append(f"<h3>{_heading(len(group), harm)}</h3>")
            parts.append(_rows_table(group, values, ids, labels, noisy, features, feature_names))
    return "\n".join(parts)


def _heading(count: int, harmful: bool) -> str:
    which, end = ("harmful", "lowest value") if harmful else ("helpful", "highest value")
    if count == 1:
        return f"The most {which} row ({end})"
    return f"The {count} most {which} rows ({end}s)"


def _rows_table(
    group: np.ndarray,
    values: np.ndarray,
    ids: np.ndarray,
    labels: Sequence[str],
    noisy: np.ndarray | None,
    features: np.ndarray | None,
    feature_names: Sequence[str],
) -> str:
    head = ["row", "label", "value"] + (["flipped"] if noisy is not None else [])
    n_features = 0 if features is None else min(MAX_FEATURES, features.shape[1])
    names = [str(feature_names[j]) if j < len(feature_names) else f"x{j}" for j in range(n_features)]
    # The template lets cells break anywhere, which splits labels and numbers mid-word in a wide
    # table: cells stay on one line (feature names in the header may wrap) and the table scrolls.
    header = "".join(f"<th>{escape(h)}</th>" for h in head) + "".join(
        f'<th style="white-space:normal">{escape(h)}</th>' for h in names
    )
    rows = []
    for i in group:
        cells = [
            f"<td class='n'>{escape(str(ids[i]))}</td>",
            f"<td>{escape(labels[i])}</td>",
            f"<td class='n'>{_fmt_float(values[i])}</td>",
        ]
        if noisy is not None:
            flag = f'<strong style="color:{_RED}">yes</strong>' if noisy[i] else "no"
            cells.append(f"<td>{flag}</td>")
        if features is not None:
            cells += [f"<td class='n'>{_cell(features[i, j])}</td>" for j in range(n_features)]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div style="overflow-x:auto"><table class="num" style="white-space:nowrap">'
        f"<thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# ---- formatting ---------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, Real | np.number) and not isinstance(value, bool | np.bool_)


def _results(run: Mapping[str, Any], which: str) -> dict[str, float]:
    results = run.get("results")
    if not isinstance(results, Mapping):
        raise ValueError(f"{which} needs a dict 'results'")
    return {str(k): float(v) for k, v in results.items() if _is_number(v)}


def _number(value: float | None) -> str:
    return "—" if value is None else _fmt_float(value)


def _signed(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    return ("+" if value > 0 else "-") + _fmt_float(abs(value))


def _cell(value: Any) -> str:
    if _is_number(value):
        return _fmt_float(value)
    return escape(str(value))


def _pct(part: float, whole: float) -> str:
    return f"{100 * float(part) / float(whole):.3g} %" if whole else "—"
