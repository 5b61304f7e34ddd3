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
