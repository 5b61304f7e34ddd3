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

    Train the breast-cancer (healthcare) recipe end to end on embedded data
    and write its run folder and report.html; about a minute on a CPU.
    """
    from glassbox.config import load_recipe
    from glassbox.pipeline import run_recipe

    run = run_recipe(load_recipe(resolve_recipe("healthcare")), out)
    print_run(run, as_json)


def register(app: typer.Typer) -> None:
    app.command("demo", short_help="The healthcare recipe end to end on embedded data.")(demo)
