"""Data-parallel throughput: 2 processes (torchrun, DDP over gloo) against 1, on this machine.

Configurations, each training the digits recipe (recipes/digits.yaml: dim
64, depth 2, conv stem, global batch 64) for ``--epochs`` epochs with
``patience: null`` from the same seed, no run folder:

- ``1 process x 1 thread`` and ``1 process x 2 threads``: ``Trainer.fit``
  in this process;
- ``2 processes x 1 thread``: the same ``Trainer.fit`` in two workers
  started by torchrun's launcher (``elastic_launch``, as ``glassbox train
  --nproc 2`` does), each on its half of every global batch, gradients
  averaged by DDP over gloo on loopback;
- each of them again with in-run valuation (order 1, val_batch 8), which
  reduces gradients with one explicit all-reduce instead of DDP's.

A callback stamps ``time.perf_counter()`` at every step end (rank 0 under
DDP); the first ``--skip`` step intervals are warm-up and dropped, the
median of the rest is the step time; rows per second = 64 / step time.
Startup (process launch, imports, rendezvous) is reported apart, as the
wall time of the whole launch minus the timed steps. The configurations
run one after another (not interleaved: a 2-process run needs both cores),
``--reps`` times in rotating order; medians over repetitions.

Example:
    python benchmarks/distributed.py > distributed.json    # ~3 min
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _times(epochs: int, valuation: bool, out: str | None = None) -> list[float]:
    """Train as a worker (or alone); returns, and on rank 0 writes to ``out``, the step end times."""
    from importlib import resources

    from glassbox.config import load_recipe
    from glassbox.nn import build_model
    from glassbox.pipeline import _seed_everything, prepare_data
    from glassbox.train import Trainer, distributed
    from glassbox.train.callbacks import Callback

    d = distributed.init()
    path = Path(str(resources.files("glassbox") / "recipes" / "digits.yaml"))
    r = load_recipe(path, [f"train.epochs={epochs}", "train.patience=null", "report.enabled=false"])
    data = prepare_data(r)
    _seed_everything(r.seed)
    model = build_model(r.model, data["train"])
    stamps: list[float] = []

    class Clock(Callback):
        def on_step_end(self, trainer: Any, info: Any) -> None:
            stamps.append(time.perf_counter())

    callbacks: list[Callback] = [Clock()]
    if valuation:
        from glassbox.valuation.inrun import InRunValuation

        callbacks.append(InRunValuation(order=1, val_batch=8, seed=r.seed))
    Trainer(model, r.train, callbacks=callbacks, seed=r.seed).fit(data["train"], data["val"])
    if out is not None and d.main:
        Path(out).write_text(json.dumps(stamps))
    distributed.shutdown()
    return stamps


def _launch_two(epochs: int, valuation: bool) -> tuple[list[float], float]:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "stamps.json")
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=2, run_id=f"bench-{os.getpid()}", rdzv_backend="c10d",
            rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2,
        )  # fmt: skip
        env_before = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        start = time.perf_counter()
        try:
            args = [str(Path(__file__).resolve()), "--worker", "--epochs", str(epochs)]
            elastic_launch(config, entrypoint=sys.executable)(
                *args, *(["--valuation"] if valuation else []), out
            )
        finally:
            if env_before is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = env_before
        wall = time.perf_counter() - start
        return json.loads(Path(out).read_text()), wall


def _step_ms(stamps: list[float], skip: int) -> float:
    gaps = [b - a for a, b in itertools.pairwise(stamps)][skip:]
    return 1000 * statistics.median(gaps)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--skip", type=int, default=3, help="warm-up step intervals dropped")
    p.add_argument("--quick", action="store_true", help="1 epoch, 1 repetition")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--valuation", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("out", nargs="?", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        torch.set_num_threads(1)
        _times(args.epochs, args.valuation, args.out)
        return {}
    if args.quick:
        args.epochs, args.reps = 1, 1
    configs = [(mode, val) for val in (False, True) for mode in ("1x1", "1x2", "2x1")]
    results: dict[str, dict[str, list[float]]] = {f"{m}{'+valuation' if v else ''}": {} for m, v in configs}
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        for rep in range(args.reps):
            for mode, val in configs[rep % len(configs) :] + configs[: rep % len(configs)]:
                key = f"{mode}{'+valuation' if val else ''}"
                if mode == "2x1":
                    stamps, wall = _launch_two(args.epochs, val)
                else:
                    torch.set_num_threads(1 if mode == "1x1" else 2)
                    t0 = time.perf_counter()
                    stamps = _times(args.epochs, val)
                    wall = time.perf_counter() - t0
                ms = _step_ms(stamps, args.skip)
                timed = stamps[-1] - stamps[0]
                res = results[key]
                res.setdefault("step_ms", []).append(round(ms, 2))
                res.setdefault("overhead_s", []).append(round(wall - timed, 2))
                print(f"[distributed] rep {rep} {key}: {ms:.1f} ms/step", file=sys.stderr)
    finally:
        torch.set_num_threads(threads)
    summary = {}
    for key, res in results.items():
        ms = statistics.median(res["step_ms"])
        summary[key] = {
            "step_ms": round(ms, 2),
            "rows_per_s": round(64 / (ms / 1000), 1),
            "startup_and_eval_s": statistics.median(res["overhead_s"]),
            "per_rep_step_ms": res["step_ms"],
        }
    for val in ("", "+valuation"):
        base = summary[f"1x1{val}"]["step_ms"]
        for mode in ("1x2", "2x1"):
            summary[f"{mode}{val}"]["speedup_vs_1x1"] = round(base / summary[f"{mode}{val}"]["step_ms"], 3)
    from glassbox.run import _git_commit

    return {
        "benchmark": "distributed",
        "commit": _git_commit(),
        "settings": {
            "recipe": "digits.yaml",
            "global_batch": 64,
            "epochs": args.epochs,
            "reps": args.reps,
            "skip": args.skip,
            "backend": "gloo, loopback",
        },
        "results": summary,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {"cpu": platform.processor() or "unknown", "cores": os.cpu_count()},
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }


if __name__ == "__main__":
    res = main(sys.argv[1:])
    if res:
        json.dump(res, sys.stdout, indent=2)
        print()
