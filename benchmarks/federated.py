"""Federated learning on digits: centralized vs FedAvg vs FedProx vs SCAFFOLD, faults, central DP, cost.

Setup (``SETUP``): scikit-learn's digits, the recipe's split (test 20 %), a
small convolution-transformer hybrid (dim 32, depth 1, conv stem), plain SGD
(lr 0.05, batch 32, no momentum, weight decay or clipping: SCAFFOLD's
option II needs it, and every method gets the same local optimizer), 10
clients, 20 rounds of 5 local epochs (enough local work for client drift to
show: with 2 local epochs the methods tied within noise here).

- **Equal compute**: centralized training runs 100 epochs (20 rounds x 5)
  over the training split with the same optimizer, so it takes as many
  example gradients as the federation. Two things favour it: it trains on
  the whole split, while each client holds back ``local_val`` (20 %) of its
  rows to score the global model, and the Trainer keeps its best epoch on the
  validation split, a model selection the federation does not get.
- **Partitions**: IID and Dirichlet(alpha = 0.1) over labels.
- **Methods**: FedAvg, FedProx (mu 0.01), SCAFFOLD (weighted by examples);
  mean, sample std and per-seed test accuracy over seeds 0, 1, 2, and the
  worst client's accuracy on its own held-out rows.
- **Faults**: FedAvg, IID, with clients 0-2 of 10 failing (raise) or sending
  NaN updates every round, against the clean run of the same seed.
- **Central DP**: FedAvg, IID, clipping norm 1, noise multiplier 0.3 / 1 / 3:
  accuracy and epsilon at delta 1e-5 (Flower's RDP accountant, no sampling
  amplification).
- **Cost**: one 4-client, 3-round run on Flower's Simulation Engine
  (``glassbox.federated.launch.federate``): wall time and the peak memory
  of all its processes (this one, the SuperLink, the simulation, Ray's
  workers) as summed proportional set size, sampled every 0.2 s.

Everything except the cost run uses ``LocalGrid`` (the same ServerApp logic,
strategies and ClientApp, called in this process) so 30-odd seeded runs fit
in minutes. One torch thread.

    .venv/bin/python benchmarks/federated.py > federated.json   # ~30 min on a 2-core machine
    .venv/bin/glassbox bench federated --quick                   # seed 0, fewer rounds, no DP sweep
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from glassbox.config import load_recipe

SETUP = [
    "report.enabled=false",
    "train.threads=1",
    "model.dim=32",
    "model.depth=1",
    "model.conv_stem=true",
    "train.optimizer=sgd",
    "train.lr=0.05",
    "train.momentum=0",
    "train.weight_decay=0",
    "train.grad_clip=null",
    "train.batch_size=32",
    "federated.clients=10",
    "federated.local_epochs=5",
]


def commit() -> str | None:
    from glassbox.run import _git_commit

    return _git_commit()


def _recipe(overrides: list[str]) -> Any:
    path = resources.files("glassbox") / "recipes" / "digits.yaml"
    return load_recipe(Path(str(path)), [*SETUP, *overrides])


def federated_unit(seed: int, rounds: int, extra: list[str]) -> dict[str, Any]:
    from glassbox.federated.local import run_local

    over = [f"seed={seed}", f"federated.rounds={rounds}", *extra]
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run = run_local(_recipe(over), out)
        lines = [m for m in run.metrics() if m.get("split") == "round"]
        meta = run.meta()
    last = lines[-1]
    return {
        "overrides": over,
        "status": meta["status"],
        "test_accuracy": last["test_accuracy"],
        "client_accuracy_worst": last.get("client_accuracy_worst"),
        "client_accuracy_mean": last.get("client_accuracy_mean"),
        "epsilon": last.get("epsilon"),
        "dropped_per_round": statistics.mean(m["dropped"] for m in lines[1:]) if len(lines) > 1 else 0,
        "curve": [round(m["test_accuracy"], 4) for m in lines],
        "seconds": round(time.perf_counter() - t, 1),
    }


def centralized_unit(seed: int, epochs: int) -> dict[str, Any]:
    from glassbox.pipeline import run_recipe

    # No early stopping: the federation's fixed budget. The Trainer still keeps the best
    # epoch on the validation split (model selection the federation does not get).
    over = [f"seed={seed}", f"train.epochs={epochs}", "train.patience=null", "train.schedule=constant"]
    over.append("train.warmup=0")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run = run_recipe(_recipe(over), out, progress=False)
        acc = run.meta()["results"]["test_accuracy"]
    return {"overrides": over, "test_accuracy": acc, "seconds": round(time.perf_counter() - t, 1)}


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def _pss(pid: int) -> int:
    """Proportional set size in bytes: shared pages (torch's libraries in every Ray worker) split
    among the processes sharing them, so a sum over processes is the memory really in use."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _run_pids() -> set[int]:
    """This process, its descendants, and every Flower or Ray process (Flower detaches its own)."""
    parent: dict[int, int] = {}
    pids = {os.getpid()}
    for p in Path("/proc").glob("[0-9]*"):
        try:
            parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (p / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"flwr" in cmd or b"flower" in cmd or b"ray" in cmd:
            pids.add(int(p.name))
    grew = True
    while grew:
        new = {c for c, par in parent.items() if par in pids} - pids
        pids |= new
        grew = bool(new)
    return pids


def cost_unit() -> dict[str, Any]:
    from glassbox.federated.launch import federate

    recipe = _recipe(["federated.clients=4", "federated.rounds=3", "federated.partition.scheme=iid"])
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], sum(_pss(p) for p in _run_pids()))
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    t = time.perf_counter()
    thread.start()
    with tempfile.TemporaryDirectory() as out:
        run = federate(recipe, out, engine="simulation")
        status = run.meta()["status"]
        acc = run.meta().get("results", {}).get("test_accuracy")
    stop.set()
    thread.join()
    return {
        "engine": "simulation",
        "clients": 4,
        "rounds": 3,
        "status": status,
        "test_accuracy": acc,
        "wall_s": round(time.perf_counter() - t, 1),
        "peak_pss_mb": round(peak[0] / 2**20),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="seed 0, 5 rounds, no DP sweep")
    p.add_argument("--skip-cost", action="store_true", help="no Simulation Engine run")
    p.add_argument("--only-cost", action="store_true", help="only the Simulation Engine run")
    p.add_argument("--json", action="store_true", help="(always JSON; accepted for glassbox bench)")
    args = p.parse_args(argv)
    os.environ.setdefault("GLASSBOX_LEDGER_KEY", str(Path(tempfile.mkdtemp()) / "bench.key"))
    torch.set_num_threads(1)
    if args.quick:
        args.seeds, args.rounds = [0], 5
    epochs = 5 * args.rounds
    results: dict[str, Any] = {"partitions": {}}
    partitions = {
        "iid": ["federated.partition.scheme=iid"],
        "dirichlet_0.1": ["federated.partition.scheme=dirichlet", "federated.partition.alpha=0.1"],
    }
    if args.only_cost:
        return {
            "benchmark": "federated",
            "date": datetime.date.today().isoformat(),
            "commit": commit(),
            "results": {"cost": cost_unit()},
        }
    central = [centralized_unit(s, epochs) for s in args.seeds]
    print(f"[federated] centralized: {[u['test_accuracy'] for u in central]}", file=sys.stderr)
    results["centralized"] = _stats([u["test_accuracy"] for u in central])
    clean_iid: dict[int, float] = {}
    for pname, pover in partitions.items():
        results["partitions"][pname] = {}
        for strategy in ("fedavg", "fedprox", "scaffold"):
            units = [
                federated_unit(s, args.rounds, [*pover, f"federated.strategy={strategy}"]) for s in args.seeds
            ]
            print(f"[federated] {pname} {strategy}: {[u['test_accuracy'] for u in units]}", file=sys.stderr)
            if pname == "iid" and strategy == "fedavg":
                clean_iid = {s: u["test_accuracy"] for s, u in zip(args.seeds, units, strict=True)}
            results["partitions"][pname][strategy] = {
                "test_accuracy": _stats([u["test_accuracy"] for u in units]),
                "client_accuracy_worst": _stats([u["client_accuracy_worst"] for u in units]),
                "units": units,
            }
    faults = {}
    for kind in ("fail", "nan"):
        units = [
            federated_unit(s, args.rounds, [*partitions["iid"], f"federated.faults.{kind}=[0,1,2]"])
            for s in args.seeds
        ]
        print(f"[federated] faults {kind}: {[u['test_accuracy'] for u in units]}", file=sys.stderr)
        drops = [clean_iid[s] - u["test_accuracy"] for s, u in zip(args.seeds, units, strict=True)]
        faults[kind] = {
            "test_accuracy": _stats([u["test_accuracy"] for u in units]),
            "drop_vs_clean_points": _stats([100 * d for d in drops]),
            "units": units,
        }
    results["faults_3_of_10"] = faults
    if not args.quick:
        dp = []
        for sigma in (0.3, 1.0, 3.0):
            over = [
                *partitions["iid"],
                "federated.privacy.mode=central",
                f"federated.privacy.noise_multiplier={sigma}",
            ]
            u = federated_unit(args.seeds[0], args.rounds, over)
            print(
                f"[federated] central DP sigma {sigma}: {u['test_accuracy']} eps {u['epsilon']}",
                file=sys.stderr,
            )
            dp.append({"noise_multiplier": sigma, **u})
        results["central_dp"] = dp
    if not args.skip_cost:
        results["cost"] = cost_unit()
        print(f"[federated] cost: {results['cost']}", file=sys.stderr)
    return {
        "benchmark": "federated",
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "torch": torch.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1},
        "settings": {
            "setup": SETUP,
            "seeds": args.seeds,
            "rounds": args.rounds,
            "centralized_epochs": epochs,
        },
        "results": results,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
