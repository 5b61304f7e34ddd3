"""Client partitions of any Dataset, for federated learning: who holds which rows.

Four schemes, all seeded, each returning one sorted array of row positions
(into the Dataset, not source ids; ``ds.subset(part)`` keeps ``index``) per
client:

- ``iid``: a shuffled split into near-equal parts, the baseline every
  non-IID result is compared with.
- ``dirichlet``: for each class, the share each client gets is drawn from
  Dir(alpha * 1) over the clients (Hsu et al. 2019, "Measuring the effects of
  non-identical data distribution", as in FedML / NIID-Bench). Lower alpha,
  more skew: alpha = 0.1 gives clients dominated by one or two classes, alpha
  = 100 is close to IID. Client sizes vary too (FedML's cap on a client's
  size is not applied), so draws are repeated until every client has
  ``min_size`` rows.
- ``classes``: every client holds exactly ``classes_per_client`` classes
  (McMahan et al. 2017's "pathological non-IID" shards), and the rows of a
  class are split evenly among the clients that hold it.
- ``column``: natural clients, one per distinct value of a column (a bank
  branch, a hospital, the fraud set's ``group``).

>>> import torch
>>> ds = Dataset(name="toy", kind="tabular", task="classification",
...              X=torch.zeros(12, 1), y=torch.tensor([0, 1, 2] * 4),
...              feature_names=["x"], classes=["a", "b", "c"])
>>> parts = partition(ds, 3, "iid", seed=0)
>>> [len(p) for p in parts], sorted(int(i) for p in parts for i in p) == list(range(12))
([4, 4, 4], True)
>>> summary = partition_summary(ds, partition(ds, 3, "classes", classes_per_client=1))
>>> sorted(summary["label_histograms"], reverse=True), summary["skew"]  # one class each
([[4, 0, 0], [0, 4, 0], [0, 0, 4]], 0.6667)
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import numpy as np

from glassbox.data.base import Dataset
from glassbox.errors import UserError, did_you_mean

Scheme = Literal["iid", "dirichlet", "classes", "column"]

# Dirichlet draws are cheap (one per class), so many tries cost little; the
# bound only stops an impossible request (alpha tiny, many clients) looping.
MAX_TRIES = 1000
# A numeric feature with more distinct values than this is continuous (an
# amount, a distance), not a client id; it has to be binned first.
MAX_COLUMN_VALUES = 100
MISSING = "(missing)"  # the value of a row whose one-hot block is all zeros, as in tabular.hold_out


def partition(
    data: Dataset,
    n_clients: int | None,
    scheme: Scheme = "iid",
    *,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    column: str | None = None,
    seed: int = 0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Per client, the sorted int64 positions into ``data`` that it holds.

    The parts are disjoint. For ``iid``, ``dirichlet`` and ``column`` they
    cover every row. For ``classes`` they cover every row of every class some
    client holds: with ``k = classes_per_client`` and the classes in a seeded
    order, client ``i`` holds classes ``(i * k + j) % n_classes`` for ``j < k``,
    so every class is held as soon as ``n_clients * k >= n_classes``; with
    fewer slots the last classes in that order are held by nobody and their
    rows are in no part (``partition_summary(...)["rows"]`` says how many are).

    For ``column``, ``n_clients`` must be the number of distinct values of
    ``column`` or 0 / None (as many clients as values); client ``k`` holds the
    rows whose value is ``column_values(data, column)[k]``.

    Every client gets at least ``min_size`` rows or this raises UserError;
    ``dirichlet`` redraws (up to MAX_TRIES times) before giving up. The same
    ``seed`` gives the same parts.
    """
    if scheme not in get_args(Scheme):
        raise UserError(f"unknown partition scheme '{scheme}': {did_you_mean(str(scheme), get_args(Scheme))}")
    if column is not None and scheme != "column":
        raise UserError(
            f"column='{column}' is only used by scheme='column'; remove it or set scheme='column'"
        )
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 0:
        raise UserError(f"min_size must be a whole number >= 0 (got {min_size!r}); set e.g. min_size=1")
    n = len(data)
    if n == 0:
        raise UserError(f"dataset '{data.name}' has no rows to partition; use a non-empty dataset")
    if data.task == "lm" and scheme != "iid":
        # Windows of text and synthetic token tasks have no class label to skew.
        raise UserError(
            f"scheme='{scheme}' needs class labels, but '{data.name}' is a language-model dataset;"
            " use scheme='iid'"
        )
    rng = np.random.default_rng(seed)

    if scheme == "column":
        if column is None:
            raise UserError("scheme='column' needs column=NAME (a sensitive column or a feature); set column")
        values, codes = _column_codes(data, column)
        if n_clients not in (None, 0) and _count(n_clients, n) != len(values):
            shown = ", ".join(values[:5]) + (", ..." if len(values) > 5 else "")
            raise UserError(
                f"column '{column}' has {len(values)} values ({shown}), so it makes {len(values)} clients,"
                f" not n_clients={n_clients}; set n_clients={len(values)} or 0 (one client per value)"
            )
        parts = [np.flatnonzero(codes == k) for k in range(len(values))]
        _check_min_size(parts, min_size, [f"{column}={v}" for v in values])
        return parts

    n_clients = _count(n_clients, n)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(n), n_clients)
    elif scheme == "dirichlet":
        parts = _dirichlet(_labels(data), n_clients, alpha, min_size, rng)
    else:
        parts = _classes(data, _labels(data), n_clients, classes_per_client, rng)
    parts = [np.sort(p).astype(np.int64) for p in parts]
    _check_min_size(parts, min_size)
    return parts


def partition_summary(data: Dataset, parts: list[np.ndarray]) -> dict[str, Any]:
    """Sizes and label histograms per client, and how skewed the labels are; JSON-able.

    ``skew`` is the mean, over non-empty clients, of the total-variation
    distance between a client's label distribution and that of all the rows
    the clients hold together: 0 for perfectly IID labels, approaching 1 when
    each client holds one class of many. Language-model data has no labels,
    so its histograms and skew are None.
    """
    n = len(data)
    for k, p in enumerate(parts):
        p = np.asarray(p)
        if p.size and (p.dtype.kind not in "iu" or p.min() < 0 or p.max() >= n):
            raise UserError(
                f"part {k} holds positions outside 0..{n - 1}; pass the parts partition() made for this data"
            )
    sizes = [len(p) for p in parts]
    out: dict[str, Any] = {
        "clients": len(parts),
        "rows": sum(sizes),
        "sizes": sizes,
        "min_size": min(sizes, default=0),
        "max_size": max(sizes, default=0),
        "classes": list(data.classes),
        "label_histograms": None,
        "skew": None,
    }
    if data.task == "lm":
        return out
    y = data.y.numpy()
    n_classes = max(data.n_classes, int(y.max()) + 1 if len(y) else 0)
    hist = np.stack(
        [np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=n_classes) for p in parts]
    )  # (clients, classes)
    out["label_histograms"] = hist.tolist()
    held = hist[hist.sum(1) > 0]
    if len(held):
        pooled = held.sum(0) / held.sum()
        tv = 0.5 * np.abs(held / held.sum(1, keepdims=True) - pooled).sum(1)
        out["skew"] = round(float(tv.mean()), 4)
    return out


def column_values(data: Dataset, column: str) -> list[str]:
    """The value each client of ``partition(data, 0, "column", column=column)`` holds, in client order."""
    return _column_codes(data, column)[0]


def _count(n_clients: Any, n: int) -> int:
    if isinstance(n_clients, bool) or not isinstance(n_clients, int | np.integer):
        raise UserError(f"n_clients must be a whole number (got {n_clients!r}); set e.g. n_clients=10")
    if not 1 <= n_clients <= n:
        raise UserError(f"n_clients={n_clients} must be between 1 and the {n} rows of the data; change it")
    return int(n_clients)


def _labels(data: Dataset) -> np.ndarray:
    y = data.y.numpy()
    if y.ndim != 1:
        raise UserError(
            f"'{data.name}' has one label per position, not per row, so it cannot be split by label;"
            " use scheme='iid'"
        )
    return y.astype(np.int64)


def _check_min_size(parts: list[np.ndarray], min_size: int, names: list[str] | None = None) -> None:
    for k, p in enumerate(parts):
        if len(p) < min_size:
            who = f"client {k}" + (f" ({names[k]})" if names is not None else "")
            raise UserError(
                f"{who} has {len(p)} rows, fewer than min_size={min_size};"
                " lower min_size or use fewer clients"
            )


def _dirichlet(
    y: np.ndarray, n_clients: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not (0 < alpha < math.inf):
        raise UserError(f"alpha must be a number > 0 (got {alpha!r}); lower is more skewed, e.g. alpha=0.5")
    if n_clients * min_size > len(y):
        raise UserError(
            f"{n_clients} clients of at least min_size={min_size} rows need {n_clients * min_size} rows,"
            f" but the data has {len(y)}; lower n_clients or min_size"
        )
    labels = np.unique(y)
    # Rows are shuffled once; each try only redraws how many of each class a client gets.
    rows = [rng.permutation(np.flatnonzero(y == c)) for c in labels]
    sizes = np.array([len(r) for r in rows])
    for _ in range(MAX_TRIES):
        share = rng.dirichlet(np.full(n_clients, float(alpha)), size=len(labels))  # (classes, clients)
        # Cut each class at the cumulative shares, as FedML does; the rounding moves < 1 row per cut.
        cuts = np.floor(np.cumsum(share, axis=1)[:, :-1] * sizes[:, None]).astype(np.int64)
        bounds = np.concatenate([np.zeros((len(labels), 1), np.int64), cuts, sizes[:, None]], axis=1)
        if np.diff(bounds, axis=1).sum(0).min() >= min_size:
            return [
                np.concatenate([r[b[i] : b[i + 1]] for r, b in zip(rows, bounds, strict=True)])
                for i in range(n_clients)
            ]
    raise UserError(
        f"no Dirichlet draw in {MAX_TRIES} tries gave each of {n_clients} clients min_size={min_size} rows"
        f" at alpha={alpha}; raise alpha, lower n_clients or lower min_size"
    )


def _classes(
    data: Dataset, y: np.ndarray, n_clients: int, per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    labels = np.unique(y)  # classes with rows: one with none could not be "held"
    if isinstance(per_client, bool) or not isinstance(per_client, int | np.integer):
        raise UserError(f"classes_per_client must be a whole number (got {per_client!r}); e.g. 2")
    if not 1 <= per_client <= len(labels):
        raise UserError(
            f"classes_per_client={per_client} must be between 1 and the {len(labels)} classes"
            f" in '{data.name}'; change it"
        )
    order = rng.permutation(labels)
    # Consecutive slots modulo the class count: a client's classes are distinct
    # (per_client <= classes), every class is held once there are enough slots,
    # and each class is held by floor or ceil(slots / classes) clients.
    held = [
        [int(order[(i * per_client + j) % len(labels)]) for j in range(per_client)] for i in range(n_clients)
    ]
    holders: dict[int, list[int]] = {}
    for i, cs in enumerate(held):
        for c in cs:
            holders.setdefault(c, []).append(i)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c, clients in holders.items():
        rows = rng.permutation(np.flatnonzero(y == c))
        if len(rows) < len(clients):
            name = data.classes[c] if c < data.n_classes else str(c)
            raise UserError(
                f"class '{name}' has {len(rows)} rows but {len(clients)} clients hold it;"
                " lower n_clients or classes_per_client"
            )
        for i, chunk in zip(clients, np.array_split(rows, len(clients)), strict=True):
            parts[i].append(chunk)
    return [np.concatenate(p) for p in parts]


def _column_codes(data: Dataset, column: str) -> tuple[list[str], np.ndarray]:
    """(distinct values, (N,) code of each row's value) for a sensitive column, feature or one-hot family."""
    if data.sensitive is not None and column == data.sensitive_name:
        values, codes = np.unique(np.asarray(data.sensitive).astype(str), return_inverse=True)
        return [str(v) for v in values], codes.reshape(-1)
    names = data.feature_names if data.X.ndim == 2 else []
    if column in names:
        x = data.X[:, names.index(column)].numpy()
        values, codes = np.unique(x, return_inverse=True)  # numeric order
        if len(values) > MAX_COLUMN_VALUES:
            raise UserError(
                f"feature '{column}' has {len(values)} distinct values, too many for natural clients"
                f" (at most {MAX_COLUMN_VALUES}); bin it first or choose a categorical column"
            )
        return [format(float(v), "g") for v in values], codes.reshape(-1)
    cols = [k for k, name in enumerate(names) if name.startswith(column + "=")]
    if cols:
        block = data.X[:, cols].numpy()  # (N, k) one-hot
        hot = np.where(block.sum(1) > 0, block.argmax(1), len(cols))  # all zeros: missing
        present = np.unique(hot)
        labels = [names[k].split("=", 1)[1] for k in cols] + [MISSING]
        # Only values that occur make clients: an empty client would fail every round.
        remap = np.full(len(cols) + 1, -1)
        remap[present] = np.arange(len(present))
        return [labels[k] for k in present], remap[hot]
    options = {name.split("=", 1)[0] for name in names} | (
        {data.sensitive_name} if data.sensitive_name else set()
    )
    if not options:
        raise UserError(
            f"'{data.name}' has no columns to make natural clients from; use scheme='iid' or 'dirichlet'"
        )
    raise UserError(
        f"column '{column}' is not in dataset '{data.name}': {did_you_mean(column, options)}; set column"
    )
