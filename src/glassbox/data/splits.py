"""Train / validation / test splits that every run makes the same way.

Classification splits are stratified so that a rare class (the fraud set's
2 %) appears in every part in the same proportion; language-model windows are
split in file order, because neighbouring windows share context and would
otherwise leak text from train into test. Data with ``groups`` (the clips of
one voice) is split by whole groups, stratified by the sensitive column when
there is one (a voice family), so every family is heard in every split.
"""

from __future__ import annotations

import numpy as np

from glassbox.data.base import Dataset
from glassbox.errors import UserError


def _sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Rows for validation and test: at least one each, leaving at least one for training."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(
            f"data.val_fraction ({val_fraction}) and data.test_fraction ({test_fraction}) must each be"
            " between 0 and 1 and sum to less than 1; lower them in the recipe"
        )
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction))
    if n - n_val - n_test < 1:
        raise UserError(
            f"{n} rows are too few to split into train, validation and test; use more data"
            " (or a longer text, or a smaller data.seq_len)"
        )
    return n_val, n_test


def _can_stratify(y: np.ndarray, n_out: int) -> bool:
    """Whether sklearn can stratify: every class twice, and room for every class on both sides."""
    counts = np.bincount(y)
    counts = counts[counts > 0]
    return counts.min() >= 2 and n_out >= len(counts) and len(y) - n_out >= len(counts)


def _cut(rows: np.ndarray, y: np.ndarray, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (kept, n_out taken), stratified by ``y`` when that is possible."""
    from sklearn.model_selection import train_test_split  # slow import; only runs need it

    # Tiny or very unbalanced data cannot be stratified; a plain shuffle split
    # is the best that exists then, so it is not an error.
    stratify = y if _can_stratify(y, n_out) else None
    kept, out = train_test_split(rows, test_size=n_out, random_state=seed, stratify=stratify)
    return kept, out


def split_dataset(
    ds: Dataset, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, test), disjoint and covering every row; each keeps source order.

    Rows are positions in ``ds``; ``index`` still maps each to the source row.
    """
    n = len(ds)
    n_val, n_test = _sizes(n, val_fraction, test_fraction)
    if ds.task == "lm":
        n_train = n - n_val - n_test
        rows = np.arange(n)
        return (
            ds.subset(rows[:n_train]),
            ds.subset(rows[n_train : n_train + n_val]),
            ds.subset(rows[n_train + n_val :]),
        )
    if ds.groups is not None:
        return _split_groups(ds, val_fraction, test_fraction, seed)
    y = ds.y.numpy()
    rest, test = _cut(np.arange(n), y, n_test, seed)
    train, val = _cut(rest, y[rest], n_val, seed)
    return ds.subset(np.sort(train)), ds.subset(np.sort(val)), ds.subset(np.sort(test))


def _split_groups(
    ds: Dataset, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, test) of whole groups: about the fractions of the groups of each stratum each."""
    assert ds.groups is not None
    groups = np.asarray(ds.groups).astype(str)
    names = np.unique(groups)  # sorted: the same order on every machine
    if len(names) < 3:
        raise UserError(
            f"{ds.name} has {len(names)} speakers (groups); splitting by speaker needs at least 3,"
            " one each for training, validation and test: add more"
        )
    strata = np.zeros(len(names), dtype=object)
    if ds.sensitive is not None:
        first = {g: str(s) for g, s in zip(groups[::-1], np.asarray(ds.sensitive)[::-1], strict=True)}
        strata = np.array([first[g] for g in names], dtype=object)
    rng = np.random.default_rng(seed + 15_485_863)
    role: dict[str, str] = {}
    for stratum in sorted(set(strata.tolist()), key=str):
        members = names[strata == stratum][rng.permutation(int((strata == stratum).sum()))]
        k = len(members)
        # Each stratum with three or more groups gives at least one to validation and to test.
        n_test = max(1, round(k * test_fraction)) if k >= 3 else 0
        n_val = max(1, round(k * val_fraction)) if k >= 3 else 0
        for i, g in enumerate(members):
            role[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    if not {"train", "val", "test"} <= set(role.values()):  # small strata only: cut the whole list
        order = names[rng.permutation(len(names))]
        n_test = max(1, round(len(names) * test_fraction))
        n_val = max(1, round(len(names) * val_fraction))
        role = {
            g: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, g in enumerate(order)
        }
    where = np.array([role[g] for g in groups])
    return tuple(ds.subset(np.flatnonzero(where == part)) for part in ("train", "val", "test"))  # type: ignore[return-value]


def labeled_subset(y: np.ndarray, fraction: float | None = None, per_class: int | None = None, seed: int = 0):
    """Sorted positions of the rows whose labels are kept: a stratified ``fraction``, or ``per_class`` each.

    A fraction keeps at least one row of every class present (a class with
    no label cannot be learned); ``per_class`` refuses a class with fewer
    rows than asked. Seeded, independent of the split's stream.
    """
    rng = np.random.default_rng(seed + 104_729)
    classes = np.unique(y)
    picked = []
    for c in classes:
        rows = np.flatnonzero(y == c)
        if per_class is not None:
            if len(rows) < per_class:
                raise UserError(
                    f"class {c} has {len(rows)} training rows, fewer than the {per_class} shots asked;"
                    " ask for fewer shots"
                )
            k = per_class
        else:
            assert fraction is not None
            k = max(1, round(fraction * len(rows)))
        picked.append(rng.choice(rows, size=k, replace=False))
    return np.sort(np.concatenate(picked))
