"""In-run Data Shapley: what valuing every example while training costs, and how well it finds flipped labels.

Three parts, each on the shipped recipes ``digits`` (digits.yaml: AdamW, lr
0.002, batch 64) and ``breast-cancer`` (healthcare.yaml: AdamW, lr 0.001,
batch 16). "SGD" below is the same recipe with ``train.optimizer=sgd
train.lr=0.05`` (momentum 0.9, the TrainConfig default); "AdamW" is the
recipe's own optimizer. Everything else (model, dropout, schedule, gradient
clipping, early stopping) is the recipe's.

1. Overhead. One epoch (``train.epochs=1``, ``train.patience=null``) from a
   fresh model (same seed each time) per configuration: no valuation,
   ``InRunValuation(order=1)`` and ``order=2``, at the recipe's
   ``valuation.val_batch`` (8) and at ``val_batch=1``, for both optimizers.
   One thread (``torch.set_num_threads(1)``). A callback stamps
   ``time.perf_counter()`` and ``time.process_time()`` at every
   ``on_step_end``; the first ``--skip-steps`` step intervals are warm-up
   and dropped, the rest give the epoch's median ms per optimizer step. The
   validation rows reach InRunValuation through ``val=`` and ``fit(train,
   None)`` is called, so no epoch-end evaluation is timed in any
   configuration. One untimed warm-up epoch of every configuration, then
   ``--reps`` repetitions, the configurations interleaved within each
   repetition (their order rotated by one each repetition), so each ratio
   compares epochs run side by side. Reported: the median over repetitions
   of the per-epoch medians, and ``throughput_ratio`` = plain ms/step over
   valued ms/step (1.0 = free; 0.5 = half the steps per second), from wall
   time and from the process's CPU time (which other work on a shared
   machine disturbs less), plus the range of the per-repetition ratios.
   This part runs last and alone (no quality workers alive).

2. Quality. For each data set and seed (the recipe's ``seed`` sets the
   split, which labels are flipped and the initialization), with
   ``data.label_noise=0.1``: one training run per optimizer with
   ``InRunValuation(order=1)`` (the recipe's val_batch; validation data the
   validation split) and ``EpochSnapshots(5)`` for TracIn-CP, trained
   exactly as the recipe says (early stopping included); then the AUROC of
   ``-value`` for "this row's label was flipped" for in-run (SGD and AdamW),
   TracIn-CP over that run's checkpoints (so one TracIn row per optimizer),
   and KNN-Shapley (K = 5, standardized inputs; it trains nothing, so one
   row). Mean, sample standard deviation (ddof 1) and per-seed values.

3. Cleaning. For the same seeds and optimizers: two more training runs
   without any valuation callback, on all (noisy) training rows and on the
   rows left after dropping the lowest-valued 10 % by that optimizer's
   in-run values (``prepare_data(recipe, clean={"values": values.csv,
   "fraction": 0.1})``, as ``glassbox train --drop-lowest 0.1`` does), same
   recipe and seed; their test accuracy, and how many dropped rows had
   flipped labels. The valued run's own test accuracy is recorded too.

``--jobs N`` runs the quality units (data set x seed x optimizer) in N
worker processes, each this script started with ``--unit`` (a subprocess
rather than multiprocessing's spawn, because ``glassbox bench`` imports this
file under a name a spawned child could not import), each with one thread.

``--quick``: seed 0, digits only, ``train.epochs=3``, no TracIn, the
default val_batch only, 2 repetitions of the overhead; it is what the test
suite runs.

Example:
    python benchmarks/valuation.py --jobs 2 > valuation.json   # ~16 min on a 2-core machine
    python benchmarks/valuation.py --skip-quality              # the overhead alone, ~3 min
    glassbox bench valuation --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glassbox.config import Recipe, load_recipe
from glassbox.train.callbacks import Callback

RECIPES = {"digits": "digits", "breast-cancer": "healthcare"}  # data set -> shipped recipe
OPTIMIZERS = {"sgd": ["train.optimizer=sgd", "train.lr=0.05"], "adamw": []}
NOISE = 0.1
DROP = 0.1
TRACIN_CHECKPOINTS = 5
KNN_K = 5


def recipe(dataset: str, overrides: list[str]) -> Recipe:
    path = resources.files("glassbox") / "recipes" / f"{RECIPES[dataset]}.yaml"
    return load_recipe(Path(str(path)), overrides)


def code_version() -> dict[str, str]:
    """The checkout's commit and a hash of glassbox/valuation/*.py, so runs of different code show."""
    import hashlib

    import glassbox.valuation

    folder = Path(glassbox.valuation.__file__).parent
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"commit": commit or "unknown", "valuation_sha256": h.hexdigest()[:12]}


def _seed_everything(seed: int) -> None:
    # What glassbox.pipeline does before building the model, so a run here is a run there.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rnd(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


# ----------------------------------------------------------------------------- overhead


class StepClock(Callback):
    """Wall-clock and process CPU time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_fit_start(self, trainer: Any) -> None:
        self.wall, self.cpu = [time.perf_counter()], [time.process_time()]

    def on_step_end(self, trainer: Any, info: Any) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


def _configs(val_batches: list[int]) -> list[tuple[str, int | None, int | None]]:
    out: list[tuple[str, int | None, int | None]] = [("plain", None, None)]
    for vb in val_batches:
        out += [(f"order1_vb{vb}", 1, vb), (f"order2_vb{vb}", 2, vb)]
    return out


def _one_epoch(r: Recipe, data: dict[str, Any], order: int | None, val_batch: int | None, skip: int):
    from glassbox.nn import build_model
    from glassbox.train import Trainer
    from glassbox.valuation import InRunValuation

    callbacks: list[Callback] = []
    if order is not None:
        callbacks.append(InRunValuation(order=order, val_batch=val_batch, val=data["val"], seed=r.seed))
    clock = StepClock()
    _seed_everything(r.seed)
    model = build_model(r.model, data["train"])
    Trainer(model, r.train, callbacks=[*callbacks, clock], seed=r.seed).fit(data["train"], None)
    if order is not None and not np.isfinite(callbacks[0].values_).all():
        raise RuntimeError(f"{r.name}: in-run values not finite (order {order}, val_batch {val_batch})")
    wall, cpu = np.diff(clock.wall)[skip:], np.diff(clock.cpu)[skip:]
    return float(np.median(wall)), float(np.median(cpu)), len(wall)


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    from glassbox.pipeline import prepare_data

    out: dict[str, Any] = {}
    for dataset in args.datasets:
        base = recipe(dataset, [])
        val_batches = [base.valuation.val_batch] if args.quick else sorted({base.valuation.val_batch, 1})
        configs = _configs(val_batches)
        runs = {}
        for opt, extra in OPTIMIZERS.items():
            r = recipe(dataset, [*extra, "train.epochs=1", "train.patience=null"])
            runs[opt] = (r, prepare_data(r))
        keys = [(opt, c) for opt in OPTIMIZERS for c in configs]
        wall: dict[Any, list[float]] = {k: [] for k in keys}
        cpu: dict[Any, list[float]] = {k: [] for k in keys}
        counted = 0
        for rep in range(-args.warmup_reps, args.reps):
            shift = rep % len(keys)
            for opt, (name, order, vb) in keys[shift:] + keys[:shift]:
                r, data = runs[opt]
                w, c, counted = _one_epoch(r, data, order, vb, args.skip_steps)
                if rep >= 0:
                    wall[(opt, (name, order, vb))].append(w)
                    cpu[(opt, (name, order, vb))].append(c)
            what = "warm-up" if rep < 0 else f"repetition {rep + 1}/{args.reps}"
            print(f"[valuation] overhead {dataset} {what} done", file=sys.stderr)
        res: dict[str, Any] = {}
        for opt in OPTIMIZERS:
            plain = (opt, configs[0])
            cells: dict[str, Any] = {}
            for cfg in configs:
                k = (opt, cfg)
                cell = {
                    "ms_per_step": _rnd(1000 * statistics.median(wall[k]), 3),
                    "cpu_ms_per_step": _rnd(1000 * statistics.median(cpu[k]), 3),
                }
                if cfg[1] is not None:
                    per_rep = [p / v for p, v in zip(wall[plain], wall[k], strict=True)]
                    med = statistics.median
                    cell.update(
                        throughput_ratio=_rnd(med(wall[plain]) / med(wall[k]), 3),
                        throughput_ratio_cpu=_rnd(med(cpu[plain]) / med(cpu[k]), 3),
                        ratio_range=[_rnd(min(per_rep), 3), _rnd(max(per_rep), 3)],
                    )
                cells[cfg[0]] = cell
            res[opt] = cells
        r0 = runs["sgd"][0]
        out[dataset] = {
            "train_rows": len(runs["sgd"][1]["train"]),
            "batch_size": r0.train.batch_size,
            "steps_per_epoch": -(-len(runs["sgd"][1]["train"]) // r0.train.batch_size),
            "timed_steps_per_epoch": counted,
            "val_batches": val_batches,
            "results": res,
        }
    return out


# ----------------------------------------------------------------------------- quality


def _auroc(noisy: np.ndarray, values: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if not np.isfinite(values).all():
        return float("nan")  # reported as null; the unit also records how many were not finite
    return float(roc_auc_score(noisy, -values))


def _train(r: Recipe, train: Any, val: Any, callbacks: list[Callback]) -> tuple[Any, Any, float]:
    from glassbox.nn import build_model
    from glassbox.train import Trainer

    _seed_everything(r.seed)
    model = build_model(r.model, train)
    start = time.perf_counter()
    trainer = Trainer(model, r.train, callbacks=callbacks, seed=r.seed).fit(train, val)
    return model, trainer, time.perf_counter() - start


def unit(dataset: str, seed: int, opt: str, epochs: int | None, tracin: bool) -> dict[str, Any]:
    """One data set, seed and optimizer: the valued run, its AUROCs, and the cleaning retrain."""
    from glassbox.pipeline import prepare_data
    from glassbox.valuation import InRunValuation
    from glassbox.valuation.baselines import knn_shapley, tracin_cp
    from glassbox.valuation.stage import EpochSnapshots, features, values_csv

    torch.set_num_threads(1)
    start = time.perf_counter()
    overrides = [f"data.label_noise={NOISE}", f"seed={seed}", *OPTIMIZERS[opt]]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    r = recipe(dataset, overrides)
    d = prepare_data(r)
    train, val, test = d["train"], d["val"], d["test"]
    noisy = np.isin(train.index.numpy(), d["flipped"])
    iv = InRunValuation(order=1, val_batch=r.valuation.val_batch, val=val, seed=r.seed)
    snaps = EpochSnapshots(TRACIN_CHECKPOINTS)
    model, trainer, fit_s = _train(r, train, val, [iv, snaps] if tracin else [iv])
    values = iv.values_.copy()
    out: dict[str, Any] = {
        "dataset": dataset,
        "seed": seed,
        "optimizer": opt,
        "train_rows": len(train),
        "flipped": int(noisy.sum()),
        "epochs_run": max(rec["epoch"] for rec in trainer.history_),
        "best_epoch": trainer.best_epoch_,
        "steps": trainer.global_step_,
        "valued_fit_seconds": round(fit_s, 1),
        "inrun_nonfinite": int((~np.isfinite(values)).sum()),
        "auroc": {"inrun": _rnd(_auroc(noisy, values))},
        "test_accuracy_valued_run": _rnd(trainer.evaluate(test)["accuracy"]),
        "code": code_version(),
    }
    knn = knn_shapley(features(train, train), train.y.numpy(), features(val, train), val.y.numpy(), k=KNN_K)
    out["auroc"]["knn_shapley"] = _rnd(_auroc(noisy, knn))
    if tracin:
        t0 = time.perf_counter()
        tr = tracin_cp(model, snaps.weights_, snaps.lrs_, train, val)
        out["auroc"]["tracin"] = _rnd(_auroc(noisy, tr))
        out["tracin_checkpoints"] = len(snaps.weights_)
        out["tracin_seconds"] = round(time.perf_counter() - t0, 1)

    # Cleaning: both runs without valuation, so they differ only in the rows.
    _, full_trainer, _ = _train(r, train, val, [])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "values.csv"
        path.write_text(values_csv(values, train, noisy))
        dc = prepare_data(r, clean={"values": str(path), "fraction": DROP})
    _, clean_trainer, _ = _train(r, dc["train"], dc["val"], [])
    acc_all = full_trainer.evaluate(test)["accuracy"]
    acc_clean = clean_trainer.evaluate(test)["accuracy"]
    out["cleaning"] = {
        "test_accuracy_all": _rnd(acc_all),
        "test_accuracy_cleaned": _rnd(acc_clean),
        "dropped": dc["cleaning"]["dropped"],
        "flipped_dropped": dc["cleaning"]["flipped_dropped"],
    }
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def _run_unit_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unit.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        script = str(Path(__file__).resolve())
        cmd = [sys.executable, script, "--unit", json.dumps(spec), "--unit-out", str(path)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"worker for {spec} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(path.read_text())


def quality(args: argparse.Namespace) -> list[dict[str, Any]]:
    epochs = 3 if args.quick else None
    # Longest first (digits, SGD trains longest), so two workers finish together.
    specs = [
        {"dataset": ds, "seed": s, "opt": opt, "epochs": epochs, "tracin": not args.skip_tracin}
        for ds in args.datasets
        for opt in OPTIMIZERS
        for s in args.seeds
    ]

    def one(spec: dict[str, Any]) -> dict[str, Any]:
        res = unit(**spec) if args.jobs == 1 else _run_unit_subprocess(spec)
        print(
            f"[valuation] {spec['dataset']} seed {spec['seed']} {spec['opt']}: {res['seconds']:.0f} s",
            file=sys.stderr,
        )
        return res

    if args.jobs == 1:
        return [one(s) for s in specs]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(one, specs))


def _stats(xs: list[float | None]) -> dict[str, Any]:
    vals = [x for x in xs if x is not None]
    return {
        "mean": _rnd(statistics.fmean(vals)) if vals else None,
        "std": _rnd(statistics.stdev(vals)) if len(vals) > 1 else None,
        "per_seed": xs,
    }


def summarize(units: list[dict[str, Any]], datasets: list[str], seeds: list[int]) -> dict[str, Any]:
    auroc: dict[str, Any] = {}
    cleaning: dict[str, Any] = {}
    for ds in datasets:
        by = {(u["optimizer"], u["seed"]): u for u in units if u["dataset"] == ds}
        rows: dict[str, Any] = {}
        for opt in OPTIMIZERS:
            rows[f"inrun_{opt}"] = _stats([by[(opt, s)]["auroc"]["inrun"] for s in seeds])
            if "tracin" in by[(opt, seeds[0])]["auroc"]:
                rows[f"tracin_{opt}"] = _stats([by[(opt, s)]["auroc"]["tracin"] for s in seeds])
        rows["knn_shapley"] = _stats([by[("sgd", s)]["auroc"]["knn_shapley"] for s in seeds])
        auroc[ds] = rows
        cl: dict[str, Any] = {}
        for opt in OPTIMIZERS:
            c = [by[(opt, s)]["cleaning"] for s in seeds]
            cl[opt] = {
                "test_accuracy_all": _stats([x["test_accuracy_all"] for x in c]),
                "test_accuracy_cleaned": _stats([x["test_accuracy_cleaned"] for x in c]),
                "change_points": _stats(
                    [round(100 * (x["test_accuracy_cleaned"] - x["test_accuracy_all"]), 2) for x in c]
                ),
                "dropped": c[0]["dropped"],
                "flipped": by[(opt, seeds[0])]["flipped"],
                "flipped_dropped": _stats([x["flipped_dropped"] for x in c]),
                "test_accuracy_valued_run": _stats([by[(opt, s)]["test_accuracy_valued_run"] for s in seeds]),
            }
        cleaning[ds] = cl
    return {"auroc": auroc, "cleaning": cleaning}


def targets(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked: throughput ratios and AUROC on digits."""
    out: dict[str, Any] = {}
    for ds, o in res.get("overhead", {}).items():
        for opt, cells in o["results"].items():
            for name, cell in cells.items():
                if name == "plain":
                    continue
                need = 0.9 if name.startswith("order1") else 0.5
                out[f"throughput {ds} {opt} {name} >= {need}"] = cell["throughput_ratio"] >= need
    auroc = res.get("auroc", {}).get("digits")
    if auroc is not None:
        for opt in OPTIMIZERS:
            mean = auroc[f"inrun_{opt}"]["mean"]
            out[f"auroc digits inrun_{opt} >= 0.9"] = mean is not None and mean >= 0.9
            if f"tracin_{opt}" in auroc:
                tr = auroc[f"tracin_{opt}"]["mean"]
                out[f"auroc digits inrun_{opt} >= tracin_{opt}"] = None not in (mean, tr) and mean >= tr
    return out


# ----------------------------------------------------------------------------- main


def _csv(kind: type) -> Any:
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="seed 0, digits, 3 epochs, no TracIn, 2 repetitions")
    p.add_argument("--seeds", type=_csv(int), default=None, help="recipe seeds (default 0,1,2,3,4)")
    p.add_argument("--datasets", type=_csv(str), default=None, help="digits,breast-cancer (the default)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the quality runs")
    p.add_argument("--reps", type=int, default=None, help="timed epochs per configuration (default 7)")
    p.add_argument(
        "--warmup-reps", type=int, default=None, help="untimed epochs of each configuration first (default 1)"
    )
    p.add_argument("--skip-steps", type=int, default=3, help="warm-up steps dropped from each timed epoch")
    p.add_argument("--skip-tracin", action="store_true", help="no TracIn-CP (the slowest part)")
    p.add_argument("--skip-overhead", action="store_true", help="quality and cleaning only")
    p.add_argument("--skip-quality", action="store_true", help="overhead only (minutes)")
    p.add_argument("--unit", default=None, help=argparse.SUPPRESS)  # worker mode: one quality unit
    p.add_argument("--unit-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2, 3, 4]
    if args.datasets is None:
        args.datasets = ["digits"] if args.quick else list(RECIPES)
    unknown = [d for d in args.datasets if d not in RECIPES]
    if unknown:
        p.error(f"unknown data set(s) {unknown}; choose from {', '.join(RECIPES)}")
    if args.reps is None:
        args.reps = 2 if args.quick else 7
    if args.warmup_reps is None:
        args.warmup_reps = 0 if args.quick else 1  # --skip-steps still drops each epoch's first steps
    if args.quick:
        args.skip_tracin = True
    if args.jobs < 1 or args.reps < 1:
        p.error("--jobs and --reps must be at least 1")
    return args


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Quality runs first (in --jobs workers), then the overhead, alone; returns the JSON object."""
    args = parse_args(argv)
    if args.unit is not None:
        spec = json.loads(args.unit)
        res = unit(**spec)
        if args.unit_out:
            Path(args.unit_out).write_text(json.dumps(res))
        return res
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict[str, Any] = {"benchmark": "valuation"}
        out["settings"] = {
            "datasets": {ds: f"{RECIPES[ds]}.yaml" for ds in args.datasets},
            "seeds": args.seeds,
            "optimizers": {
                "sgd": "train.optimizer=sgd train.lr=0.05 (momentum 0.9)",
                "adamw": "the recipe's own (AdamW)",
            },
            "quality": {
                "label_noise": NOISE,
                "inrun": "order 1, the recipe's valuation.val_batch, validation split",
                "epochs": 3 if args.quick else "the recipe's (early stopping as the recipe says)",
                "tracin": None if args.skip_tracin else f"TracIn-CP, EpochSnapshots({TRACIN_CHECKPOINTS})",
                "knn_shapley_k": KNN_K,
                "drop_fraction": DROP,
                "std": "sample (ddof 1) over seeds",
                "jobs": args.jobs,
            },
            "overhead": {
                "threads": 1,
                "epochs": 1,
                "reps": args.reps,
                "warmup_reps": args.warmup_reps,
                "skip_steps": args.skip_steps,
                "statistic": "median over repetitions of each epoch's median step, configs interleaved",
                "throughput_ratio": "plain ms/step / valued ms/step",
            },
            "quick": args.quick,
        }
        if not args.skip_quality:
            units = quality(args)
            out.update(summarize(units, args.datasets, args.seeds))
            out["units"] = units
        if not args.skip_overhead:
            out["overhead_measured_at"] = datetime.datetime.now().isoformat(timespec="seconds")
            out["overhead_code"] = code_version()
            out["overhead"] = overhead(args)
        out["targets"] = targets(out)
    finally:
        torch.set_num_threads(threads)
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["machine"] = {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": 1}
    out["torch"] = torch.__version__
    out["python"] = platform.python_version()
    out["platform"] = platform.platform()
    out["date"] = datetime.date.today().isoformat()
    return out


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=2)
    print()
