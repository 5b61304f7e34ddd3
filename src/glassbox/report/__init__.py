"""The HTML report of a run: one self-contained file built from plain Python data.

It knows nothing about training, so anything that has a history, metrics and
predictions can write one. matplotlib, sklearn and jinja2 load only when a
report is written.
"""

from __future__ import annotations

from glassbox.report.html import write_report

__all__ = ["write_report"]
