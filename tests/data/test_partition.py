"""Client partitions are disjoint, complete, seeded, skewed as asked, and reject bad input in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glassbox.data import Dataset, load_dataset
from glassbox.data.partition import column_values, partition, partition_summary
from glassbox.errors import UserError

SCHEMES = ["iid", "dirichlet", "classes"]


@pytest.fixture(scope="module")
def iris() -> Dataset:
    return load_dataset("iris")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def fraud() -> Dataset:
    return load_dataset("fraud")


def synthetic(n: int = 300, n_classes: int = 5, seed: int = 0) -> Dataset:
    """Imbalanced labels (class k has weight k + 1) and a one-hot family "site=..." with a missing value."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, n_classes + 1) / np.arange(1, n_classes + 1).sum()
    y = rng.choice(n_classes, size=n, p=p)
    site = rng.choice(4, size=n)  # 3 = no site: an all-zero one-hot row
    onehot = np.stack([(site == s).astype(np.float32) for s in range(3)], axis=1)
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 3, n), onehot]).astype(np.float32)
    return Dataset(
        name="synthetic",
        kind="tabular",
        task="classification",
        X=torch.from_numpy(X),
        y=torch.from_numpy(y),
        feature_names=["noise", "tier", "site=north", "site=south", "site=east"],
        classes=[f"c{k}" for k in range(n_classes)],
    )


def lm_data(n: int = 20) -> Dataset:
    return Dataset(
        name="windows",
        kind="text",
        task="lm",
        X=torch.zeros(n, 9, dtype=torch.long),
        y=torch.zeros(n, dtype=torch.long),
    )


def assert_disjoint_sorted(parts: list[np.ndarray], n: int) -> np.ndarray:
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)  # sorted, no repeats
    held = np.concatenate(parts)
    assert len(np.unique(held)) == len(held) and (held.min() >= 0) and (held.max() < n)
    return held


@pytest.mark.parametrize("name", ["iris", "digits", "synthetic"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_disjoint_complete_and_seeded(name: str, scheme: str, request: pytest.FixtureRequest) -> None:
    ds = synthetic() if name == "synthetic" else request.getfixturevalue(name)
    n_clients = 5 if name != "digits" else 10
    # classes_per_client=2 with 5 or 10 clients covers every class of each dataset.
    parts = partition(ds, n_clients, scheme, seed=1)
    assert len(parts) == n_clients
    held = assert_disjoint_sorted(parts, len(ds))
    assert sorted(held.tolist()) == list(range(len(ds)))
    again = partition(ds, n_clients, scheme, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition(ds, n_clients, scheme, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_sizes_are_near_equal(digits: Dataset) -> None:
    sizes = [len(p) for p in partition(digits, 7, "iid")]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(digits)


def test_dirichlet_skew_falls_as_alpha_grows(digits: Dataset) -> None:
    skews = [
        partition_summary(digits, partition(digits, 10, "dirichlet", alpha=a, seed=0))["skew"]
        for a in (0.1, 1.0, 100.0)
    ]
    assert skews[0] > skews[1] > skews[2]
    assert skews[0] > 0.5 and skews[2] < 0.1


def test_dirichlet_large_alpha_is_near_proportional(digits: Dataset) -> None:
    parts = partition(digits, 10, "dirichlet", alpha=1e4, seed=0)
    hist = np.array(partition_summary(digits, parts)["label_histograms"], dtype=float)
    share = hist / hist.sum(0)  # (clients, classes): each client's share of each class
    assert np.abs(share - 0.1).max() < 0.02  # rounding moves at most a row per cut


def test_dirichlet_min_size_redraws_until_met(digits: Dataset) -> None:
    # With min_size=1, seed 1's first draw leaves a client with 8 rows; the
    # same seed with min_size=40 must redraw (the first try is the same draw).
    first = partition(digits, 10, "dirichlet", alpha=0.1, seed=1)
    assert min(len(p) for p in first) < 40
    redrawn = partition(digits, 10, "dirichlet", alpha=0.1, seed=1, min_size=40)
    assert min(len(p) for p in redrawn) >= 40
    assert sorted(np.concatenate(redrawn).tolist()) == list(range(len(digits)))


def test_dirichlet_impossible_min_size_raises(iris: Dataset) -> None:
    # Three classes at a tiny alpha reach about three clients: 20 can never all get 5 rows.
    with pytest.raises(UserError, match="raise alpha, lower n_clients or lower min_size"):
        partition(iris, 20, "dirichlet", alpha=0.001, min_size=5)
    with pytest.raises(UserError, match="need 1600 rows, but the data has 150"):
        partition(iris, 16, "dirichlet", min_size=100)


@pytest.mark.parametrize(("n_clients", "k"), [(5, 2), (10, 2), (3, 4), (4, 1), (10, 10)])
def test_classes_each_client_holds_exactly_k(digits: Dataset, n_clients: int, k: int) -> None:
    parts = partition(digits, n_clients, "classes", classes_per_client=k, seed=3)
    hist = np.array(partition_summary(digits, parts)["label_histograms"])
    assert ((hist > 0).sum(1) == k).all()
    held_classes = (hist > 0).any(0)
    y = digits.y.numpy()
    held = assert_disjoint_sorted(parts, len(digits))
    if n_clients * k >= digits.n_classes:
        assert held_classes.all() and len(held) == len(digits)
    else:
        # Unheld classes are dropped whole; every row of a held class is kept.
        assert held_classes.sum() == n_clients * k
        assert sorted(held.tolist()) == np.flatnonzero(held_classes[y]).tolist()


def test_classes_split_a_class_evenly_among_its_holders(digits: Dataset) -> None:
    hist = np.array(
        partition_summary(digits, partition(digits, 10, "classes", classes_per_client=3))["label_histograms"]
    )
    for c in range(digits.n_classes):
        counts = hist[:, c][hist[:, c] > 0]
        assert counts.max() - counts.min() <= 1


def test_column_sensitive_gives_one_client_per_group(fraud: Dataset) -> None:
    parts = partition(fraud, 0, "column", column="group")
    assert column_values(fraud, "group") == ["A", "B", "C"]
    for value, p in zip("ABC", parts, strict=True):
        assert np.array_equal(p, np.flatnonzero(fraud.sensitive == value))
    assert [len(p) for p in partition(fraud, 3, "column", column="group")] == [len(p) for p in parts]
    assert [len(p) for p in partition(fraud, None, "column", column="group")] == [len(p) for p in parts]


def test_column_one_hot_family(fraud: Dataset) -> None:
    parts = partition(fraud, 4, "column", column="channel")
    assert column_values(fraud, "channel") == ["atm", "online", "phone", "pos"]
    names = fraud.feature_names
    for value, p in zip(["atm", "online", "phone", "pos"], parts, strict=True):
        assert np.array_equal(p, np.flatnonzero(fraud.X[:, names.index(f"channel={value}")].numpy() == 1))


def test_column_one_hot_missing_and_numeric_feature() -> None:
    ds = synthetic()
    parts = partition(ds, 0, "column", column="site")
    assert column_values(ds, "site") == ["north", "south", "east", "(missing)"]
    assert np.array_equal(parts[3], np.flatnonzero(ds.X[:, 2:].sum(1).numpy() == 0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(ds)))
    tiers = partition(ds, 3, "column", column="tier")
    assert column_values(ds, "tier") == ["0", "1", "2"]
    for t, p in enumerate(tiers):
        assert np.array_equal(p, np.flatnonzero(ds.X[:, 1].numpy() == t))


def test_summary_is_json_and_consistent(iris: Dataset) -> None:
    parts = partition(iris, 4, "dirichlet", alpha=0.3, seed=5)
    s = partition_summary(iris, parts)
    assert json.loads(json.dumps(s)) == s
    assert s["clients"] == 4 and s["classes"] == iris.classes
    assert s["sizes"] == [len(p) for p in parts] and sum(s["sizes"]) == 150
    assert s["min_size"] == min(s["sizes"]) and s["max_size"] == max(s["sizes"])
    assert [sum(h) for h in s["label_histograms"]] == s["sizes"]
    assert np.array(s["label_histograms"]).sum(0).tolist() == [50, 50, 50]
    assert partition_summary(iris, partition(iris, 3, "iid"))["skew"] < 0.15


def test_lm_data_is_iid_only() -> None:
    ds = lm_data()
    parts = partition(ds, 4, "iid")
    assert [len(p) for p in parts] == [5, 5, 5, 5]
    s = partition_summary(ds, parts)
    assert s["label_histograms"] is None and s["skew"] is None
    for scheme in ("dirichlet", "classes"):
        with pytest.raises(UserError, match="language-model dataset; use scheme='iid'"):
            partition(ds, 4, scheme)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_clients": 0}, r"n_clients=0 must be between 1 and the 150 rows"),
        ({"n_clients": 151}, r"n_clients=151 must be between 1 and the 150 rows"),
        ({"n_clients": 2.5}, r"n_clients must be a whole number"),
        ({"scheme": "diriclet"}, r"unknown partition scheme 'diriclet': did you mean 'dirichlet'"),
        ({"scheme": "dirichlet", "alpha": 0}, r"alpha must be a number > 0"),
        ({"scheme": "dirichlet", "alpha": float("nan")}, r"alpha must be a number > 0"),
        ({"scheme": "classes", "classes_per_client": 4}, r"classes_per_client=4 must be between 1 and the 3"),
        ({"scheme": "classes", "classes_per_client": 0}, r"classes_per_client=0"),
        ({"column": "species"}, r"only used by scheme='column'"),
        ({"scheme": "column"}, r"scheme='column' needs column=NAME"),
        ({"scheme": "column", "column": "sepal lenght"}, r"not in dataset 'iris': did you mean"),
        ({"min_size": -1}, r"min_size must be a whole number >= 0"),
        ({"n_clients": 100, "min_size": 2}, r"client \d+ has 1 rows, fewer than min_size=2"),
    ],
)
def test_bad_input_raises_one_line(iris: Dataset, kwargs: dict, message: str) -> None:
    args = {"n_clients": 3, **kwargs}
    with pytest.raises(UserError, match=message) as err:
        partition(iris, **args)
    assert "\n" not in str(err.value)


def test_column_n_clients_must_match_and_values_be_few(fraud: Dataset) -> None:
    with pytest.raises(UserError, match=r"has 3 values \(A, B, C\).*set n_clients=3 or 0"):
        partition(fraud, 5, "column", column="group")
    with pytest.raises(UserError, match=r"feature 'amount' has \d+ distinct values, too many.*bin it first"):
        partition(fraud, 0, "column", column="amount")


def test_classes_too_few_rows_for_holders() -> None:
    ds = synthetic(n=30, n_classes=5)
    # 30 clients x 5 classes: every class has 30 holders but fewer rows.
    with pytest.raises(UserError, match=r"class 'c\d' has \d+ rows but 30 clients hold it"):
        partition(ds, 30, "classes", classes_per_client=5, min_size=0)
