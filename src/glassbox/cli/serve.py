"""``glassbox serve RUN``: serve a run's exported ONNX model over HTTP (FastAPI and ONNX Runtime)."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    run: Annotated[str, typer.Argument(metavar="RUN", help="A run folder exported with glassbox export.")],
    port: Annotated[int, typer.Option(metavar="PORT", help="TCP port to listen on.")] = 8000,
    host: Annotated[
        str, typer.Option(metavar="HOST", help="Address to bind; the default answers this machine only.")
    ] = "127.0.0.1",
    int8: Annotated[bool, typer.Option("--int8", help="Serve the int8 model instead of float.")] = False,
    threads: Annotated[int, typer.Option(metavar="N", help="ONNX Runtime threads per request.")] = 1,
) -> None:
    """Example: glassbox serve runs/20261201-120000-healthcare --int8 --port 8000

    POST /predict with {"rows": [{"feature": value, ...}]} (tables, by feature
    name) or {"inputs": [[...]]} (arrays); GET /health; GET /metadata (the
    served file's SHA-256, the ledger's Merkle root, the input schema). The
    run's ledger must verify before anything is served. Ctrl-C stops after
    the requests in flight.
    """
    from glassbox.edge.serve import serve as run_server
    from glassbox.errors import UserError

    if not 0 < port < 65536:
        raise UserError(f"--port {port} is not a TCP port; choose one from 1 to 65535")
    if threads < 1:
        raise UserError(f"--threads {threads}: give at least 1")
    run_server(run, host=host, port=port, int8=int8, threads=threads)


def register(app: typer.Typer) -> None:
    app.command("serve", short_help="Serve a run's exported model over HTTP.")(serve)
