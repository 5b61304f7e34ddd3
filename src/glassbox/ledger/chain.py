"""The provenance ledger of a run folder: a signed hash chain of its files, sealed by Merkle tree heads.

``ledger.jsonl`` holds one entry per line; each names a kind (``dataset``,
``config``, ``code``, ``checkpoint``, ``metrics``, ``model``, ...), the
SHA-256 of every artifact it covers (by path inside the run folder), the
hash of the previous line, a timestamp, and an Ed25519 signature over all of
that. Whenever a command is done writing to the folder it appends a
``tree-head`` entry: the RFC 9162 Merkle root over every line before it and
their count. ``glassbox verify`` (``glassbox.ledger.verify``) recomputes all
of it from the files.

Design choices, and why:

- A line is the canonical JSON of its entry (sorted keys, no spaces), so a
  verifier can hash the bytes as stored and also reject any line that is not
  canonical: there is one byte string per entry, not many equivalent ones.
- The first entry's ``prev`` is a hash of the public key, which ties the
  chain to its key from the first line on.
- A file written more than once (``meta.json``, ``metrics.jsonl``) is
  recorded each time; only its latest record must match the file. A file
  removed on purpose (checkpoints at the end of a run) gets a record saying
  so, and must then stay absent.
- The Merkle tree over the lines, not the hash chain, is what tree heads
  publish: a reviewer who kept an earlier tree head can be shown, with a
  consistency proof, that the current ledger only appended to it, and any
  single entry can be proven to be in the tree without the others.

>>> import tempfile, pathlib
>>> from glassbox.ledger.signing import load_or_create_key
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> ledger = Ledger.create(folder, load_or_create_key(folder.parent / (folder.name + ".key")))
>>> _ = (folder / "config.yaml").write_text("seed: 0\\n")
>>> ledger.record("config", ["config.yaml"])["seq"], ledger.seal()["data"]["size"]
(0, 1)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from glassbox.errors import UserError
from glassbox.ledger import signing
from glassbox.ledger.merkle import MerkleTree

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

LEDGER = "ledger.jsonl"
PUBLIC = "ledger.pub"
TREE_HEAD = "tree-head"
# The ledger's own files are the only ones in a run folder that no entry covers.
OWN_FILES = frozenset({LEDGER, PUBLIC})
GENESIS_PREFIX = b"glassbox-ledger-v1\x00"

# What an entry may say it is; a typo in a writer fails loudly instead of
# inventing a new kind that reviewers' tools would not know.
KINDS = frozenset(
    {
        "meta",
        "config",
        "code",
        "dataset",
        "checkpoint",
        "metrics",
        "model",
        "values",
        "predictions",
        "report",
        "explanation",
        "audit",
        "export",
        "pretrain",  # self-supervised pretraining: its record, and few-shot tables of the encoder
        "init",  # the model started from another run's encoder (glassbox train --init)
        "distill",  # the model was trained toward another run's model (recipe section distill)
        "federated-update",
        "federated-round",
        "artifact",
        TREE_HEAD,
    }
)
_KIND_BY_NAME = {
    "meta.json": "meta",
    "config.yaml": "config",
    "metrics.jsonl": "metrics",
    "model.safetensors": "model",
    "model.json": "model",
    "predictions.csv": "predictions",
    "report.html": "report",
    "label_noise.json": "dataset",
    "splits.json": "dataset",
    "explanations.json": "explanation",
    "audit.json": "audit",
    "pretrain.json": "pretrain",
    "sensitivity.json": "audit",
    "quantum_twin.json": "metrics",
    "baselines.json": "metrics",
    "tune.json": "config",
    "config_tuned.yaml": "config",
    "fewshot.json": "pretrain",
}


def kind_for(name: str) -> str:
    """The entry kind a file of this name is recorded under (``artifact`` when nothing more specific).

    >>> names = ("model.json", "values_tracin.csv", "checkpoints/latest", "export/m.onnx", "x.txt")
    >>> [kind_for(n) for n in names]
    ['model', 'values', 'checkpoint', 'export', 'artifact']
    """
    p = PurePosixPath(name)
    if p.parts and p.parts[0] == "checkpoints":
        return "checkpoint"
    if p.parts and p.parts[0] == "export":
        return "export"
    if p.name.startswith("values") and p.suffix == ".csv":
        return "values"
    return _KIND_BY_NAME.get(name, "artifact")


def canonical(obj: Any) -> bytes:
    """The one byte string an entry is stored, hashed and signed as."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def genesis(public_raw: bytes) -> str:
    """The ``prev`` of entry 0: a hash of the key, so the chain is bound to it from the start."""
    return sha256_hex(GENESIS_PREFIX + public_raw)


def signed_part(entry: Mapping[str, Any]) -> bytes:
    """What the signature covers: the canonical entry without its ``sig``."""
    return canonical({k: v for k, v in entry.items() if k != "sig"})


def check_relative(name: str) -> str:
    """A run-folder path as the ledger stores it (POSIX, relative, inside the folder)."""
    p = PurePosixPath(name.replace(os.sep, "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts or str(p) == ".":
        raise ValueError(f"ledger paths are relative paths inside the run folder, got {name!r}")
    return str(p)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


class Ledger:
    """Appends signed entries to ``folder/ledger.jsonl``. Use ``create`` or ``open``, not the constructor."""

    def __init__(self, folder: Path, key: Ed25519PrivateKey, lines: list[bytes]) -> None:
        self.folder = Path(folder)
        self.key = key
        self.fingerprint_ = signing.fingerprint(key)
        self.tree_ = MerkleTree(lines)
        self.prev_ = sha256_hex(lines[-1]) if lines else genesis(signing.raw_public(key))
        self.live_: dict[str, str | None] = {}  # path -> sha256 of its latest record, None once removed
        self.pending_: set[str] = set()  # appended-to files to record before the next seal
        for line in lines:
            entry = json.loads(line)
            self.live_.update(entry.get("artifacts", {}))
            self.live_.update(dict.fromkeys(entry.get("removed", [])))

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | Path, key: Ed25519PrivateKey | None = None) -> Ledger:
        """Start the ledger of a new, empty run folder: write ``ledger.pub`` and an empty chain."""
        from glassbox.run import atomic_write_bytes  # run.py imports this module

        folder = Path(folder)
        key = key if key is not None else signing.load_or_create_key()
        if (folder / LEDGER).exists():
            raise UserError(f"{folder} already has a ledger; open it instead of starting a new one")
        atomic_write_bytes(folder / PUBLIC, signing.public_pem(key))
        atomic_write_bytes(folder / LEDGER, b"")
        return cls(folder, key, [])

    @classmethod
    def open(cls, folder: str | Path, key: Ed25519PrivateKey | None = None) -> Ledger:
        """Continue the ledger of an existing run folder, signing with the key that started it."""
        folder = Path(folder)
        key = key if key is not None else signing.load_or_create_key()
        path, pub = folder / LEDGER, folder / PUBLIC
        if not path.exists() or not pub.exists():
            raise UserError(
                f"{folder} has no {LEDGER}/{PUBLIC}: it was made before runs were signed, or they were"
                " deleted; `glassbox verify` says which"
            )
        try:
            theirs = signing.fingerprint(signing.load_public(pub))
        except ValueError:
            theirs = "unreadable"
        if theirs != signing.fingerprint(key):
            raise UserError(
                f"{folder} was signed with key {theirs[:16]}..., not with this machine's"
                f" {signing.fingerprint(key)[:16]}...;"
                f" set {signing.KEY_ENV} to the key that started the run"
            )
        lines = [line for line in path.read_bytes().split(b"\n") if line]
        try:
            for line in lines:
                json.loads(line)
        except ValueError:
            raise UserError(
                f"{path} has a line that is not JSON (a torn write or an edit);"
                f" run `glassbox verify {folder}`"
            ) from None
        return cls(folder, key, lines)

    # -- writing ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tree_)

    def record(
        self,
        kind: str,
        paths: Iterable[str] = (),
        *,
        data: Mapping[str, Any] | None = None,
        removed: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Hash the files at ``paths`` (relative to the folder) into one new signed entry and return it."""
        if kind not in KINDS:
            raise ValueError(f"unknown ledger entry kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        artifacts: dict[str, str] = {}
        for name in paths:
            rel = check_relative(name)
            artifacts[rel] = file_sha256(self.folder / rel)
            self.pending_.discard(rel)
        entry: dict[str, Any] = {"seq": len(self.tree_), "kind": kind, "time": _now(), "artifacts": artifacts}
        gone = sorted({check_relative(n) for n in removed})
        if gone:
            entry["removed"] = gone
        if data:
            entry["data"] = dict(data)
        entry["prev"] = self.prev_
        entry["sig"] = signing.sign(self.key, signed_part(entry))
        line = canonical(entry)
        with open(self.folder / LEDGER, "ab") as f:
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.tree_.append(line)
        self.prev_ = sha256_hex(line)
        self.live_.update(artifacts)
        self.live_.update(dict.fromkeys(gone))
        return entry

    def touch(self, name: str) -> None:
        """Note that ``name`` was appended to; it is recorded at the next ``flush`` or ``seal``."""
        self.pending_.add(check_relative(name))

    def flush(self) -> None:
        """Record every file appended to since its last record, one entry per kind."""
        by_kind: dict[str, list[str]] = {}
        for name in sorted(self.pending_):
            if (self.folder / name).exists():
                by_kind.setdefault(kind_for(name), []).append(name)
        self.pending_.clear()
        for kind, names in by_kind.items():
            self.record(kind, names)

    def sync(self, subdir: str, kind: str | None = None) -> dict[str, Any] | None:
        """Record what changed under ``subdir``: new or rewritten files, and files that are gone.

        For folders that a third party rewrites as a whole (a checkpoint
        folder replaced at every save). Returns the entry, or None when
        nothing changed.
        """
        base = check_relative(subdir)
        root = self.folder / base
        now = {}
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and not p.name.startswith("."):  # .tmp files of atomic writes in flight
                    now[p.relative_to(self.folder).as_posix()] = p
        changed = [n for n, p in now.items() if self.live_.get(n) != file_sha256(p)]
        gone = [
            n for n, h in self.live_.items() if h is not None and n.startswith(base + "/") and n not in now
        ]
        if not changed and not gone:
            return None
        return self.record(kind or kind_for(base + "/"), changed, removed=gone)

    def seal(self) -> dict[str, Any]:
        """Record pending appends, then a signed tree head over every entry so far."""
        self.flush()
        size = len(self.tree_)
        return self.record(
            TREE_HEAD, data={"size": size, "root": self.tree_.root(size).hex(), "key": self.fingerprint_}
        )
