"""``glassbox bench NAME``: run one of the repository's benchmarks (benchmarks/*.py) and show its results."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from glassbox.cli.common import print_json

# NAME -> file in benchmarks/; each file has main(argv) -> dict.
BENCHMARKS = {
    "against_baselines": "against_baselines.py",  # the defaults over 5 seeds beside LR, HGB, SVC
    "attention": "attention_speed.py",
    "audio": "audio.py",  # spoken digits: generation, held-out voices, pretraining with few labels
    "defaults": "defaults_search.py",  # the validation-only search behind KIND_DEFAULTS (docs/DEFAULTS.md)
    "digit-sum": "digit_sum.py",
    "distributed": "distributed.py",
    "explain": "explain_quality.py",
    "fairness": "fairness.py",
    "federated": "federated.py",
    "ledger": "ledger.py",
    "mqar": "mqar.py",
    "quantum": "quantum.py",
    "serve": "serve_load.py",
    "speculative": "speculative.py",
    "track": "track.py",
    "ssl": "self_supervised.py",  # not ssl.py: run as a script it would shadow the standard library's ssl
    "merging": "token_merging.py",
    "sensitivity": "sensitivity.py",
    "valuation": "valuation.py",
}


def benchmarks_dir() -> Path:
    # src/glassbox/cli/bench.py -> the checkout's root; an installed wheel has
    # no benchmarks/ beside it, which load_benchmark reports.
    return Path(__file__).resolve().parents[3] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The benchmark module for ``name``, imported from its file (benchmarks/ is not a package)."""
    from glassbox.errors import UserError, did_you_mean

    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark '{name}': {did_you_mean(name, BENCHMARKS)}")
    folder = benchmarks_dir()
    if not folder.is_dir():
        raise UserError(
            "benchmarks run from a source checkout of glassbox (they live in its benchmarks/ folder);"
            " clone the repository and install it with pip install -e ."
        )
    path = folder / BENCHMARKS[name]
    if not path.is_file():
        raise UserError(f"benchmark '{name}' is not in this checkout ({path} is missing)")
    spec = importlib.util.spec_from_file_location(f"glassbox_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_attention(res: dict[str, Any]) -> None:
    m = res["machine"]
    print(f"attention speed, B1 H4 D64 float32 causal, {m['threads']} thread(s), {m['cpu']}")
    print(f"{'kind':<10}{'T':>7}{'fwd ms':>10}{'x soft':>8}{'fwd+bwd ms':>12}{'x soft':>8}{'peak MiB':>10}")
    for kind, by_len in res["results"].items():
        for T, r in by_len.items():
            print(
                f"{kind:<10}{T:>7}{_fmt(r['fwd_ms']):>10}{_ratio(r['ratio_fwd_vs_softmax']):>8}"
                f"{_fmt(r['fwdbwd_ms']):>12}{_ratio(r['ratio_fwdbwd_vs_softmax']):>8}{_fmt(r['peak_mb']):>10}"
            )
    lengths = res["crossover"]["lengths"]
    for kind, c in res["crossover"]["kinds"].items():
        where = {
            mode: f"T~{c[mode]:.0f}" if c[mode] is not None else f"not by T={max(lengths)}"
            for mode in ("fwdbwd", "fwd")
        }
        print(f"{kind} faster than softmax from: {where['fwdbwd']} (fwd+bwd), {where['fwd']} (fwd)")


def _print_mqar(res: dict[str, Any]) -> None:
    cells = res["cells"]
    print(f"MQAR accuracy over query positions (held-out rows); {res['settings']['threads']} thread(s)")
    print(f"{'kind':<10}" + "".join(f"{c:>10}" for c in cells) + f"{'seconds':>10}")
    for kind, accs in res["accuracy"].items():
        secs = sum(r["seconds"] for r in res["results"][kind].values())
        print(f"{kind:<10}" + "".join(f"{_fmt(accs.get(c)):>10}" for c in cells) + f"{secs:>10.0f}")


def _stat(s: dict[str, Any] | None, scale: float = 1.0) -> str:
    if s is None or s.get("mean") is None:
        return "-"
    std = s.get("std")
    mean = s["mean"] * scale
    return f"{mean:.3f}" if std is None else f"{mean:.3f} +- {std * scale:.3f}"


def _print_valuation(res: dict[str, Any]) -> None:
    seeds = res["settings"]["seeds"]
    if "auroc" in res:
        which = ",".join(map(str, seeds))
        print(f"mislabel detection AUROC, 10 % flipped labels, seeds {which} (mean +- std)")
        for ds, rows in res["auroc"].items():
            print(f"  {ds}")
            for method, s in rows.items():
                print(f"    {method:<14}{_stat(s):>18}")
        print("test accuracy, all training rows -> without the lowest-valued 10 % (in-run values)")
        for ds, by_opt in res["cleaning"].items():
            for opt, c in by_opt.items():
                flipped = c["flipped_dropped"]["mean"]
                print(
                    f"  {ds:<14}{opt:<7}{_stat(c['test_accuracy_all']):>18} ->"
                    f"{_stat(c['test_accuracy_cleaned']):>18}"
                    f"   flipped among dropped {_fmt(flipped)} of {c['dropped']}"
                )
    if "overhead" in res:
        print(
            f"overhead, ms per optimizer step and throughput ratio (plain / valued), 1 thread, "
            f"median of {res['settings']['overhead']['reps']}"
        )
        print(f"  {'data':<14}{'optimizer':<10}{'valuation':<14}{'ms/step':>9}{'ratio':>8}{'cpu ratio':>11}")
        for ds, o in res["overhead"].items():
            for opt, cells in o["results"].items():
                for name, c in cells.items():
                    print(
                        f"  {ds:<14}{opt:<10}{name:<14}{_fmt(c['ms_per_step']):>9}"
                        f"{_ratio(c.get('throughput_ratio')):>8}{_ratio(c.get('throughput_ratio_cpu')):>11}"
                    )
    for target, ok in res.get("targets", {}).items():
        print(f"  {'met' if ok else 'NOT met'}: {target}")


def _print_federated(res: dict[str, Any]) -> None:
    r, s = res["results"], res["settings"]
    pct = lambda d: f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"  # noqa: E731
    print(f"federated, digits, 10 clients, {s['rounds']} rounds, seeds {s['seeds']}, test accuracy %")
    print(f"{'centralized':<28}{pct(r['centralized']):>14}")
    for part, methods in r["partitions"].items():
        for m, d in methods.items():
            worst = 100 * d["client_accuracy_worst"]["mean"]
            print(f"{part + ' ' + m:<28}{pct(d['test_accuracy']):>14}   worst client {worst:.1f}")
    for kind, d in r["faults_3_of_10"].items():
        drop = d["drop_vs_clean_points"]
        below = f"{drop['mean']:.2f} points below clean"
        print(f"{'3/10 clients ' + kind:<28}{pct(d['test_accuracy']):>14}   {below}")
    for u in r.get("central_dp", []):
        label = f"central DP sigma {u['noise_multiplier']}"
        print(f"{label:<28}{100 * u['test_accuracy']:>14.1f}   epsilon {u['epsilon']:.1f}")
    if "cost" in r:
        c = r["cost"]
        runs = f"{c['clients']} clients x {c['rounds']} rounds"
        print(f"Simulation Engine {runs}: {c['wall_s']} s, {c['peak_pss_mb']} MB")


def _print_generic(res: dict[str, Any]) -> None:
    # Benchmarks written elsewhere (merging) shape their results freely: lists
    # of flat records become tables, everything else a key: value line.
    for key, value in res.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            cols = [c for c in value[0] if not isinstance(value[0][c], (dict, list))]
            print(f"{key}:")
            print("  " + "".join(f"{c:>16}" for c in cols))
            for row in value:
                print("  " + "".join(f"{_fmt(row.get(c)):>16}" for c in cols))
        else:
            print(f"{key}: {value}")


def _bench_export(args: list[str], quick: bool, as_json: bool) -> None:
    # Not a file in benchmarks/: it measures a user's run and writes into it.
    from glassbox.edge.latency import bench_export, summary_lines
    from glassbox.errors import UserError

    if len(args) != 1 or args[0].startswith("-"):
        raise UserError("give one exported run folder: glassbox bench export runs/<time>-<name>")
    result = bench_export(args[0], quick=quick, progress=not as_json)
    if as_json:
        print_json(result)
        return
    for line in summary_lines(result):
        print(line)
    print(f"written: {args[0].rstrip('/')}/export/report.json (and the report's Edge section)")


def bench(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="attention, mqar, merging, valuation, explain, fairness, ledger, federated, serve,"
            " or export RUN.",
            show_default=False,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="A small subset that runs in minutes.")] = False,
    extra: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[-- ARGS]",
            help="Options passed on to the benchmark, e.g. -- --lengths 256,1024.",
            hidden=True,
        ),
    ] = None,
) -> None:
    """Example: glassbox bench attention --quick

    Run a benchmark from the checkout's benchmarks/ folder: attention (speed
    and memory of each attention kind against softmax), mqar (associative
    recall accuracy per kind), merging (token merging) or valuation (in-run
    data valuation: overhead, mislabel AUROC, cleaning). Options after --
    go to the benchmark itself: glassbox bench attention -- --lengths 256,1024

    glassbox bench export RUN times an exported run (PyTorch eager, ONNX
    float, ONNX int8; batch 1 and 32; one thread and all) into
    RUN/export/report.json and its report.
    """
    if name == "export":
        _bench_export(extra or [], quick, as_json)
        return
    module = load_benchmark(name)
    argv = [*(["--quick"] if quick else []), *(extra or [])]
    res = module.main(argv)
    if as_json:
        print_json(res)
    elif name == "attention":
        _print_attention(res)
    elif name == "mqar":
        _print_mqar(res)
    elif name == "valuation":
        _print_valuation(res)
    elif name == "federated" and "partitions" in res["results"]:
        _print_federated(res)
    else:
        _print_generic(res)


def register(app: typer.Typer) -> None:
    app.command(
        "bench",
        short_help="Run a benchmark (attention, mqar, merging, valuation, explain, fairness, ledger, ...).",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(bench)
