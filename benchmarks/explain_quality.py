"""How good the shipped recipes' explanations are: each method's scores against a random control, over seeds.

For the ``healthcare`` recipe (breast-cancer, as shipped, its ``explain:``
section included: 50 test rows, every default tabular method) and for the
``digits`` recipe (with ``explain.sample=50``: every default image method),
one run per seed through ``glassbox.pipeline.run_recipe`` in a temporary
folder, with ``train.threads=1`` and ``report.enabled=false``. Healthcare's
valuation stays on as the recipe has it (it is the demo's model: in-run
valuation shares the training forward, so it changes the trajectory);
``--no-valuation`` sets ``valuation.method=none``. The recipe's ``seed`` sets
the split, the initialization and the explained rows.

From each run's ``explanations.json`` (``glassbox.explain.explain``), per
method: the ``ratios`` against seeded random attributions of the same norm
(> 1: better than random) for deletion AUC, insertion AUC, infidelity (plain
additive Gaussian noise), ``infidelity_baseline`` (perturbations relative to
the baseline, Captum's multiply_by_inputs convention: the infidelity matched
to IG, DeepLift and KernelSHAP attributions) and max-sensitivity; IG's step
count and completeness (max and median |sum of attributions - (f(x) -
f(baseline))| over the rows, on the logit); and the seconds the method took
(attributions plus scoring). Mean, sample standard deviation (ddof 1) and
per-seed values.

The issue's bar, checked per seed for integrated gradients: completeness_max
<= 0.05, and ratios >= 2 for ``infidelity_baseline`` and ``deletion_auc``.

``--quick``: seed 0, healthcare only.

    .venv/bin/python benchmarks/explain_quality.py > explain.json     # ~15 min on a 2-core machine
    .venv/bin/python benchmarks/explain_quality.py --quick
    .venv/bin/glassbox bench explain --quick
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
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glassbox.config import load_recipe
from glassbox.pipeline import run_recipe

RECIPES = {"breast-cancer": "healthcare", "digits": "digits"}  # data set -> shipped recipe
BASE = ["train.threads=1", "report.enabled=false"]
EXTRA = {"breast-cancer": [], "digits": ["explain.sample=50"]}
RATIOS = ("deletion_auc", "insertion_auc", "infidelity", "infidelity_baseline", "max_sensitivity")
BAR = {"completeness_max": 0.05, "infidelity_baseline": 2.0, "deletion_auc": 2.0}


def commit() -> str:
    from glassbox.run import _git_commit  # the same lookup meta.json uses

    return _git_commit() or "unknown"


def _rnd(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def unit(dataset: str, seed: int, valuation: bool) -> dict[str, Any]:
    """One run of the recipe at ``seed``; what its explanations.json says, method by method."""
    overrides = [*BASE, *EXTRA[dataset], f"seed={seed}"]
    if not valuation:
        overrides.append("valuation.method=none")
    path = resources.files("glassbox") / "recipes" / f"{RECIPES[dataset]}.yaml"
    recipe = load_recipe(Path(str(path)), overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_recipe(recipe, tmp, progress=False)
        ex = json.loads((run.path / "explanations.json").read_text())
        meta = json.loads((run.path / "meta.json").read_text())
    methods: dict[str, Any] = {}
    for name, m in ex["methods"].items():
        info = {k: v for k, v in m["info"].items() if k != "history"}
        methods[name] = {
            "ratios": {k: _rnd(m["ratios"].get(k)) for k in RATIOS},
            "quality": {k: _rnd(v, 6) for k, v in m["quality"].items()},
            "random": {k: _rnd(v, 6) for k, v in m["random"].items()},
            "infidelity_matched": m.get("infidelity_matched"),
            "info": info,
            "seconds": m["seconds"],
        }
    return {
        "dataset": dataset,
        "seed": seed,
        "overrides": overrides,
        "rows": len(ex["rows"]),
        "test_accuracy": _rnd(meta["results"].get("test_accuracy")),
        "best_epoch": meta.get("best_epoch"),
        "skipped": ex.get("skipped", {}),
        "methods": methods,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _stats(xs: list[float | None]) -> dict[str, Any]:
    vals = [x for x in xs if x is not None]
    return {
        "mean": _rnd(statistics.fmean(vals)) if vals else None,
        "std": _rnd(statistics.stdev(vals)) if len(vals) > 1 else None,
        "per_seed": xs,
    }


def summarize(units: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ds in dict.fromkeys(u["dataset"] for u in units):
        mine = [u for u in units if u["dataset"] == ds]
        res: dict[str, Any] = {
            "seeds": [u["seed"] for u in mine],
            "test_accuracy": _stats([u["test_accuracy"] for u in mine]),
            "methods": {},
        }
        for name in mine[0]["methods"]:
            ms = [u["methods"][name] for u in mine]
            row: dict[str, Any] = {
                "infidelity_matched": ms[0]["infidelity_matched"],
                "ratios": {k: _stats([m["ratios"][k] for m in ms]) for k in RATIOS},
                "seconds": _stats([m["seconds"] for m in ms]),
            }
            if ms[0]["quality"].get("completeness_max") is not None:
                row["completeness_max"] = _stats([m["quality"]["completeness_max"] for m in ms])
                row["completeness_median"] = _stats([m["quality"]["completeness_median"] for m in ms])
            if "steps" in ms[0]["info"]:
                row["steps"] = [m["info"]["steps"] for m in ms]
                row["converged"] = [m["info"].get("converged") for m in ms]
            res["methods"][name] = row
        out[ds] = res
    return out


def bar(units: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's bar for integrated gradients, per data set and seed."""
    out: dict[str, Any] = {}
    for u in units:
        ig = u["methods"].get("integrated_gradients")
        if ig is None:
            continue
        checks = {
            "completeness_max<=0.05": ig["quality"]["completeness_max"] is not None
            and ig["quality"]["completeness_max"] <= BAR["completeness_max"],
            "infidelity_baseline_ratio>=2": (ig["ratios"]["infidelity_baseline"] or 0) >= 2,
            "deletion_auc_ratio>=2": (ig["ratios"]["deletion_auc"] or 0) >= 2,
        }
        out.setdefault(u["dataset"], {})[str(u["seed"])] = {**checks, "all": all(checks.values())}
    for ds, seeds in out.items():
        out[ds] = {"per_seed": seeds, "all_seeds": all(s["all"] for s in seeds.values())}
    return out


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2, 3, 4], help="healthcare seeds, e.g. 0,1,2")
    p.add_argument("--digits-seeds", type=_ints, default=[0], help="digits seeds; empty ('') skips digits")
    p.add_argument("--no-valuation", action="store_true", help="healthcare with valuation.method=none")
    p.add_argument("--quick", action="store_true", help="seed 0, healthcare only")
    p.add_argument("--json", action="store_true", help="(always JSON; accepted for glassbox bench)")
    args = p.parse_args(argv)
    os.environ.setdefault("GLASSBOX_LEDGER_KEY", str(Path(tempfile.mkdtemp()) / "bench.key"))
    if args.quick:
        args.seeds, args.digits_seeds = [0], []
    plan = [("breast-cancer", s) for s in args.seeds] + [("digits", s) for s in args.digits_seeds]
    units = []
    for ds, seed in plan:
        u = unit(ds, seed, valuation=not args.no_valuation)
        print(f"[explain] {ds} seed {seed}: {u['seconds']:.0f} s", file=sys.stderr)
        units.append(u)
    return {
        "benchmark": "explain",
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "torch": torch.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1},
        "settings": {
            "seeds": args.seeds,
            "digits_seeds": args.digits_seeds,
            "valuation": not args.no_valuation,
            "quick": args.quick,
            "recipes": RECIPES,
            "overrides": {ds: [*BASE, *EXTRA[ds]] for ds in RECIPES},
        },
        "results": summarize(units),
        "bar": bar(units),
        "units": units,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
