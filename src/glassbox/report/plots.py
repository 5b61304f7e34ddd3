"""The report's plots: each function draws one figure and returns it as PNG bytes.

Figures are built from ``matplotlib.figure.Figure`` rather than pyplot, so
there is no global figure registry to close or leak and reports can be drawn
from several threads at once. matplotlib (and sklearn) are imported inside the
functions because importing them takes a noticeable part of a second and
``glassbox --help`` must stay fast.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

History = Sequence[Mapping[str, Any]]

DPI = 110
_TRAIN, _VAL, _LR = "#1f77b4", "#ff7f0e", "#2ca02c"
_PREFIXES = ("train_", "val_")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _tidy(ax: Any) -> None:
    # Styled per axes, not through rcParams, which are global and shared with the caller's plots.
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.3)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _is_number(value: Any) -> bool:
    return isinstance(value, Real | np.number) and not isinstance(value, bool | np.bool_)


def metric_group(key: str) -> str | None:
    """The panel a history key belongs to: ``loss``, a metric name, ``lr``, or None.

    ``train_loss_epoch`` (the epoch mean the trainer logs) shares the loss
    panel, and any ``_epoch`` variant shares its metric's panel.

    >>> [metric_group(k) for k in ("train_loss", "val_loss", "train_loss_epoch", "val_auroc", "lr", "step")]
    ['loss', 'loss', 'loss', 'auroc', 'lr', None]
    """
    if key == "lr":
        return "lr"
    for prefix in _PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            name = key.removeprefix(prefix).removesuffix("_epoch")
            return "loss" if name.startswith("loss") else name
    return None


def curve_groups(history: History) -> dict[str, list[str]]:
    """Every panel with data, in the order loss, metrics as first logged, lr; each with its keys."""
    groups: dict[str, list[str]] = {"loss": []}
    for record in history:
        for key, value in record.items():
            group = metric_group(key)
            if group is not None and _is_number(value) and key not in groups.setdefault(group, []):
                groups[group].append(key)
    lr = groups.pop("lr", None)
    if lr:
        groups["lr"] = lr
    return {g: keys for g, keys in groups.items() if keys}


def _x_axis(records: Sequence[Mapping[str, Any]]) -> str | None:
    # One axis per panel: mixing steps and epochs in one panel would misplace
    # the points; without either, the record's position still orders them.
    for axis in ("step", "epoch"):
        if all(_is_number(r.get(axis)) for r in records):
            return axis
    return None


def _color(key: str) -> str | None:
    if key == "lr":
        return _LR
    if key.startswith("val_"):
        return _VAL
    if key.startswith("train_"):
        return _TRAIN
    return None


def curve_plot(history: History, keys: Sequence[str], *, title: str, ylabel: str) -> bytes | None:
    """One panel with a line per key of ``history``; None when no record has any of them."""
    points = {k: [(i, r) for i, r in enumerate(history) if _is_number(r.get(k))] for k in keys}
    points = {k: p for k, p in points.items() if p}
    if not points:
        return None
    axis = _x_axis([r for p in points.values() for _, r in p])
    fig = _figure(5.6, 3.5)
    ax = fig.add_subplot()
    values: list[float] = []
    for key, pts in points.items():
        xy = sorted((float(r[axis]) if axis else float(i), float(r[key])) for i, r in pts)
        x, y = zip(*xy, strict=True)
        values += y
        dense = len(xy) > 60
        ax.plot(
            x,
            y,
            label=key,
            color=_color(key),
            # Per-step series are dense and noisy: a thin line; per-epoch ones are sparse: show each point.
            linewidth=1.0 if dense else 1.8,
            marker=None if dense else "o",
            markersize=4,
            alpha=0.8 if dense else 1.0,
        )
    finite = [v for v in values if math.isfinite(v)]
    # A loss or lr that spans orders of magnitude is unreadable on a linear axis.
    if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(axis or "record")
    ax.set_ylabel(ylabel)
    _tidy(ax)
    ax.legend(frameon=False)
    return _png(fig)


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def confusion_matrix_plot(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> bytes:
    """Counts of true (rows) against predicted (columns) classes, each cell annotated."""
    from sklearn.metrics import confusion_matrix

    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(k))
    # Grow with the number of classes so that 10+ classes keep readable cells, up to a page's width.
    side = min(max(3.8, 0.55 * k + 2.4), 14.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="count")
    names = [_short(str(c)) for c in classes]
    ax.set_xticks(np.arange(k), names, rotation=45 if k > 4 or max(map(len, names)) > 6 else 0, ha="right")
    ax.set_yticks(np.arange(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    ax.spines[:].set_visible(False)
    if k <= 30:  # beyond that the numbers no longer fit their cells
        size = 10 if k <= 10 else 8 if k <= 20 else 6
        threshold = cm.max() / 2
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if cm[i, j] > threshold else "black",
                )
    return _png(fig)


def roc_plot(y_true: np.ndarray, score: np.ndarray, *, positive: str) -> bytes:
    """ROC curve of a binary task with its AUC; ``score`` is the positive class's probability."""
    from sklearn.metrics import auc, roc_curve

    fpr, tpr, _ = roc_curve(y_true, score)
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color=_TRAIN, linewidth=2, label=f"AUC = {auc(fpr, tpr):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC (positive class: {_short(positive)})")
    _tidy(ax)
    ax.legend(loc="lower right", frameon=False)
    return _png(fig)


def calibration_plot(y_true: np.ndarray, score: np.ndarray, *, bins: int = 10) -> bytes:
    """Reliability diagram of a binary task: observed positive rate against predicted probability.

    Binned here with numpy rather than sklearn.calibration, which would import
    much of sklearn for ten means.
    """
    y_true = np.asarray(y_true, dtype=float)
    score = np.clip(np.asarray(score, dtype=float), 0.0, 1.0)
    which = np.minimum((score * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    filled = count > 0
    mean_pred = np.bincount(which, weights=score, minlength=bins)[filled] / count[filled]
    frac_pos = np.bincount(which, weights=y_true, minlength=bins)[filled] / count[filled]

    fig = _figure(4.6, 4.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    top.plot(mean_pred, frac_pos, marker="o", color=_TRAIN, linewidth=2, label="model")
    # A little margin so points at exactly 0 or 1 are not cut in half by the frame.
    top.set(xlim=(-0.02, 1.02), ylim=(-0.03, 1.03))
    top.set_ylabel("observed positive rate")
    top.set_title("Reliability")
    _tidy(top)
    top.legend(loc="upper left", frameon=False)
    # How many predictions each bin holds: a point from a handful of rows is noise.
    bottom.bar((np.arange(bins) + 0.5) / bins, count, width=0.9 / bins, color=_TRAIN, alpha=0.6)
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("rows")
    bottom.spines[["top", "right"]].set_visible(False)
    return _png(fig)


_CLEAN, _FLIPPED = "#1f77b4", "#d62728"


def value_histogram_plot(
    values: np.ndarray, *, flipped: np.ndarray | None = None, title: str, xlabel: str = "value"
) -> bytes:
    """Histogram of per-example data values; with ``flipped``, clean and flipped rows overlaid.

    ``values`` must be finite. The two groups are drawn as shares of their own
    size, so a few hundred flipped rows stay visible next to thousands of clean
    ones. A heavy tail would squeeze everything else into one bar, so with many
    values the outer 0.5 % on each side are piled into the edge bins (the axis
    label says so).
    """
    values = np.asarray(values, dtype=float)
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    clipped = False
    if len(values) >= 200:
        q_lo, q_hi = (float(q) for q in np.quantile(values, [0.005, 0.995]))
        if q_hi > q_lo and (hi - lo) > 3 * (q_hi - q_lo):
            lo, hi, clipped = q_lo, q_hi, True
    if hi <= lo:  # all values equal (or none): a bin around the single value
        lo, hi = lo - 0.5, hi + 0.5
    # Bins that the smaller group can fill: 50 bins for 150 flipped rows would draw noise, not a shape.
    smallest = len(values)
    if flipped is not None:
        flipped = np.asarray(flipped, dtype=bool)
        smallest = min(int(flipped.sum()), int((~flipped).sum())) or len(values)
    bins = np.linspace(lo, hi, int(np.clip(1.5 * np.sqrt(max(smallest, 1)), 10, 50)) + 1)
    shown = np.clip(values, lo, hi)

    # Nearly as tall as the detection ROC it sits beside in the report.
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot()
    if flipped is None:
        ax.hist(shown, bins=bins, color=_CLEAN, alpha=0.85)
        ax.set_ylabel("rows")
    else:
        for mask, name, color in ((~flipped, "clean", _CLEAN), (flipped, "flipped label", _FLIPPED)):
            group = shown[mask]
            if len(group):
                ax.hist(
                    group,
                    bins=bins,
                    weights=np.full(len(group), 1.0 / len(group)),
                    color=color,
                    alpha=0.55,
                    label=f"{name} ({len(group)})",
                    histtype="stepfilled",
                    edgecolor=color,
                )
        ax.set_ylabel("share of the group's rows")
        ax.legend(frameon=False)
    if lo < 0 < hi:
        ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    from matplotlib.ticker import MaxNLocator

    # Values like -0.0035 make long tick labels; fewer ticks keep them apart.
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.set_title(title)
    ax.set_xlabel(xlabel + (" (outer 1 % piled into the edge bins)" if clipped else ""))
    _tidy(ax)
    return _png(fig)


def detection_roc_plot(flipped: np.ndarray, scores: Mapping[str, np.ndarray]) -> bytes:
    """ROC curves of finding flipped labels, one line per method, each with its AUC in the legend.

    ``flipped`` is ``(N,)`` bool; each score is ``(N,)`` and higher means "more
    likely flipped" (the negated data value). A method whose rows hold only one
    class is left out.
    """
    from sklearn.metrics import auc, roc_curve

    flipped = np.asarray(flipped, dtype=bool)
    fig = _figure(4.8, 4.4)
    ax = fig.add_subplot()
    for i, (name, score) in enumerate(scores.items()):
        score = np.asarray(score, dtype=float)
        keep = np.isfinite(score)
        y = flipped[keep]
        if y.all() or not y.any():
            continue
        fpr, tpr, _ = roc_curve(y, score[keep])
        ax.plot(
            fpr, tpr, color=f"C{i}", linewidth=2 if i == 0 else 1.5, label=f"{name} (AUC {auc(fpr, tpr):.3f})"
        )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.set_xlabel("false positive rate (clean rows flagged)")
    ax.set_ylabel("true positive rate (flipped rows found)")
    ax.set_title("Finding flipped labels by low value")
    _tidy(ax)
    ax.legend(loc="lower right", frameon=False, fontsize=9)
    return _png(fig)


def image_grid_plot(
    images: np.ndarray,
    captions: Sequence[str],
    *,
    marked: Sequence[bool] | np.ndarray | None = None,
    title: str,
    columns: int = 4,
) -> bytes:
    """A grid of small images, each with a caption; ``marked`` ones get a thick red frame.

    ``images`` is ``(n, C, H, W)`` (or ``(n, H, W)``) with values in [0, 1]:
    one channel is drawn in grey, three (or four) as colour, any other number
    shows its first channel. Captions may hold a newline.
    """
    images = np.asarray(images, dtype=float)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"images must be (n, C, H, W); got shape {images.shape}")
    n = len(images)
    marked = np.zeros(n, dtype=bool) if marked is None else np.asarray(marked, dtype=bool)
    columns = max(1, min(columns, n))
    rows = max(1, math.ceil(n / columns))
    # Four columns come out about 500 px wide, the width of one column of the report's figure grid,
    # so the browser shows the PNG at its own size and the captions stay legible.
    # At least wide enough for the title when only a row or two are shown.
    width, height = max(1.12 * columns + 0.15, 3.4), 1.5 * rows + 0.4
    from matplotlib.figure import Figure

    # A fixed grid rather than _figure's constrained layout, which takes most of a second for 20
    # axes: each cell is a square image under a three-line caption.
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(
        left=0.08 / width,
        right=1 - 0.08 / width,
        bottom=0.06 / height,
        top=1 - 0.78 / height,
        wspace=0.12,
        hspace=0.45,
    )
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        image = np.clip(np.nan_to_num(images[i], nan=0.0), 0.0, 1.0)
        if image.shape[0] in (3, 4):
            ax.imshow(np.moveaxis(image, 0, -1), interpolation="nearest")
        else:
            ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        color = _FLIPPED if marked[i] else "black"
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color(color if marked[i] else "#bbbbbb")
            spine.set_linewidth(3.5 if marked[i] else 0.8)
        ax.set_title(captions[i], fontsize=7.5, color=color, linespacing=1.1)
    fig.suptitle(title, fontsize=11, y=1 - 0.06 / height, va="top")
    return _png(fig)


def embedding_plot(Z: np.ndarray, y: np.ndarray, classes: Sequence[str], *, title: str) -> bytes:
    """The first two principal components of embeddings ``Z`` (N, D), one colour per class.

    PCA (an SVD of the centred rows), not t-SNE or UMAP: linear, so clusters
    that look separable here are separable by a linear probe too.
    """
    Z = np.asarray(Z, dtype=float)
    Zc = Z - Z.mean(0)
    _, s, vt = np.linalg.svd(Zc, full_matrices=False)
    P = Zc @ vt[:2].T  # (N, 2)
    share = (s[:2] ** 2).sum() / max((s**2).sum(), 1e-12)
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot()
    cmap = _cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, name in enumerate(classes):
        pts = P[np.asarray(y) == k]
        ax.scatter(pts[:, 0], pts[:, 1], s=9, alpha=0.75, color=cmap(k % cmap.N), label=_short(str(name)))
    ax.set_title(f"{title} ({100 * share:.0f} % of the variance)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    _tidy(ax)
    if len(classes) <= 12:
        ax.legend(frameon=False, fontsize=7, markerscale=1.5, loc="best")
    return _png(fig)


def _cmap(name: str) -> Any:
    from matplotlib import colormaps

    return colormaps[name]
