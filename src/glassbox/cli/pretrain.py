"""``glassbox pretrain RECIPE``: self-supervised pretraining of the recipe's encoder, into a run folder."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_json, resolve_recipe


def pretrain(
    recipe: Annotated[
        str,
        typer.Argument(
            metavar="RECIPE", help="A YAML recipe file or a shipped recipe name.", show_default=False
        ),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=VALUE", help="Override a recipe value, e.g. --set pretrain.epochs=50."
        ),
    ] = None,
    out: Annotated[str, typer.Option(metavar="DIR", help="Folder that receives the run folder.")] = "runs",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Example: glassbox pretrain recipes/digits_ssl.yaml

    Pretrains the encoder on the training rows without their labels, as the
    recipe's pretrain: section says (its defaults when there is none), and
    writes a run folder with the encoder, the loss curve and a few-shot table.
    Then: glassbox train RECIPE --init runs/<run>   (or glassbox fewshot runs/<run>)
    """
    from glassbox.config import load_recipe
    from glassbox.pipeline import run_pretrain

    run = run_pretrain(load_recipe(resolve_recipe(recipe), set_ or []), out)
    meta = run.meta()
    fewshot = run.path / "fewshot.json"
    summary = {"run": str(run.path), "status": meta.get("status"), "pretrain": meta.get("pretrain")}
    if fewshot.exists():
        import json

        summary["fewshot"] = [
            {**{k: r[k] for k in r if k in ("shots", "draws")},
             **{f"{f}_{c}": round(v["mean"], 4) for f, cs in r["results"].items() for c, v in cs.items()}}
            for r in json.loads(fewshot.read_text())
        ]  # fmt: skip
    if as_json:
        print_json(summary)
        return
    p = summary["pretrain"] or {}
    print(f"run: {summary['run']} ({summary['status']})")
    print(f"  {p.get('method')} on {p.get('rows')} unlabeled rows in {p.get('seconds', 0):.0f} s,"
          f" final loss {p.get('final_loss') or float('nan'):.4f}")  # fmt: skip
    for r in summary.get("fewshot", []):
        cells = "  ".join(f"{k} {v:.3f}" for k, v in r.items() if k not in ("shots", "draws"))
        print(f"  {r['shots']}-shot: {cells}")
    print(f"next: glassbox train {recipe} --init {summary['run']}")


def register(app: typer.Typer) -> None:
    app.command("pretrain", short_help="Self-supervised pretraining of an encoder; writes a run folder.")(
        pretrain
    )
