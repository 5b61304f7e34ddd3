"""User-facing errors.

A ``UserError`` is a mistake in what the user gave us (a recipe, a file, a
column name). The CLI prints its message as one line and exits with status 2,
without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input; the message names it and the fix."""


def nearest(name: str, options: Iterable[str]) -> str | None:
    """The closest valid option to a misspelt ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or, when nothing is close, the list of valid names."""
    options = sorted(options)
    close = nearest(name, options)
    if close is not None:
        return f"did you mean '{close}'?"
    return "valid: " + ", ".join(options)
