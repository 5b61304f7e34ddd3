"""The federated run's report: a real run with a faulty client, and the sections on their own."""

from __future__ import annotations

import base64
import json
import re
from html import escape
from pathlib import Path

import pytest

from glassbox.report.federated import faults_section, partition_section, rounds_section, summary_section

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


@pytest.fixture(scope="module")
def fed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("flwr")
    from glassbox.config import load_recipe
    from glassbox.federated.local import run_local

    recipe = load_recipe(
        None,
        [
            "data.source=iris",
            "federated.clients=3",
            "federated.rounds=2",
            "federated.partition.scheme=iid",
            "model.dim=16",
            "model.depth=1",
            "federated.faults.nan=[1]",
        ],
    )
    return run_local(recipe, tmp_path_factory.mktemp("fed")).path


def test_report_of_a_real_run_shows_rounds_faults_and_verifies(fed_run: Path) -> None:
    from glassbox.ledger.verify import verify_run

    html = (fed_run / "report.html").read_text()
    summary = json.loads((fed_run / "federated.json").read_text())
    assert summary["dropped"], "the NaN drill should have dropped client 1"
    for d in summary["dropped"]:
        assert escape(d["reason"]) in html
    for title in ("Federation", "Rounds", "Partition", "Fault tolerance", "Federated provenance"):
        assert f"<h2>{title}</h2>" in html
    assert "Accuracy per round" in html and "Labels per client" in html
    assert "every round went on with 2 of 3 clients" in html
    assert summary["final_model_sha256"] in html
    # The normal report is still there around the federation's sections.
    assert 'id="classification"' in html and "<h2>Model card</h2>" in html
    assert html.index("<h2>Federation</h2>") < html.index('<section id="metrics">')
    assert all(p.startswith(PNG_MAGIC) for p in _pngs(html))
    # The card quotes the dataset entry with the splits' digests, not partition.json's.
    card = json.loads((fed_run / "model_card.json").read_text())
    assert card["data"]["ledger"]["digests"] is not None
    verdict = verify_run(fed_run)
    assert verdict.ok, verdict.problems
    ledger = [json.loads(line) for line in (fed_run / "ledger.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "report" and "report.html" in e["artifacts"] for e in ledger)


def test_user_strings_are_escaped() -> None:
    hostile = "<script>alert(1)</script>"
    faults = faults_section(
        {
            "dropped": [{"round": 1, "node": 2, "partition": 1, "reason": hostile}],
            "per_round": [{"round": 1, "accepted": 2, "dropped": [{"node": 2}]}],
            "kept_previous": {"1": hostile},
        }
    )
    part = partition_section(
        {"scheme": "iid", "sizes": [3, 3], "label_histograms": [[1, 2], [2, 1]], "clients": []},
        {},
        [hostile, "$x$"],
    )
    for section in (faults, part):
        assert "<script>" not in section["html"]
    assert escape(hostile) in faults["html"] and "kept the previous global model" in faults["html"]
    assert escape(hostile) in part["html"]


def test_dp_rounds_get_an_epsilon_plot_and_summary() -> None:
    rounds = [
        {"round": 0, "test_accuracy": 0.3, "accepted": 0, "dropped": 0},
        *(
            {
                "round": r,
                "test_accuracy": 0.3 + 0.1 * r,
                "client_accuracy_mean": 0.5,
                "client_accuracy_worst": 0.2,
                "epsilon": 0.5 * r,
                "accepted": 3,
                "dropped": 0,
            }
            for r in (1, 2, 3)
        ),
    ]
    section = rounds_section(rounds)
    assert len(_pngs(section["html"])) == 2 and "Epsilon per round" in section["html"]
    summary = summary_section(
        {"strategy": "fedavg", "clients": 3, "rounds": 3, "epsilon": 1.5, "delta": 1e-5},
        {"scheme": "dirichlet", "alpha": 0.1},
        rounds,
        {"test_accuracy": 0.6},
    )
    assert "epsilon 1.5 at delta 1.000e-05" in summary["html"]
    assert "dirichlet, alpha 0.1" in summary["html"]


def test_no_dropped_client_is_said() -> None:
    section = faults_section(
        {"dropped": [], "per_round": [{"round": r, "accepted": 3, "dropped": []} for r in (1, 2)]}
    )
    assert "No client was dropped: every round accepted all 3 clients it asked" in section["html"]
