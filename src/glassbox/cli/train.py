"""``glassbox train RECIPE``: train as the recipe says and write a run folder."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_run, resolve_recipe


def train(
    recipe: Annotated[
        str | None,
        typer.Argument(
            metavar="RECIPE",
            help="A YAML recipe file, or a shipped recipe name (healthcare, fraud, digits).",
            show_default=False,
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a recipe value, e.g. --set model.depth=4 (repeatable).",
        ),
    ] = None,
    out: Annotated[str, typer.Option(metavar="DIR", help="Folder that receives the run folder.")] = "runs",
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="RUN", help="Continue a killed run from its last checkpoint: --resume runs/<run>."
        ),
    ] = None,
    drop_lowest: Annotated[
        float | None,
        typer.Option(
            "--drop-lowest",
            metavar="FRACTION",
            help="Retrain without this fraction of the lowest-valued training rows (needs --values).",
        ),
    ] = None,
    values: Annotated[
        str | None,
        typer.Option(metavar="CSV", help="The values.csv of an earlier run of the same recipe."),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(metavar="RUN", help="Start from the encoder of a run made by glassbox pretrain."),
    ] = None,
    seeds: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Run the recipe at N seeds (seed, seed+1, ...) and report the spread."
        ),
    ] = 1,
    nproc: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, help="Data-parallel worker processes on this machine (torchrun; gloo on CPU)."
        ),
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Example: glassbox train recipes/digits.yaml --set train.epochs=20

    Train as RECIPE says; writes runs/<time>-<name>/ with the model, metrics
    and report.html. A killed run continues with: glassbox train --resume runs/<run>

    Cleaning: glassbox train RECIPE --drop-lowest 0.1 --values runs/<run>/values.csv
    retrains without the lowest-valued tenth of the training rows and compares both runs.

    Data-parallel: glassbox train RECIPE --nproc 2 (batch_size stays the global
    batch). On several machines run torchrun with the same command on each:
    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d
    --rdzv-endpoint HOST:29500 -m glassbox train RECIPE

    From a pretrained encoder: glassbox train RECIPE --init runs/<pretrain run>
    (add --set train.head_only=true for a linear probe).
    """
    from glassbox.config import load_recipe
    from glassbox.errors import UserError
    from glassbox.pipeline import resume_run, run_recipe
    from glassbox.train import distributed

    if nproc > 1 and not distributed.launched_by_torchrun():
        import sys

        if resume is None:  # a bad recipe fails here, once, not in every worker
            if recipe is None:
                raise UserError(
                    "give a recipe (e.g. glassbox train recipes/healthcare.yaml) or --resume runs/<run>"
                )
            load_recipe(resolve_recipe(recipe), set_ or [])

        argv = sys.argv[1:]
        # The workers run this same command without --nproc; torchrun's environment makes them ranks.
        argv = [a for i, a in enumerate(argv) if a != "--nproc" and (i == 0 or argv[i - 1] != "--nproc")]
        argv = [a for a in argv if not a.startswith("--nproc=")]
        distributed.launch(argv, nproc)  # rank 0 printed the results
        return

    if (drop_lowest is None) != (values is None):
        raise UserError(
            "--drop-lowest and --values go together, e.g. --drop-lowest 0.1 --values runs/<run>/values.csv"
        )
    clean = None if values is None else {"values": values, "fraction": drop_lowest}
    if resume is not None:
        if recipe is not None or set_ or clean is not None or init is not None:
            raise UserError(
                "a resumed run continues with its own config.yaml: give --resume RUN without RECIPE, "
                "--set, --drop-lowest or --init"
            )
        run = resume_run(resume)
    elif recipe is None:
        raise UserError("give a recipe (e.g. glassbox train recipes/healthcare.yaml) or --resume runs/<run>")
    elif seeds > 1:
        from glassbox.pipeline import run_seeds

        result = run_seeds(
            load_recipe(resolve_recipe(recipe), set_ or []), out, seeds, clean=clean, init=init
        )
        _print_seeds(result, as_json)
        return
    else:
        run = run_recipe(load_recipe(resolve_recipe(recipe), set_ or []), out, clean=clean, init=init)
    if distributed.main_process():
        print_run(run, as_json)
    distributed.shutdown()


def _print_seeds(result: dict, as_json: bool) -> None:
    if as_json:
        from glassbox.cli.common import print_json

        print_json(result)
        return
    seeds = result["seeds"]
    print(f"{result['recipe']}: {len(seeds)} seeds ({seeds[0]}-{seeds[-1]}), test split, mean ± std")
    metrics = ["accuracy", "balanced_accuracy", "auroc", "roc_auc", "log_loss", "macro_f1"]
    for model, m in result["summary"].items():
        cells = "  ".join(f"{k} {m[k]['mean']:.4f} ± {m[k]['std']:.4f}" for k in metrics if k in m)
        print(f"  {model:<22} {cells}")
    print(f"runs: {', '.join(result['runs'])}")
    print(f"summary: {result['file']}")


def register(app: typer.Typer) -> None:
    app.command("train", short_help="Train as a recipe says; writes a run folder.")(train)
