"""Flower strategies for glassbox: Flower's own where it has them, SCAFFOLD, and the guard around all.

``build_strategy(cfg, ...)`` returns a ``Guarded`` strategy: it wraps the
chosen one (FedAvg, FedAdam, FedProx, Krum, MultiKrum, FedTrimmedAvg from
Flower; ``Scaffold`` from here, since Flower ships none), and, with
``privacy.mode: central``, Flower's server-side fixed-clipping DP wrapper
with its RDP accountant between the two.

The guard is glassbox's fault tolerance. Before any aggregation it drops,
with a logged reason, every reply that is an error (the ClientApp raised),
never came (the round's timeout), or carries an update that
``check_update`` refuses (NaN/Inf, wrong keys or shapes). The round goes on
with the rest while at least ``min_clients`` remain; otherwise it keeps the
previous model and says so. It also counts the bytes of every model sent and
received and hands a record of each round (accepted clients and their update
digests, dropped clients and why, the aggregated model's digest, epsilon) in
``rounds_``, which the ServerApp writes to the ledger.

Strategy registry: ``STRATEGIES``; a new entry is picked up by the contract
test in tests/federated/test_strategies.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from logging import INFO
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedTrimmedAvg, Krum, MultiKrum, Strategy

from glassbox.config import FederatedConfig
from glassbox.federated.algorithms import scaffold_server_update
from glassbox.federated.task import from_arrays, to_arrays
from glassbox.federated.updates import check_update, state_digest

DC_PREFIX = "scaffold.dc."  # SCAFFOLD replies carry delta c beside the model, in the one ArrayRecord
WEIGHT_KEY = "num-examples"
DP_WEIGHT_KEY = "dp-weight"  # always 1: Flower's DP accounting needs equal client weights


def nbytes(record: ArrayRecord) -> int:
    return int(sum(len(a.data) for a in record.values()))


class Scaffold(FedAvg):
    """SCAFFOLD (Karimireddy et al. 2020, Algorithm 1) as a Flower strategy.

    Sends the server control variate ``c`` beside the model (``scaffold-c``);
    each client replies with its model ``y_i`` and ``delta c_i`` (keys
    prefixed ``scaffold.dc.``) and keeps its own ``c_i`` in ``context.state``.
    The server step is ``scaffold_server_update``: ``x += eta_g mean(y_i - x)``,
    ``c += |S|/N mean(delta c_i)``, unweighted as in the paper.
    """

    def __init__(
        self,
        param_keys: list[str],
        n_total_clients: int,
        server_lr: float = 1.0,
        total_examples: float | None = None,
        **kw: Any,
    ):
        super().__init__(**kw)
        self.param_keys = list(param_keys)
        self.n_total_clients = n_total_clients
        self.server_lr = server_lr
        # Clients of unequal size: weight by examples, like FedAvg (see scaffold_server_update).
        self.total_examples = total_examples
        self.c_: dict[str, torch.Tensor] | None = None
        self._x: dict[str, torch.Tensor] | None = None
        self.accepted_: dict[str, list[int]] = {}  # round -> partitions whose update c took in

    def reply_reference(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**state, **{DC_PREFIX + k: state[k] for k in self.param_keys}}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._x = from_arrays(arrays)
        if self.c_ is None:
            self.c_ = {k: torch.zeros_like(self._x[k]) for k in self.param_keys}
        # Tells each client whether the c_i it computed in its last round counts (client_app).
        config["scaffold-accepted"] = json.dumps(self.accepted_)
        messages = list(super().configure_train(server_round, arrays, config, grid))
        c = to_arrays(self.c_)
        for m in messages:
            m.content["scaffold-c"] = c
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid or self._x is None or self.c_ is None:
            return None, None
        ys, dcs, sizes, pids = [], [], [], []
        for msg in valid:
            metrics = next(iter(msg.content.metric_records.values()))
            sizes.append(float(metrics[WEIGHT_KEY]))
            pids.append(int(metrics.get("partition-id", -1)))
            state = from_arrays(msg.content["arrays"])
            dcs.append({k[len(DC_PREFIX) :]: v for k, v in state.items() if k.startswith(DC_PREFIX)})
            ys.append({k: v for k, v in state.items() if not k.startswith(DC_PREFIX)})
        deltas_y = [{k: y[k] - self._x[k] for k in self._x} for y in ys]
        weighted = self.total_examples is not None
        x, self.c_ = scaffold_server_update(
            self._x,
            self.c_,
            deltas_y,
            dcs,
            self.n_total_clients,
            server_lr=self.server_lr,
            weights=sizes if weighted else None,
            total_weight=max(self.total_examples or 0.0, sum(sizes)) if weighted else None,
        )
        self.accepted_[str(server_round)] = pids
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return to_arrays(x), metrics


class Guarded(Strategy):
    """The guard: drops bad replies with a reason, keeps going while enough remain, reports every round."""

    def __init__(self, inner: Strategy, min_clients: int = 2) -> None:
        self.inner = inner
        self.min_clients = min_clients
        self.bytes_sent_ = 0
        self.bytes_received_ = 0
        self.rounds_: list[dict[str, Any]] = []
        self._reference: dict[str, torch.Tensor] = {}
        self._sent: dict[int, str] = {}
        self._model_digest: str | None = None
        self._dtypes: dict[str, torch.dtype] = {}

    # -- what the inner strategies are ---------------------------------------------------------
    def _chain(self) -> list[Strategy]:
        out, s = [], self.inner
        while s is not None:
            out.append(s)
            s = getattr(s, "strategy", None)  # Flower's DP wrappers hold the wrapped one here
        return out

    def epsilon(self) -> float | None:
        for s in self._chain():
            spent = getattr(s, "privacy_spent", None)
            if callable(spent):
                got = spent()
                return None if got is None else float(got.epsilon)
        return None

    def summary(self) -> None:
        log(INFO, "\t├──> glassbox guard: min %d accepted updates a round", self.min_clients)
        self.inner.summary()

    # -- training ------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        state = from_arrays(arrays)
        self._model_digest = state_digest(state)
        self._dtypes = {k: v.dtype for k, v in state.items()}
        ref = state
        for s in self._chain():
            if hasattr(s, "reply_reference"):
                ref = s.reply_reference(state)
        self._reference = ref
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._sent = {m.metadata.dst_node_id: "train" for m in messages}
        for m in messages:
            self.bytes_sent_ += sum(nbytes(r) for r in m.content.array_records.values())
        return messages

    def _screen(self, replies: list[Message]) -> tuple[list[Message], list[dict[str, Any]], list[dict]]:
        accepted, rows, dropped = [], [], []
        seen = set()
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            seen.add(node)
            if msg.has_error():
                dropped.append({"node": node, "reason": f"client error: {msg.error.reason}".strip()})
                continue
            records = msg.content.array_records
            metrics = next(iter(msg.content.metric_records.values()), {})
            pid = int(metrics.get("partition-id", -1)) if metrics else -1
            self.bytes_received_ += sum(nbytes(r) for r in records.values())
            if "arrays" not in records:
                dropped.append({"node": node, "partition": pid, "reason": "reply has no model ('arrays')"})
                continue
            try:
                state = from_arrays(records["arrays"])
            except Exception as exc:  # a malformed array cannot be read back at all
                dropped.append({"node": node, "partition": pid, "reason": f"unreadable update: {exc}"})
                continue
            reason = check_update(state, self._reference)
            if reason is not None:
                dropped.append({"node": node, "partition": pid, "reason": reason})
                continue
            accepted.append((pid, node, msg))
            rows.append(
                {
                    "node": node,
                    "partition": pid,
                    "sha256": state_digest(state),
                    "examples": int(metrics.get(WEIGHT_KEY, 0)),
                    **{k: float(v) for k, v in metrics.items() if k in ("train_loss", "epsilon", "steps")},
                }
            )
        for node in self._sent:
            if node not in seen:
                dropped.append({"node": node, "reason": "no reply within the round's timeout"})
        # Replies arrive in any order (Flower samples nodes at random); aggregate in partition
        # order so the float sums, and so the run, are the same every time.
        order = sorted(range(len(accepted)), key=lambda i: accepted[i][:2])
        return [accepted[i][2] for i in order], [rows[i] for i in order], dropped

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted, rows, dropped = self._screen(list(replies))
        for d in dropped:
            log(INFO, "\t> round %d: dropped node %s: %s", server_round, d["node"], d["reason"])
        record: dict[str, Any] = {"round": server_round, "accepted": rows, "dropped": dropped}
        arrays, metrics = None, None
        if len(accepted) < self.min_clients:
            record["kept_previous"] = (
                f"{len(accepted)} accepted updates, fewer than federated.min_clients={self.min_clients}"
            )
        else:
            arrays, metrics = self.inner.aggregate_train(server_round, accepted)
            if arrays is None and dropped and self.epsilon() is not None:
                record["kept_previous"] = (
                    f"central DP: Flower's accountant needs every sampled client's update and {len(dropped)}"
                    " were dropped, so nothing was released this round (and no epsilon spent)"
                )
            elif arrays is None:
                record["kept_previous"] = "the strategy aggregated nothing (see the Flower log)"
        if arrays is not None:
            # Keep the global model's dtypes: FedAdam's numpy arithmetic returns float64, which
            # would double every message and make the saved (float32) model differ from the ledger's.
            state = {
                k: v.to(self._dtypes[k]) if k in self._dtypes else v for k, v in from_arrays(arrays).items()
            }
            arrays = to_arrays(state)
            record["model_sha256"] = state_digest(state)
        else:
            record["model_sha256"] = self._model_digest
        eps = self.epsilon()
        local = [r["epsilon"] for r in rows if "epsilon" in r]
        if eps is None and local:
            eps = max(local)  # local DP: the worst client's budget
        record["epsilon"] = eps
        record["bytes_sent"], record["bytes_received"] = self.bytes_sent_, self.bytes_received_
        self.rounds_.append(record)
        return arrays, metrics

    # -- evaluation ----------------------------------------------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        for m in messages:
            self.bytes_sent_ += sum(nbytes(r) for r in m.content.array_records.values())
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        clients = []
        for msg in replies:
            if msg.has_error():
                continue
            m = next(iter(msg.content.metric_records.values()), None)
            if m is not None:
                clients.append({k: float(v) for k, v in m.items() if not isinstance(v, list)})
        ok = [m for m in replies if not m.has_error()]
        agg = self.inner.aggregate_evaluate(server_round, ok) if ok else None
        if self.rounds_ and self.rounds_[-1]["round"] == server_round:
            self.rounds_[-1]["clients"] = clients
            self.rounds_[-1]["bytes_sent"] = self.bytes_sent_
        return agg


# -- the registry --------------------------------------------------------------------------------

STRATEGIES: dict[str, Callable[..., Strategy]] = {}


def register(name: str) -> Callable[[Callable[..., Strategy]], Callable[..., Strategy]]:
    def deco(fn: Callable[..., Strategy]) -> Callable[..., Strategy]:
        STRATEGIES[name] = fn
        return fn

    return deco


def _common(cfg: FederatedConfig, n_clients: int) -> dict[str, Any]:
    sampled = max(1, round(cfg.fraction * n_clients))
    weight = DP_WEIGHT_KEY if cfg.privacy is not None and cfg.privacy.mode == "central" else WEIGHT_KEY
    return {
        "fraction_train": cfg.fraction,
        "fraction_evaluate": 1.0,  # every client scores the global model: mean and worst accuracy
        "min_train_nodes": sampled,
        "min_evaluate_nodes": n_clients,
        "min_available_nodes": n_clients,
        "weighted_by_key": weight,
    }


@register("fedavg")
def _fedavg(cfg: FederatedConfig, n_clients: int, **_: Any) -> Strategy:
    return FedAvg(**_common(cfg, n_clients))


@register("fedadam")
def _fedadam(cfg: FederatedConfig, n_clients: int, **_: Any) -> Strategy:
    # eta is the server's Adam step; Flower's default 0.1 suits raw weights poorly: the recipe sets it.
    return FedAdam(**_common(cfg, n_clients), eta=cfg.server_lr if cfg.server_lr != 1.0 else 1e-2)


@register("fedprox")
def _fedprox(cfg: FederatedConfig, n_clients: int, **_: Any) -> Strategy:
    return FedProx(**_common(cfg, n_clients), proximal_mu=cfg.proximal_mu)


@register("scaffold")
def _scaffold(
    cfg: FederatedConfig, n_clients: int, param_keys: list[str], total_examples: float | None = None, **_: Any
) -> Strategy:
    kw = _common(cfg, n_clients)
    return Scaffold(
        param_keys, n_total_clients=n_clients, server_lr=cfg.server_lr, total_examples=total_examples, **kw
    )


@register("krum")
def _krum(cfg: FederatedConfig, n_clients: int, **_: Any) -> Strategy:
    return Krum(**_common(cfg, n_clients), num_malicious_nodes=cfg.byzantine)


@register("multikrum")
def _multikrum(cfg: FederatedConfig, n_clients: int, **_: Any) -> Strategy:
    # Keep n - f updates, the most MultiKrum can trust (El Mhamdi et al. 2018).
    keep = max(1, n_clients - cfg.byzantine)
    return MultiKrum(**_common(cfg, n_clients), num_malicious_nodes=cfg.byzantine, num_nodes_to_select=keep)


@register("trimmed_mean")
def _trimmed(cfg: FederatedConfig, n_clients: int, **_: Any) -> Strategy:
    return FedTrimmedAvg(**_common(cfg, n_clients), beta=cfg.trim_beta)


def build_strategy(
    cfg: FederatedConfig,
    n_clients: int,
    param_keys: list[str],
    total_examples: float | None = None,
) -> Guarded:
    """The recipe's strategy, wrapped in central DP when asked, inside the guard.

    ``total_examples``: all clients' training rows (from the statistics round), for SCAFFOLD's weights.
    """
    inner = STRATEGIES[cfg.strategy](cfg, n_clients, param_keys=param_keys, total_examples=total_examples)
    if cfg.privacy is not None and cfg.privacy.mode == "central":
        from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
        from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

        p = cfg.privacy
        sampled = max(1, round(cfg.fraction * n_clients))
        accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=p.delta,
                population_size=n_clients,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                # Flower's fixed-clipping accounting supports only this: no credit for sampling.
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        inner = DifferentialPrivacyServerSideFixedClipping(
            inner, p.noise_multiplier, p.clipping_norm, sampled, accountant=accountant
        )
    return Guarded(inner, min_clients=cfg.min_clients)
