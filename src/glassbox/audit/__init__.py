"""Audits of a trained model: fairness by a sensitive group (more to come: sensitivity, dynamics).

Each audit is pure logic over plain arrays and returns a JSON-able dict; the
report sections that show them live in ``glassbox.report``.
"""

from __future__ import annotations

from glassbox.audit.fairness import fairness_audit, summary

__all__ = ["fairness_audit", "summary"]
