"""Federated algorithms as pure torch: the client and server halves Flower's apps call.

Nothing here imports Flower. A state dict is ``dict[str, Tensor]`` of float
tensors; the corrections below (FedProx's proximal term, SCAFFOLD's control
variates) act on the model's trainable parameters only. Buffers (the
tokenizer's mean and std, say) are exchanged and averaged like parameters
but never corrected: they have no gradient to correct.

- FedProx (Li et al. 2020): ``ProximalTerm``, the client's half; Flower's
  FedProx strategy only sends ``proximal-mu``.
- SCAFFOLD (Karimireddy et al. 2020, Algorithm 1, option II): the
  ``ScaffoldCorrection`` callback during local steps, then
  ``scaffold_client_update`` on the client and ``scaffold_server_update``
  on the server. Flower ships no SCAFFOLD; these are its equations.
- ``fedavg``: the weighted mean the strategies' aggregation is tested against.
- ``krum`` / ``krum_select`` (MultiKrum with ``m > 1``), ``trimmed_mean`` and
  ``coordinate_median``: plain references for Flower's Krum, MultiKrum,
  FedTrimmedAvg and FedMedian.

The robust aggregators take either a list of state dicts (the result is a
state dict shaped like the first) or a list of 1-D tensors (the result is a
1-D tensor). They work on whatever is passed: Flower applies them to the
clients' models; applying them to updates (model minus global) gives the
same Krum choice (distances are shift-invariant) and the same trimmed mean
and median shifted by the global model.

>>> import torch
>>> a, b = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 6.0])}
>>> fedavg([a, b], weights=[3, 1])["w"]
tensor([1., 3.])
>>> ups = [torch.tensor([v]) for v in (1.0, 1.2, 0.9, 1.05, 50.0)]  # the last client is off
>>> krum_select(ups, f=1), trimmed_mean(ups, beta=0.2), coordinate_median(ups)
([0], tensor([1.0833]), tensor([1.0500]))
>>> x = {"w": torch.zeros(2, dtype=torch.float64)}
>>> y = {"w": torch.tensor([-0.2, 0.4], dtype=torch.float64)}  # after K=2 local steps of lr 0.1
>>> dy, dc, c_i = scaffold_client_update(x, y, c=x, c_i=None, steps=2, lr=0.1)
>>> c_i["w"]  # option II: the mean corrected gradient of the local steps
tensor([ 1., -2.], dtype=torch.float64)
>>> scaffold_server_update(x, x, [dy], [dc], n_total_clients=4)[1]["w"]
tensor([ 0.2500, -0.5000], dtype=torch.float64)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from glassbox.errors import UserError
from glassbox.federated.updates import flatten, strip_prefix, unflatten
from glassbox.train.callbacks import Callback

if TYPE_CHECKING:
    from torch import nn

    from glassbox.train.callbacks import StepInfo
    from glassbox.train.trainer import Trainer

State = Mapping[str, torch.Tensor]
Updates = Sequence[torch.Tensor] | Sequence[State]

OPACUS_PREFIX = "_module."


# -- client-side gradient corrections ------------------------------------------------------------------


def _trainable(model: nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    # Opacus wraps the model and prefixes every name with "_module."; the
    # exchanged state dicts use the plain names (updates.strip_prefix).
    return [(n.removeprefix(OPACUS_PREFIX), p) for n, p in model.named_parameters() if p.requires_grad]


def _copy_state(state: State) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in strip_prefix(dict(state), OPACUS_PREFIX).items()}


def _lookup(state: dict[str, torch.Tensor], model: nn.Module, what: str) -> dict[str, torch.Tensor]:
    """``state``'s tensor for each trainable parameter, on its device and dtype; extra keys are ignored."""
    params = _trainable(model)
    missing = [n for n, _ in params if n not in state]
    if missing:
        raise ValueError(f"{what} has no entry for trainable parameters: {', '.join(missing)}")
    out = {}
    for name, p in params:
        t = state[name]
        if t.shape != p.shape:
            raise ValueError(f"{what}[{name!r}] has shape {tuple(t.shape)}, parameter {tuple(p.shape)}")
        out[name] = t.to(device=p.device, dtype=p.dtype)
    return out


class _GradientTerm(Callback):
    """Adds a term to each trainable parameter's gradient after backward, before clipping and the step.

    Why on the gradient rather than in the loss: the Trainer's loss is built
    per micro-batch (gradient accumulation) or by another callback that owns
    the forward and backward (in-run valuation), so a loss term would have to
    be split across micro-batches and would pass through hooks meant for the
    data's examples. ``on_after_backward`` runs once per step on the whole
    batch's gradient, so adding the term's gradient there equals adding the
    term to the batch loss, exactly, whatever builds the loss.

    Caveats, both of which break the equality: gradient clipping
    (``train.grad_clip``) runs after this and clips the sum; Opacus's
    DP optimizer rebuilds ``p.grad`` from per-sample gradients in ``step()``
    and would discard the term.
    """

    def __init__(self) -> None:
        self._params: list[tuple[str, torch.nn.Parameter]] | None = None

    def _prepare(self, model: nn.Module) -> None:
        raise NotImplementedError

    def _term(self, name: str, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def on_fit_start(self, trainer: Trainer) -> None:
        self._params = _trainable(trainer.model)
        self._prepare(trainer.model)

    @torch.no_grad()
    def on_after_backward(self, trainer: Trainer, info: StepInfo | None) -> None:
        if self._params is None:  # driven without fit (a hand-written loop)
            self.on_fit_start(trainer)
        assert self._params is not None
        for name, p in self._params:
            term = self._term(name, p)
            if p.grad is None:
                # A parameter the loss did not reach still feels the term (its
                # data gradient is zero), as the equations say.
                p.grad = term.clone()
            else:
                p.grad.add_(term)


class ProximalTerm(_GradientTerm):
    """FedProx's client half: the gradient of ``mu/2 ||w - w_global||^2`` added to each step's gradient.

    That gradient is ``mu * (w - w_global)``, added in ``on_after_backward``
    (see ``_GradientTerm`` for why this equals putting the term in the loss).
    ``global_state`` is copied, so the client may load it into its model and
    train in place; keys may carry Opacus's ``_module.`` prefix; buffers in
    it are ignored. ``mu = 0`` is plain FedAvg.
    """

    def __init__(self, mu: float, global_state: State) -> None:
        super().__init__()
        if mu < 0:
            raise ValueError(f"FedProx's mu must be >= 0, got {mu}")
        self.mu = float(mu)
        self.global_state = _copy_state(global_state)
        self._anchor: dict[str, torch.Tensor] = {}

    def _prepare(self, model: nn.Module) -> None:
        self._anchor = _lookup(self.global_state, model, "the global state")

    def _term(self, name: str, p: torch.Tensor) -> torch.Tensor:
        return self.mu * (p.detach() - self._anchor[name])


# -- SCAFFOLD ------------------------------------------------------------------------------------------


class ScaffoldCorrection(_GradientTerm):
    """SCAFFOLD's local step: ``y <- y - eta_l (g_i(y) + c - c_i)``, by adding ``c - c_i`` to each gradient.

    ``c`` is the server's control variate, ``c_i`` this client's (None: zeros,
    the paper's initialization), both keyed by trainable parameter name; the
    optimizer's SGD step then applies ``eta_l``. After local training call
    ``scaffold_client_update`` with the weights before and after. Only exact
    with plain SGD: see ``check_scaffold_config``.
    """

    def __init__(self, c: State, c_i: State | None = None) -> None:
        super().__init__()
        self.c = _copy_state(c)
        self.c_i = (
            _copy_state(c_i) if c_i is not None else {k: torch.zeros_like(v) for k, v in self.c.items()}
        )
        self._shift: dict[str, torch.Tensor] = {}

    def _prepare(self, model: nn.Module) -> None:
        c = _lookup(self.c, model, "the server control variate c")
        c_i = _lookup(self.c_i, model, "the client control variate c_i")
        # Constant during local training: computed once.
        self._shift = {k: c[k] - c_i[k] for k in c}

    def _term(self, name: str, p: torch.Tensor) -> torch.Tensor:
        return self._shift[name]


def check_scaffold_config(train_cfg: Any) -> None:
    """Refuse local training under which SCAFFOLD's option II is not the paper's update.

    Option II estimates the client's mean gradient as ``(x - y) / (K eta_l)``,
    which holds only when each local step moved the weights by exactly
    ``-eta_l (g + c - c_i)``: plain SGD. AdamW rescales every coordinate,
    momentum carries earlier steps into later ones, weight decay adds a term
    of its own, and gradient clipping shrinks some steps; with any of them
    ``c_i`` would no longer estimate the gradient and the correction would
    push the model the wrong way. So glassbox refuses them (a UserError)
    rather than run a SCAFFOLD that is not SCAFFOLD. A learning-rate schedule
    is fine: pass the per-step rates to ``scaffold_client_update``.
    """
    wrong = []
    if train_cfg.optimizer != "sgd":
        wrong.append(f"optimizer={train_cfg.optimizer}")
    if train_cfg.momentum:
        # Named under AdamW too (which ignores it): switching to SGD alone would turn it on.
        wrong.append(f"momentum={train_cfg.momentum}")
    if train_cfg.weight_decay:
        wrong.append(f"weight_decay={train_cfg.weight_decay}")
    if train_cfg.grad_clip is not None:
        wrong.append(f"grad_clip={train_cfg.grad_clip}")
    if wrong:
        fix = "train.optimizer=sgd train.momentum=0 train.weight_decay=0"
        if train_cfg.grad_clip is not None:
            fix += " train.grad_clip=null"
        raise UserError(
            f"SCAFFOLD needs plain SGD local steps (its control variates assume them), got "
            f"train.{', train.'.join(wrong)}; set {fix}"
        )


def _total_lr(steps: int, lr: float | Sequence[float]) -> float:
    if steps < 1:
        raise ValueError(f"SCAFFOLD needs at least one local step, got {steps}")
    if isinstance(lr, int | float):
        return steps * float(lr)
    rates = [float(r) for r in lr]
    if len(rates) != steps:
        raise ValueError(f"{len(rates)} learning rates given for {steps} local steps")
    return math.fsum(rates)


def scaffold_client_update(
    x: State,
    y: State,
    c: State,
    c_i: State | None,
    steps: int,
    lr: float | Sequence[float],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """SCAFFOLD's client update, Algorithm 1 option II: returns ``(delta_y, delta_c, c_i_new)``.

    ``c_i+ = c_i - c + (x - y) / (K eta_l)``, ``delta_y = y - x``,
    ``delta_c = c_i+ - c_i``. ``x`` is the global model the client started
    from, ``y`` its model after ``steps`` (K) local steps of rate ``lr``
    (eta_l). ``lr`` may be the list of per-step rates (the Trainer's
    ``history_`` records them) when a schedule changed them; ``K eta_l`` is
    then their sum, which keeps ``c_i+`` the rate-weighted mean of the local
    gradients. With the Trainer: K is ``trainer.global_step_``, and fit
    without a validation set, or ``y`` would be the best epoch's weights
    rather than those after K steps. ``delta_y`` covers every key of ``x`` (buffers too);
    control variates only ``c``'s keys. Computed in float64; each result has
    its input's dtype. The client keeps ``c_i_new`` (in ``context.state``)
    for its next round and sends ``delta_y`` and ``delta_c``.
    """
    eta = _total_lr(steps, lr)
    if set(y) != set(x):
        raise ValueError("x and y must have the same keys")
    delta_y = {k: (y[k].double() - x[k].double()).to(x[k].dtype) for k in x}
    c_i_new: dict[str, torch.Tensor] = {}
    delta_c: dict[str, torch.Tensor] = {}
    for k, ck in c.items():
        old = c_i[k].double() if c_i is not None else torch.zeros_like(ck, dtype=torch.float64)
        new = old - ck.double() + (x[k].double() - y[k].double()) / eta
        c_i_new[k] = new.to(ck.dtype)
        delta_c[k] = (new - old).to(ck.dtype)
    return delta_y, delta_c, c_i_new


def _mean(states: Sequence[State], key: str) -> torch.Tensor:
    return torch.stack([s[key].double() for s in states]).mean(dim=0)


def scaffold_server_update(
    x: State,
    c: State,
    deltas_y: Sequence[State],
    deltas_c: Sequence[State],
    n_total_clients: int,
    server_lr: float = 1.0,
    weights: Sequence[float] | None = None,
    total_weight: float | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """SCAFFOLD's server update: ``x <- x + eta_g mean(delta_y)``, ``c <- c + (|S| / N) mean(delta_c)``.

    ``S`` is the clients whose updates were accepted this round (pass only
    those), ``N`` all clients. Without ``weights`` the means are unweighted,
    as in the paper: ``c`` must stay the plain mean of all N clients' ``c_i``
    for the correction to cancel client drift. That invariant also needs a
    dropped client not to keep the ``c_i`` it computed in a round the server dropped.

    ``weights`` (a client's examples) with ``total_weight`` (all N clients'
    examples) is the same algorithm for the data-weighted objective
    ``f = sum_i p_i f_i``, ``p_i = n_i / n``, which FedAvg minimises:
    ``x`` moves by the ``n_i``-weighted mean of the ``delta_y`` and
    ``c += sum_S p_i delta_c_i``, so ``c`` stays ``sum_i p_i c_i``, the
    estimate of that objective's gradient. With equal sizes both forms agree.
    """
    s = len(deltas_y)
    if s == 0 or s != len(deltas_c):
        raise ValueError(f"need one delta_c per delta_y and at least one; got {s} and {len(deltas_c)}")
    if not 0 < s <= n_total_clients:
        raise ValueError(f"{s} participating clients of n_total_clients={n_total_clients}")
    if weights is None:
        wy = [1.0 / s] * s
        wc = [1.0 / n_total_clients] * s
    else:
        if len(weights) != s or total_weight is None or total_weight < sum(weights) or min(weights) <= 0:
            raise ValueError("weights need one positive value per client and total_weight >= their sum")
        wy = [w / math.fsum(weights) for w in weights]
        wc = [w / total_weight for w in weights]

    def wsum(states: Sequence[State], key: str, w: list[float]) -> torch.Tensor:
        return sum(wi * st[key].double() for wi, st in zip(w, states, strict=True))  # type: ignore[return-value]

    x_new = {k: (v.double() + server_lr * wsum(deltas_y, k, wy)).to(v.dtype) for k, v in x.items()}
    c_new = {k: (v.double() + wsum(deltas_c, k, wc)).to(v.dtype) for k, v in c.items()}
    return x_new, c_new


# -- aggregation references ----------------------------------------------------------------------------


def fedavg(states: Sequence[State], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """The weighted mean of ``states`` (weights: e.g. examples per client; None: equal), key by key.

    Accumulated in float64 and cast back to the first state's dtypes, so the
    result does not depend on the order of the clients beyond rounding.
    """
    if not states:
        raise ValueError("fedavg needs at least one state")
    w = torch.ones(len(states), dtype=torch.float64) if weights is None else torch.tensor(weights).double()
    if w.shape != (len(states),) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"need {len(states)} non-negative weights with a positive sum, got {weights}")
    w = w / w.sum()
    keys = set(states[0])
    out: dict[str, torch.Tensor] = {}
    for i, s in enumerate(states):
        if set(s) != keys:
            raise ValueError(f"state {i} has different keys from state 0")
    for key, first in states[0].items():
        if not first.is_floating_point():
            raise ValueError(f"{key!r} is {first.dtype}; fedavg averages float tensors only")
        acc = torch.zeros(first.shape, dtype=torch.float64)
        for wi, s in zip(w, states, strict=True):
            acc += wi * s[key].detach().double().cpu()
        out[key] = acc.to(dtype=first.dtype, device=first.device)
    return out


def _matrix(updates: Updates) -> tuple[torch.Tensor, State | None, torch.dtype]:
    """(n, d) float64 rows, the state dict to unflatten into (None for vectors), the result dtype."""
    if len(updates) == 0:
        raise ValueError("need at least one update")
    first = updates[0]
    if isinstance(first, torch.Tensor):
        rows = [u.detach().reshape(-1).double() for u in updates]  # type: ignore[union-attr]
        return torch.stack(rows), None, first.dtype
    keys = list(first)
    rows = [flatten(u, keys=keys, dtype=torch.float64) for u in updates]  # type: ignore[arg-type]
    return torch.stack(rows), first, next(iter(first.values())).dtype


def _result(vec: torch.Tensor, like: State | None, dtype: torch.dtype) -> Any:
    return vec.to(dtype) if like is None else unflatten(vec, like)


def krum_select(updates: Updates, f: int, m: int = 1) -> list[int]:
    """Positions of the ``m`` updates with the lowest Krum scores, best first (Blanchard et al. 2017).

    Score of update i: the sum of squared L2 distances to its ``n - f - 2``
    nearest other updates, ``f`` the number of Byzantine clients tolerated
    (the paper needs ``n > 2f + 2``; like Flower this uses at least one
    neighbour when n is smaller). Ties go to the earlier position.
    Distances are computed row by row in float64 (exact, no Gram-matrix
    cancellation as in Flower's ``compute_distances``).
    """
    X, _, _ = _matrix(updates)
    n = len(X)
    if not 1 <= m <= n:
        raise ValueError(f"m={m} must be between 1 and the number of updates ({n})")
    if f < 0:
        raise ValueError(f"f must be >= 0, got {f}")
    if n == 1:
        return [0]
    closest = max(1, n - f - 2)
    scores = []
    for i in range(n):
        d = (X - X[i]).pow(2).sum(dim=1)
        others = torch.cat([d[:i], d[i + 1 :]])
        scores.append(float(others.sort().values[:closest].sum()))
    order = sorted(range(n), key=lambda i: (scores[i], i))
    return order[:m]


def krum(updates: Updates, f: int, m: int = 1, weights: Sequence[float] | None = None) -> Any:
    """Krum (``m = 1``: the chosen update itself) or MultiKrum (the mean of the ``m`` best).

    ``weights`` (one per update, e.g. examples per client) weigh MultiKrum's
    mean as Flower's MultiKrum does; None: the plain mean of the paper.
    """
    X, like, dtype = _matrix(updates)
    chosen = krum_select(updates, f, m)
    w = torch.ones(len(X), dtype=torch.float64) if weights is None else torch.tensor(weights).double()
    if w.shape != (len(X),) or bool((w < 0).any()):
        raise ValueError(f"need {len(X)} non-negative weights, got {weights}")
    ws = w[chosen]
    vec = (ws[:, None] * X[chosen]).sum(dim=0) / ws.sum()
    return _result(vec, like, dtype)


def trimmed_mean(updates: Updates, beta: float) -> Any:
    """Coordinate-wise trimmed mean: drop the ``int(beta * n)`` highest and lowest values, average the rest.

    ``int(beta * n)`` per side, as in scipy's ``trim_mean`` and Flower's
    FedTrimmedAvg; unweighted. ``beta`` must leave at least one value.
    """
    X, like, dtype = _matrix(updates)
    n = len(X)
    cut = int(beta * n)
    if beta < 0 or 2 * cut >= n:
        raise ValueError(f"beta={beta} trims {cut} of {n} updates from each side; nothing would be left")
    kept = X.sort(dim=0).values[cut : n - cut]
    return _result(kept.mean(dim=0), like, dtype)


def coordinate_median(updates: Updates) -> Any:
    """Coordinate-wise median (FedMedian); with an even count the mean of the two middle values, as numpy.

    (``torch.median`` would return the lower middle value instead.)
    """
    X, like, dtype = _matrix(updates)
    n = len(X)
    s = X.sort(dim=0).values
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return _result(med, like, dtype)
