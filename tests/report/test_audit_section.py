"""The fairness-audit report section: group names (escaped), tables, embedded PNGs, and the full report."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from glassbox.audit import fairness_audit
from glassbox.report import write_report
from glassbox.report.audit import audit_section

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


@pytest.fixture(scope="module")
def result() -> dict:
    rng = np.random.default_rng(0)
    n = 600
    g = rng.choice(["north", "south", "<east & west>"], size=n, p=[0.5, 0.3, 0.2])
    y = (rng.random(n) < np.where(g == "south", 0.4, 0.2)).astype(int)
    s = np.clip(0.35 * y + 0.15 * (g == "south") + 0.6 * rng.random(n), 0, 1)
    return fairness_audit(
        y, s, g, val_y=y, val_score=s, val_groups=g, n_boot=100, sensitive_name="region", positive="default"
    )


def test_section_shows_groups_tables_and_two_plots(result: dict) -> None:
    section = audit_section(result)
    html = section["html"]
    assert section["title"] == "Fairness audit"
    pngs = _pngs(html)
    assert len(pngs) == 2 and all(p.startswith(PNG_MAGIC) for p in pngs)
    for name in ("north", "south", "&lt;east &amp; west&gt;"):
        assert f"<td>{name}</td>" in html
        assert f"selection rate {name}" in html
    assert "<east & west>" not in html
    assert 'id="fairness-groups"' in html and 'id="fairness-mitigation"' in html
    assert "ThresholdOptimizer (demographic parity)" in html and "ThresholdOptimizer (equalized odds)" in html
    assert "Demographic parity asks" in html and "Equalized odds asks" in html
    # Every rate of every group, and overall, has its interval.
    table = html[html.index('id="fairness-groups"') : html.index("</table>")]
    assert table.count('<span class="muted">[') == 4 * 5
    assert "region" in html and "default" in html


def test_section_handles_undefined_rates_and_warnings(result: dict) -> None:
    broken = {**result, "warnings": ["region <b> has only 3 test rows"]}
    broken["by_group"] = {k: dict(v) for k, v in result["by_group"].items()}
    broken["by_group"]["north"]["tpr"] = {"value": None, "low": None, "high": None, "n_valid": 0}
    html = audit_section(broken)["html"]
    assert "region &lt;b&gt; has only 3 test rows" in html
    assert "[no interval]" in html
    assert len(_pngs(html)) == 2


def test_section_goes_into_the_report(result: dict, tmp_path: Path) -> None:
    out = write_report(
        tmp_path / "report.html",
        title="audit",
        config_yaml="seed: 0",
        data_summary={"name": "toy", "rows": 600},
        history=[],
        test_metrics={"accuracy": 0.8},
        extra_sections=[audit_section(result)],
    )
    text = out.read_text()
    assert "Fairness audit" in text and 'id="fairness-tradeoff"' in text
    assert len(_pngs(text)) >= 2
