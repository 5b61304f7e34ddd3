"""``glassbox demo``: the healthcare recipe end to end on embedded data."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_run, resolve_recipe


def demo(
    out: Annotated[str, typer.Option(metavar="DIR", help="Folder that receives the run folder.")] = "runs",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Example: glassbox demo --out runs

    Train the breast-cancer (healthcare) recipe end to end on embedded data:
    data values, explanations scored against random, a model card, and a
    signed ledger, which is then verified; about a minute on a CPU.
    """
    from glassbox.cli.common import print_json, summarize_run
    from glassbox.config import load_recipe
    from glassbox.ledger import verify_run
    from glassbox.pipeline import run_recipe

    run = run_recipe(load_recipe(resolve_recipe("healthcare")), out)
    verdict = verify_run(run.path)
    if as_json:
        print_json({**summarize_run(run), "verify": verdict.to_dict()})
    else:
        print_run(run, False)
        if verdict.ok:
            print(f"ledger: verified, {verdict.entries} signed entries, Merkle root {verdict.root}")
            print(f"check it yourself: glassbox verify {run.path}")
        else:
            print(f"ledger: FAILED: {verdict.problems[0]}")
    if not verdict.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo", short_help="The healthcare recipe end to end on embedded data.")(demo)
