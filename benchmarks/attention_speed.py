"""Speed and memory of every registered attention kind against softmax (SDPA), on the CPU.

Times the bare kernel ``attention(q, k, v, kind=..., causal=True)`` on
``(B, T, H, D)`` float32 inputs, forward-only (``no_grad``) and forward +
backward, for each length, interleaving the kinds repetition by repetition so
that every ratio to softmax compares runs made side by side under the same
machine load. Projections, gates' modules and norms are not included: this
measures the attention itself. Per-step inputs (gla's gates, deltanet's
betas) come from ``SPECS[kind].example_inputs``; options from ModelConfig's
defaults (window 256, chunk 64, elu feature map).

Peak memory is the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) during one call, minus the resident set just
before it, after ``malloc_trim`` gives freed heap back to the OS: the bytes
the call itself touched (outputs, saved activations, gradients, kernel
temporaries), page-exact and independent of the allocator's caching.

Example:
    python benchmarks/attention_speed.py --lengths 256,1024 --repeats 3
    glassbox bench attention --json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from glassbox.config import ModelConfig
from glassbox.nn.attention import KINDS, SPECS, attention

B, H, D = 1, 4, 64
LENGTHS = (256, 1024, 4096, 16384)
CROSSOVER_LENGTHS = (128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
MB = 2**20


def kinds_to_run(only: list[str] | None = None) -> list[str]:
    """Registered kinds, softmax first (the baseline); ``auto`` only dispatches to the others."""
    names = [k for k in KINDS.names() if k != "auto"]
    if only:
        names = [k for k in names if k in only or k == "softmax"]
    return ["softmax", *[k for k in names if k != "softmax"]]


def _options(kind: str) -> dict[str, Any]:
    defaults = ModelConfig().model_dump()
    return {k: defaults[k] for k in SPECS[kind].options if k in defaults}


def make_inputs(kind: str, T: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """q, k, v ``(B, T, H, D)`` and the kind's per-step inputs, as leaves that want gradients."""
    g = torch.Generator().manual_seed(seed)
    inputs = {name: torch.randn(B, T, H, D, generator=g) for name in ("q", "k", "v")}
    spec = SPECS[kind]
    if spec.example_inputs is not None:
        inputs.update(spec.example_inputs(B, T, H, D, g, torch.float32))
    for t in inputs.values():
        if t.is_floating_point():
            t.requires_grad_(True)
    return inputs


def _step(kind: str, inputs: dict[str, torch.Tensor], backward: bool) -> Callable[[], None]:
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    extra = {n: t for n, t in inputs.items() if n not in ("q", "k", "v")}
    options = _options(kind)
    grad_out = torch.randn_like(q)  # (B, T, H, D); a fixed cotangent, so no reduction is timed

    def fwd() -> None:
        with torch.no_grad():
            attention(q, k, v, kind=kind, causal=True, **options, **extra)

    def fwdbwd() -> None:
        for t in inputs.values():
            t.grad = None
        out, _ = attention(q, k, v, kind=kind, causal=True, **options, **extra)
        out.backward(grad_out)

    return fwdbwd if backward else fwd


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_side_by_side(
    kinds: list[str], T: int, backward: bool, repeats: int, budget_s: float, cap_s: float
) -> dict[str, dict[str, float]]:
    """Median ms per kind at length T, the kinds' repetitions interleaved.

    One warm-up call per kind (timed, to size the rest); a kind whose warm-up
    took more than ``cap_s`` keeps that one measurement, since start-up costs
    are noise at that scale. Otherwise it gets as many repetitions as fit in
    ``budget_s``, between 1 and ``repeats``.
    """
    steps = {kind: _step(kind, make_inputs(kind, T), backward) for kind in kinds}
    times: dict[str, list[float]] = {}
    reps: dict[str, int] = {}
    for kind, fn in steps.items():
        first = _timed(fn)
        if first > cap_s:
            times[kind], reps[kind] = [first], 0
        else:
            times[kind], reps[kind] = [], max(1, min(repeats, int(budget_s / max(first, 1e-6))))
    for r in range(max(reps.values())):
        for kind, fn in steps.items():
            if r < reps[kind]:
                times[kind].append(_timed(fn))
    return {k: {"ms": 1e3 * statistics.median(v), "reps": len(v)} for k, v in times.items()}


# -- memory -----------------------------------------------------------------------------------
def _proc_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Return freed heap to the OS and restart the peak-RSS counter; False without Linux's /proc."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset VmHWM to the current RSS
    except OSError:
        return False
    return True


def peak_mb(kind: str, T: int, backward: bool) -> float | None:
    """MiB of resident memory one call adds at its peak, beyond its inputs; None where unmeasurable."""
    inputs = make_inputs(kind, T)
    fn = _step(kind, inputs, backward)
    fn()  # first-call allocations (thread pools, lazily built tables) are not the kernel's
    for t in inputs.values():
        t.grad = None  # else "before" would count the first call's gradients
    if not _reset_peak():
        return None
    before = _proc_kb("VmRSS:")
    fn()
    peak = _proc_kb("VmHWM:")
    if before is None or peak is None:
        return None
    return round((peak - before) / 1024, 2)


# -- crossover --------------------------------------------------------------------------------
def crossover(lengths: list[int], kind_ms: list[float], softmax_ms: list[float]) -> float | None:
    """The length from which ``kind`` stays faster than softmax, log-interpolated; None if never.

    The point where the time ratio crosses 1 between the last tested length
    where the kind was slower and the next one; the first length if it is
    faster everywhere (reported as that length, a bound rather than a point).
    """
    ratio = [k / s for k, s in zip(kind_ms, softmax_ms, strict=True)]
    if ratio[-1] >= 1:
        return None
    i = max((j for j, r in enumerate(ratio) if r >= 1), default=-1)
    if i < 0:
        return float(lengths[0])
    # Linear in log-length and log-ratio between (i, i + 1).
    x0, x1 = math.log(lengths[i]), math.log(lengths[i + 1])
    y0, y1 = math.log(ratio[i]), math.log(ratio[i + 1])
    return round(math.exp(x0 + (x1 - x0) * y0 / (y0 - y1)))


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=_ints, default=list(LENGTHS), help="comma-separated T values")
    p.add_argument("--repeats", type=int, default=5, help="most repetitions per (kind, T)")
    p.add_argument("--budget", type=float, default=10.0, help="seconds of repetitions per (kind, T)")
    p.add_argument("--cap", type=float, default=10.0, help="a call slower than this is measured once")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kinds", type=lambda s: s.split(","), default=None, help="subset; softmax always runs")
    p.add_argument(
        "--crossover-lengths", type=_ints, default=list(CROSSOVER_LENGTHS), help="empty: skip the crossover"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--quick", action="store_true", help="lengths 256,1024; crossover 128..1024; 3 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.repeats = [256, 1024], 3
        args.crossover_lengths = [128, 256, 512, 1024]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and return its results (what ``__main__`` prints as JSON)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    kinds = kinds_to_run(args.kinds)
    results: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in kinds}
    for T in args.lengths:
        fwd = time_side_by_side(kinds, T, False, args.repeats, args.budget, args.cap)
        both = time_side_by_side(kinds, T, True, args.repeats, args.budget, args.cap)
        for kind in kinds:
            results[kind][str(T)] = {
                "fwd_ms": round(fwd[kind]["ms"], 3),
                "fwdbwd_ms": round(both[kind]["ms"], 3),
                "ratio_fwd_vs_softmax": round(fwd[kind]["ms"] / fwd["softmax"]["ms"], 3),
                "ratio_fwdbwd_vs_softmax": round(both[kind]["ms"] / both["softmax"]["ms"], 3),
                "reps_fwd": fwd[kind]["reps"],
                "reps_fwdbwd": both[kind]["reps"],
                "peak_fwd_mb": None if args.no_memory else peak_mb(kind, T, False),
                "peak_mb": None if args.no_memory else peak_mb(kind, T, True),
            }
    cross: dict[str, dict[str, Any]] = {}
    lengths = args.crossover_lengths
    if lengths and len(kinds) > 1:
        # More repetitions: these calls are short and the ratios near 1 are what matter.
        fwd_t = [time_side_by_side(kinds, T, False, 3 * args.repeats, args.budget, args.cap) for T in lengths]
        both_t = [time_side_by_side(kinds, T, True, 3 * args.repeats, args.budget, args.cap) for T in lengths]
        for kind in kinds[1:]:
            cross[kind] = {
                "fwd": crossover(
                    lengths, [t[kind]["ms"] for t in fwd_t], [t["softmax"]["ms"] for t in fwd_t]
                ),
                "fwdbwd": crossover(
                    lengths, [t[kind]["ms"] for t in both_t], [t["softmax"]["ms"] for t in both_t]
                ),
                "ratio_fwd": [round(t[kind]["ms"] / t["softmax"]["ms"], 3) for t in fwd_t],
                "ratio_fwdbwd": [round(t[kind]["ms"] / t["softmax"]["ms"], 3) for t in both_t],
            }
    return {
        "benchmark": "attention_speed",
        "settings": {
            "B": B,
            "H": H,
            "D": D,
            "dtype": "float32",
            "causal": True,
            "lengths": args.lengths,
            "repeats": args.repeats,
            "budget_s": args.budget,
            "cap_s": args.cap,
            "options": {k: _options(k) for k in kinds},
            "memory": "peak RSS (VmHWM) during one call minus RSS before it, after malloc_trim",
        },
        "kinds": kinds,
        "results": results,
        "crossover": {"lengths": lengths, "kinds": cross},
        "machine": machine(),
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=2)
    print()
