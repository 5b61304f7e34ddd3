"""The ``glassbox`` command: a thin typer shell over the library.

Each verb lives in its own module and only parses and calls. ``main`` turns a
UserError into one line on stderr and exit status 2; anything else is a bug
and keeps its traceback. Nothing heavy is imported here, so ``--help`` is fast.
"""

from __future__ import annotations

import sys

import typer

from glassbox.cli import (
    audit,
    bench,
    datasets,
    demo,
    explain,
    export,
    federate,
    fewshot,
    generate,
    pretrain,
    render_config,
    serve,
    track,
    train,
    ui,
    verify,
)
from glassbox.errors import UserError

app = typer.Typer(
    name="glassbox",
    help="glassbox: train, explain, audit and verify models on your own data.\n\nExample: glassbox demo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for module in (
    demo,
    train,
    pretrain,
    federate,
    render_config,
    datasets,
    explain,
    audit,
    export,
    serve,
    generate,
    fewshot,
    verify,
    bench,
    ui,
    track,
):
    module.register(app)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a cancel from the UI, a job scheduler) ends a run like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status (the console script exits with it)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        app(args=argv, prog_name="glassbox")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # The run folder already says "failed"; its checkpoints remain.
        print("interrupted; continue training with: glassbox train --resume runs/<run>", file=sys.stderr)
        return 130
    except SystemExit as done:
        # typer ends every command with sys.exit; turn it into a return value
        # so that tests and embedders can call main() like a function.
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
