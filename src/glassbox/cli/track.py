"""``glassbox track FRAMES_DIR --point X,Y``: promptable video object tracking with a SAM 2 video model."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_json


def track(
    frames_dir: Annotated[
        str | None, typer.Argument(metavar="FRAMES_DIR", help="A folder of PNG/JPEG frames, in name order.")
    ] = None,
    point: Annotated[
        list[str] | None,
        typer.Option(
            metavar="X,Y",
            help="A point on the object, in pixels; repeat for several objects, one point each.",
        ),
    ] = None,
    box: Annotated[
        str | None, typer.Option(metavar="X1,Y1,X2,Y2", help="A box around the object (one object).")
    ] = None,
    frame: Annotated[int, typer.Option(metavar="N", help="The frame the prompt is on.")] = 0,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            metavar="DIR", help="A Hugging Face SAM 2 video checkpoint folder (default: newest trained)."
        ),
    ] = None,
    out: Annotated[str, typer.Option(metavar="DIR", help="Where the run folder goes.")] = "runs",
    train: Annotated[
        str | None,
        typer.Option(metavar="RECIPE", help="Train a tracker from this recipe instead (track.yaml)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Example: glassbox track frames/ --point 32,20

    Prompt one object with a point (and/or --box) on --frame, propagate it
    through the video with the SAM 2 video model and its memory (backwards
    too, when the prompt is not on the first frame), and write a run folder
    with masks/<frame>.png, overlay.png and track.json, all in its ledger.
    Several objects: one --point each (glassbox track frames/ --point 32,20
    --point 10,40); each object's prompt then marks the others' points as
    not-this-object, and the masks go to masks/<k>/<frame>.png.
    --checkpoint loads a local Hugging Face checkpoint (offline); without it
    the newest tracker trained under --out is used: train one with
    glassbox track --train track (recipes/track.yaml, about 20 minutes on a CPU).
    """
    import importlib.util
    import json

    from glassbox.errors import UserError

    if importlib.util.find_spec("transformers") is None:
        raise UserError(
            "glassbox track needs Hugging Face transformers (SAM 2):"
            " pip install -c constraints.txt -e '.[vision]'"
        )
    if train is not None:
        from glassbox.cli.common import resolve_recipe
        from glassbox.vision.train import train_tracker

        run = train_tracker(resolve_recipe(train), out=out)
        results = json.loads((run.path / "results.json").read_text())
        if as_json:
            print_json({"run": str(run.path), **results})
            return
        print(
            f"mean J&F {results['mean_jf']:.3f} on {results['videos']} held-out videos"
            f" ({results['steps']} steps, {results['train_minutes']:.1f} min)"
        )
        print(f"written: {run.path}/ (checkpoint: {run.path}/checkpoint)")
        return
    if frames_dir is None:
        raise UserError("give FRAMES_DIR (a folder of frames) and --point X,Y, or --train RECIPE")
    from glassbox.vision.track import parse_box, parse_point, track_folder

    run = track_folder(
        frames_dir,
        [parse_point(p) for p in point or []],
        frame=frame,
        box=parse_box(box) if box is not None else None,
        checkpoint=checkpoint,
        out=out,
    )
    summary = json.loads((run.path / "track.json").read_text())
    if as_json:
        print_json({"run": str(run.path), **summary})
        return
    objects = f"{summary['objects']} objects" if summary["objects"] > 1 else "one object"
    print(f"tracked {objects} through {summary['frames']} frames with {summary['checkpoint']}")
    print(f"written: {run.path}/ (masks/, overlay.png; check with glassbox verify {run.path})")


def register(app: typer.Typer) -> None:
    app.command("track", short_help="Track a prompted object through a video (SAM 2).")(track)
