"""SAM 2's non-overlap constraints at tracking time: J&F of one trained checkpoint per ``disjoint`` mode.

Loads a tracker checkpoint (a ``benchmarks/track.py --out DIR`` run's
``checkpoint/``) and evaluates it on the same held-out videos with the
objects' masks left as they are (``none``), made disjoint per pixel in the
returned masks (``output``), in what the memory bank stores (``memory``), or
both (``glassbox.vision.track.non_overlapping``). Validation videos (seeds
from 2,000,000) by default, not the recipe's evaluation videos. Prints JSON.

Example:
    HF_HUB_OFFLINE=1 python benchmarks/track_disjoint.py RUN/checkpoint --videos 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("none", "output", "memory", "both")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a trained tracker's checkpoint folder")
    p.add_argument("--videos", type=int, default=100, help="held-out videos (default 100)")
    p.add_argument("--seed", type=int, default=2_000_000, help="first video seed (default: validation)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from glassbox.vision.track import load_checkpoint
    from glassbox.vision.train import evaluate, load_config

    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint)
    recipe = Path(__file__).resolve().parents[1] / "src" / "glassbox" / "recipes" / "track.yaml"
    cfg = load_config(recipe)
    modes: dict[str, Any] = {}
    for mode in MODES:
        start = time.perf_counter()
        r = evaluate(model, cfg, videos=args.videos, seed=args.seed, disjoint=mode)
        modes[mode] = {
            "mean_jf": round(r["mean_jf"], 4),
            "jf_se": None if r["jf_se"] is None else round(r["jf_se"], 4),
            "occluded_jf": None if r["occluded_jf"] is None else round(r["occluded_jf"], 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(mode, modes[mode], file=sys.stderr, flush=True)
    return {
        "benchmark": "track_disjoint",
        "checkpoint": args.checkpoint,
        "videos": args.videos,
        "eval_seed": args.seed,
        "threads": args.threads,
        "modes": modes,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
