"""Average sensitivity of a classifier: how many single-position changes of an input flip its decision.

For a boolean function ``f`` on ``{0,1}^n`` the average sensitivity is
``E_x[#{i : f(x) != f(x with bit i flipped)}]``, between 0 (a constant) and
``n`` (parity). Transformers find low-sensitivity functions easy and
high-sensitivity ones hard ("Why are Sensitive Functions Hard for
Transformers?", Hahn and Rofin, 2024, and the 2025 follow-ups): majority
(sensitivity about ``sqrt(2n/pi)``) and sparse parities (``k``) are learned
from a few thousand rows, full parity (``n``) is not, and what a trained model
computes on it has low sensitivity whatever the labels say.

``average_sensitivity`` measures it for any classifier, one position at a
time, every perturbed copy of a chunk of rows in one batch:

- ``boolean``: flip each bit; exact per row (all ``n`` flips are tried);
- ``tabular``: replace feature ``j`` by a draw of feature ``j`` from ``pool``
  (the empirical marginal of the training rows);
- ``image``: replace one ``patch x patch`` square by the same square of a
  random ``pool`` image;
- ``sequence``: replace one token by a token drawn uniformly from the
  vocabulary seen in ``pool``.

The three real-valued variants are resampling sensitivities: a draw may equal
the current value and then changes nothing, so on a boolean input resampling
a uniform bit gives half the flip sensitivity. ``draws`` repeats each
position's draw to lower the noise of the per-row estimate.

``boolean_task`` makes exact boolean functions (majority, sparse parity,
parity) into glassbox ``Dataset`` objects the transformer trains on, and
``true_sensitivity`` gives their known values; ``SensitivityTracker`` logs a
model's sensitivity on a fixed probe at each epoch end.

>>> g = torch.Generator().manual_seed(0)
>>> X = torch.randint(0, 2, (256, 9), generator=g).float()
>>> average_sensitivity(parity, X, "boolean")["mean"]
9.0
>>> round(true_sensitivity("majority", 9), 3)
2.461
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from glassbox.errors import UserError, did_you_mean
from glassbox.train.callbacks import Callback

if TYPE_CHECKING:
    from torch import nn

    from glassbox.data.base import Dataset
    from glassbox.train.trainer import Trainer

Predict = Callable[[torch.Tensor], torch.Tensor]

KINDS = ("boolean", "tabular", "image", "sequence")
BOOLEAN_FUNCTIONS = ("majority", "sparse_parity", "parity")
DEFAULT_K = 3  # sparse parity: few enough relevant bits to be learnable at n = 20
BATCH = 8192  # perturbed inputs per predict call: large enough to amortize, small enough for memory
ELEMENTS = 1 << 24  # values in one chunk of perturbed copies (64 MiB of float32), for large images


# -- the measurement ---------------------------------------------------------------------------------


def _positions(X: torch.Tensor, kind: str, patch: int) -> int:
    if kind == "image":
        if X.ndim != 4:
            raise UserError(f"kind 'image' needs X of shape (N, C, H, W); got {tuple(X.shape)}")
        H, W = X.shape[-2:]
        if patch < 1 or H % patch or W % patch:
            raise UserError(f"patch {patch} does not tile {H} x {W} images; choose a divisor of both sides")
        return (H // patch) * (W // patch)
    if X.ndim != 2:
        raise UserError(f"kind '{kind}' needs X of shape (N, n); got {tuple(X.shape)}; flatten each row")
    return X.shape[1]


def _check(X: torch.Tensor, kind: str, pool: torch.Tensor | None, patch: int) -> int:
    """Validate the inputs; the number of positions."""
    if kind not in KINDS:
        raise UserError(f"unknown sensitivity kind '{kind}': {did_you_mean(kind, KINDS)}")
    if not isinstance(X, torch.Tensor) or len(X) == 0:
        raise UserError("X must be a non-empty tensor of input rows (B, ...); pass at least one row")
    n = _positions(X, kind, patch)
    if kind == "boolean" and not bool(((X == 0) | (X == 1)).all()):
        raise UserError("kind 'boolean' needs X with values in {0, 1}; use kind 'tabular' for real features")
    if kind == "sequence" and (X.is_floating_point() or X.is_complex()):
        raise UserError("kind 'sequence' needs integer token ids; convert X with X.long()")
    if pool is not None:
        if kind == "boolean":
            raise UserError("kind 'boolean' flips bits and uses no pool; drop the pool argument")
        if len(pool) == 0 or (kind != "sequence" and pool.shape[1:] != X.shape[1:]):
            raise UserError(
                f"pool rows must have the shape of X's rows {tuple(X.shape[1:])}; got {tuple(pool.shape)}"
            )
    return n


def _copies(
    x: torch.Tensor, kind: str, pool: torch.Tensor, vocab: torch.Tensor | None, patch: int, draws: int,
    generator: torch.Generator,
) -> torch.Tensor:  # fmt: skip
    """Every single-position perturbation of the rows ``x`` (b, ...): (b, draws, n, ...)."""
    b = len(x)
    if kind == "image":
        H, W = x.shape[-2:]
        gh, gw = H // patch, W // patch
        # mask[q] covers patch q, in row-major order over the grid of patches.
        cells = torch.arange(gh * gw).reshape(gh, gw)
        cells = cells.repeat_interleave(patch, 0).repeat_interleave(patch, 1)  # (H, W) patch of each pixel
        mask = (cells[None] == torch.arange(gh * gw)[:, None, None]).to(x.device)  # (n, H, W)
        rows = torch.randint(len(pool), (b, draws, gh * gw), generator=generator).to(x.device)
        donors = pool[rows]  # (b, draws, n, C, H, W)
        return torch.where(mask[:, None], donors, x[:, None, None])
    n = x.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=x.device)  # eye[j] marks the position copy j changes
    if kind == "boolean":
        flipped = ~x if x.dtype == torch.bool else 1 - x
        return torch.where(eye, flipped[:, None, :], x[:, None, :])[:, None]  # (b, 1, n, n)
    if kind == "tabular":
        rows = torch.randint(len(pool), (b, draws, n), generator=generator).to(x.device)
        values = pool[rows, torch.arange(n, device=x.device)]  # (b, draws, n): feature j of a random row
    else:
        assert vocab is not None
        values = vocab[torch.randint(len(vocab), (b, draws, n), generator=generator).to(x.device)]
    return torch.where(eye, values[..., None], x[:, None, None, :])  # (b, draws, n, n)


def _predict(predict: Predict, x: torch.Tensor) -> torch.Tensor:
    out = torch.cat([torch.as_tensor(predict(x[i : i + BATCH])) for i in range(0, len(x), BATCH)])
    if out.shape != (len(x),):
        raise UserError(
            f"predict must return one class id per row, shape ({len(x)},); got {tuple(out.shape)};"
            " return logits.argmax(-1)"
        )
    return out


def average_sensitivity(
    predict: Predict,
    X: torch.Tensor,
    kind: str,
    *,
    n_rows: int | None = None,
    generator: torch.Generator | None = None,
    pool: torch.Tensor | None = None,
    patch: int = 2,
    draws: int = 1,
) -> dict[str, Any]:
    """How many single-position perturbations of a row change ``predict``'s class, on average over rows.

    ``predict`` maps a batch ``(B, ...)`` to class ids ``(B,)`` (``predict_fn``
    wraps a glassbox model). ``kind`` is ``boolean``, ``tabular``, ``image`` or
    ``sequence`` (see the module docstring); ``pool`` holds the rows the
    replacements come from (the training rows; by default ``X`` itself), unused
    for ``boolean``. ``n_rows``: measure on a seeded random subset of that many
    rows of ``X`` (default all). ``patch``: side of the replaced square of an
    image. ``draws``: replacement draws per row and position (not ``boolean``,
    which is exact). ``generator`` seeds every draw (default: seed 0).

    Returns ``mean`` (expected number of decision-changing positions),
    ``stderr`` (its standard error over rows), ``n`` (positions), ``normalized``
    (``mean / n``), ``per_position`` (the rate at which each position changes
    the decision; image patches in row-major order, ``grid`` their layout),
    ``rows``, ``kind`` and ``draws``.

    >>> X = torch.eye(4)[:3]                 # three rows of 4 bits
    >>> res = average_sensitivity(lambda x: x[:, 0].long(), X, "boolean")
    >>> res["mean"], res["per_position"]       # only bit 0 matters, and always
    (1.0, [1.0, 0.0, 0.0, 0.0])
    """
    n = _check(X, kind, pool, patch)
    if draws < 1:
        raise UserError(f"draws must be at least 1; got {draws}")
    if n_rows is not None and n_rows < 1:
        raise UserError(f"n_rows must be at least 1 (or None for every row); got {n_rows}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    pool = X if pool is None else pool.to(X.device, X.dtype)  # every row of X, before any subsetting
    if n_rows is not None and n_rows < len(X):
        X = X[torch.randperm(len(X), generator=g)[:n_rows].to(X.device)]
    draws = 1 if kind == "boolean" else draws
    vocab = torch.unique(pool) if kind == "sequence" else None
    base = _predict(predict, X)  # (N,)
    per_row_copies = draws * n
    chunk = max(1, min(BATCH // per_row_copies, ELEMENTS // (per_row_copies * X[0].numel())))
    per_row, per_position = [], torch.zeros(n, dtype=torch.float64)
    for i in range(0, len(X), chunk):
        x = X[i : i + chunk]
        copies = _copies(x, kind, pool, vocab, patch, draws, g)  # (b, draws, n, ...)
        pred = _predict(predict, copies.flatten(0, 2)).reshape(len(x), draws, n)
        changed = (pred != base[i : i + chunk, None, None].to(pred.device)).double().mean(1).cpu()  # (b, n)
        per_row.append(changed.sum(1))
        per_position += changed.sum(0)
    s = torch.cat(per_row)  # (N,) each row's number of decision-changing positions
    N = len(s)
    stderr = float(s.std(unbiased=True) / math.sqrt(N)) if N > 1 else float("nan")
    out: dict[str, Any] = {
        "kind": kind,
        "mean": float(s.mean()),
        "stderr": stderr,
        "n": n,
        "normalized": float(s.mean()) / n,
        "per_position": (per_position / N).tolist(),
        "rows": N,
        "draws": draws,
    }
    if kind == "image":
        out["patch"] = patch
        out["grid"] = [X.shape[-2] // patch, X.shape[-1] // patch]
    return out


def predict_fn(model: nn.Module, batch: int = 1024) -> Predict:
    """``predict`` for a classifier: the argmax class, under no_grad, in eval mode (its mode restored).

    >>> model = torch.nn.Linear(3, 2)
    >>> predict_fn(model)(torch.zeros(5, 3)).shape
    torch.Size([5])
    """

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        was = model.training
        model.eval()  # dropout would make decisions, and so sensitivity, partly noise
        try:
            return torch.cat([model(x[i : i + batch]).argmax(-1) for i in range(0, len(x), batch)])
        finally:
            model.train(was)

    return predict


# -- exact boolean functions ----------------------------------------------------------------------


def majority(X: torch.Tensor) -> torch.Tensor:
    """1 where at least half the bits are 1 (ties, at even n, go to 1): (B, n) -> (B,)."""
    n = X.shape[-1]
    return (X.sum(-1) >= math.ceil(n / 2)).long()


def parity(X: torch.Tensor, subset: list[int] | None = None) -> torch.Tensor:
    """Parity of the bits in ``subset`` (default all): (B, n) -> (B,)."""
    bits = X if subset is None else X[:, subset]
    return bits.sum(-1).long() % 2


def sparse_parity_subset(n: int, k: int, seed: int) -> list[int]:
    """The ``k`` relevant bits of a sparse parity, seeded: sorted positions in ``range(n)``."""
    if not 1 <= k <= n:
        raise UserError(f"sparse parity needs 1 <= k <= n; got k={k}, n={n}")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


def _check_name(name: str, n: int) -> None:
    if name not in BOOLEAN_FUNCTIONS:
        raise UserError(f"unknown boolean function '{name}': {did_you_mean(name, BOOLEAN_FUNCTIONS)}")
    if n < 1:
        raise UserError(f"n (the number of bits) must be at least 1; got {n}")


def boolean_function(name: str, n: int, *, k: int | None = None, seed: int = 0) -> Predict:
    """``majority``, ``sparse_parity`` (of ``k`` bits chosen by ``seed``; default 3) or ``parity`` on n bits.

    >>> f = boolean_function("sparse_parity", 6, k=2, seed=0)
    >>> f(torch.ones(1, 6)).tolist()
    [0]
    """
    _check_name(name, n)
    if name == "majority":
        return majority
    if name == "parity":
        return parity
    subset = sparse_parity_subset(n, DEFAULT_K if k is None else k, seed)
    return lambda X: parity(X, subset)


def true_sensitivity(name: str, n: int, *, k: int | None = None) -> float:
    """The exact average sensitivity under uniform inputs: parity ``n``, sparse parity ``k``, majority below.

    Majority with threshold ``t = ceil(n / 2)`` changes only at Hamming weights
    ``t`` (any of its ``t`` ones) and ``t - 1`` (any of its ``n - t + 1``
    zeros): ``n C(n-1, t-1) / 2^(n-1)``, which is ``n C(n-1, (n-1)/2) / 2^(n-1)``
    at odd n and tends to ``sqrt(2 n / pi)``.

    >>> true_sensitivity("parity", 20), true_sensitivity("sparse_parity", 20, k=3)
    (20.0, 3.0)
    >>> round(true_sensitivity("majority", 20), 3), round(math.sqrt(40 / math.pi), 3)
    (3.524, 3.568)
    """
    _check_name(name, n)
    if name == "parity":
        return float(n)
    if name == "sparse_parity":
        kk = DEFAULT_K if k is None else k
        if not 1 <= kk <= n:
            raise UserError(f"sparse parity needs 1 <= k <= n; got k={kk}, n={n}")
        return float(kk)
    t = math.ceil(n / 2)
    return n * math.comb(n - 1, t - 1) / 2 ** (n - 1)


def boolean_task(name: str, n: int, rows: int, seed: int, *, k: int | None = None) -> Dataset:
    """A tabular classification Dataset: ``rows`` uniform random bit strings and ``name``'s value on each.

    ``X`` is float 0/1 ``(rows, n)``, classes ``["0", "1"]``, so that
    ``build_model`` and ``Trainer`` take it as they take any table. ``seed``
    draws the rows and, for ``sparse_parity``, its ``k`` relevant bits (the
    same ones ``boolean_function(name, n, k=k, seed=seed)`` uses; ``k`` is
    ignored by the other functions).

    >>> ds = boolean_task("parity", 5, rows=4, seed=0)
    >>> ds.kind, tuple(ds.X.shape), ds.classes, bool((ds.y == ds.X.sum(1) % 2).all())
    ('tabular', (4, 5), ['0', '1'], True)
    """
    from glassbox.data.base import Dataset

    f = boolean_function(name, n, k=k, seed=seed)
    if rows < 1:
        raise UserError(f"rows must be at least 1; got {rows}")
    # Rows from their own stream, so that changing k (the subset) leaves the rows as they were.
    g = torch.Generator().manual_seed(seed * 1_000_003 + 1)
    X = torch.randint(0, 2, (rows, n), generator=g).float()  # (rows, n)
    what = {"majority": "majority", "parity": "parity of all bits"}.get(name)
    if what is None:
        what = f"parity of bits {sparse_parity_subset(n, DEFAULT_K if k is None else k, seed)}"
    return Dataset(
        name=name,
        kind="tabular",
        task="classification",
        X=X,
        y=f(X),
        feature_names=[f"x{i}" for i in range(n)],
        classes=["0", "1"],
        description=f"{what} of {n} uniform random bits (seed {seed}); true sensitivity "
        f"{true_sensitivity(name, n, k=k):.3f}",
    )


# -- during training ------------------------------------------------------------------------------


class SensitivityTracker(Callback):
    """Logs the model's average sensitivity on a fixed probe at epoch ends, into ``trainer.history_``.

    ``probe_X``: the inputs to measure on (at most ``n_rows`` of them, a fixed
    subset; each costs ``n`` forwards per measurement, so keep it near 64).
    ``kind``, ``pool``, ``patch``, ``draws``: as ``average_sensitivity``. The
    draws are reseeded with ``seed`` at every measurement, so a change
    between epochs is the model's, not the sampling's. ``every``: measure
    every n-th epoch. Each record is ``{"epoch", "step", "sensitivity",
    "sensitivity_normalized"}`` and ends up in the run's metrics.jsonl.

    >>> from glassbox.config import ModelConfig, TrainConfig
    >>> from glassbox.nn import build_model
    >>> from glassbox.train import Trainer
    >>> data = boolean_task("majority", 5, rows=64, seed=0)
    >>> model = build_model(ModelConfig(dim=16, depth=1, heads=2, dropout=0.0), data)
    >>> tracker = SensitivityTracker(data.X[:16], "boolean")
    >>> _ = Trainer(model, TrainConfig(epochs=2, batch_size=32, patience=None), callbacks=[tracker]).fit(data)
    >>> [sorted(r) for r in tracker.records_][0]
    ['epoch', 'sensitivity', 'sensitivity_normalized', 'step']
    """

    def __init__(
        self,
        probe_X: torch.Tensor,
        kind: str,
        pool: torch.Tensor | None = None,
        every: int = 1,
        *,
        n_rows: int = 64,
        patch: int = 2,
        draws: int = 1,
        seed: int = 0,
    ) -> None:
        _check(probe_X, kind, pool, patch)  # fail before training, not after the first epoch
        if every < 1:
            raise UserError(f"every must be at least 1 (epochs between measurements); got {every}")
        self.probe_X, self.kind, self.pool, self.every = probe_X, kind, pool, every
        self.n_rows, self.patch, self.draws, self.seed = n_rows, patch, draws, seed
        self.records_: list[dict[str, Any]] = []
        self.last_: dict[str, Any] | None = None

    def measure(self, model: nn.Module) -> dict[str, Any]:
        """``average_sensitivity`` of ``model`` on the probe, with this tracker's fixed draws."""
        return average_sensitivity(
            predict_fn(model),
            self.probe_X,
            self.kind,
            n_rows=self.n_rows,
            generator=torch.Generator().manual_seed(self.seed),
            pool=self.pool,
            patch=self.patch,
            draws=self.draws,
        )

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if epoch % self.every:
            return
        self.last_ = self.measure(trainer.model)
        record = {
            "epoch": epoch,
            "step": trainer.global_step_,
            "sensitivity": self.last_["mean"],
            "sensitivity_normalized": self.last_["normalized"],
        }
        self.records_.append(record)
        trainer.history_.append(record)  # into metrics.jsonl and the report's curves

    def state_dict(self) -> dict[str, Any]:
        return {"records": [dict(r) for r in self.records_]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records_ = [dict(r) for r in state.get("records", [])]
