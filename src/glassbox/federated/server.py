"""The server's side of a federated run, as one function over any Flower Grid: ``serve``.

``server_app.py`` calls it with the Grid Flower gives its ``@app.main()``
(Simulation Engine or Deployment Engine alike); tests and the benchmark call
it with ``LocalGrid`` (glassbox.federated.local), which runs the same
ClientApp in this process. Either way the run folder ends the same:

- before round 1, a ``query.stats`` round pools the clients' input
  statistics into the global model (the server never sees a row);
- every round, the guard's record goes to the ledger: one
  ``federated-update`` entry per accepted client update (its SHA-256) and
  one ``federated-round`` entry with the aggregated model's SHA-256, the
  dropped clients and why, and epsilon; and a line to ``metrics.jsonl``
  with the server's test accuracy, the clients' mean and worst accuracy,
  bytes exchanged and wall time;
- at the end, the final model (whose digest is the last round's),
  ``federated.json``, predictions, and the report.
"""

from __future__ import annotations

import time
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glassbox.config import Recipe
from glassbox.federated import task
from glassbox.federated.updates import state_digest

FEDERATED = "federated.json"
NODE_WAIT = 120.0  # seconds to wait for every SuperNode to connect before the first round


def _wait_for_nodes(grid: Any, n: int, timeout: float = NODE_WAIT) -> list[int]:
    from glassbox.errors import UserError

    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(int(i) for i in grid.get_node_ids())
        if len(nodes) >= n:
            return nodes
        if time.monotonic() > deadline:
            raise UserError(
                f"only {len(nodes)} of {n} SuperNodes connected within {timeout:.0f} s; start one SuperNode "
                f"per client (partition-id 0..{n - 1}) or lower federated.clients"
            )
        time.sleep(1.0)


def pool_statistics(grid: Any, nodes: list[int], timeout: float) -> tuple[dict[str, torch.Tensor], float]:
    """Ask every client for its (count, mean, std); their pooled statistics and total count."""
    from flwr.app import Message, RecordDict

    messages = [Message(RecordDict(), message_type="query.stats", dst_node_id=n) for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    stats = [task.from_arrays(r.content["stats"]) for r in replies if not r.has_error()]
    if not stats:
        reasons = "; ".join(str(r.error.reason) for r in replies if r.has_error())[:500]
        raise RuntimeError(f"no client answered the statistics query: {reasons or 'no replies'}")
    return task.pooled_stats(stats), float(sum(float(s["count"].sum()) for s in stats))


def _round_line(record: dict[str, Any], test: dict[str, float], started: float) -> dict[str, Any]:
    clients = record.get("clients", [])
    accs = [c["accuracy"] for c in clients if "accuracy" in c]
    line: dict[str, Any] = {
        "split": "round",
        "round": record["round"],
        **{f"test_{k}": v for k, v in test.items()},
        "accepted": len(record.get("accepted", [])),
        "dropped": len(record.get("dropped", [])),
        "bytes_sent": record.get("bytes_sent", 0),
        "bytes_received": record.get("bytes_received", 0),
        "wall_s": round(time.monotonic() - started, 3),
    }
    if accs:
        line["client_accuracy_mean"] = float(np.mean(accs))
        line["client_accuracy_worst"] = float(np.min(accs))
    losses = [a["train_loss"] for a in record.get("accepted", []) if "train_loss" in a]
    if losses:
        line["train_loss"] = float(np.mean(losses))
    if record.get("epsilon") is not None:
        line["epsilon"] = record["epsilon"]
    return line


def serve(grid: Any, recipe: Recipe, run_dir: str | Path) -> dict[str, Any]:
    """Run the recipe's federation over ``grid`` into the run folder ``run_dir``; returns its summary."""
    from glassbox.run import Run

    run = Run.open(run_dir)
    try:
        return _serve(grid, recipe, run)
    except BaseException as exc:
        run.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise


def _serve(grid: Any, recipe: Recipe, run: Any) -> dict[str, Any]:
    import random

    from flwr.app import ConfigRecord, MetricRecord
    from flwr.common.logger import log

    from glassbox.federated.strategies import build_strategy

    cfg = task.fed(recipe)
    random.seed(
        recipe.seed
    )  # Flower's node sampling draws from Python's random: the same clients every rerun
    started = time.monotonic()
    torch.set_num_threads(1)  # the clients share the machine's cores; one thread each is the fair split
    data = task.load_data(recipe)
    n = task.client_count(recipe, data)
    nodes = _wait_for_nodes(grid, n)
    model = task.build_global_model(recipe, data)
    stats, total = pool_statistics(grid, nodes, cfg.timeout)
    task.set_stats(model, stats)
    initial = task.get_state(model)
    param_keys = [k for k, p in model.named_parameters() if p.requires_grad]
    strategy = build_strategy(cfg, n, param_keys, total_examples=total)

    def evaluate_fn(server_round: int, arrays: Any) -> Any:
        state = task.from_arrays(arrays)
        test = task.evaluate_state(model, state, data["test"])
        if server_round == 0:
            record = {"round": 0, "model_sha256": state_digest(state), "accepted": [], "dropped": []}
            run.record("federated-round", data=record)
        else:
            record = strategy.rounds_[-1]
            for row in record["accepted"]:
                run.record("federated-update", data={"round": server_round, **row})
            run.record(
                "federated-round",
                data={k: v for k, v in record.items() if k not in ("accepted", "clients")}
                | {"accepted": [r["partition"] for r in record["accepted"]]},
            )
        line = _round_line(record, test, started)
        run.log(line)
        log(INFO, "glassbox round %d: test accuracy %.4f", server_round, test.get("accuracy", float("nan")))
        return MetricRecord({k: float(v) for k, v in test.items()})

    result = strategy.start(
        grid=grid,
        initial_arrays=task.to_arrays(initial),
        num_rounds=cfg.rounds,
        timeout=cfg.timeout,
        train_config=ConfigRecord({}),
        evaluate_fn=evaluate_fn,
    )
    final = task.from_arrays(result.arrays) if len(result.arrays) else initial
    return finish(run, recipe, data, model, final, strategy, time.monotonic() - started)


def finish(
    run: Any, recipe: Recipe, data: dict[str, Any], model: Any, final: dict, strategy: Any, wall: float
):
    """Write the final model, the federation's summary, predictions and the report; mark the run done."""
    from glassbox.nn import save_model
    from glassbox.pipeline import _predictions_csv
    from glassbox.train.trainer import predict_proba

    model.load_state_dict(final)
    test = task.evaluate_state(model, final, data["test"])
    save_model(model, run.path)
    run.record("model", ["model.safetensors", "model.json"], data={"model_sha256": state_digest(final)})
    if data["test"].task == "classification":
        run.write_text("predictions.csv", _predictions_csv(data["test"], predict_proba(model, data["test"])))
    rounds = strategy.rounds_
    summary = {
        "strategy": task.fed(recipe).strategy,
        "clients": task.client_count(recipe, data),
        "rounds": len(rounds),
        "final_model_sha256": state_digest(final),
        "wall_s": round(wall, 3),
        "bytes_sent": strategy.bytes_sent_,
        "bytes_received": strategy.bytes_received_,
        "epsilon": rounds[-1].get("epsilon") if rounds else None,
        "delta": task.fed(recipe).privacy.delta if task.fed(recipe).privacy else None,
        "dropped": [{"round": r["round"], **d} for r in rounds for d in r["dropped"]],
        "kept_previous": {r["round"]: r["kept_previous"] for r in rounds if "kept_previous" in r},
        "per_round": [
            {k: v for k, v in r.items() if k not in ("accepted",)} | {"accepted": len(r["accepted"])}
            for r in rounds
        ],
    }
    run.write_json(FEDERATED, summary, kind="federated-round")
    keys = ("strategy", "clients", "rounds", "epsilon", "delta")
    run.update_meta(
        results={f"test_{k}": v for k, v in test.items()}, federated={k: summary[k] for k in keys}
    )
    if recipe.report.enabled:
        from glassbox.report.federated import write_federated_report

        write_federated_report(run, recipe, data)
    run.finish("completed")
    return summary
