"""``glassbox audit RUN --sensitive COLUMN``: how a finished run's model treats each group."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_json


def audit(
    run: Annotated[str, typer.Argument(metavar="RUN", help="A finished run folder, runs/<time>-<name>.")],
    sensitive: Annotated[
        str | None,
        typer.Option(metavar="COLUMN", help="The group column (default: the data's sensitive column)."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(metavar="T", help="Score above which a row is flagged (default 0.5).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the audit summary as JSON.")] = False,
) -> None:
    """Example: glassbox audit runs/20261201-120000-fraud --sensitive group

    Per-group accuracy, selection rate, TPR and FPR with bootstrap 95%
    intervals, demographic-parity and equalized-odds differences, and
    ThresholdOptimizer's mitigation with its accuracy-versus-disparity
    trade-off; writes audit.json into RUN (signed into its ledger) and
    rebuilds report.html.
    """

    from glassbox.analysis import AUDIT, rerun
    from glassbox.audit import summary

    options: dict = {}
    if sensitive is not None:
        options["sensitive"] = sensitive
    if threshold is not None:
        options["threshold"] = threshold
    folder, result = rerun(run, "audit", options)
    digest = summary(result)
    if as_json:
        print_json(digest)
        return
    print(f"audit of {folder.path} by {digest['sensitive']} (threshold {digest['threshold']})")
    for group, row in digest["by_group"].items():
        rates = ", ".join(f"{k} {_n(v)}" for k, v in row.items() if k != "n")
        print(f"  {group:<10} n={row['n']:<6} {rates}")
    for key, d in digest["differences"].items():
        print(f"  {key.replace('_', ' ')}: {_n(d['value'])} (95% CI {_n(d['ci'][0])} to {_n(d['ci'][1])})")
    for constraint, m in digest["mitigation"].items():
        dp, acc = m["dp_difference"], m[digest["objective"]]
        print(
            f"  ThresholdOptimizer({constraint}): DP difference {_n(dp['before'])} -> {_n(dp['after'])}, "
            f"{digest['objective'].replace('_', ' ')} {_n(acc['before'])} -> {_n(acc['after'])}"
        )
    for w in digest["warnings"]:
        print(f"  warning: {w}")
    print(f"written: {folder.path / AUDIT}")


def _n(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def register(app: typer.Typer) -> None:
    app.command("audit", short_help="Fairness audit of a run's predictions by group.")(audit)
