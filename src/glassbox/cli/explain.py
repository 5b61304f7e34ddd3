"""``glassbox explain RUN``: explain a finished run's test predictions and score the explanations."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_json


def _rows(text: str | None) -> list[int] | None:
    from glassbox.errors import UserError

    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--rows {text!r}: give test-row positions separated by commas, e.g. --rows 0,5,9"
        ) from None


def explain(
    run: Annotated[str, typer.Argument(metavar="RUN", help="A finished run folder, runs/<time>-<name>.")],
    rows: Annotated[
        str | None, typer.Option(metavar="I,J,K", help="Test-split positions to explain, e.g. 0,5,9.")
    ] = None,
    sample: Annotated[
        int | None, typer.Option(metavar="N", help="Explain a seeded sample of N test rows (default 50).")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            metavar="M,M",
            help="Any of integrated_gradients, deeplift, kernel_shap, rollout, grad_rollout.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the quality summary as JSON.")] = False,
) -> None:
    """Example: glassbox explain runs/20261201-120000-healthcare --rows 0,5,9

    Attribute RUN's test predictions with Integrated Gradients, DeepLift and
    KernelSHAP (tables) and attention rollouts, score every method against
    random attributions (completeness, infidelity, max-sensitivity, deletion
    and insertion AUC), write explanations.json into RUN (signed into its
    ledger) and rebuild report.html with the section and the model card.
    """
    from glassbox.analysis import EXPLANATIONS, rerun
    from glassbox.errors import UserError
    from glassbox.explain import summary

    if rows is not None and sample is not None:
        raise UserError("give --rows or --sample, not both")
    options: dict = {}
    if rows is not None:
        options["rows"] = _rows(rows)
    if sample is not None:
        options.update(sample=sample, rows=None)
    if methods is not None:
        options["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    folder, result = rerun(run, "explain", options)
    digest = summary(result)
    if as_json:
        print_json(digest)
        return
    print(f"explained {digest['rows']} test rows of {folder.path}")
    for name, m in digest["methods"].items():
        r = m["ratios"]
        inf = m["infidelity_matched"]
        print(
            f"  {name:<22} vs random: deletion {_x(r.get('deletion_auc'))}, "
            f"infidelity {_x(r.get(inf))}, insertion {_x(r.get('insertion_auc'))}"
        )
    for name, why in digest["skipped"].items():
        print(f"  {name:<22} skipped: {why}")
    print(f"written: {folder.path / EXPLANATIONS}")


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def register(app: typer.Typer) -> None:
    app.command("explain", short_help="Explain a run's predictions and score the explanations.")(explain)
