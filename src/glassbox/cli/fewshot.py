"""``glassbox fewshot RUN --shots K``: prototypes and a linear probe on K labels per class."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_json


def fewshot(
    run: Annotated[str, typer.Argument(metavar="RUN", help="A run folder (glassbox pretrain or train).")],
    shots: Annotated[
        str, typer.Option(metavar="K[,K...]", help="Labeled examples per class, e.g. 1 or 1,5,10.")
    ] = "1,5",
    draws: Annotated[int, typer.Option(min=1, help="Seeded draws of the labeled rows per setting.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Example: glassbox fewshot runs/<run> --shots 1,5

    Embeds the training and test rows with the run's frozen encoder, then,
    for each K, draws K labeled training rows per class (seeded, DRAWS times)
    and scores class-mean prototypes and a logistic-regression probe on the
    test split, beside the same classifiers on the raw features. Writes
    fewshot.json into the run and rebuilds its report.
    """
    from glassbox.analysis import fewshot_run

    result = fewshot_run(run, shots, draws)
    if as_json:
        print_json(result)
        return
    for r in result:
        res = r["results"]
        print(f"{r['shots']} per class ({r['draws']} draws), test accuracy:")
        for feat, cs in res.items():
            cells = "  ".join(f"{c} {v['mean']:.3f} ± {v['std']:.3f}" for c, v in cs.items())
            print(f"  {feat:<8} {cells}")


def register(app: typer.Typer) -> None:
    app.command("fewshot", short_help="Few-shot accuracy of a run's encoder: prototypes and a probe.")(
        fewshot
    )
