"""A tracker training step with AdamW's default per-tensor loop against ``fused=True``, side by side.

The recipe's model (``recipes/track.yaml``) is 331 parameter tensors, most of them small, so
on a CPU the optimizer's Python loop over them is a visible share of a step. Both optimizers
step the same model, alternating, so the machine's speed drifts alike for both; the first two
steps of each are warm-up; medians over the rest.

Example:
    HF_HUB_OFFLINE=1 python benchmarks/track_optimizer.py --threads 2   # ~1 min, run it alone
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    import torch

    from glassbox.vision import track as tr
    from glassbox.vision.train import image_step, load_config, train_step

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=9, help="steps per optimizer and stage, 2 of them warm-up")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(Path(__file__).resolve().parent.parent / "recipes" / "track.yaml")
    mc = cfg.model
    shape = (mc.image_size, mc.hidden, mc.memory_layers, mc.num_maskmem, mc.multimask, mc.backbone_width)
    model = tr.build_model(tr.small_config(*shape))
    params = [q for q in model.parameters() if q.requires_grad]
    opts = {
        "default": torch.optim.AdamW(params, lr=1e-4),
        "fused": torch.optim.AdamW(params, lr=1e-4, fused=True),
    }
    out: dict = {"benchmark": "track_optimizer", "threads": args.threads, "tensors": len(params)}
    for stage, fn in [("image", image_step), ("video", train_step)]:
        times: dict[str, list[float]] = {k: [] for k in opts}
        for r in range(args.steps):
            for name, opt in opts.items():
                start = time.perf_counter()
                loss, _ = fn(model, cfg, r)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                if r >= 2:
                    times[name].append(time.perf_counter() - start)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        out[stage] = {f"{k}_s": round(v, 4) for k, v in med.items()} | {
            "speedup": round(med["default"] / med["fused"], 3)
        }
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
