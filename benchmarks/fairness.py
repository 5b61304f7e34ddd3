"""The fraud recipe's fairness audit over seeds: gaps between customer groups before and after mitigation.

For the ``fraud`` recipe as shipped (generated card transactions, about 2 %
fraud, a sensitive ``group`` held out of the features; its ``audit:``
section with the defaults: threshold 0.5, 1000 bootstrap resamples,
balanced-accuracy objective), one run per seed through
``glassbox.pipeline.run_recipe`` in a temporary folder, with
``train.threads=1``, ``report.enabled=false`` and ``explain=null`` (the
recipe's explanations are not what this measures; ``--with-explain`` keeps
them). The recipe's ``seed`` sets the generated data, the split, the
initialization and the bootstrap.

From each run's ``audit.json`` (``glassbox.audit.fairness_audit``): per
group, the test selection rate, TPR and FPR with their 95 % bootstrap
intervals; the demographic-parity and equalized-odds differences (with
intervals); and for each of Fairlearn's ``ThresholdOptimizer`` constraints
(demographic_parity, equalized_odds; fitted on validation, applied to test)
the DP and EO differences, accuracy and balanced accuracy before and after.
From meta.json, the model's test AUROC. Mean, sample standard deviation
(ddof 1), min, max and per-seed values.

``--quick``: seed 0 only.

    .venv/bin/python benchmarks/fairness.py > fairness.json     # ~3 min on a 2-core machine
    .venv/bin/glassbox bench fairness --quick
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

BASE = ["train.threads=1", "report.enabled=false"]
RATES = ("selection_rate", "tpr", "fpr")
OUTCOME = ("dp_difference", "eo_difference", "accuracy", "balanced_accuracy")


def commit() -> str:
    from glassbox.run import _git_commit  # the same lookup meta.json uses

    return _git_commit() or "unknown"


def _rnd(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def _ci(d: dict[str, Any]) -> dict[str, Any]:
    return {"value": _rnd(d["value"]), "ci": [_rnd(d["low"]), _rnd(d["high"])]}


def unit(seed: int, explain: bool) -> dict[str, Any]:
    """One fraud run at ``seed``: its audit, condensed, and its test metrics."""
    overrides = [*BASE, f"seed={seed}", *([] if explain else ["explain=null"])]
    recipe = load_recipe(Path(str(resources.files("glassbox") / "recipes" / "fraud.yaml")), overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_recipe(recipe, tmp, progress=False)
        audit = json.loads((run.path / "audit.json").read_text())
        meta = json.loads((run.path / "meta.json").read_text())
    return {
        "seed": seed,
        "overrides": overrides,
        "test_auroc": _rnd(meta["results"].get("test_auroc")),
        "test_accuracy": _rnd(meta["results"].get("test_accuracy")),
        "best_epoch": meta.get("best_epoch"),
        "threshold": audit["threshold"],
        "objective": audit["objective"],
        "groups": audit["groups"],
        "by_group": {
            g: {"n": row["n"], "base_rate": _rnd(row["base_rate"]["value"])} | {m: _ci(row[m]) for m in RATES}
            for g, row in audit["by_group"].items()
        },
        "differences": {k: _ci(d) for k, d in audit["differences"].items()},
        "mitigation": {
            c: {k: {"before": _rnd(m["before"][k]), "after": _rnd(m["after"][k])} for k in OUTCOME}
            for c, m in audit["mitigation"].items()
        },
        "warnings": audit.get("warnings", []),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _stats(xs: list[float | None]) -> dict[str, Any]:
    vals = [x for x in xs if x is not None]
    return {
        "mean": _rnd(statistics.fmean(vals)) if vals else None,
        "std": _rnd(statistics.stdev(vals)) if len(vals) > 1 else None,
        "min": _rnd(min(vals)) if vals else None,
        "max": _rnd(max(vals)) if vals else None,
        "per_seed": xs,
    }


def summarize(units: list[dict[str, Any]]) -> dict[str, Any]:
    groups = units[0]["groups"]
    return {
        "test_auroc": _stats([u["test_auroc"] for u in units]),
        "test_accuracy": _stats([u["test_accuracy"] for u in units]),
        "by_group": {
            g: {
                "n": [u["by_group"][g]["n"] for u in units],
                "base_rate": _stats([u["by_group"][g]["base_rate"] for u in units]),
            }
            | {m: _stats([u["by_group"][g][m]["value"] for u in units]) for m in RATES}
            for g in groups
        },
        "differences": {
            k: _stats([u["differences"][k]["value"] for u in units]) for k in units[0]["differences"]
        },
        "mitigation": {
            c: {
                k: {
                    "before": _stats([u["mitigation"][c][k]["before"] for u in units]),
                    "after": _stats([u["mitigation"][c][k]["after"] for u in units]),
                }
                for k in OUTCOME
            }
            for c in units[0]["mitigation"]
        },
    }


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="e.g. 0,1,2")
    p.add_argument("--with-explain", action="store_true", help="keep the recipe's explain: section")
    p.add_argument("--quick", action="store_true", help="seed 0 only")
    p.add_argument("--json", action="store_true", help="(always JSON; accepted for glassbox bench)")
    args = p.parse_args(argv)
    os.environ.setdefault("GLASSBOX_LEDGER_KEY", str(Path(tempfile.mkdtemp()) / "bench.key"))
    if args.quick:
        args.seeds = [0]
    units = []
    for seed in args.seeds:
        u = unit(seed, explain=args.with_explain)
        print(f"[fairness] fraud seed {seed}: {u['seconds']:.0f} s", file=sys.stderr)
        units.append(u)
    return {
        "benchmark": "fairness",
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "torch": torch.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1},
        "settings": {
            "recipe": "fraud",
            "seeds": args.seeds,
            "overrides": units[0]["overrides"][:2] + units[0]["overrides"][3:],
            "quick": args.quick,
        },
        "results": summarize(units),
        "units": units,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
