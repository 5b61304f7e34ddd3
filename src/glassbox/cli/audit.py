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
    from pydantic import ValidationError

    from glassbox.analysis import AUDIT, audit_model, check_analyses, open_run, write_run_report
    from glassbox.audit import summary
    from glassbox.config import AuditConfig, validation_error

    folder, recipe, data, model = open_run(run)
    base = (recipe.audit or AuditConfig()).model_dump()
    if sensitive is not None:
        base["sensitive"] = sensitive
    if threshold is not None:
        base["threshold"] = threshold
    try:
        cfg = AuditConfig.model_validate(base)
    except ValidationError as err:
        raise validation_error(err, "glassbox audit") from None
    recipe = recipe.model_copy(update={"audit": cfg})
    check_analyses(recipe.model_copy(update={"explain": None}), data)
    with folder:
        result = audit_model(cfg, model, data, recipe.seed)
        folder.write_json(AUDIT, result)
        if recipe.report.enabled:
            write_run_report(folder, recipe, data)
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
