"""The UI in a real browser (Playwright driving the system Chromium): upload, train, watch, report, verify.

Screenshots of every page land in ``test-artifacts/ui/`` at the repository
root (or ``$GLASSBOX_ARTIFACTS``), for a person to look at after CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    import uvicorn

    from glassbox.ui.app import create_app

    port = free_port()
    app = create_app(tmp_path / "runs", workers=1)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs it)")
def test_upload_train_watch_report_verify(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from sklearn.datasets import load_breast_cancer

    shots = Path(os.environ.get("GLASSBOX_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    d = load_breast_cancer()
    csv = tmp_path / "patients.csv"
    cols = [f"f{j}" for j in range(6)]
    rows = [",".join(f"{v:.4g}" for v in x[:6]) + f",{'malignant' if y == 0 else 'benign'}" for x, y in
            zip(d.data, d.target, strict=True)]  # fmt: skip
    csv.write_text(",".join([*cols, "diagnosis"]) + "\n" + "\n".join(rows) + "\n")

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server}/new")
        page.screenshot(path=str(shots / "1-new-run.png"), full_page=True)
        page.set_input_files("#file", str(csv))
        page.click("#upload")
        page.wait_for_selector("#preview")
        assert "569 rows" in page.content()
        page.select_option("#label", "diagnosis")
        page.select_option("#preset", "fast")
        page.click("summary")
        page.fill('[name="train.epochs"]', "3")
        page.screenshot(path=str(shots / "2-preview-and-options.png"), full_page=True)
        page.click("#start")
        page.wait_for_url("**/runs/**", timeout=60_000)
        page.screenshot(path=str(shots / "3-run-training.png"), full_page=True)
        page.wait_for_selector("#status.status-completed", timeout=180_000)
        page.screenshot(path=str(shots / "4-run-completed.png"), full_page=True)
        assert page.locator("iframe#report").count() == 1
        run_url = page.url
        page.goto(f"{run_url}/file/report.html")
        assert "Model card" in page.content()
        page.screenshot(path=str(shots / "5-report.png"), full_page=True)
        page.goto(run_url)
        page.click("#verify")
        page.wait_for_selector("#verdict")
        verdict = page.inner_text("#verdict")
        page.screenshot(path=str(shots / "6-verified.png"), full_page=True)
        page.goto(server)
        page.screenshot(path=str(shots / "7-runs.png"), full_page=True)
        assert "completed" in page.inner_text("#runs")
        browser.close()
    assert verdict.startswith("verified:"), verdict
