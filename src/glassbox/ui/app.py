"""The web UI: start, watch and inspect runs from a browser (FastAPI, server-rendered Jinja2 pages).

Thin over the same pipeline as the command line: a started run is the
``glassbox train RECIPE --set ...`` command, run by ``glassbox.ui.jobs`` in
a child process; the pages read the run folders. Little JavaScript: the
run page polls its progress once a second while it trains.

Safety: ``glassbox ui`` binds to 127.0.0.1; any other address needs a token
(``--token``), which every request must carry (``?token=`` once, then a
cookie, or ``Authorization: Bearer``). Uploads are size-limited, stored
under generated names, and checked as CSV before anything starts; run
names and file paths are resolved and must stay inside the runs folder.

>>> import tempfile
>>> from fastapi.testclient import TestClient
>>> client = TestClient(create_app(tempfile.mkdtemp(), start_workers=False))
>>> client.get("/").status_code, client.get("/runs/../../etc/passwd").status_code
(200, 404)
"""

import hmac
import json
import re
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from glassbox.errors import UserError
from glassbox.ui.forms import overrides, schema_fields
from glassbox.ui.jobs import JobQueue, slug

MAX_UPLOAD_MB = 20
PREVIEW_ROWS = 8
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # what Run.create makes; nothing with a slash
UPLOAD_NAME = re.compile(r"^[0-9a-f]{8}-[A-Za-z0-9._-]+\.csv$")
DOWNLOADS = (
    "report.html",
    "values.csv",
    "predictions.csv",
    "model.safetensors",
    "model.json",
    "model_card.json",
)
COOKIE = "glassbox_token"


def safe_filename(name: str) -> str:
    """The last path component of an uploaded file's name, reduced to letters, digits, ``._-``."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")[:80]
    return base or "upload.csv"


def csv_preview(path: Path) -> dict[str, Any]:
    """Header, column kinds and first rows of an uploaded CSV; raises UserError on a bad file."""
    from glassbox.data.tabular import _Table

    table = _Table(path)
    if len(table.header) < 2:
        raise UserError(
            f"{path.name} has one column; a table needs feature columns and a label column, comma-separated"
        )
    columns = []
    for j, name in enumerate(table.header):
        cells = [row[j] for row in table.rows]
        numeric = all(_is_number(c) for c in cells if c != "")
        levels = len(set(cells))
        columns.append({"name": name, "kind": "number" if numeric else "text", "levels": levels})
    # The label is most often the last column, or the one with few distinct values.
    guess = table.header[-1]
    return {"rows": len(table.rows), "columns": columns, "head": table.rows[:PREVIEW_ROWS], "guess": guess}


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _meta(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def run_progress(folder: Path) -> dict[str, Any]:
    """What the run page shows while a run trains: epoch of epochs, last loss, an estimate of time left."""
    import yaml

    meta = _meta(folder)
    status = meta.get("status", "unknown")
    try:
        epochs = int(yaml.safe_load((folder / "config.yaml").read_text())["train"]["epochs"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        epochs = 0
    done, loss = 0, None
    try:
        for line in (folder / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            if "train_loss" in r:
                loss = r["train_loss"]
            if "train_loss_epoch" in r or "val_loss" in r:
                done = max(done, int(r.get("epoch", 0)))
    except (OSError, json.JSONDecodeError):
        pass
    started = meta.get("started")
    eta = None
    if started and done and epochs:
        import datetime

        t0 = datetime.datetime.fromisoformat(started).timestamp()
        eta = (time.time() - t0) / done * (epochs - done)
    percent = round(100 * done / epochs) if epochs else 0
    text = f"epoch {done} of {epochs}" if epochs else "starting"
    if loss is not None:
        text += f", training loss {loss:.4f}"
    if eta is not None and status == "running":
        text += f", about {eta:.0f} s left"
    return {
        "status": status,
        "epoch": done,
        "epochs": epochs,
        "loss": loss,
        "eta_s": eta,
        "percent": percent,
        "text": text,
    }


def create_app(
    runs: str | Path,
    *,
    token: str | None = None,
    max_upload_mb: float = MAX_UPLOAD_MB,
    workers: int = 1,
    start_workers: bool = True,
) -> Any:
    """The FastAPI app over the run folders in ``runs``; ``start_workers=False`` for tests of the pages."""
    import jinja2
    from fastapi import FastAPI, File, Request, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

    runs_dir = Path(runs).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    uploads = runs_dir / ".ui" / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    queue = JobQueue(runs_dir, workers=workers)
    if start_workers:
        queue.start()
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("glassbox.ui", "templates"), autoescape=True, trim_blocks=True
    )
    app = FastAPI(title="glassbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue = queue
    limit = int(max_upload_mb * 1024 * 1024)

    def page(template: str, code: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("message", None)
        return HTMLResponse(env.get_template(template).render(**ctx), status_code=code)

    @app.middleware("http")
    async def check_token(request: Request, call_next: Any) -> Any:
        if token is None:
            return await call_next(request)
        given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:]
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HTMLResponse("a token is required: open the address glassbox ui printed", status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    def run_folder(name: str) -> Path | None:
        """The run folder ``name`` directly inside the runs folder, or None (never anything outside it)."""
        if not RUN_NAME.match(name):
            return None
        folder = (runs_dir / name).resolve()
        if folder.parent != runs_dir or not (folder / "meta.json").is_file():
            return None
        return folder

    def new_form(upload: str | None = None, message: str | None = None, code: int = 200) -> HTMLResponse:
        from glassbox.cli.common import shipped_recipes
        from glassbox.config import PRESETS
        from glassbox.data.sources import SOURCES

        preview = None
        if upload and UPLOAD_NAME.match(upload) and (uploads / upload).is_file():
            preview = {"name": upload, **csv_preview(uploads / upload)}
        return page(
            "new.j2",
            code,
            title="New run",
            upload=preview,
            sources=SOURCES.names(),
            recipes=sorted(shipped_recipes()),
            presets=list(PRESETS),
            schema=schema_fields(),
            max_mb=max_upload_mb,
            message=message,
        )

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        rows = []
        for folder in sorted(
            (p for p in runs_dir.iterdir() if p.is_dir() and RUN_NAME.match(p.name)), reverse=True
        ):
            meta = _meta(folder)
            if not meta:
                continue
            res = meta.get("results", {})
            shown = ", ".join(
                f"{k.removeprefix('test_')} {v:.3f}" for k, v in res.items() if isinstance(v, float)
            )
            rows.append(
                {
                    "name": folder.name,
                    "status": meta.get("status"),
                    "started": meta.get("started"),
                    "results": shown,
                }
            )
        jobs = [j.public() for j in queue.jobs()]
        return page("index.j2", title="Runs", runs=rows, jobs=jobs, runs_dir=runs_dir)

    @app.get("/new", response_class=HTMLResponse)
    def new(upload: str | None = None) -> HTMLResponse:
        return new_form(upload)

    @app.post("/upload", response_class=HTMLResponse)
    async def upload(file: Annotated[UploadFile | None, File()] = None) -> Any:
        if file is None or not file.filename:
            return new_form(message="choose a CSV file to upload first", code=400)
        data = await file.read(limit + 1)
        if len(data) > limit:
            too_big = f"{safe_filename(file.filename)} is larger than {max_upload_mb:g} MB"
            return new_form(message=too_big + "; upload a smaller file or raise --max-upload-mb", code=413)
        if not data.strip():
            empty = f"{safe_filename(file.filename)} is empty"
            return new_form(message=empty + "; upload a CSV with a header row and data rows", code=400)
        stored = f"{uuid.uuid4().hex[:8]}-{safe_filename(file.filename)}"
        if not stored.endswith(".csv"):
            stored += ".csv"
        path = uploads / stored
        path.write_bytes(data)
        try:
            csv_preview(path)
        except UserError as err:
            path.unlink(missing_ok=True)
            return new_form(message=str(err).replace(str(path), safe_filename(file.filename)), code=400)
        return RedirectResponse(f"/new?upload={stored}", status_code=303)

    @app.post("/runs", response_class=HTMLResponse)
    async def start(request: Request) -> Any:
        from glassbox.analysis import check_analyses
        from glassbox.cli.common import resolve_recipe
        from glassbox.config import load_recipe
        from glassbox.pipeline import prepare_data

        form = {k: str(v) for k, v in (await request.form()).items()}
        upload = form.get("upload") or None
        sets: list[str] = []
        if upload:
            if not UPLOAD_NAME.match(upload) or not (uploads / upload).is_file():
                return new_form(message="that upload is gone; upload the CSV again", code=400)
            if not form.get("label"):
                return new_form(upload, message="choose the label column before starting", code=400)
            sets += [f"data.source=csv:{uploads / upload}", f"data.label={form['label']}"]
            if form.get("sensitive"):
                sets.append(f"data.sensitive={form['sensitive']}")
        elif form.get("source"):
            sets.append(f"data.source={form['source']}")
        recipe_name = form.get("recipe") or "healthcare"
        job_name = f"{slug(form.get('name') or recipe_name)}-{uuid.uuid4().hex[:6]}"
        sets += [f"preset={form.get('preset') or 'default'}", f"name={job_name}"]
        sets.append("valuation.method=inrun" if form.get("valuation") else "valuation={method: none}")
        sets.append("explain={}" if form.get("explain") else "explain=null")
        sets.append("audit={}" if form.get("audit") else "audit=null")
        sets += overrides(form)
        try:
            path = resolve_recipe(recipe_name)
            recipe = load_recipe(path, sets)
            data = prepare_data(recipe)  # a bad CSV or label fails here, before anything starts
            check_analyses(recipe, data)
        except UserError as err:
            return new_form(upload, message=str(err), code=400)
        argv = ["train", str(path), *[a for s in sets for a in ("--set", s)], "--out", str(runs_dir)]
        after = [["export", "{run}", "--int8"]] if form.get("export") else []
        job = queue.submit(argv, job_name, after)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(job_id: str) -> Any:
        job = queue.get(job_id)
        if job is None:
            return page("base.j2", 404, title="No such job", message=f"no job {job_id}")
        folder = queue.run_folder(job)
        if folder is not None:
            return RedirectResponse(f"/runs/{folder.name}", status_code=303)
        if job.status in ("failed", "cancelled"):
            tail = job.log.read_text()[-2000:] if job.log and job.log.is_file() else ""
            return page(
                "base.j2", title=job.name, message=f"the job {job.status} before its run began: {tail}"
            )
        html = (
            f'<meta http-equiv="refresh" content="1"><h1>{job.name}</h1>'
            f"<p id='status'>{job.status}: waiting for the run to start</p>"
        )
        return HTMLResponse(
            env.get_template("base.j2")
            .render(title=job.name, message=None)
            .replace("</main>", html + "</main>")
        )

    @app.post("/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> Any:
        queue.cancel(job_id)
        return RedirectResponse("/", status_code=303)

    def run_page(name: str, verdict: dict | None = None, message: str | None = None) -> HTMLResponse:
        folder = run_folder(name)
        if folder is None:
            return page("base.j2", 404, title="No such run", message=f"no run {name!r} in {runs_dir}")
        meta = _meta(folder)
        downloads = [f for f in DOWNLOADS if (folder / f).is_file()]
        export = folder / "export"
        if export.is_dir():
            downloads += [
                f"export/{p.name}" for p in sorted(export.iterdir()) if p.suffix in (".onnx", ".json")
            ]
        return page(
            "run.j2",
            title=name,
            name=name,
            status=meta.get("status"),
            error=meta.get("error"),
            progress=run_progress(folder),
            downloads=downloads,
            has_report=(folder / "report.html").is_file(),
            verdict=verdict,
            message=message,
        )

    @app.get("/runs/{name}", response_class=HTMLResponse)
    def show_run(name: str) -> HTMLResponse:
        return run_page(name)

    @app.post("/runs/{name}/cancel")
    def cancel_run(name: str) -> Any:
        for job in queue.jobs():
            folder = queue.run_folder(job)
            if folder is not None and folder.name == name:
                queue.cancel(job.id)
        return RedirectResponse(f"/runs/{name}", status_code=303)

    @app.get("/runs/{name}/progress")
    def progress(name: str) -> Any:
        folder = run_folder(name)
        if folder is None:
            return JSONResponse({"error": "no such run"}, status_code=404)
        return run_progress(folder)

    @app.post("/runs/{name}/verify", response_class=HTMLResponse)
    def verify(name: str) -> HTMLResponse:
        from glassbox.ledger import verify_run

        folder = run_folder(name)
        if folder is None:
            return run_page(name)
        v = verify_run(folder)
        if v.ok:
            text = f"verified: {v.entries} ledger entries, {v.artifacts} files, Merkle root {v.root}"
        else:
            text = "verification FAILED: " + "; ".join(v.problems or ["see glassbox verify"])
        return run_page(name, verdict={"ok": v.ok, "text": text})

    @app.post("/runs/{name}/export")
    def export(name: str) -> Any:
        folder = run_folder(name)
        if folder is None:
            return run_page(name)
        queue.submit(["export", str(folder), "--int8"], f"export-{name}")
        return RedirectResponse(f"/runs/{name}", status_code=303)

    @app.get("/runs/{name}/file/{path:path}")
    def download(name: str, path: str) -> Any:
        folder = run_folder(name)
        if folder is None:
            return JSONResponse({"error": "no such run"}, status_code=404)
        target = (folder / path).resolve()
        if not target.is_relative_to(folder) or not target.is_file() or "ledger.key" in target.name:
            return JSONResponse({"error": "no such file in this run"}, status_code=404)
        return FileResponse(target)

    return app


def check_bind(host: str, token: str | None) -> str | None:
    """Refuse a non-loopback address without a token; ``token="generate"`` makes one. Returns the token."""
    import ipaddress
    import secrets

    loopback = host == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if token == "generate":
        token = secrets.token_urlsafe(24)
    if not loopback and not token:
        raise UserError(
            f"--host {host} makes the UI reachable from other machines; give --token SECRET"
            " (or --token generate) so that only you can use it"
        )
    return token
