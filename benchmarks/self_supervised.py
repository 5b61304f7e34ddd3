"""Self-supervised pretraining: how much each method's encoder gives a linear probe when labels are few.

For each data set and seed (the recipe's ``seed`` sets the split and the
initialization):

- each pretraining method (``contrastive``, ``vicreg``, ``masked``) is run
  with its defaults (``PretrainConfig()``: 150 epochs, batch 256) on every
  training row without its label, then the encoder is frozen and embeds the
  training and test rows;
- a random encoder (the same model, initialized, not trained) and the raw
  features are embedded too;
- for each label setting, 1 and 5 labeled rows per class and 1, 5, 10 and
  100 % of the training labels (stratified, at least one per class), the
  same seeded draws of labeled rows feed, on every feature set, a logistic
  regression probe and class-mean prototypes (``glassbox.ssl.fewshot``);
  ``--draws`` draws per setting and seed (one at 100 %);
- a supervised model from scratch (the recipe's model and training, with
  its early stopping on the full labeled validation split, which favours
  it at few labels) is trained on the first draw of each setting.

Data sets and recipes: ``digits`` (recipes/digits.yaml: dim 64, depth 2,
conv stem, 2x2 patches), ``breast-cancer`` (recipes/healthcare.yaml with
valuation off) and ``wine`` (the built-in defaults). One thread per worker;
``--jobs N`` runs the (data set, seed) units in N processes.

Reported: test accuracy, mean and sample std over seeds of the per-seed
means over draws, per feature set and classifier, and the seconds each
pretraining took. ``targets`` checks the issue's bars on digits.

``--quick``: wine only, seed 0, 5 pretraining epochs, 2 draws; what the
test suite runs.

Example:
    python benchmarks/self_supervised.py --jobs 2 > ssl.json     # ~15 min on a 2-core machine
    glassbox bench ssl --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
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

METHODS = ("contrastive", "vicreg", "masked")
SHOTS = (1, 5)
FRACTIONS = (0.01, 0.05, 0.1, 1.0)
RECIPES = {"digits": "digits", "breast-cancer": "healthcare", "wine": None}


def setting_name(shots: int | None, fraction: float | None) -> str:
    return f"{shots}-shot" if shots is not None else f"{100 * fraction:g}%"


def recipe(dataset: str, seed: int, overrides: list[str]) -> Any:
    from glassbox.config import load_recipe

    base = [f"seed={seed}", "report.enabled=false", "train.threads=1", *overrides]
    name = RECIPES[dataset]
    if name is None:
        return load_recipe(None, [f"data.source={dataset}", *base])
    path = resources.files("glassbox") / "recipes" / f"{name}.yaml"
    return load_recipe(Path(str(path)), ["valuation={method: none}", *base])


def _supervised(r: Any, data: dict[str, Any], rows: np.ndarray) -> float:
    from glassbox.nn import build_model
    from glassbox.train import Trainer

    torch.manual_seed(r.seed)
    train = data["train"].subset(rows)
    model = build_model(r.model, data["train"])  # input statistics from every training row
    trainer = Trainer(model, r.train, seed=r.seed).fit(train, data["val"])
    return float(trainer.evaluate(data["test"])["accuracy"])


def unit(dataset: str, seed: int, epochs: int | None, draws: int) -> dict[str, Any]:
    """Every method, the baselines and every label setting for one data set and seed."""
    from glassbox.config import PretrainConfig
    from glassbox.data.splits import labeled_subset
    from glassbox.nn import build_model
    from glassbox.pipeline import _seed_everything, prepare_data
    from glassbox.ssl import embed, pretrain
    from glassbox.ssl.fewshot import evaluate_shots

    torch.set_num_threads(1)
    start = time.perf_counter()
    r = recipe(dataset, seed, [])
    data = prepare_data(r)
    train, test = data["train"], data["test"]
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "raw": (train.X.flatten(1).numpy(), test.X.flatten(1).numpy())
    }
    seconds: dict[str, float] = {}
    _seed_everything(seed)
    rand = build_model(r.model, train)
    features["random"] = (embed(rand, train.X).numpy(), embed(rand, test.X).numpy())
    for method in METHODS:
        _seed_everything(seed)
        model = build_model(r.model, train)
        cfg = PretrainConfig(method=method, **({} if epochs is None else {"epochs": epochs}))
        history = pretrain(model, train.X, cfg, seed=seed, progress=False)
        seconds[method] = history[-1]["seconds"]
        features[method] = (embed(model, train.X).numpy(), embed(model, test.X).numpy())
        print(f"[ssl] {dataset} seed {seed} {method}: {seconds[method]:.0f} s", file=sys.stderr)
    y_tr, y_te = train.y.numpy(), test.y.numpy()
    settings = [(k, None) for k in SHOTS] + [(None, f) for f in FRACTIONS]
    results: dict[str, Any] = {}
    for shots, fraction in settings:
        name = setting_name(shots, fraction)
        res = evaluate_shots(features, y_tr, y_te, shots=shots, fraction=fraction, draws=draws, seed=seed)
        rows = labeled_subset(y_tr, fraction=fraction, per_class=shots, seed=seed * 1000)  # the first draw
        sup = _supervised(r, data, rows)
        results[name] = {
            "labels": len(rows),
            "draws": res["draws"],
            **{f"{f}_{c}": v["mean"] for f, cs in res["results"].items() for c, v in cs.items()},
            "supervised": sup,
        }
    return {
        "dataset": dataset,
        "seed": seed,
        "results": results,
        "pretrain_seconds": seconds,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _run_unit_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    # A subprocess, not multiprocessing: glassbox bench imports this file under
    # a module name a spawned child could not import.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unit.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--unit",
            json.dumps(spec),
            "--unit-out",
            str(path),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"worker for {spec} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        sys.stderr.write(proc.stderr)
        return json.loads(path.read_text())


def summarize(units: list[dict[str, Any]]) -> dict[str, Any]:
    """Per data set, setting and column: mean and sample std over seeds, and the per-seed values."""
    out: dict[str, Any] = {}
    for ds in dict.fromkeys(u["dataset"] for u in units):
        mine = [u for u in units if u["dataset"] == ds]
        table: dict[str, Any] = {}
        for setting in mine[0]["results"]:
            cols = [c for c in mine[0]["results"][setting] if c not in ("labels", "draws")]
            row: dict[str, Any] = {"labels": mine[0]["results"][setting]["labels"]}
            for c in cols:
                xs = [u["results"][setting][c] for u in mine]
                row[c] = {
                    "mean": round(float(np.mean(xs)), 4),
                    "std": round(float(np.std(xs, ddof=1)), 4) if len(xs) > 1 else 0.0,
                    "per_seed": [round(x, 4) for x in xs],
                }
            table[setting] = row
        secs = {m: [u["pretrain_seconds"][m] for u in mine] for m in METHODS}
        out[ds] = {
            "table": table,
            "pretrain_seconds_median": {m: float(np.median(v)) for m, v in secs.items()},
        }
    return out


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's bars on digits, for the best method's probe."""
    if "digits" not in summary:
        return {}
    t = summary["digits"]["table"]

    def best(setting: str) -> tuple[str, float]:
        m = max(METHODS, key=lambda m: t[setting][f"{m}_probe"]["mean"])
        return m, t[setting][f"{m}_probe"]["mean"]

    m1, a1 = best("1-shot")
    m5, a5 = best("5%")
    m100, a100 = best("100%")
    sup = t["100%"]["supervised"]["mean"]
    secs = summary["digits"]["pretrain_seconds_median"]
    return {
        "one_label_per_class_probe_at_least_0.75": {"method": m1, "value": a1, "met": a1 >= 0.75},
        "five_percent_probe_at_least_0.90": {"method": m5, "value": a5, "met": a5 >= 0.90},
        "all_labels_within_0.5_points_of_supervised": {
            "method": m100,
            "value": a100,
            "supervised": sup,
            "met": a100 >= sup - 0.005,
        },
        "pretraining_under_5_minutes": {"seconds": secs, "met": max(secs.values()) < 300},
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _csv(kind: type) -> Any:
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="wine, seed 0, 5 pretraining epochs, 2 draws")
    p.add_argument("--datasets", type=_csv(str), default=None, help="digits,breast-cancer,wine (the default)")
    p.add_argument("--seeds", type=_csv(int), default=None, help="recipe seeds (default 0,1,2)")
    p.add_argument("--draws", type=int, default=None, help="draws of labeled rows per setting (default 5)")
    p.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: PretrainConfig's)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes, one (data set, seed) each")
    p.add_argument("--unit", default=None, help=argparse.SUPPRESS)
    p.add_argument("--unit-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.datasets = args.datasets or (["wine"] if args.quick else list(RECIPES))
    unknown = [d for d in args.datasets if d not in RECIPES]
    if unknown:
        p.error(f"unknown data set {unknown[0]}; choose from {', '.join(RECIPES)}")
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    args.draws = args.draws or (2 if args.quick else 5)
    args.epochs = args.epochs or (5 if args.quick else None)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.unit is not None:
        res = unit(**json.loads(args.unit))
        if args.unit_out:
            Path(args.unit_out).write_text(json.dumps(res))
        return res
    start = time.perf_counter()
    threads = torch.get_num_threads()
    # Digits first: the longest units start first, so the workers finish together.
    specs = [
        {"dataset": ds, "seed": s, "epochs": args.epochs, "draws": args.draws}
        for ds in sorted(args.datasets, key=lambda d: d != "digits")
        for s in args.seeds
    ]
    try:
        if args.jobs == 1:
            units = [unit(**s) for s in specs]
        else:
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                units = list(pool.map(_run_unit_subprocess, specs))
    finally:
        torch.set_num_threads(threads)
    summary = summarize(units)
    from glassbox.config import PretrainConfig
    from glassbox.run import _git_commit

    return {
        "benchmark": "ssl",
        "commit": _git_commit(),
        "settings": {
            "datasets": {
                d: f"{RECIPES[d]}.yaml" if RECIPES[d] else "built-in defaults" for d in args.datasets
            },
            "seeds": args.seeds,
            "draws": args.draws,
            "pretrain": PretrainConfig(
                **({} if args.epochs is None else {"epochs": args.epochs})
            ).model_dump(),
            "probe": "logistic regression (L2, C=1) on standardized frozen embeddings",
            "prototype": "cosine to class means of standardized, L2-normalized embeddings",
            "supervised": "the recipe's model and training on the first draw's labeled rows",
            "std": "sample (ddof 1) over seeds of the per-seed means over draws",
            "quick": args.quick,
            "jobs": args.jobs,
        },
        "results": summary,
        "targets": targets(summary),
        "units": units,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": 1},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=2)
    print()
