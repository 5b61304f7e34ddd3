"""The pure logic of glassbox's Flower App: client data, local training, evaluation, exchange.

``client_app.py`` and ``server_app.py`` only unpack Flower messages and call
what is here, so the whole of a federated round can be run, and tested, as
plain functions. Flower itself is imported only by the two conversion
helpers at the bottom (``to_arrays`` / ``from_arrays``).

A client's rows: the recipe's training split is partitioned among the
clients (``partition``), and each client keeps ``partition.local_val`` of its
rows to evaluate the global model on, so "per-client accuracy" is measured on
data drawn like that client's own. The test split stays with the server,
untouched, so a federated run is scored on exactly the rows a centralized
run of the same recipe is.

>>> from glassbox.config import load_recipe
>>> r = load_recipe(None, ["data.source=iris", "federated.clients=3", "federated.partition.scheme=iid"])
>>> data = load_data(r)
>>> [len(client_data(r, data, k)[0]) for k in range(3)]
[26, 26, 26]
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from glassbox.config import FederatedConfig, Recipe, load_recipe_text
from glassbox.data.base import Dataset
from glassbox.errors import UserError

State = dict[str, torch.Tensor]

# Per-process cache of prepared data, keyed by the recipe's text: a Ray actor
# or a SuperNode's process serves many rounds of the same run, and rebuilding
# the splits every round would cost more than the local training.
_DATA: dict[str, dict[str, Any]] = {}
_RECIPES: dict[str, Recipe] = {}  # the run config's recipe text, parsed once per process


def fed(recipe: Recipe) -> FederatedConfig:
    """The recipe's federated section (its defaults when the recipe has none)."""
    return recipe.federated if recipe.federated is not None else FederatedConfig()


def recipe_key(recipe: Recipe) -> str:
    from glassbox.config import render

    return hashlib.sha256(render(recipe).encode()).hexdigest()


def load_data(recipe: Recipe) -> dict[str, Any]:
    """The recipe's splits (seeded, as ``glassbox train`` makes them) and the client partition."""
    from glassbox.data.partition import partition
    from glassbox.pipeline import prepare_data

    cached = next(iter(_DATA.values()), None)
    if cached is not None and cached["recipe"] is recipe:
        return cached  # the same object every round: skip hashing its rendered YAML
    key = recipe_key(recipe)
    if key not in _DATA:
        data = prepare_data(recipe)
        f, p = fed(recipe), fed(recipe).partition
        n = 0 if p.scheme == "column" else f.clients
        data["parts"] = partition(
            data["train"],
            n,
            p.scheme,
            alpha=p.alpha,
            classes_per_client=p.classes_per_client,
            column=p.column,
            seed=recipe.seed,
            min_size=p.min_size,
        )
        _DATA.clear()  # one run per process at a time; never hold two data sets
        _DATA[key] = data
    _DATA[key]["recipe"] = recipe
    return _DATA[key]


def client_count(recipe: Recipe, data: dict[str, Any]) -> int:
    return len(data["parts"])


def client_data(recipe: Recipe, data: dict[str, Any], pid: int) -> tuple[Dataset, Dataset]:
    """Client ``pid``'s own (train, val) rows: its part, with a seeded ``local_val`` share held out."""
    parts = data["parts"]
    if not 0 <= pid < len(parts):
        raise UserError(
            f"partition-id {pid} is out of range: the recipe makes {len(parts)} clients; "
            f"start SuperNodes with partition-id 0..{len(parts) - 1}"
        )
    rows = parts[pid]
    rng = np.random.default_rng([recipe.seed, pid])
    order = rng.permutation(len(rows))
    n_val = round(fed(recipe).partition.local_val * len(rows))
    n_val = min(n_val, len(rows) - 1)
    train = data["train"].subset(np.sort(rows[order[n_val:]]))
    val = data["train"].subset(np.sort(rows[order[:n_val]]))
    return train, val


# -- the model ------------------------------------------------------------------------------------


def build_global_model(recipe: Recipe, data: dict[str, Any]) -> torch.nn.Module:
    """The round-0 model: seeded weights; input statistics are set later from the clients' (``set_stats``)."""
    from glassbox.nn import build_model

    torch.manual_seed(recipe.seed)
    # The split's schema (shape, classes) is public; its statistics are
    # overwritten by set_stats with the clients' pooled ones.
    return build_model(recipe.model, data["train"])


STAT_KEYS = ("tokenizer.mean", "tokenizer.std")


def client_stats(recipe: Recipe, train: Dataset) -> dict[str, torch.Tensor]:
    """A client's input statistics: its count and the mean/std its tokenizer would fit on its own rows."""
    from glassbox.nn import build_model

    model = build_model(recipe.model, train)
    state = model.state_dict()
    stats = {k: state[k].detach().double().clone() for k in STAT_KEYS if k in state}
    stats["count"] = torch.tensor([float(len(train))], dtype=torch.float64)
    return stats


def pooled_stats(stats: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pool per-client (count, mean, std) into the mean and population std of all their rows.

    Exact for the pooled rows: ``mean = sum n_i m_i / N`` and
    ``var = sum n_i (s_i^2 + m_i^2) / N - mean^2`` (a column constant on one
    client reports std 1 there, glassbox's guard against dividing by zero,
    which makes that column's pooled std an upper bound).

    >>> a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64); b = torch.tensor([10.0], dtype=torch.float64)
    >>> s = lambda x: {"tokenizer.mean": x.mean().reshape(1),
    ...                "tokenizer.std": x.std(unbiased=False).reshape(1),
    ...                "count": torch.tensor([float(len(x))], dtype=torch.float64)}
    >>> out = pooled_stats([s(a), s(b)]); both = torch.cat([a, b])
    >>> bool(torch.allclose(out["tokenizer.std"], both.std(unbiased=False)))
    True
    """
    if not stats:
        raise ValueError("no client statistics to pool")
    n = torch.stack([s["count"] for s in stats])  # (C, 1)
    total = n.sum()
    out: dict[str, torch.Tensor] = {}
    if "tokenizer.mean" in stats[0]:
        m = torch.stack([s["tokenizer.mean"] for s in stats])  # (C, F)
        sd = torch.stack([s["tokenizer.std"] for s in stats])
        mean = (n * m).sum(0) / total
        var = (n * (sd**2 + m**2)).sum(0) / total - mean**2
        out["tokenizer.mean"] = mean
        out["tokenizer.std"] = torch.where(var > 1e-12, var.clamp_min(0).sqrt(), torch.ones_like(var))
    return out


def set_stats(model: torch.nn.Module, stats: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    with torch.no_grad():
        for k, v in stats.items():
            if k in state:
                state[k].copy_(v.to(state[k].dtype))


def get_state(model: torch.nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- local training ------------------------------------------------------------------------------


@dataclass
class LocalResult:
    """What a client sends back after a round of local training."""

    state: State  # the client's model after its local steps
    examples: int
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    delta_c: State | None = None  # scaffold: the change of the client's control variate
    c_i: State | None = None  # scaffold: the client's new control variate, kept in context.state
    privacy: dict[str, Any] | None = None  # local DP: the client's accountant history


def local_train_config(recipe: Recipe) -> Any:
    """The Trainer settings of one round of local training.

    The recipe's ``train`` section, with ``federated.local_epochs`` epochs, no
    early stopping (a client has no say in when the federation stops) and a
    constant learning rate: a warm-up and cosine decay restarting every round
    is not what FedAvg, FedProx or SCAFFOLD assume.
    """
    return recipe.train.model_copy(
        update={"epochs": fed(recipe).local_epochs, "patience": None, "warmup": 0.0, "schedule": "constant"}
    )


def local_train(
    recipe: Recipe,
    model: torch.nn.Module,
    global_state: State,
    train: Dataset,
    *,
    server_round: int,
    pid: int,
    proximal_mu: float = 0.0,
    scaffold_c: State | None = None,
    scaffold_c_i: State | None = None,
    privacy_history: list | None = None,
) -> LocalResult:
    """One client's round: load the global model, train on its rows, return the result.

    FedProx adds ``mu (w - w_global)`` to every gradient (``ProximalTerm``);
    SCAFFOLD adds ``c - c_i`` (``ScaffoldCorrection``) and then computes the
    new control variate by option II. Local DP (``privacy.mode: local``)
    trains with Opacus DP-SGD instead (glassbox.federated.privacy).
    """
    from glassbox.federated.algorithms import ProximalTerm, ScaffoldCorrection, scaffold_client_update
    from glassbox.train import Trainer

    model.load_state_dict(global_state)
    cfg = local_train_config(recipe)
    # A different stream per client and round, the same on every rerun.
    seed = recipe.seed * 1_000_003 + server_round * 1009 + pid
    priv = fed(recipe).privacy
    if priv is not None and priv.mode == "local":
        from glassbox.federated.privacy import dp_sgd_train

        state, steps, loss, history, eps = dp_sgd_train(
            model, cfg, train, priv, seed=seed, history=privacy_history or []
        )
        return LocalResult(
            state=state,
            examples=len(train),
            steps=steps,
            metrics={"train_loss": loss, "epsilon": eps},
            privacy={"history": history},
        )
    callbacks: list[Any] = []
    if proximal_mu > 0:
        callbacks.append(ProximalTerm(proximal_mu, global_state))
    if scaffold_c is not None:
        callbacks.append(ScaffoldCorrection(scaffold_c, scaffold_c_i))
    trainer = Trainer(model, cfg, callbacks=callbacks, seed=seed)
    trainer.fit(
        train
    )  # no validation set: the weights after K steps, not the best epoch's (SCAFFOLD needs them)
    state = get_state(model)
    losses = [r["train_loss"] for r in trainer.history_ if "train_loss" in r]
    result = LocalResult(
        state=state,
        examples=len(train),
        steps=trainer.global_step_,
        metrics={"train_loss": float(np.mean(losses)) if losses else math.nan},
    )
    if scaffold_c is not None:
        rates = [r["lr"] for r in trainer.history_ if "lr" in r]
        _, result.delta_c, result.c_i = scaffold_client_update(
            global_state, state, scaffold_c, scaffold_c_i, steps=trainer.global_step_, lr=rates
        )
    return result


def evaluate_state(model: torch.nn.Module, state: State, data: Dataset) -> dict[str, float]:
    """The metrics of ``state`` (loaded into ``model``) on ``data``: the Trainer's own evaluation."""
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning

    from glassbox.config import TrainConfig
    from glassbox.train.trainer import Trainer

    model.load_state_dict(state)
    model.eval()
    with warnings.catch_warnings():
        # A client's few held-out rows often miss a class; its F1 of 0 there is the honest value.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return Trainer(model, TrainConfig()).evaluate(data)  # the config only sets the batch size here


# -- fault drills --------------------------------------------------------------------------------


def apply_fault(recipe: Recipe, pid: int, state: State, global_state: State) -> State:
    """What a misbehaving client (``federated.faults``) sends instead of its real update."""
    faults = fed(recipe).faults
    if pid in faults.fail:
        raise RuntimeError(f"fault drill: client {pid} fails this round (federated.faults.fail)")
    if pid in faults.nan:
        return {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in state.items()}
    if pid in faults.wrong_shape:
        first = next(iter(state))
        return {**state, first: torch.zeros(*state[first].shape, 2)}
    if pid in faults.scale:
        return {k: global_state[k] + 100.0 * (v - global_state[k]) for k, v in state.items()}
    return state


# -- exchange with Flower ------------------------------------------------------------------------


def to_arrays(state: State) -> Any:
    """A state dict as Flower's ArrayRecord (keys and order kept)."""
    from flwr.app import ArrayRecord

    return ArrayRecord({k: v.detach().cpu() for k, v in state.items()})


def from_arrays(record: Any) -> State:
    """An ArrayRecord as a state dict of torch tensors."""
    return {k: torch.from_numpy(np.array(a.numpy(), copy=True)) for k, a in record.items()}


def recipe_from_config(run_config: dict[str, Any]) -> Recipe:
    """The recipe the server put into the run config (``recipe``: its YAML text)."""
    text = run_config.get("recipe")
    if not text:
        raise UserError(
            "the Flower run has no 'recipe' in its run config; start it with glassbox federate RECIPE"
        )
    text = str(text)
    if text not in _RECIPES:
        _RECIPES.clear()
        _RECIPES[text] = load_recipe_text(text)
    return _RECIPES[text]
