"""Speculative decoding on this CPU: tokens per second of the target alone and with each drafter, 1 thread.

Variants, interleaved per prompt (order rotated each repetition) so that a
noisy neighbour slows them alike:

- ``target``: plain decoding with the KV cache (``speculative_generate`` with no draft);
- ``draft auto``: the trained draft, draft length chosen from measured costs;
- ``draft gamma=G``: the trained draft at a fixed length;
- ``lookup``: prompt lookup (n-gram copying), no model;
- ``useless draft``: a draft of the same shape with random weights, auto length
  (speculation must switch itself off: never much below 1x).

Greedy outputs are compared token for token with the target's own
(``identical``); sampled runs (temperature 1) report speed and acceptance.
Prompts are the first bytes of standard-library files *after* the ones the
LM recipe trains on (its ``data.max_bytes``), so they are held out.

    python benchmarks/speculative.py --target runs/<lm> --draft runs/<lm-draft> [--new 128] [--reps 3]

``--batch 4`` decodes the prompts four at a time (same lengths), bytes/s
counting every row: each row keeps the tokens it decides (its own queue),
so a batch advances at its rows' own acceptance, not its slowest row's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch


def held_out_prompts(n: int, length: int, skip_bytes: int) -> list[bytes]:
    from glassbox.data.sources import stdlib_files_after

    prompts = []
    for path in stdlib_files_after(skip_bytes):
        if path.stat().st_size < 4 * length:
            continue
        text = path.read_bytes()
        start = text.find(b"\ndef ")
        prompts.append(text[max(0, start + 1) : max(0, start + 1) + length] if start >= 0 else text[:length])
        if len(prompts) == n:
            break
    return prompts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from glassbox.config import ModelConfig
    from glassbox.data.base import Dataset
    from glassbox.errors import UserError
    from glassbox.generate.speculative import PromptLookupDrafter, speculative_generate
    from glassbox.nn import load_model
    from glassbox.nn.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", help="run folder of the target LM (recipes/lm.yaml)")
    ap.add_argument("--draft", help="run folder of the draft LM")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--prompt-bytes", type=int, default=48)
    ap.add_argument("--new", type=int, default=128, help="bytes generated per prompt")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1, help="prompts decoded together (each row its own run)")
    ap.add_argument("--json", action="store_true", help="(always JSON; accepted for glassbox bench)")
    ap.add_argument("--quick", action="store_true", help="2 prompts, 64 bytes, 1 repetition")
    args = ap.parse_args(argv)
    if not args.target or not args.draft:
        raise UserError(
            "give the two LM runs: --target runs/<lm> --draft runs/<lm-draft>"
            " (train both with recipes/lm.yaml)"
        )
    if args.quick:
        args.prompts, args.new, args.reps = 2, 64, 1
    if args.batch < 1 or args.prompts % args.batch:
        raise UserError(f"--batch {args.batch} must divide --prompts {args.prompts}")
    torch.set_num_threads(1)
    target, draft = load_model(args.target), load_model(args.draft)
    spec = dict(draft.spec_["model"])
    zeros = torch.zeros(2, 9, dtype=torch.long)
    text = Dataset("random", "text", "lm", zeros, zeros[:, 0])
    torch.manual_seed(0)
    useless = build_model(ModelConfig(**spec), text).eval()
    cfg = json.loads((Path(args.target) / "model.json").read_text())
    skip = 1_000_000
    recipe = Path(args.target) / "config.yaml"
    if recipe.is_file():
        import yaml

        skip = int((yaml.safe_load(recipe.read_text()).get("data") or {}).get("max_bytes", skip))
    prompts = held_out_prompts(args.prompts, args.prompt_bytes, skip)
    variants: dict[str, Any] = {
        "target": None,
        "draft auto": (draft, "auto"),
        f"draft gamma={args.gamma}": (draft, args.gamma),
        "lookup": (PromptLookupDrafter(), args.gamma),
        "useless draft": (useless, "auto"),
    }
    results: dict[str, dict[str, Any]] = {}
    warm = torch.tensor([list(prompts[0])])
    for d in variants.values():  # untimed: first calls pay for lazy initialisation
        speculative_generate(target, None if d is None else d[0], warm, max_new_tokens=16,
                             gamma=4 if d is None else d[1])  # fmt: skip
    for mode, temperature in (("greedy", 0.0), ("sampled", 1.0)):
        speeds: dict[str, list[float]] = {v: [] for v in variants}
        extra: dict[str, dict[str, list[float]]] = {v: {"acceptance": [], "per_call": []} for v in variants}
        identical = {v: True for v in variants}
        for pi in range(0, len(prompts), args.batch):
            ids = torch.tensor([list(p) for p in prompts[pi : pi + args.batch]])  # (batch, prompt bytes)
            reference = None
            for rep in range(args.reps):
                names = list(variants)
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for name in order:
                    d = variants[name]
                    g = torch.Generator().manual_seed(1000 * pi + rep)
                    t0 = time.perf_counter()
                    out, stats = speculative_generate(
                        target, None if d is None else d[0], ids, max_new_tokens=args.new,
                        temperature=temperature, gamma=4 if d is None else d[1], generator=g,
                    )  # fmt: skip
                    speeds[name].append(args.new * args.batch / (time.perf_counter() - t0))
                    if stats["acceptance"] is not None:
                        extra[name]["acceptance"].append(stats["acceptance"])
                    extra[name]["per_call"].append(stats["tokens_per_target_call"])
                    if mode == "greedy":
                        if name == "target":
                            reference = out
                        elif reference is not None and not torch.equal(out, reference):
                            identical[name] = False
        base = statistics.median(speeds["target"])
        results[mode] = {
            name: {
                "tokens_per_second": statistics.median(s),
                "vs_target": statistics.median(s) / base,
                "acceptance": statistics.median(extra[name]["acceptance"] or [float("nan")]),
                "tokens_per_target_call": statistics.median(extra[name]["per_call"]),
                **({"identical_to_target": identical[name]} if mode == "greedy" else {}),
            }
            for name, s in speeds.items()
        }
    greedy = results["greedy"]
    return {
        "settings": {**vars(args), "prompts": [p.decode("utf-8", "replace") for p in prompts], "threads": 1},
        "models": {
            "target": {k: cfg["model"][k] for k in ("dim", "depth", "heads", "attention")},
            "draft": {k: spec[k] for k in ("dim", "depth", "heads", "attention")},
        },
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor(), "loadavg": os.getloadavg()},
        "results": results,
        "targets": {
            ">= 2x target alone, greedy, identical (best drafter)": max(
                v["vs_target"] for k, v in greedy.items() if k != "target" and v["identical_to_target"]
            )
            >= 2.0,
            ">= 0.95x with a useless draft": greedy["useless draft"]["vs_target"] >= 0.95,
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
