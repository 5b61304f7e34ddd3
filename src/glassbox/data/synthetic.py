"""Seeded synthetic token tasks: MQAR (multi-query associative recall) and running parity.

Both return ``sequence`` / ``lm`` Datasets: ``X`` int64 ``(N, T)`` token ids
and ``y`` int64 ``(N, T)`` with the target at each scored position and -100
elsewhere, so the Trainer's loss and ``evaluate()["accuracy"]`` cover only
the positions that test the skill.

MQAR follows Zoology (Arora et al. 2023, ``zoology/data/multiquery_ar.py``)
with a 256-token vocabulary:

- keys come from [1, 128) and values from [128, 256), each drawn without
  replacement within a row, so every key appears once in the context;
- the ``num_kv_pairs`` pairs come first, as ``k1 v1 k2 v2 ...``;
- each key is then queried once, at an even offset ``2 * gap`` of the rest of
  the sequence, with gaps drawn without replacement from a power law
  ``p(gap = i) ∝ i ** (alpha - 1)``, ``i = 1..space`` (alpha = 0.01 favours
  queries soon after the context, as repeated bigrams in text are);
- the label sits on the query token itself: the model reads the key and must
  output its value at that same position. The next input token is *not* the
  value (it is filler), exactly as in Zoology, so a model cannot copy the
  answer from its input.

Filler is token 0 here; Zoology's default (``random_non_queries=True``)
replaces it with uniform random tokens, which ``random_fill=True`` does too.

>>> ds = mqar(n=2, seq_len=16, num_kv_pairs=2, seed=0)
>>> tuple(ds.X.shape), tuple(ds.y.shape), ds.kind, ds.task
((2, 16), (2, 16), 'sequence', 'lm')
>>> int((ds.y[0] != -100).sum())  # one scored position per pair
2
"""

from __future__ import annotations

import numpy as np
import torch

from glassbox.config import DataConfig
from glassbox.data.base import Dataset
from glassbox.data.sources import SOURCE_INFO, SOURCES
from glassbox.errors import UserError

VOCAB = 256
KEY_END = VOCAB // 2  # keys in [1, KEY_END), values in [KEY_END, VOCAB); 0 is filler
IGNORE = -100

# The registered sources are fixed, not recipe knobs (DataConfig has none for
# them): the same seed, size and pair count in every run, so numbers from
# different recipes compare. Only the length follows data.seq_len. Other
# settings: call mqar() / parity() from Python.
MQAR_SEED = 20231
MQAR_ROWS = 20_000
MQAR_PAIRS = 8
PARITY_SEED = 20232
PARITY_ROWS = 20_000


def _sample_without_replacement(rng: np.random.Generator, logits: np.ndarray, k: int, n: int) -> np.ndarray:
    """``(n, k)`` indices into ``logits`` drawn without replacement, in draw order.

    The Gumbel top-k trick: taking the k largest of ``logits + Gumbel`` is the
    same distribution as drawing one at a time with probabilities
    ``softmax(logits)`` and removing each draw, which is what Zoology's
    ``np.random.choice(replace=False, p=...)`` does row by row, but vectorized.
    """
    scores = logits[None, :] + rng.gumbel(size=(n, len(logits)))  # (n, m)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def mqar(
    n: int,
    seq_len: int,
    num_kv_pairs: int,
    seed: int,
    alpha: float = 0.01,
    random_fill: bool = False,
) -> Dataset:
    """``n`` MQAR rows of ``seq_len`` tokens with ``num_kv_pairs`` pairs each, reproducible from ``seed``.

    Needs ``4 * num_kv_pairs <= seq_len`` (Zoology's bound: the context and
    one even slot per query) and at most 127 pairs (distinct keys).
    """
    context = 2 * num_kv_pairs
    space = (seq_len - context) // 2  # even query slots after the context
    if num_kv_pairs < 1 or num_kv_pairs > KEY_END - 1:
        raise UserError(f"num_kv_pairs must be between 1 and {KEY_END - 1}, got {num_kv_pairs}")
    if space < num_kv_pairs:
        raise UserError(
            f"seq_len={seq_len} is too short for {num_kv_pairs} key-value pairs;"
            f" use seq_len >= {4 * num_kv_pairs}"
        )
    rng = np.random.default_rng(seed)
    flat = np.zeros(KEY_END - 1)
    keys = 1 + _sample_without_replacement(rng, flat, num_kv_pairs, n)  # (n, P) in [1, 128)
    values = KEY_END + _sample_without_replacement(rng, np.zeros(VOCAB - KEY_END), num_kv_pairs, n)
    # Power law over gaps 1..space, as Zoology: p_i = alpha * i ** (alpha - 1), normalised.
    p = alpha * np.arange(1, space + 1, dtype=np.float64) ** (alpha - 1)
    gaps = _sample_without_replacement(rng, np.log(p / p.sum()), num_kv_pairs, n)  # (n, P) in [0, space)

    X = np.zeros((n, seq_len), dtype=np.int64)
    X[:, 0:context:2] = keys
    X[:, 1:context:2] = values
    query_pos = context + 2 * gaps  # (n, P) absolute positions of the queries
    np.put_along_axis(X, query_pos, keys, axis=1)
    y = np.full((n, seq_len), IGNORE, dtype=np.int64)
    np.put_along_axis(y, query_pos, values, axis=1)  # the answer at the query position itself
    if random_fill:
        filler = X == 0
        X[filler] = rng.integers(0, VOCAB, size=int(filler.sum()))
    return Dataset(
        name="mqar",
        kind="sequence",
        task="lm",
        X=torch.from_numpy(X),  # (n, T)
        y=torch.from_numpy(y),  # (n, T)
        description=(
            f"MQAR: {num_kv_pairs} key-value pairs, then each key queried once; answer its value"
            f" (T={seq_len}, power-law gaps alpha={alpha}, seed {seed})"
        ),
    )


def parity(n: int, seq_len: int, seed: int) -> Dataset:
    """``n`` rows of random bits (tokens 0 and 1); the target at each position is the parity so far.

    Every position is scored. A model must carry one bit of state across the
    whole sequence: easy for a recurrence, hard for attention to learn.

    >>> ds = parity(n=1, seq_len=5, seed=0)
    >>> bool((ds.y[0] == ds.X[0].cumsum(0) % 2).all())
    True
    """
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(n, seq_len), dtype=np.int64)  # (n, T)
    return Dataset(
        name="parity",
        kind="sequence",
        task="lm",
        X=torch.from_numpy(bits),
        y=torch.from_numpy(np.cumsum(bits, axis=1) % 2),  # (n, T)
        description=f"running parity of random bits (T={seq_len}, seed {seed})",
    )


SOURCE_INFO["mqar"] = {
    "kind": "sequence",
    "description": (
        f"multi-query associative recall (Zoology): {MQAR_PAIRS} key-value pairs,"
        " recall each value when its key comes again; length data.seq_len"
    ),
}
SOURCE_INFO["parity"] = {
    "kind": "sequence",
    "description": "random bits; predict the running parity at every position; length data.seq_len",
}


@SOURCES.register("mqar")
def mqar_source(cfg: DataConfig) -> Dataset:
    ds = mqar(MQAR_ROWS, cfg.seq_len, MQAR_PAIRS, MQAR_SEED)
    ds.description = SOURCE_INFO["mqar"]["description"]
    return ds


@SOURCES.register("parity")
def parity_source(cfg: DataConfig) -> Dataset:
    ds = parity(PARITY_ROWS, cfg.seq_len, PARITY_SEED)
    ds.description = SOURCE_INFO["parity"]["description"]
    return ds
