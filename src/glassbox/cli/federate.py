"""``glassbox federate RECIPE``: federated training on Flower; writes a normal run folder."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_run, resolve_recipe


def federate(
    recipe: Annotated[
        str,
        typer.Argument(metavar="RECIPE", help="A YAML recipe with a federated: section (e.g. federated)."),
    ],
    clients: Annotated[
        int | None, typer.Option(metavar="N", help="Clients (overrides federated.clients).")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(metavar="R", help="Rounds (overrides federated.rounds).")
    ] = None,
    engine: Annotated[
        str, typer.Option(metavar="ENGINE", help="simulation (Flower's, on this machine) or deployment.")
    ] = "simulation",
    superlink: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="deployment: the SuperLink's HTTP API address (its --port, 8000 by default).",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a recipe value (repeatable)."),
    ] = None,
    out: Annotated[str, typer.Option(metavar="DIR", help="Folder that receives the run folder.")] = "runs",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Example: glassbox federate federated --clients 10 --rounds 20

    Partitions the recipe's training rows among the clients (federated.partition),
    runs the strategy on Flower's Simulation Engine here, or with --engine deployment
    on a SuperLink you started (see the README), and writes runs/<time>-<name>/ with
    the model, per-round metrics, the ledger of every round and report.html.
    """
    from glassbox.config import load_recipe
    from glassbox.errors import UserError
    from glassbox.federated.launch import federate as run_federation

    overrides = list(set_ or [])
    if clients is not None:
        overrides.append(f"federated.clients={clients}")
    if rounds is not None:
        overrides.append(f"federated.rounds={rounds}")
    loaded = load_recipe(resolve_recipe(recipe), overrides)
    if loaded.federated is None and not any(o.startswith("federated.") for o in overrides):
        raise UserError(
            f"{recipe} has no federated: section; add one (see recipes/federated.yaml) or use train"
        )
    run = run_federation(loaded, out, engine=engine, superlink=superlink)
    print_run(run, as_json)
    if run.meta().get("status") != "completed":
        raise UserError(f"federated run failed: {run.meta().get('error')}; see {run.path}/flower.log")


def register(app: typer.Typer) -> None:
    app.command("federate", short_help="Federated training on Flower; writes a run folder.")(federate)
