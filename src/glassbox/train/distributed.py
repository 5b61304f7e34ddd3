"""Data-parallel training on PyTorch's own engine: torchrun, torch.distributed, DistributedDataParallel.

glassbox has no distributed engine of its own. ``glassbox train RECIPE
--nproc N`` hands N local workers to torchrun's launcher
(``torch.distributed.launcher.elastic_launch``, what ``torchrun`` runs),
each running ``glassbox train RECIPE`` with torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...); on several machines the user
runs ``torchrun`` directly with the same command and the same code path.

What a worker does differently (``glassbox.train.Trainer`` and the
pipeline read ``current()``):

- every global batch of the single-process run is split across the ranks
  (``shard``), so the recipe's ``batch_size`` is the global batch and the
  trajectory is the single-process one, up to float summation order: the
  epoch order depends only on (seed, epoch), which is also what makes the
  sampler position part of every checkpoint;
- gradients are averaged by DDP (each rank's loss is scaled to its share of
  the global batch), or, when a callback owns the forward and backward
  (in-run valuation), summed by one explicit all-reduce after it, because
  DDP's reduction during backward would run before the valuation has taken
  the validation rows' share out of ``.grad``;
- rank 0 alone writes the run folder, metrics, checkpoints and ledger;
  every rank logs to ``logs/rank<r>.log`` in it;
- collectives time out (``GLASSBOX_DIST_TIMEOUT``, default 120 s), and a
  worker that dies makes the launcher stop the others: the job ends with
  the failing rank and its exit code named, and the run marked failed.

>>> current().world, current().rank  # outside torchrun: one process
(1, 0)
>>> shard(torch.arange(10), Dist(rank=1, world=3)).tolist()
[4, 5, 6]
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glassbox.errors import UserError
from glassbox.train.callbacks import Callback

TIMEOUT_S = 120.0  # a collective that waits longer than this fails instead of hanging
RUN_FILE_ENV = "GLASSBOX_RUN_FILE"  # rank 0 writes its run folder's path here, for the launcher


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> Dist:
    """This process's rank and the world size (``Dist(0, 1)`` when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


def main_process() -> bool:
    """Rank 0, or not distributed; from torchrun's environment, so it holds after the group is gone."""
    return int(os.environ.get("RANK", "0")) == 0


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def _terminate(signum: int, frame: Any) -> None:
    # torchrun stops the surviving workers with SIGTERM when one fails; as an
    # exception it unwinds through ``with run:``, which marks the folder failed.
    raise SystemExit(f"stopped by signal {signal.Signals(signum).name}: another worker of the job failed")


def init() -> Dist:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPUs); a no-op outside torchrun."""
    if not launched_by_torchrun():
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        timeout = float(os.environ.get("GLASSBOX_DIST_TIMEOUT", TIMEOUT_S))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
        signal.signal(signal.SIGTERM, _terminate)
        import warnings

        # The CLS token's gradient comes from an expand, so its strides differ from DDP's bucket
        # view; DDP copies it, correctly, and warns on every step.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return current()


def shard(idx: torch.Tensor, d: Dist | None = None) -> torch.Tensor:
    """This rank's contiguous part of a global batch (parts differ in size by at most one; may be empty)."""
    d = d or current()
    return idx.tensor_split(d.world)[d.rank] if d.active else idx


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum ``tensors`` over the ranks in place, as one flat message."""
    import torch.distributed as dist

    if not tensors or not current().active:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    import torch.distributed as dist

    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    """Leave the process group, all ranks together (a no-op outside torchrun).

    The barrier first: a rank that tears gloo down while a peer still talks to
    it can abort ("terminate called without an active exception"), which
    would fail a job whose training had succeeded.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if current().active:
        dist.barrier()


def rank_log(folder: Path, d: Dist | None = None) -> logging.Handler:
    """Send the ``glassbox`` logger of this rank to ``folder/logs/rank<r>.log``; returns the handler."""
    d = d or current()
    path = Path(folder) / "logs" / f"rank{d.rank}.log"
    path.parent.mkdir(parents=True, exist_ok=True)  # on another machine: a local folder of the same name
    handler = logging.FileHandler(path)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s rank {d.rank}/{d.world} pid %(process)d %(message)s")
    )
    log = logging.getLogger("glassbox")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return handler


def close_log(handler: logging.Handler) -> None:
    logging.getLogger("glassbox").removeHandler(handler)
    handler.close()


def launch(argv: list[str], nproc: int) -> str:
    """Run ``glassbox <argv>`` in ``nproc`` local workers through torchrun's launcher; returns the run folder.

    A failed worker stops the others; the error names the rank and its exit
    code or signal and points at its log. The run folder (whose path rank 0
    leaves in a file) is marked failed if no worker managed to.
    """
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise UserError(f"--nproc {nproc}: give the number of worker processes, at least 1")
    fd, run_file = tempfile.mkstemp(prefix="glassbox-run-", suffix=".txt")
    os.close(fd)
    os.environ[RUN_FILE_ENV] = run_file
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"glassbox-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port on loopback
        max_restarts=0,  # a failed worker ends the job; --resume continues it
        monitor_interval=0.5,
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "glassbox", *argv)
        return Path(run_file).read_text().strip()
    except ChildFailedError as err:
        run = Path(run_file).read_text().strip() if Path(run_file).is_file() else ""
        _mark_failed(run, err)
        rank, failure = err.get_first_failure()  # the root cause; the others failed because of it
        how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        where = f"; see {run}/logs/rank{rank}.log, continue with glassbox train --resume {run}" if run else ""
        raise UserError(f"distributed training failed: worker rank {rank} ended with {how}{where}") from None
    finally:
        Path(run_file).unlink(missing_ok=True)
        os.environ.pop(RUN_FILE_ENV, None)


def _mark_failed(run: str, err: Exception) -> None:
    if not run or not (Path(run) / "meta.json").is_file():
        return
    from glassbox.run import Run

    r = Run(run)
    if r.meta().get("status") == "running":  # rank 0 itself was killed before it could say so
        r.update_meta(status="failed", error=f"a worker died: {str(err).strip().splitlines()[0][:300]}")


class StepLog(Callback):
    """Each rank's own record in its log: the rows it held and the global loss, per step and epoch."""

    def on_step_end(self, trainer: Any, info: Any) -> None:
        d = current()
        rows = len(shard(info.indices, d))
        logging.getLogger("glassbox").info(
            "step %d epoch %d rows %d of %d loss %.6f", info.step, info.epoch, rows, len(info.indices),
            float(info.loss),
        )  # fmt: skip

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        logging.getLogger("glassbox").info("epoch %d done: %s", epoch, shown)
