"""``glassbox render-config RECIPE``: the recipe with every default filled in."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_json, resolve_recipe


def render_config(
    recipe: Annotated[
        str, typer.Argument(metavar="RECIPE", help="A YAML recipe file, or a shipped recipe name.")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a value, e.g. --set model.depth=4."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Example: glassbox render-config recipes/healthcare.yaml --set preset=fast

    Print RECIPE after presets, defaults and --set overrides: exactly what a
    run would use and write to its config.yaml.
    """
    from glassbox.config import load_recipe, render

    resolved = load_recipe(resolve_recipe(recipe), set_ or [])
    if as_json:
        print_json(resolved.model_dump(mode="json"))
    else:
        print(render(resolved), end="")


def register(app: typer.Typer) -> None:
    app.command("render-config", short_help="The recipe with every default filled in.")(render_config)
