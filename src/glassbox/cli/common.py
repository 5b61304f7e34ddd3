"""What the verbs share: finding a recipe by path or shipped name, printing results."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from glassbox.errors import UserError, did_you_mean


def shipped_recipes() -> dict[str, Path]:
    folder = resources.files("glassbox") / "recipes"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def resolve_recipe(recipe: str) -> Path:
    """A path to a YAML file, or the name of a shipped recipe (``healthcare``)."""
    path = Path(recipe)
    if path.exists():
        return path
    shipped = shipped_recipes()
    if recipe in shipped:
        return shipped[recipe]
    if path.suffix in (".yaml", ".yml") or "/" in recipe:
        raise UserError(
            f"recipe not found: {recipe}; give a YAML file or a shipped recipe ({', '.join(sorted(shipped))})"
        )
    raise UserError(
        f"unknown recipe '{recipe}': {did_you_mean(recipe, shipped)} (or give a path to a YAML file)"
    )


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def summarize_run(run: Any) -> dict[str, Any]:
    meta = run.meta()
    return {
        "run": str(run.path),
        "status": meta.get("status"),
        "results": meta.get("results", {}),
        "best_epoch": meta.get("best_epoch"),
        "report": str(run.path / "report.html") if (run.path / "report.html").exists() else None,
    }


def print_run(run: Any, as_json: bool) -> None:
    summary = summarize_run(run)
    if as_json:
        print_json(summary)
        return
    print(f"run: {summary['run']} ({summary['status']})")
    for key, value in summary["results"].items():
        print(f"  {key:<22} {value:.4f}")
    if summary["report"]:
        print(f"report: {summary['report']}")
