"""``glassbox verify``: recompute a run folder's ledger from its files and say whether everything holds.

Checked, in this order, and the first failure is named with its entry:

1. the key: ``ledger.pub`` must be the trusted key (this machine's signing
   key by default, or the one given), and signatures are checked with the
   trusted key, not with whatever the folder carries;
2. every line: canonical JSON, sequence number equal to its position, the
   previous line's hash, a valid signature;
3. every tree head: its size is the number of lines before it, its root is
   the RFC 9162 Merkle root over them; the last line must be a tree head
   (else the ledger was cut off, or written to after its seal);
4. every artifact: the file's SHA-256 equals its latest record; a file
   recorded as removed is absent;
5. the folder: no file that no entry covers.

Deleting, reordering, editing or forging a line breaks 2; truncating the
ledger breaks 3, or 4 (the files written after the cut no longer match);
editing, deleting or adding a file breaks 4 or 5; re-signing with another key
breaks 1 or 2.

>>> import tempfile, pathlib
>>> from glassbox.ledger.chain import Ledger
>>> from glassbox.ledger.signing import load_or_create_key
>>> d = pathlib.Path(tempfile.mkdtemp()); key_file = d.parent / (d.name + ".key")
>>> ledger = Ledger.create(d, load_or_create_key(key_file))
>>> _ = (d / "config.yaml").write_text("seed: 0\\n")
>>> _ = ledger.record("config", ["config.yaml"]); _ = ledger.seal()
>>> verify_run(d, key=key_file).ok
True
>>> _ = (d / "config.yaml").write_text("seed: 1\\n")
>>> verify_run(d, key=key_file).problems[0]
'entry 0 (config): config.yaml was changed after it was recorded'
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glassbox.errors import UserError
from glassbox.ledger import signing
from glassbox.ledger.chain import (
    LEDGER,
    OWN_FILES,
    PUBLIC,
    TREE_HEAD,
    canonical,
    file_sha256,
    genesis,
    sha256_hex,
    signed_part,
)
from glassbox.ledger.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion


@dataclass
class Verdict:
    """What ``verify_run`` found. ``ok`` is True only when ``problems`` is empty."""

    folder: str
    ok: bool = False
    entries: int = 0
    tree_size: int | None = None  # entries covered by the last tree head
    root: str | None = None  # its Merkle root, hex
    key: str | None = None  # fingerprint of the key the ledger was checked against
    key_source: str = ""  # where that key came from
    artifacts: int = 0  # files whose hashes were recomputed
    first_bad_entry: int | None = None
    signatures_checked: int = 0  # one by one; the rest are vouched for by the last signed tree head
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stop(Exception):
    """Raised inside verify_run once a failure makes further checks meaningless."""


def _trusted_key(folder: Path, key: str | Path | None, verdict: Verdict) -> Any:
    """The public key to check against: ``key``, else the local signing key, else (warning) the folder's."""
    if key is not None:
        try:
            pub = signing.load_public(Path(key))
        except OSError as err:
            raise UserError(f"cannot read --key {key} ({err.strerror})") from None
        except ValueError:
            raise UserError(f"--key {key} is not an Ed25519 PEM key (public or private)") from None
        verdict.key_source = f"--key {key}"
        return pub
    local = signing.default_key_path()
    if local.exists():
        verdict.key_source = f"local signing key {local}"
        return signing.load_private(local).public_key()
    verdict.warnings.append(
        f"no trusted key: {local} does not exist and no --key was given, so signatures are checked against"
        f" the folder's own {PUBLIC}; anyone who can edit the folder can also re-sign it"
    )
    verdict.key_source = f"the folder's {PUBLIC} (untrusted)"
    return None


def verify_run(folder: str | Path, *, key: str | Path | None = None, all_signatures: bool = False) -> Verdict:
    """Check the ledger of ``folder`` against its files; raises for bad arguments, never for tampering.

    Every entry the last tree head covers is authenticated through that
    head's signed Merkle root, which commits to the exact bytes of every
    line (signatures included), as Certificate Transparency logs are; the
    per-entry signatures of those lines are checked too when anything
    fails (to name the first bad entry) or with ``all_signatures``.
    Entries after the last tree head are always checked one by one.
    """
    start = time.perf_counter()
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a run folder such as runs/<time>-<name>")
    verdict = Verdict(folder=str(folder))
    trusted = _trusted_key(folder, key, verdict)
    try:
        _verify(folder, trusted, verdict, all_signatures)
    except _Stop:
        pass
    verdict.ok = not verdict.problems
    verdict.seconds = round(time.perf_counter() - start, 4)
    return verdict


def _fail(verdict: Verdict, entry: int | None, what: str, stop: bool = True) -> None:
    if entry is not None and verdict.first_bad_entry is None:
        verdict.first_bad_entry = entry
    verdict.problems.append(what)
    if stop:
        raise _Stop


def _verify(folder: Path, trusted: Any, verdict: Verdict, all_signatures: bool) -> None:
    pub_path, ledger_path = folder / PUBLIC, folder / LEDGER
    if not ledger_path.exists():
        _fail(verdict, None, f"{LEDGER} is missing: this folder's provenance cannot be checked")
    if not pub_path.exists():
        _fail(verdict, None, f"{PUBLIC} is missing")
    try:
        folder_key = signing.load_public(pub_path)
    except ValueError:
        _fail(verdict, None, f"{PUBLIC} is not an Ed25519 public key")
    pub = trusted if trusted is not None else folder_key
    verdict.key = signing.fingerprint(pub)
    if signing.fingerprint(folder_key) != verdict.key:
        # Reported after the chain's own findings, which say which entries the trusted key did not sign.
        mismatch = (
            f"{PUBLIC} is key {signing.fingerprint(folder_key)[:16]}..., not the trusted key"
            f" {verdict.key[:16]}... ({verdict.key_source})"
        )
        try:
            _verify_chain(folder, pub, verdict, all_signatures)
        finally:
            verdict.problems.append(mismatch)
        return
    _verify_chain(folder, pub, verdict, all_signatures)


def _verify_chain(folder: Path, pub: Any, verdict: Verdict, all_signatures: bool) -> None:
    ledger_path = folder / LEDGER

    raw = ledger_path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        _fail(verdict, None, f"{LEDGER} does not end with a newline: its last line was cut off", stop=False)
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    verdict.entries = len(lines)
    if not lines:
        _fail(verdict, None, f"{LEDGER} is empty: nothing was recorded, or it was truncated")

    parsed = _parse(lines)
    # The last tree head's position: if it holds, its signed root vouches for every line before it.
    heads = [i for i, e in enumerate(parsed) if isinstance(e, dict) and e.get("kind") == TREE_HEAD]
    cover = heads[-1] if heads else 0
    if not all_signatures:
        try:
            tail = _signatures(pub, parsed[cover:])
            return _walk(folder, lines, parsed, pub, [True] * cover + tail, verdict, checked=len(tail))
        except _Stop:
            # Something failed: start over checking every signature, so the first bad entry is named.
            verdict.problems.clear()
            verdict.first_bad_entry = None
            verdict.artifacts = 0
    signed = _signatures(pub, parsed)
    _walk(folder, lines, parsed, pub, signed, verdict, checked=len(signed))


def _walk(
    folder: Path,
    lines: list[bytes],
    parsed: list[Any],
    pub: Any,
    signed: list[bool],
    verdict: Verdict,
    checked: int,
) -> None:
    """Check every line in order (form, position, chain, signature, tree heads), then the files."""
    verdict.signatures_checked = checked
    tree = MerkleTree()
    prev = genesis(signing.raw_public(pub))
    entries: list[dict[str, Any]] = []
    heads: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        entry = parsed[i] if i < len(parsed) else None
        if entry is None:
            _fail(verdict, i, f"entry {i}: not valid JSON (the line was edited or cut off)")
        label = f"entry {i} ({entry.get('kind', '?')})" if isinstance(entry, dict) else f"entry {i}"
        if not isinstance(entry, dict) or canonical(entry) != line:
            _fail(verdict, i, f"{label}: not in canonical form: the line was edited")
        if entry.get("seq") != i:
            _fail(
                verdict,
                i,
                f"{label}: says it is entry {entry.get('seq')}: entries were deleted, added or reordered",
            )
        if entry.get("prev") != prev:
            if i == 0:
                _fail(verdict, i, f"{label}: the chain was started with another key than the trusted one")
            _fail(verdict, i, f"{label}: its previous-entry hash does not match entry {i - 1}")
        if not (i < len(signed) and signed[i]):
            _fail(
                verdict, i, f"{label}: signature does not verify with the trusted key ({verdict.key_source})"
            )
        if entry.get("kind") == TREE_HEAD:
            data = entry.get("data", {})
            if data.get("size") != i or data.get("root") != tree.root(i).hex():
                _fail(verdict, i, f"{label}: its Merkle root does not match the {i} entries before it")
            heads.append(entry)
        tree.append(line)
        prev = sha256_hex(line)
        entries.append(entry)

    if entries[-1].get("kind") != TREE_HEAD:
        _fail(
            verdict,
            len(entries) - 1,
            f"entry {len(entries) - 1} ({entries[-1].get('kind')}): comes after the last tree head:"
            " the ledger was cut off or written to after it was sealed (or the run is still going)",
            stop=False,
        )
    if heads:
        last = heads[-1]["data"]
        verdict.tree_size, verdict.root = last["size"], last["root"]
        # Every earlier head must be a prefix of the last: the ledger only ever appended.
        for h in heads[:-1]:
            d = h["data"]
            proof = tree.consistency_proof(d["size"], last["size"])
            if not verify_consistency(
                d["size"], last["size"], bytes.fromhex(d["root"]), bytes.fromhex(last["root"]), proof
            ):
                _fail(
                    verdict, h["seq"], f"entry {h['seq']} (tree-head): not consistent with the last tree head"
                )

    _check_files(folder, entries, verdict)


def _parse(lines: list[bytes]) -> list[Any]:
    """Each line's JSON, up to and including the first line that is not JSON (as None)."""
    out: list[Any] = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append(None)
            break
    return out


def _signatures(pub: Any, entries: list[Any]) -> list[bool]:
    """Whether each entry's signature verifies with ``pub``.

    Ed25519 verification (about 0.24 ms each on this machine) is most of
    what checking every signature costs; a thread pool over it measured no
    faster here, so it stays a plain loop.
    """
    return [
        isinstance(e, dict) and signing.check(pub, str(e.get("sig", "")), signed_part(e)) for e in entries
    ]


def _check_files(folder: Path, entries: list[dict[str, Any]], verdict: Verdict) -> None:
    latest: dict[str, tuple[int, str, str | None]] = {}  # path -> (entry, kind, sha256 or None if removed)
    for e in entries:
        for name, digest in e.get("artifacts", {}).items():
            latest[name] = (e["seq"], e["kind"], digest)
        for name in e.get("removed", []):
            latest[name] = (e["seq"], e["kind"], None)
    for name, (seq, kind, digest) in sorted(latest.items(), key=lambda kv: (kv[1][0], kv[0])):
        path = folder / name
        label = f"entry {seq} ({kind})"
        if digest is None:
            if path.exists():
                _fail(verdict, seq, f"{label}: {name} was recorded as removed but is present", stop=False)
            continue
        if not path.is_file():
            _fail(verdict, seq, f"{label}: {name} is missing", stop=False)
            continue
        verdict.artifacts += 1
        if file_sha256(path) != digest:
            _fail(verdict, seq, f"{label}: {name} was changed after it was recorded", stop=False)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name not in OWN_FILES and (name not in latest or latest[name][2] is None):
            _fail(verdict, None, f"{name} is in the folder but no ledger entry covers it", stop=False)


def inclusion(folder: str | Path, n: int) -> dict[str, Any]:
    """An RFC 9162 inclusion proof of entry ``n`` in the ledger's last tree head, checked before returning."""
    folder = Path(folder)
    path = folder / LEDGER
    if not path.exists():
        raise UserError(f"{folder} has no {LEDGER}; give a run folder")
    lines = [line for line in path.read_bytes().split(b"\n") if line]
    heads = [i for i, line in enumerate(lines) if json.loads(line).get("kind") == TREE_HEAD]
    if not heads:
        raise UserError(f"{folder}'s ledger has no tree head yet; the run has not finished")
    size = json.loads(lines[heads[-1]])["data"]["size"]
    if not 0 <= n < size:
        raise UserError(
            f"--prove {n}: the last tree head covers entries 0 to {size - 1}; choose one of those"
        )
    tree = MerkleTree(lines[:size])
    proof = tree.inclusion_proof(n, size)
    root = tree.root(size)
    leaf = leaf_hash(lines[n])
    return {
        "entry": n,
        "leaf_hash": leaf.hex(),
        "tree_size": size,
        "root": root.hex(),
        "proof": [p.hex() for p in proof],
        "verified": verify_inclusion(leaf, n, size, proof, root),
        "tree_head_entry": heads[-1],
    }
