"""The web UI (``glassbox ui``): FastAPI pages over the same pipeline and run folders as the CLI."""
