"""The UI's pages without a browser: bad uploads, the generated form, paths that must not escape, tokens."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from glassbox.cli.main import main
from glassbox.errors import UserError
from glassbox.ui.app import check_bind, create_app, safe_filename

GOOD = "a,b,c,label\n" + "".join(
    f"{i % 7},{(i * 3) % 5},{'x' if i % 2 else 'y'},{i % 2}\n" for i in range(60)
)


@pytest.fixture
def ui(tmp_path):
    app = create_app(tmp_path / "runs", start_workers=False, max_upload_mb=0.01)
    return TestClient(app), app.state.queue, tmp_path / "runs"


def upload(client, name, data):
    return client.post("/upload", files={"file": (name, data, "text/csv")}, follow_redirects=True)


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("empty.csv", b"", "is empty"),
        ("blank.csv", b"\n\n  \n", "is empty"),
        ("image.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
        ("ragged.csv", b"a,b,label\n1,2,0\n1,2\n3,4,1\n", "fields but the header has 3"),
        ("one.csv", b"label\n0\n1\n", "has one column"),
        ("big.csv", ("a,label\n" + "1,0\n" * 5000).encode(), "larger than"),
    ],
)
def test_bad_uploads_show_a_message_and_start_nothing(ui, name, data, needle):
    client, queue, runs = ui
    r = upload(client, name, data)
    assert r.status_code in (400, 413)
    assert needle in r.text and 'id="message"' in r.text
    assert queue.jobs() == []
    assert not any(p.suffix == ".csv" for p in (runs / ".ui" / "uploads").iterdir())  # nothing kept


def test_a_good_upload_previews_then_needs_a_label(ui):
    client, queue, _ = ui
    r = upload(client, "../../etc/my table.csv", GOOD.encode())
    assert r.status_code == 200 and 'id="preview"' in r.text and "60 rows" in r.text
    stored = r.url.params["upload"]
    assert "/" not in stored and stored.endswith("-my_table.csv")
    r = client.post("/runs", data={"upload": stored, "label": "", "recipe": "healthcare", "preset": "fast"})
    assert r.status_code == 400 and "choose the label column" in r.text
    r = client.post(
        "/runs", data={"upload": stored, "label": "nope", "recipe": "healthcare", "preset": "fast"}
    )
    assert r.status_code == 400 and "nope" in r.text
    assert queue.jobs() == []
    r = client.post(
        "/runs",
        data={
            "upload": stored,
            "label": "label",
            "recipe": "healthcare",
            "preset": "fast",
            "train.epochs": "2",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    (job,) = queue.jobs()
    assert "train.epochs=2" in job.argv and "data.label=label" in job.argv and "preset=fast" in job.argv


def test_bad_options_are_refused_on_the_page(ui):
    client, queue, _ = ui
    r = client.post("/runs", data={"recipe": "digits", "train.epochs": "zero"})
    assert r.status_code == 400 and "train.epochs" in r.text
    r = client.post("/runs", data={"recipe": "digits", "audit": "on"})
    assert r.status_code == 400 and "binary" in r.text
    assert queue.jobs() == []


def test_the_form_is_generated_from_the_recipe_schema(ui):
    from glassbox.config import ModelConfig, TrainConfig

    html = ui[0].get("/new").text
    for key in TrainConfig.model_fields:
        assert f'name="train.{key}"' in html
    for key in ModelConfig.model_fields:
        assert f'name="model.{key}"' in html


def test_paths_never_leave_the_runs_folder(ui, tmp_path):
    client, _, runs = ui
    run = runs / "20260101-000000-x"
    run.mkdir()
    (run / "meta.json").write_text('{"status": "completed"}')
    (run / "values.csv").write_text("index,value\n")
    (tmp_path / "secret.txt").write_text("no")
    assert client.get(f"/runs/{run.name}/file/values.csv").status_code == 200
    for bad in (
        f"/runs/{run.name}/file/../../secret.txt",
        f"/runs/{run.name}/file/%2e%2e/%2e%2e/secret.txt",
        f"/runs/{run.name}/file/..%2F..%2Fsecret.txt",
        "/runs/..%2F..%2Fsecret.txt/file/x",
        "/runs/.ui/file/uploads",
        f"/runs/{run.name}/file/meta.json/../../../secret.txt",
    ):
        r = client.get(bad)
        assert 400 <= r.status_code < 500, bad
        assert "no" != r.text
    assert safe_filename("..\\..\\a b.csv") == "a_b.csv" and safe_filename("") == "upload.csv"


def test_a_token_guards_every_request(tmp_path):
    client = TestClient(create_app(tmp_path, token="s3cret", start_workers=False))
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/?token=s3cret").status_code == 200
    assert client.get("/").status_code == 200  # the cookie set by the first visit


def test_non_loopback_bind_needs_a_token(capsys):
    with pytest.raises(UserError, match="--token"):
        check_bind("0.0.0.0", None)
    assert check_bind("127.0.0.1", None) is None and check_bind("::1", None) is None
    assert len(check_bind("0.0.0.0", "generate")) > 20
    assert main(["ui", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err


def test_cancel_marks_the_run_failed_and_a_restart_lists_it(tmp_path):
    import json
    import time

    runs = tmp_path / "runs"
    app = create_app(runs, workers=1)
    client = TestClient(app)
    r = client.post(
        "/runs",
        data={"recipe": "digits", "train.epochs": "500", "train.patience": "null"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    (job,) = app.state.queue.jobs()
    deadline = time.monotonic() + 60
    folder = None
    while time.monotonic() < deadline:
        folder = app.state.queue.run_folder(job)
        if folder is not None and (folder / "metrics.jsonl").is_file():
            break
        time.sleep(0.1)
    assert folder is not None, "the run did not start"
    assert 'id="cancel"' in client.get(f"/runs/{folder.name}").text
    assert client.post(f"/runs/{folder.name}/cancel", follow_redirects=False).status_code == 303
    assert job.status == "cancelled"
    assert json.loads((folder / "meta.json").read_text())["status"] == "failed"
    # A new UI on the same folder shows the run from disk.
    fresh = TestClient(create_app(runs, start_workers=False))
    page = fresh.get("/").text
    assert folder.name in page and "failed" in page
    assert "failed" in fresh.get(f"/runs/{folder.name}").text
