"""The run folder: everything one run leaves behind, written so it can be trusted.

``runs/<time>-<name>/`` is created fresh and never overwritten. Files are
written atomically (a temporary file in the same folder, then ``os.replace``)
so a crash never leaves a half-written file under its final name, and
``meta.json`` says ``running`` until the run ends, then ``completed`` or
``failed`` with the error: a folder never looks complete when it is not.

Every file the run writes is hashed into its signed ledger
(``glassbox.ledger``) by ``Run.record``, the one function all writers here go
through; ``metrics.jsonl``, appended line by line, is recorded whenever the
ledger is flushed. Ending the run seals the ledger with a Merkle tree head,
and so does ending any later command that writes to the folder
(``with Run.open(path) as run:``).

>>> import tempfile
>>> with Run.create(tempfile.mkdtemp(), "doc") as run:
...     run.log({"step": 1, "train_loss": 0.5})
>>> run.meta()["status"], (run.path / "ledger.jsonl").exists()
('completed', True)
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
from typing import TYPE_CHECKING, Any

from glassbox import __version__
from glassbox.ledger.chain import Ledger, kind_for

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


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

    def __init__(self, path: str | Path, key: str | Path | None = None) -> None:
        self.path = Path(path)
        self.key = key  # the signing key's file; None: glassbox.ledger.signing.default_key_path()
        self._ledger: Ledger | None = None
        self._reopened = False  # opened by Run.open: ending seals the ledger but leaves the status alone

    @classmethod
    def open(cls, path: str | Path, key: str | Path | None = None) -> Run:
        """An existing run folder to add files to; as a context manager it seals the ledger on exit."""
        from glassbox.errors import UserError

        path = Path(path)
        if not (path / "meta.json").is_file():
            raise UserError(f"{path} is not a glassbox run folder (no meta.json); give runs/<time>-<name>")
        run = cls(path, key)
        run._reopened = True
        run.ledger  # noqa: B018 - fails now, with the reason, if the folder's ledger cannot be continued
        return run

    def _signing_key(self) -> Ed25519PrivateKey:
        from glassbox.ledger.signing import load_or_create_key

        return load_or_create_key(self.key)

    @property
    def ledger(self) -> Ledger:
        """The folder's ledger, opened on first use."""
        if self._ledger is None:
            self._ledger = Ledger.open(self.path, self._signing_key())
        return self._ledger

    # -- creation -----------------------------------------------------------------
    @classmethod
    def create(
        cls, out: str | Path = "runs", name: str = "run", *, key: str | Path | None = None, **meta: Any
    ) -> Run:
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
            run = cls(path, key)
            run._ledger = Ledger.create(path, run._signing_key())
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
        self.write_json("meta.json", info)

    # -- writing ------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def record(
        self,
        kind: str | None,
        names: list[str] | tuple[str, ...] = (),
        *,
        data: dict[str, Any] | None = None,
        removed: list[str] | tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Hash these files (paths inside the folder) into one signed ledger entry.

        ``kind`` None takes the kind from the first name (``glassbox.ledger.kind_for``).
        Every writer of a run file ends here; ``glassbox verify`` fails on any file no entry covers.
        """
        if kind is None:
            kind = kind_for(names[0]) if names else "artifact"
        return self.ledger.record(kind, list(names), data=data, removed=list(removed))

    @contextmanager
    def artifact(self, name: str, kind: str | None = None) -> Iterator[Path]:
        """A temporary path for a third-party writer; moved to ``name`` and recorded on success."""
        with atomic_path(self.path / name) as tmp:
            yield tmp
        self.record(kind, [name])

    def write_text(self, name: str, text: str, kind: str | None = None, about: dict | None = None) -> Path:
        return self.write_bytes(name, text.encode("utf-8"), kind, about)

    def write_bytes(self, name: str, data: bytes, kind: str | None = None, about: dict | None = None) -> Path:
        """Write ``name`` atomically and record it; ``about`` goes into the entry's ``data``."""
        path = atomic_write_bytes(self.path / name, data)
        self.record(kind, [name], data=about)
        return path

    def write_json(self, name: str, obj: Any, kind: str | None = None, about: dict | None = None) -> Path:
        text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
        return self.write_text(name, text, kind, about)

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (one write call per line, flushed).

        The ledger records the file at its next flush (a checkpoint, the end of the run).
        """
        line = json.dumps(record, default=float) + "\n"
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        self.ledger.touch("metrics.jsonl")

    def remove(self, name: str) -> None:
        """Delete a file or folder of the run and record that it is gone on purpose."""
        import shutil

        path = self.path / name
        if path.is_dir():
            shutil.rmtree(path)
            self.ledger.sync(name)
        elif path.exists():
            path.unlink()
            self.record(kind_for(name), removed=[name])

    def seal(self) -> dict[str, Any]:
        """Record pending appends and sign a Merkle tree head over the whole ledger."""
        return self.ledger.seal()

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
        """Mark the run ended in meta.json and seal the ledger."""
        fields: dict[str, Any] = {"status": status, "ended": _now()}
        if error is not None:
            fields["error"] = error
        self.ledger.flush()  # metrics first, so the final meta.json is the last file recorded
        self.update_meta(**fields)
        self.seal()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reopened:
            # A later command (explain, audit, export) wrote here: seal what it
            # recorded, whether or not it succeeded; the run's status is not its to change.
            self.seal()
            return
        if exc is None:
            self.finish("completed")
        else:
            # KeyboardInterrupt counts as a failure too: the run did not finish.
            detail = "".join(traceback.format_exception_only(exc_type, exc)).strip()
            self.finish("failed", error=detail)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"
