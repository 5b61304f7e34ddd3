"""Data-valuation baselines that in-run Data Shapley is compared against.

Three classic ways to put a number on each training row, each cheap enough
for the embedded data sets:

- :func:`knn_shapley`: exact Shapley values of a K-nearest-neighbour
  classifier's validation accuracy (Jia et al. 2019), closed form, no training.
- :func:`tracin_cp`: TracIn-CP (Pruthi et al. 2020) through Captum: gradient
  alignment with the validation loss, summed over saved checkpoints.
- :func:`leave_one_out` / :func:`loo_logistic`: retrain without each row.

One sign convention everywhere: a positive value means the row helps (lowers
the validation loss, raises the validation accuracy), a negative value means
it hurts. Every function returns a float64 array with one value per training
row, in the order the rows were given, so values line up with
``Dataset.index`` and with the rows that ``flip_labels`` flipped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from glassbox.errors import UserError

if TYPE_CHECKING:
    from glassbox.data.base import Dataset

__all__ = ["knn_shapley", "leave_one_out", "loo_logistic", "tracin_cp"]

# Distance blocks hold (val rows x train rows x features) differences; this
# many float64 elements (32 MiB) keeps memory flat for any set size while
# leaving numpy enough work per call to stay fast.
_BLOCK_ELEMENTS = 1 << 22

# The per-example gradient loop backpropagates through the whole batch's graph
# once per row, so its cost grows with the batch; 8 measured fastest here
# (1 pays the checkpoint reload per batch, 64 was 3x slower). The hooked
# Linear/Conv path does one backward per batch, so big batches are cheap.
_LOOP_BATCH = 8
_HOOKED_BATCH = 64

_EXPLAIN_HINT = "install the explain extra: pip install -c constraints.txt -e '.[explain]'"


# --------------------------------------------------------------------------- KNN-Shapley


def _as_2d(name: str, X: object) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x features), got shape {arr.shape}; flatten it first")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _labels(name: str, y: object, n: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} must be 1-D with one label per row ({n}), got shape {arr.shape}")
    return arr


def knn_shapley(
    train_X: np.ndarray,
    train_y: np.ndarray,
    val_X: np.ndarray,
    val_y: np.ndarray,
    k: int = 5,
) -> np.ndarray:
    """Exact Shapley values of each training row for a K-NN classifier's validation accuracy.

    The utility of a subset S for one validation point is the fraction of its
    ``min(k, |S|)`` nearest neighbours in S that carry its label, divided by
    ``k`` rather than by the number found (``U(empty) = 0``); for that utility
    Theorem 1 of Jia et al. (2019) gives the Shapley values in closed form
    from one sort of the training rows by distance. Values are averaged over
    the validation points, so they sum to the mean utility of the full set.

    Distances are Euclidean on the features as given: flatten images and
    standardize columns first. Rows at equal distance keep their training
    order (stable sort), so duplicated rows get a deterministic ranking.

    >>> X = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> y = np.array([0, 1, 1, 1])  # row 1 sits among the zeros with a wrong label
    >>> knn_shapley(X, y, np.array([[0.08], [5.08]]), np.array([0, 1]), k=1).round(3)
    array([ 0.25 , -0.083,  0.167,  0.167])
    """
    # pyDVL has a KNN-Shapley valuation, but it pins numpy<2; the closed form
    # is a dozen lines, so it is written out here instead of adding the pin.
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    tX = _as_2d("train_X", train_X)
    vX = _as_2d("val_X", val_X)
    if len(tX) == 0 or len(vX) == 0:
        raise ValueError(f"need at least one training and one validation row, got {len(tX)} and {len(vX)}")
    if tX.shape[1] != vX.shape[1]:
        raise ValueError(f"train_X has {tX.shape[1]} features but val_X has {vX.shape[1]}")
    ty = _labels("train_y", train_y, len(tX))
    vy = _labels("val_y", val_y, len(vX))

    n = len(tX)
    ranks = np.arange(1, n, dtype=np.float64)  # i = 1 .. N-1, the ranks the recursion steps through
    weight = np.minimum(k, ranks) / ranks / k
    values = np.zeros(n, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // max(1, n * tX.shape[1]))
    for start in range(0, len(vX), block):
        v = vX[start : start + block]
        # Direct differences rather than |a|^2 + |b|^2 - 2ab: identical rows
        # then get bit-identical distances, so ties really are ties.
        dist = np.sqrt(((v[:, None, :] - tX[None, :, :]) ** 2).sum(axis=-1))
        order = np.argsort(dist, axis=1, kind="stable")
        match = (ty[order] == vy[start : start + block, None]).astype(np.float64)
        # s_i - s_{i+1} for i = 1..N-1; s_N seeds the sum from the far end.
        # The paper's s_N = 1[y_N = y] / N assumes K <= N; the min(K, N) / K
        # factor keeps it exact for K > N too (then U is additive, s_i = 1[.] / K).
        steps = (match[:, :-1] - match[:, 1:]) * weight
        s = np.empty_like(match)
        s[:, -1] = match[:, -1] * (min(k, n) / (n * k))
        s[:, :-1] = s[:, -1:] + np.cumsum(steps[:, ::-1], axis=1)[:, ::-1]
        # Scatter back from rank order to training order, summing over the block.
        per_row = np.empty_like(s)
        np.put_along_axis(per_row, order, s, axis=1)
        values += per_row.sum(axis=0)
    return values / len(vX)


# --------------------------------------------------------------------------- TracIn-CP


class _PerExampleLoss(nn.Module):
    """A per-example loss dressed the way Captum inspects it.

    Captum reads ``loss_fn.reduction`` to decide how to get per-example
    gradients: with ``sample_wise_grads_per_batch=False`` it demands "none"
    (a vector of per-example losses, each backpropagated alone); with True it
    demands "sum" or "mean", and for "mean" it multiplies the hooked
    gradients back by the batch size. "sum" needs no rescaling, so the hooked
    path uses it; either way each row's gradient is that of its own
    (unaveraged) loss, as TracIn defines it.
    """

    def __init__(self, per_example: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], reduction: str):
        super().__init__()
        self.per_example = per_example
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = self.per_example(logits, target)
        if losses.shape != (len(logits),):
            raise ValueError(
                f"loss_fn must return one loss per example, shape ({len(logits)},); got {tuple(losses.shape)}"
            )
        return losses if self.reduction == "none" else losses.sum()


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target, reduction="none")


def _hookable(module: nn.Module) -> bool:
    """Whether Captum's per-sample hooks compute this module's gradients correctly.

    Captum looks its gradient rule up by exact type (a subclass raises
    KeyError), and its Conv2d rule unfolds with zero padding and no groups.
    """
    if type(module) is nn.Linear:
        return True
    return (
        type(module) is nn.Conv2d
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _hookable_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if name and _hookable(m)]


def _loader(data: Dataset, batch_size: int, dtype: torch.dtype, device: torch.device):
    from torch.utils.data import DataLoader, TensorDataset

    X = data.X.to(device)
    if X.is_floating_point():
        X = X.to(dtype)
    return DataLoader(TensorDataset(X, data.y.to(device)), batch_size=batch_size, shuffle=False)


def tracin_cp(
    model: nn.Module,
    checkpoints: Sequence[dict[str, torch.Tensor]],
    lrs: Sequence[float],
    train: Dataset,
    val: Dataset,
    *,
    batch_size: int | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    layers: Literal["all", "linear"] | Sequence[str] = "all",
) -> np.ndarray:
    """TracIn-CP values: learning-rate-weighted gradient alignment with the validation loss.

    ``value[i] = sum_c lrs[c] * sum_v <grad loss_v(w_c), grad loss_i(w_c)>``
    over the checkpoints ``w_c`` and the validation rows ``v``, computed by
    Captum's ``TracInCP`` (Pruthi et al. 2020). Positive means that a gradient
    step on row ``i`` would have lowered the (summed) validation loss, i.e.
    the row helps. Each row's gradient is that of its own loss, not of a batch
    mean. Dividing by ``len(val)`` gives the alignment with the mean
    validation loss; rankings do not change.

    ``checkpoints`` are state dicts of ``model`` (in memory), ``lrs`` the
    learning rate in force at each. ``loss_fn(logits, y)`` must return one loss
    per example, shape ``(B,)``; the default is cross-entropy on the logits
    ``model(X)``, the per-example form of the usual mean cross-entropy.
    Classification only: a language model's rows are windows of many
    tokens, for which glassbox has no per-row TracIn.

    ``layers`` picks the parameters whose gradients count:

    - ``"all"`` (default): every parameter, exact. Captum's fast per-sample
      hooks support only ``nn.Linear`` and ``nn.Conv2d``, and the Transformer
      also has LayerNorms and raw ``nn.Parameter`` s (CLS token, positions), so
      this uses ``sample_wise_grads_per_batch=False``: one backward per row.
      Measured on one CPU thread, 1,168 digits train x 270 val rows, dim 64,
      depth 2: 4.5-8.5 s per checkpoint (idle vs. busy machine).
    - ``"linear"``: only the ``nn.Linear`` / ``nn.Conv2d`` layers (the head,
      attention and MLP projections, the patch embedding), with Captum's
      hooks, one backward per batch: 0.7-1.2 s per checkpoint on the same
      data. It is the usual TracIn shortcut; on that model, briefly trained,
      its values correlated 0.9995 with the all-parameter ones (the head
      alone: 0.47).
    - a list of module names: those modules' own parameters; the hooks are
      used when all of them are plain Linear/Conv2d, the per-row loop otherwise.

    ``batch_size`` defaults to 8 for the per-row loop (it backpropagates
    through the whole batch once per row, so small batches are faster) and 64
    for the hooks.

    The model is left as it was: weights, ``requires_grad`` flags, ``.grad``
    and train/eval mode are restored. Gradients are taken in eval mode (no dropout).

    >>> _ = torch.manual_seed(0)
    >>> from glassbox.data.base import Dataset
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> data = Dataset("toy", "tabular", "classification", torch.randn(12, 3),
    ...                torch.randint(0, 2, (12,)), classes=["a", "b"])
    >>> train, val = data.subset(range(8)), data.subset(range(8, 12))
    >>> values = tracin_cp(net, [net.state_dict()], [0.1], train, val)
    >>> values.shape, values.dtype
    ((8,), dtype('float64'))
    """
    try:
        from captum.influence import TracInCP
    except ImportError as err:  # captum is an optional extra
        raise UserError(f"tracin_cp needs captum; {_EXPLAIN_HINT}") from err

    for name, data in (("train", train), ("val", val)):
        if data.task != "classification":
            raise UserError(
                f"tracin_cp values classification rows; the {name} data '{data.name}' is a"
                f" '{data.task}' task (use in-run valuation for language models)"
            )
        if len(data) == 0:
            raise ValueError(f"the {name} data has no rows")
    checkpoints = list(checkpoints)
    lrs = [float(lr) for lr in lrs]
    if not checkpoints:
        raise ValueError("tracin_cp needs at least one checkpoint")
    if len(lrs) != len(checkpoints):
        raise ValueError(f"got {len(checkpoints)} checkpoints but {len(lrs)} learning rates; give one each")
    if not all(math.isfinite(lr) for lr in lrs):
        raise ValueError(f"learning rates must be finite, got {lrs}")
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    if layers == "all":
        chosen, hooked = None, False
    elif layers == "linear":
        chosen = _hookable_layers(model)
        if not chosen:
            raise ValueError("layers='linear' but the model has no nn.Linear or nn.Conv2d layer")
        hooked = True
    elif isinstance(layers, str):
        raise ValueError(f"layers must be 'all', 'linear' or a list of module names, got {layers!r}")
    else:
        chosen = list(layers)
        modules = dict(model.named_modules())
        missing = [name for name in chosen if name not in modules]
        if not chosen or missing:
            raise ValueError(f"layers must name modules of the model; not found: {missing or 'empty list'}")
        hooked = all(_hookable(modules[name]) for name in chosen)
    if batch_size is None:
        batch_size = _HOOKED_BATCH if hooked else _LOOP_BATCH
    per_example = _cross_entropy if loss_fn is None else loss_fn
    captum_loss = _PerExampleLoss(per_example, "sum" if hooked else "none")

    first = next(model.parameters())
    saved_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    saved_flags = {name: (p.requires_grad, p.grad) for name, p in model.named_parameters()}
    was_training = model.training
    # Captum names checkpoints by string and sorts them naturally; zero-padded
    # ids keep that order equal to ours, and the loader maps each id back to
    # its in-memory state dict, so nothing is written to disk.
    ids = [f"checkpoint-{c:06d}" for c in range(len(checkpoints))]
    by_id = dict(zip(ids, zip(checkpoints, lrs, strict=True), strict=True))

    def load(net: nn.Module, checkpoint_id: str) -> float:
        state, lr = by_id[checkpoint_id]
        net.load_state_dict(state)
        return lr

    try:
        model.eval()
        if chosen is None:
            # Captum takes gradients of model.parameters(); a frozen one would fail.
            for p in model.parameters():
                p.requires_grad_(True)
        with warnings.catch_warnings():
            # Captum warns when it turns on requires_grad for the chosen layers
            # and for (its clones of) the inputs to its hooks; both are wanted.
            warnings.filterwarnings("ignore", message="Setting required grads for layer")
            warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
            tracin = TracInCP(
                model,
                _loader(train, batch_size, first.dtype, first.device),
                ids,
                load,
                layers=chosen,
                loss_fn=captum_loss,
                batch_size=batch_size,
                sample_wise_grads_per_batch=hooked,
            )
            scores = tracin.influence(_loader(val, batch_size, first.dtype, first.device), aggregate=True)
    finally:
        model.load_state_dict(saved_state)
        for name, p in model.named_parameters():
            # The hooked path runs a plain backward (filling .grad) and leaves
            # the last batch's per-sample gradients on each parameter.
            p.requires_grad_(saved_flags[name][0])
            p.grad = saved_flags[name][1]
            if hasattr(p, "sample_grad"):
                del p.sample_grad
        model.train(was_training)
    return scores.detach().reshape(-1).to(torch.float64).cpu().numpy()


# --------------------------------------------------------------------------- leave-one-out


def leave_one_out(fit_and_score: Callable[[np.ndarray], float], n: int, *, max_n: int = 200) -> np.ndarray:
    """Exact leave-one-out values: ``U(all rows) - U(all rows but i)``.

    ``fit_and_score(keep)`` trains on the rows where the boolean mask ``keep``
    is True and returns the validation *utility*, higher is better (minus the
    validation loss, or the accuracy). It is called ``n + 1`` times, so this
    is for tiny sets only and refuses ``n > max_n``.

    >>> weights = np.array([0.5, -1.0, 2.0])
    >>> leave_one_out(lambda keep: float(weights[keep].sum()), 3)
    array([ 0.5, -1. ,  2. ])
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of training rows), got {n!r}")
    if n > max_n:
        raise UserError(
            f"leave-one-out retrains {n + 1} models for {n} rows (limit {max_n}); value this many"
            " rows with in-run valuation (inrun) or knn_shapley instead"
        )
    keep = np.ones(n, dtype=bool)
    full = float(fit_and_score(keep.copy()))
    values = np.empty(n, dtype=np.float64)
    for i in range(n):
        keep[i] = False
        # A copy, so a fit_and_score that keeps or edits its mask cannot skew later calls.
        values[i] = full - float(fit_and_score(keep.copy()))
        keep[i] = True
    return values


def loo_logistic(
    train_X: np.ndarray,
    train_y: np.ndarray,
    val_X: np.ndarray,
    val_y: np.ndarray,
    *,
    max_n: int = 200,
) -> np.ndarray:
    """Leave-one-out values for scikit-learn's LogisticRegression, utility = minus validation log loss.

    Deterministic (lbfgs from zero weights, no randomness). A class that
    loses its last training row gets probability zero, so the log loss
    charges the full clipping penalty for its validation rows; that row's
    value is large, as it should be.

    >>> X = np.array([[-2.0], [-1.0], [-1.5], [1.0], [2.0], [1.5], [1.2]])
    >>> y = np.array([0, 0, 0, 1, 1, 1, 0])  # the last row is mislabelled
    >>> v = loo_logistic(X, y, np.array([[-1.0], [1.0]]), np.array([0, 1]))
    >>> int(np.argmin(v))
    6
    """
    from sklearn.linear_model import LogisticRegression  # slow import; only valuation needs it
    from sklearn.metrics import log_loss

    tX = _as_2d("train_X", train_X)
    vX = _as_2d("val_X", val_X)
    if tX.shape[1] != vX.shape[1]:
        raise ValueError(f"train_X has {tX.shape[1]} features but val_X has {vX.shape[1]}")
    ty = _labels("train_y", train_y, len(tX))
    vy = _labels("val_y", val_y, len(vX))
    classes = np.unique(np.concatenate([ty, vy]))

    def fit_and_score(keep: np.ndarray) -> float:
        X, y = tX[keep], ty[keep]
        proba = np.zeros((len(vX), len(classes)))
        present = np.unique(y)
        if len(present) == 1:  # LogisticRegression refuses one class; it would predict it surely
            proba[:, np.searchsorted(classes, present[0])] = 1.0
        else:
            clf = LogisticRegression(max_iter=1000).fit(X, y)
            proba[:, np.searchsorted(classes, clf.classes_)] = clf.predict_proba(vX)
        return -float(log_loss(vy, proba, labels=classes))

    return leave_one_out(fit_and_score, len(tX), max_n=max_n)
