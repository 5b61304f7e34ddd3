"""The synthetic token tasks: exact MQAR layout (Zoology's), ranges, determinism, registry entries."""

from __future__ import annotations

import pytest
import torch

from glassbox.data import load_dataset, split_dataset
from glassbox.data.synthetic import IGNORE, KEY_END, MQAR_PAIRS, mqar, parity
from glassbox.errors import UserError


def test_mqar_shapes_and_kinds() -> None:
    ds = mqar(n=50, seq_len=64, num_kv_pairs=8, seed=1)
    assert tuple(ds.X.shape) == tuple(ds.y.shape) == (50, 64)
    assert ds.X.dtype == ds.y.dtype == torch.long
    assert (ds.kind, ds.task) == ("sequence", "lm")
    assert int(ds.X.min()) >= 0 and int(ds.X.max()) < 256


def test_mqar_is_deterministic_per_seed() -> None:
    a, b = mqar(20, 64, 4, seed=3), mqar(20, 64, 4, seed=3)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    assert not torch.equal(a.X, mqar(20, 64, 4, seed=4).X)


@pytest.mark.parametrize(("seq_len", "pairs"), [(64, 16), (128, 8), (257, 3)])
def test_every_query_is_answered_by_its_pair(seq_len: int, pairs: int) -> None:
    ds = mqar(n=40, seq_len=seq_len, num_kv_pairs=pairs, seed=0)
    context = 2 * pairs
    for x, y in zip(ds.X.tolist(), ds.y.tolist(), strict=True):
        keys, values = x[0:context:2], x[1:context:2]
        assert all(1 <= k < KEY_END for k in keys) and len(set(keys)) == pairs
        assert all(KEY_END <= v < 256 for v in values) and len(set(values)) == pairs
        assert y[:context] == [IGNORE] * context  # nothing scored inside the context
        scored = [t for t in range(seq_len) if y[t] != IGNORE]
        assert len(scored) == pairs
        # Each key is queried exactly once, at an even offset after the context,
        # and the label on the query token is the value paired with that key.
        assert sorted(x[t] for t in scored) == sorted(keys)
        assert all((t - context) % 2 == 0 for t in scored)
        pair = dict(zip(keys, values, strict=True))
        assert all(y[t] == pair[x[t]] for t in scored)
        # Filler is 0 everywhere else; the value never follows its query.
        assert all(x[t] == 0 for t in range(context, seq_len) if t not in scored)


def test_mqar_gaps_favour_early_queries() -> None:
    ds = mqar(n=400, seq_len=256, num_kv_pairs=4, seed=0)
    offsets = (ds.y != IGNORE).nonzero()[:, 1] - 8  # (N * 4,) positions after the context
    # alpha = 0.01 puts most queries near the context, but some reach far.
    assert offsets.float().median() < 40 and offsets.max() > 150


def test_mqar_random_fill_keeps_the_answers() -> None:
    plain = mqar(30, 64, 8, seed=2)
    noisy = mqar(30, 64, 8, seed=2, random_fill=True)
    assert torch.equal(plain.y, noisy.y)
    scored = plain.y != IGNORE
    assert torch.equal(plain.X[scored], noisy.X[scored])
    assert (noisy.X[:, 16:] != 0).float().mean() > 0.9


def test_mqar_rejects_too_many_pairs() -> None:
    with pytest.raises(UserError, match="seq_len >= 64"):
        mqar(1, 60, 16, seed=0)
    with pytest.raises(UserError, match="num_kv_pairs"):
        mqar(1, 1024, 200, seed=0)


def test_parity_targets() -> None:
    ds = parity(n=10, seq_len=33, seed=5)
    assert tuple(ds.X.shape) == tuple(ds.y.shape) == (10, 33)
    assert set(ds.X.unique().tolist()) <= {0, 1}
    assert torch.equal(ds.y, ds.X.cumsum(1) % 2)
    assert torch.equal(ds.X, parity(10, 33, seed=5).X)


def test_registered_sources_follow_seq_len_and_split() -> None:
    ds = load_dataset("mqar", seq_len=64)
    assert tuple(ds.X.shape) == (20_000, 64)
    assert int((ds.y[0] != IGNORE).sum()) == MQAR_PAIRS
    train, val, test = split_dataset(ds, 0.1, 0.1, seed=0)
    assert len(train) + len(val) + len(test) == len(ds)
    assert load_dataset("parity", seq_len=16).X.shape[1] == 16
    with pytest.raises(UserError, match="too short"):
        load_dataset("mqar", seq_len=16)
