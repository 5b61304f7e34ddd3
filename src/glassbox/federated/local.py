"""LocalGrid: a Flower Grid that runs glassbox's ClientApp in this process, one node after another.

Not an engine: no transport, no parallelism, no isolation. It exists so the
exact ServerApp logic (``server.serve``), strategies and ClientApp can be
driven in tests and in the benchmark's many seeded runs without Ray's start-up
cost (about 30 s and 1.4 GB per simulation here; FIELD-NOTES). Each node
keeps its own ``Context`` (node config and ``context.state``) across rounds,
as a SuperNode does; a ClientApp that raises becomes an error reply, as it
does under Flower. ``glassbox federate`` uses Flower's engines, never this.

>>> from glassbox.config import load_recipe
>>> r = load_recipe(None, ["data.source=iris", "federated.clients=3", "federated.rounds=1",
...     "federated.partition.scheme=iid", "model.dim=16", "model.depth=1", "report.enabled=false"])
>>> import tempfile; run = run_local(r, tempfile.mkdtemp())
>>> run.meta()["status"], len(run.metrics())
('completed', 2)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid

from glassbox.config import Recipe, render


class LocalGrid(Grid):
    """Nodes 1..n, each a ClientApp call in this process with its own persistent Context."""

    def __init__(self, client_app: Any, n: int, run_config: dict[str, Any]) -> None:
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.run import Run as FlwrRun
        from flwr.supercore.task_identity import TaskIdentity

        self.client_app = client_app
        self.contexts = {
            i + 1: Context(
                run_id=1,
                node_id=i + 1,
                node_config={"partition-id": i, "num-partitions": n},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i in range(n)
        }
        # Messages take their run id and sender from the task identity, as in Flower's own simulation.
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
        self._run = FlwrRun.create_empty(1)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(
            content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            node = msg.metadata.dst_node_id
            try:
                reply = self.client_app(msg, self.contexts[node])
            except Exception as exc:  # Flower turns a raising ClientApp into an error reply, so do we
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = node
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))


def run_config(recipe: Recipe, run_dir: str | Path) -> dict[str, Any]:
    """The Flower run config glassbox's apps read: the run folder and the recipe's full YAML."""
    return {"run-dir": str(Path(run_dir).resolve()), "recipe": render(recipe)}


def run_local(recipe: Recipe, out: str | Path = "runs", *, quiet: bool = True) -> Any:
    """The recipe's federation, in this process, into a new run folder under ``out``.

    ``quiet``: Flower's per-round INFO lines stay off the console (warnings still show).
    """
    import logging

    from flwr.common.logger import console_handler

    from glassbox.federated import task
    from glassbox.federated.client_app import app as client_app
    from glassbox.federated.launch import create_run
    from glassbox.federated.server import serve
    from glassbox.run import Run

    run = create_run(recipe, out)
    n = task.client_count(recipe, task.load_data(recipe))
    grid = LocalGrid(client_app, n, run_config(recipe, run.path))
    level = console_handler.level
    if quiet:
        console_handler.setLevel(logging.WARNING)
    try:
        serve(grid, recipe, run.path)
    finally:
        console_handler.setLevel(level)
    return Run(run.path)
