"""The run folder: everything one run leaves behind, written so it can be trusted.

``runs/<time>-<name>/`` is created fresh and never overwritten. Files are
written atomically (a temporary file in the same folder, then ``os.replace``)
so a crash never leaves a half-written file under its final name, and
``meta.json`` says ``running`` until the run ends, then ``completed`` or
``failed`` with the error: a folder never looks complete when it is not.

>>> import tempfile
>>> with Run.create(tempfile.mkdtemp(), "doc") as run:
...     run.log({"step": 1, "train_loss": 0.5})
>>> run.meta()["status"]
'completed'
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from glassbox import __version__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved over ``path`` only on success.

    Readers see the old file or the new one, never a part; a failure leaves
    the old file in place and no temporary behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    """The commit of the glassbox checkout, when it is one (None for an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class Run:
    """One run folder. Use as a context manager so failures are recorded.

    Learned nothing, holds no model: it is where the other layers write.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- creation -----------------------------------------------------------------
    @classmethod
    def create(cls, out: str | Path = "runs", name: str = "run", **meta: Any) -> Run:
        """A new, empty run folder ``out/<UTC time>-<name>``; a suffix keeps names unique."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "run"
        for i in range(1000):
            path = out / (f"{stamp}-{safe}" if i == 0 else f"{stamp}-{safe}-{i}")
            try:
                path.mkdir()  # fails if it exists: a run folder is never reused
            except FileExistsError:
                continue
            run = cls(path)
            run._start(**meta)
            return run
        raise RuntimeError(f"could not create a fresh run folder under {out}")

    def _start(self, **meta: Any) -> None:
        import torch  # heavy; only runs that train need it

        info = {
            "status": "running",
            "command": " ".join(sys.argv),
            "glassbox_version": __version__,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "started": _now(),
            "ended": None,
        }
        info.update(meta)
        atomic_write_json(self.path / "meta.json", info)

    # -- writing ------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path / name, text)

    def write_bytes(self, name: str, data: bytes) -> Path:
        return atomic_write_bytes(self.path / name, data)

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.path / name, obj)

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (one write call per line, flushed)."""
        line = json.dumps(record, default=float) + "\n"
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()

    def update_meta(self, **fields: Any) -> None:
        info = self.meta()
        info.update(fields)
        self.write_json("meta.json", info)

    # -- reading ------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / "meta.json").read_text())

    def metrics(self) -> list[dict[str, Any]]:
        f = self.path / "metrics.jsonl"
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]

    # -- ending -------------------------------------------------------------------
    def finish(self, status: str = "completed", error: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "ended": _now()}
        if error is not None:
            fields["error"] = error
        self.update_meta(**fields)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.finish("completed")
        else:
            # KeyboardInterrupt counts as a failure too: the run did not finish.
            detail = "".join(traceback.format_exception_only(exc_type, exc)).strip()
            self.finish("failed", error=detail)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"
