"""Explanations for tabular and image classifiers: attributions, attention rollouts, and their quality.

``explain(model, test_split, background=train_split)`` returns a JSON-able
dict; ``summary(result)`` a compact digest; the report section is
``glassbox.report.explain.explain_section``.
"""

from __future__ import annotations

from glassbox.explain.core import DEFAULTS, METHODS, explain, summary

__all__ = ["DEFAULTS", "METHODS", "explain", "summary"]
