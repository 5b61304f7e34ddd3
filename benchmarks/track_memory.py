"""How many memories a trained tracker reads at inference: J&F of one checkpoint per ``num_maskmem``.

Loads a tracker checkpoint (a ``benchmarks/track.py --out DIR`` run's
``checkpoint/``) and evaluates it on the same held-out videos with the memory
bank cut to N frames (the prompt frame and the N - 1 latest; the model's
temporal encodings for offsets 1 to N - 1 are the ones it learnt), N from
``--memories``. Also reports the smallest object-score logit seen on those
videos: while every one is positive, SAM 2's occlusion handling (a frame
judged "no object" gets an empty mask and the occlusion embedding in memory)
never fires, and biasing that score is no lever. Validation videos (seeds
from 2,000,000) by default, not the recipe's evaluation videos. Prints JSON.

Example:
    HF_HUB_OFFLINE=1 python benchmarks/track_memory.py RUN/checkpoint --videos 100 --memories 1,2,3,4,7
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a trained tracker's checkpoint folder")
    p.add_argument("--videos", type=int, default=100, help="held-out videos (default 100)")
    p.add_argument("--seed", type=int, default=2_000_000, help="first video seed (default: validation)")
    p.add_argument("--memories", default="1,2,3,4,7", help="memory counts to try, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from glassbox.vision.track import load_checkpoint
    from glassbox.vision.train import evaluate, load_config

    torch.set_num_threads(args.threads)
    recipe = Path(__file__).resolve().parents[1] / "src" / "glassbox" / "recipes" / "track.yaml"
    cfg = load_config(recipe)
    trained = load_checkpoint(args.checkpoint).num_maskmem
    rows: dict[str, Any] = {}
    lowest_score = float("inf")
    for n in [int(x) for x in args.memories.split(",")]:
        if not 1 <= n <= trained:
            raise SystemExit(
                f"--memories {n}: the checkpoint has temporal encodings for 1 to {trained} memories"
            )
        model = load_checkpoint(args.checkpoint)
        model.num_maskmem = n  # read per frame by HF's _gather_memory_frame_outputs
        decode = model.mask_decoder.forward

        def watched(*a: Any, _decode: Any = decode, **k: Any) -> Any:
            nonlocal lowest_score
            out = _decode(*a, **k)
            lowest_score = min(lowest_score, float(out[3].min()))  # object_score_logits
            return out

        model.mask_decoder.forward = watched
        start = time.perf_counter()
        r = evaluate(model, cfg, videos=args.videos, seed=args.seed)
        rows[str(n)] = {
            "mean_jf": round(r["mean_jf"], 4),
            "jf_se": None if r["jf_se"] is None else round(r["jf_se"], 4),
            "occluded_jf": None if r["occluded_jf"] is None else round(r["occluded_jf"], 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(n, rows[str(n)], file=sys.stderr, flush=True)
    return {
        "benchmark": "track_memory",
        "checkpoint": args.checkpoint,
        "trained_memories": trained,
        "videos": args.videos,
        "eval_seed": args.seed,
        "threads": args.threads,
        "memories": rows,
        "lowest_object_score_logit": round(lowest_score, 3),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
