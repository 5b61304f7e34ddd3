"""glassbox's Flower ClientApp: unpack the message, call task.py, pack the reply. Nothing else.

Each SuperNode is one client; its ``partition-id`` (node config; the
Simulation Engine sets it, a SuperNode gets it from ``--node-config``)
says which part of the recipe's training rows it holds. SCAFFOLD's client
control variate and local DP's accountant history live in ``context.state``,
which Flower keeps for the node between rounds.
"""

from __future__ import annotations

import json

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from glassbox.federated import task
from glassbox.federated.strategies import DC_PREFIX, DP_WEIGHT_KEY, WEIGHT_KEY

app = ClientApp()

C_I = "scaffold-c-i"
# SCAFFOLD: the c_i computed in a round is only this client's once the server has
# used its update (SCAFFOLD's c stays the mean of the c_i only then); until the next
# round's message says so, it waits here with the round it belongs to.
C_I_PENDING = "scaffold-c-i-pending"
PENDING_ROUND = "scaffold-pending-round"
DP_HISTORY = "dp-history"


def _setup(context: Context) -> tuple:
    recipe = task.recipe_from_config(context.run_config)
    data = task.load_data(recipe)
    pid = int(context.node_config.get("partition-id", -1))
    train, val = task.client_data(recipe, data, pid)
    return recipe, data, pid, train, val


def _metrics(pid: int, examples: int, values: dict[str, float]) -> MetricRecord:
    return MetricRecord({WEIGHT_KEY: examples, DP_WEIGHT_KEY: 1.0, "partition-id": pid, **values})


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    """This client's input statistics (count, mean, std), pooled by the server into the global model's."""
    recipe, _, pid, train, _ = _setup(context)
    stats = task.client_stats(recipe, train)
    content = RecordDict({"stats": ArrayRecord(stats), "metrics": _metrics(pid, len(train), {})})
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    recipe, data, pid, train_rows, _ = _setup(context)
    model = task.build_global_model(recipe, data)
    global_state = task.from_arrays(msg.content["arrays"])
    config = msg.content["config"]
    scaffold_c = task.from_arrays(msg.content["scaffold-c"]) if "scaffold-c" in msg.content else None
    c_i = None
    if scaffold_c is not None:
        _commit_pending(context, pid, json.loads(str(config.get("scaffold-accepted", "{}"))))
        if C_I in context.state:
            c_i = task.from_arrays(context.state[C_I])
    history = None
    if DP_HISTORY in context.state:
        history = json.loads(str(context.state[DP_HISTORY]["json"]))
    result = task.local_train(
        recipe,
        model,
        global_state,
        train_rows,
        server_round=int(config.get("server-round", 0)),
        pid=pid,
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        scaffold_c=scaffold_c,
        scaffold_c_i=c_i,
        privacy_history=history,
    )
    state = task.apply_fault(recipe, pid, result.state, global_state)
    if result.c_i is not None and result.delta_c is not None:
        context.state[C_I_PENDING] = task.to_arrays(result.c_i)
        context.state[PENDING_ROUND] = ConfigRecord({"round": int(config.get("server-round", 0))})
        state = {**state, **{DC_PREFIX + k: v for k, v in result.delta_c.items()}}
    if result.privacy is not None:
        context.state[DP_HISTORY] = ConfigRecord({"json": json.dumps(result.privacy["history"])})
    values = {**result.metrics, "steps": float(result.steps)}
    content = RecordDict({"arrays": task.to_arrays(state), "metrics": _metrics(pid, result.examples, values)})
    return Message(content, reply_to=msg)


def _commit_pending(context: Context, pid: int, accepted: dict[str, list[int]]) -> None:
    """Keep last sampled round's c_i if the server accepted that round's update, else drop it."""
    if C_I_PENDING not in context.state:
        return
    rnd = str(context.state[PENDING_ROUND]["round"])
    if pid in accepted.get(rnd, []):
        context.state[C_I] = context.state[C_I_PENDING]
    del context.state[C_I_PENDING]
    del context.state[PENDING_ROUND]


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global model on this client's own held-out rows: per-client accuracy."""
    recipe, data, pid, _, val = _setup(context)
    model = task.build_global_model(recipe, data)
    metrics = task.evaluate_state(model, task.from_arrays(msg.content["arrays"]), val)
    content = RecordDict({"metrics": _metrics(pid, len(val), metrics)})
    return Message(content, reply_to=msg)
