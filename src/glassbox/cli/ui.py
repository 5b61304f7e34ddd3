"""``glassbox ui``: the web UI, on 127.0.0.1 unless told otherwise (then only with a token)."""

from __future__ import annotations

from typing import Annotated

import typer


def ui(
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    runs: Annotated[
        str, typer.Option(metavar="DIR", help="The runs folder the UI reads and writes.")
    ] = "runs",
    token: Annotated[
        str | None,
        typer.Option(metavar="SECRET", help="Require this token on every request; 'generate' makes one."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest CSV upload, in MB.")] = 20.0,
    workers: Annotated[int, typer.Option(min=1, help="Runs trained at the same time.")] = 1,
) -> None:
    """Example: glassbox ui --port 8765

    Start, watch and inspect runs from a browser: upload a CSV or pick an
    embedded data set, choose a recipe and preset, start; follow the run,
    read its report, verify its ledger, export and download the model.
    """
    import uvicorn

    from glassbox.ui.app import check_bind, create_app

    token = check_bind(host, token)
    app = create_app(runs, token=token, max_upload_mb=max_upload_mb, workers=workers)
    url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    print(f"glassbox ui: open {url}  (runs in {runs}; Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("ui", short_help="The web UI: start, watch and inspect runs from a browser.")(ui)
