"""Splits are stratified, disjoint, complete and seeded; label flips are exact and traceable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassbox.data import Dataset, flip_labels, load_dataset, split_dataset
from glassbox.errors import UserError


def toy(labels: list[int], n_classes: int | None = None) -> Dataset:
    n = len(labels)
    return Dataset(
        name="toy",
        kind="tabular",
        task="classification",
        X=torch.arange(n, dtype=torch.float32)[:, None],  # (N, 1) each row's own id
        y=torch.tensor(labels),
        feature_names=["id"],
        classes=[str(c) for c in range(n_classes or max(labels) + 1)],
        sensitive=np.array([f"g{i % 3}" for i in range(n)]),
        sensitive_name="grp",
    )


def test_split_is_disjoint_complete_and_aligned() -> None:
    ds = load_dataset("wine")
    parts = split_dataset(ds, 0.15, 0.2, seed=3)
    ids = torch.cat([p.index for p in parts])
    assert sorted(ids.tolist()) == list(range(len(ds)))
    for part in parts:
        assert torch.equal(part.X, ds.X[part.index]) and torch.equal(part.y, ds.y[part.index])
        assert torch.equal(part.index, part.index.sort().values)  # source order kept
    assert [len(p) for p in parts] == [len(ds) - 27 - 36, 27, 36]


def test_split_is_stratified() -> None:
    ds = load_dataset("fraud")
    overall = ds.y.float().mean().item()
    for part in split_dataset(ds, 0.15, 0.2, seed=0):
        assert abs(part.y.float().mean().item() - overall) < 0.002
        assert part.sensitive is not None and len(part.sensitive) == len(part)


def test_split_is_seeded() -> None:
    ds = load_dataset("iris")
    a = split_dataset(ds, 0.2, 0.2, seed=1)
    b = split_dataset(ds, 0.2, 0.2, seed=1)
    c = split_dataset(ds, 0.2, 0.2, seed=2)
    assert all(torch.equal(x.index, y.index) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[2].index, c[2].index)


def test_unstratifiable_falls_back() -> None:
    ds = toy([0] * 10 + [1])  # one row of class 1 cannot be in two parts
    parts = split_dataset(ds, 0.2, 0.2, seed=0)
    assert sorted(torch.cat([p.index for p in parts]).tolist()) == list(range(11))


def test_too_few_rows() -> None:
    with pytest.raises(UserError, match="too few"):
        split_dataset(toy([0, 1]), 0.2, 0.2, seed=0)


def test_fractions_must_leave_training_rows() -> None:
    with pytest.raises(UserError, match="sum to less than 1"):
        split_dataset(toy([0, 1] * 10), 0.5, 0.5, seed=0)


def test_lm_split_is_contiguous() -> None:
    ds = load_dataset("python-corpus", seq_len=31, max_bytes=32_000)  # 1000 windows
    train, val, test = split_dataset(ds, 0.15, 0.2, seed=0)
    assert (len(train), len(val), len(test)) == (650, 150, 200)
    assert train.index.tolist() == list(range(650))
    assert val.index.tolist() == list(range(650, 800))
    assert test.index.tolist() == list(range(800, 1000))
    assert torch.equal(split_dataset(ds, 0.15, 0.2, seed=9)[2].X, test.X)  # the seed does not matter


def test_flip_labels_exact() -> None:
    ds = load_dataset("wine")
    noisy, flipped = flip_labels(ds, 0.1, seed=0)
    assert len(flipped) == round(0.1 * len(ds)) == 18
    assert np.array_equal(flipped, np.sort(flipped)) and len(set(flipped.tolist())) == 18
    changed = np.flatnonzero((noisy.y != ds.y).numpy())
    assert np.array_equal(changed, flipped)  # every flip lands on a different class, nothing else moves
    assert int(noisy.y.max()) < ds.n_classes
    assert torch.equal(noisy.X, ds.X) and torch.equal(ds.y, load_dataset("wine").y)  # input untouched


def test_flip_labels_seeded_and_uniform() -> None:
    ds = toy([0] * 3000, n_classes=3)
    a, pos_a = flip_labels(ds, 0.5, seed=4)
    b, pos_b = flip_labels(ds, 0.5, seed=4)
    assert np.array_equal(pos_a, pos_b) and torch.equal(a.y, b.y)
    counts = torch.bincount(a.y[torch.from_numpy(pos_a)], minlength=3).tolist()
    assert counts[0] == 0 and abs(counts[1] - counts[2]) < 150  # ~750 each


def test_flip_positions_map_to_source_rows() -> None:
    ds = load_dataset("iris")
    _, val, _ = split_dataset(ds, 0.3, 0.2, seed=0)
    noisy, flipped = flip_labels(val, 0.2, seed=0)
    source_rows = val.index[torch.from_numpy(flipped)]
    assert torch.equal(noisy.X[torch.from_numpy(flipped)], ds.X[source_rows])


def test_flip_zero_is_identity() -> None:
    ds = toy([0, 1, 0, 1])
    noisy, flipped = flip_labels(ds, 0.0, seed=0)
    assert len(flipped) == 0 and torch.equal(noisy.y, ds.y)


def test_flip_refuses_lm() -> None:
    ds = load_dataset("python-corpus", seq_len=31, max_bytes=4_000)
    with pytest.raises(UserError, match="language-model") as err:
        flip_labels(ds, 0.1, seed=0)
    assert "\n" not in str(err.value)
