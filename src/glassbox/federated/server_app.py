"""glassbox's Flower ServerApp: read the run config, hand the Grid to ``server.serve``. Nothing else."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from glassbox.federated import task
from glassbox.federated.server import serve

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    recipe = task.recipe_from_config(context.run_config)
    serve(grid, recipe, str(context.run_config["run-dir"]))
