"""``glassbox datasets``: the embedded data sources and their sizes."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_json


def datasets(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Example: glassbox datasets --json

    List the embedded data sources with their sizes; use a name as
    data.source in a recipe. Your own data: csv:PATH (label column in
    data.label), images:DIR (one folder per class), text:PATH.
    """
    from glassbox.data import list_sources

    rows = list_sources()
    if as_json:
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "rows", "shape", "classes", "what")
    table.add_column("name", no_wrap=True)
    table.columns.insert(0, table.columns.pop())  # the name first, and never wrapped
    for r in rows:
        shape = "x".join(map(str, r.get("shape", [])))
        classes = str(r.get("classes") or "-")
        table.add_row(r["name"], r["kind"], str(r["rows"]), shape, classes, r["description"])
    Console().print(table)
    print("your own data: csv:PATH, images:DIR (one sub-folder per class), text:PATH")


def register(app: typer.Typer) -> None:
    app.command("datasets", short_help="The embedded data sources and their sizes.")(datasets)
