"""The tampering battery: every way of changing a real run folder after the fact makes verify fail.

Each test copies one real, finished run folder (a two-epoch iris run) and
changes it the way an attacker or an accident would; ``glassbox verify``
must exit 1 and name the entry (or file) that no longer holds, and exit 0
on the untouched copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glassbox.cli.main import main
from glassbox.config import load_recipe
from glassbox.ledger import verify_run
from glassbox.ledger.chain import LEDGER, PUBLIC, TREE_HEAD, canonical, genesis, sha256_hex, signed_part
from glassbox.ledger.merkle import MerkleTree
from glassbox.ledger.signing import load_or_create_key, public_pem, raw_public, sign
from glassbox.pipeline import run_recipe
from glassbox.run import Run


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = load_recipe(None, ["data.source=iris", "preset=fast", "train.epochs=2"])
    return run_recipe(recipe, tmp_path_factory.mktemp("runs"), progress=False).path


@pytest.fixture
def run_dir(finished: Path, tmp_path: Path) -> Path:
    dest = tmp_path / finished.name
    shutil.copytree(finished, dest)
    return dest


def _lines(d: Path) -> list[bytes]:
    return [line for line in (d / LEDGER).read_bytes().split(b"\n") if line]


def _write_lines(d: Path, lines: list[bytes]) -> None:
    (d / LEDGER).write_bytes(b"".join(line + b"\n" for line in lines))


def _flip_byte(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _entry_of(d: Path, name: str) -> int:
    """The last entry that records ``name``."""
    seqs = [json.loads(line)["seq"] for line in _lines(d) if name in json.loads(line).get("artifacts", {})]
    return seqs[-1]


def _fails(d: Path, capsys: pytest.CaptureFixture[str], *expected: str, key: Path | None = None) -> str:
    args = ["verify", str(d)] + (["--key", str(key)] if key else [])
    assert main(args) == 1
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("FAILED: ")
    for text in expected:
        assert text in first, first
    return first


def test_untouched_folder_verifies(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(run_dir)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    verdict = verify_run(run_dir)
    assert verdict.ok and verdict.warnings == []
    kinds = [json.loads(line)["kind"] for line in _lines(run_dir)]
    for kind in ("meta", "config", "code", "dataset", "metrics", "checkpoint", "model", "report"):
        assert kind in kinds
    assert kinds[-1] == TREE_HEAD
    # The signed tree head vouches for the lines before it; every signature holds too.
    assert verdict.signatures_checked == 1
    full = verify_run(run_dir, all_signatures=True)
    assert full.ok and full.signatures_checked == full.entries == len(kinds)
    assert main(["verify", str(run_dir), "--all-signatures"]) == 0
    # Every file of the folder is covered: no writer of the pipeline went around the ledger.
    assert verdict.artifacts == len([p for p in run_dir.rglob("*") if p.is_file()]) - 2


@pytest.mark.parametrize("name", ["model.safetensors", "metrics.jsonl", "config.yaml", "splits.json"])
def test_one_changed_byte_is_caught(run_dir: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    seq = _entry_of(run_dir, name)
    _flip_byte(run_dir / name)
    _fails(run_dir, capsys, f"entry {seq} ", name, "changed")


def test_deleted_and_added_files_are_caught(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seq = _entry_of(run_dir, "model.safetensors")
    (run_dir / "model.safetensors").unlink()
    _fails(run_dir, capsys, f"entry {seq} ", "model.safetensors is missing")
    (run_dir / "model.safetensors").write_bytes(b"")  # a stand-in does not help either
    _fails(run_dir, capsys, "changed")


def test_added_file_is_caught(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "extra.csv").write_text("a,b\n")
    _fails(run_dir, capsys, "extra.csv", "no ledger entry covers it")


def test_removed_checkpoint_coming_back_is_caught(run_dir: Path, finished: Path, capsys) -> None:
    gone = [p for line in _lines(run_dir) for p in json.loads(line).get("removed", [])]
    assert gone and all(not (run_dir / p).exists() for p in gone)
    (run_dir / gone[0]).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / gone[0]).write_bytes(b"old weights")
    _fails(run_dir, capsys, "recorded as removed but is present")


def test_deleted_entry_is_caught(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(run_dir)
    del lines[5]
    _write_lines(run_dir, lines)
    _fails(run_dir, capsys, "entry 5 ", "entries were deleted, added or reordered")


def test_swapped_entries_are_caught(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(run_dir)
    lines[3], lines[4] = lines[4], lines[3]
    _write_lines(run_dir, lines)
    _fails(run_dir, capsys, "entry 3 ")


@pytest.mark.parametrize("cut", [1, 2, 7])
def test_truncated_ledger_is_caught(run_dir: Path, capsys: pytest.CaptureFixture[str], cut: int) -> None:
    lines = _lines(run_dir)
    _write_lines(run_dir, lines[:-cut])
    _fails(run_dir, capsys, f"entry {len(lines) - cut - 1} ", "after the last tree head")


def test_ledger_cut_mid_line_is_caught(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = (run_dir / LEDGER).read_bytes()
    (run_dir / LEDGER).write_bytes(raw[: len(raw) - 40])
    _fails(run_dir, capsys)


def test_truncation_to_an_earlier_tree_head_is_caught(run_dir: Path, capsys) -> None:
    # A later command (as explain or export do) writes and seals again; cutting the
    # ledger back to the first seal leaves a valid-looking chain but uncovered files.
    first_size = len(_lines(run_dir))
    with Run.open(run_dir) as run:
        run.write_json("explanations.json", {"rows": [0]})
    assert verify_run(run_dir).ok
    _write_lines(run_dir, _lines(run_dir)[:first_size])
    _fails(run_dir, capsys, "explanations.json", "no ledger entry covers it")


def test_edited_entry_is_caught(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(run_dir)
    entry = json.loads(lines[3])
    entry["data"]["rows"]["train"] += 1  # the dataset entry, claiming another split
    lines[3] = canonical(entry)
    _write_lines(run_dir, lines)
    _fails(run_dir, capsys, "entry 3 ", "signature")


def test_forged_entry_appended_is_caught(run_dir: Path, tmp_path: Path, capsys) -> None:
    forger = load_or_create_key(tmp_path / "forger.key")
    lines = _lines(run_dir)
    (run_dir / "model.safetensors").write_bytes(b"a different model")
    entry = {
        "seq": len(lines),
        "kind": "model",
        "time": "2026-12-01T00:00:00.000000+00:00",
        "artifacts": {"model.safetensors": sha256_hex(b"a different model")},
        "prev": sha256_hex(lines[-1]),
    }
    entry["sig"] = sign(forger, signed_part(entry))
    _write_lines(run_dir, [*lines, canonical(entry)])
    _fails(run_dir, capsys, f"entry {len(lines)} ", "signature")


def _resign(d: Path, key) -> None:
    """What an attacker with perfect tooling does: rebuild every hash, root and signature with their key."""
    prev = genesis(raw_public(key))
    tree = MerkleTree()
    out = []
    for i, line in enumerate(_lines(d)):
        entry = json.loads(line)
        entry["prev"] = prev
        if entry["kind"] == TREE_HEAD:
            entry["data"]["root"] = tree.root(i).hex()
        entry["sig"] = sign(key, signed_part(entry))
        new = canonical(entry)
        out.append(new)
        tree.append(new)
        prev = sha256_hex(new)
    _write_lines(d, out)


def test_resigned_with_another_key_is_caught(run_dir: Path, tmp_path: Path, capsys) -> None:
    attacker = load_or_create_key(tmp_path / "attacker.key")
    _flip_byte(run_dir / "config.yaml")
    seq = _entry_of(run_dir, "config.yaml")
    lines = _lines(run_dir)
    entry = json.loads(lines[seq])
    entry["artifacts"]["config.yaml"] = sha256_hex((run_dir / "config.yaml").read_bytes())
    lines[seq] = canonical(entry)
    _write_lines(run_dir, lines)
    _resign(run_dir, attacker)
    (run_dir / PUBLIC).write_bytes(public_pem(attacker))
    # The forgery is perfect against its own key...
    assert verify_run(run_dir, key=tmp_path / "attacker.key").ok
    # ...and fails against the trusted one, by default and with --key.
    _fails(run_dir, capsys, "entry 0 ", "another key")
    pub = tmp_path / "trusted.pub"
    pub.write_bytes(public_pem(load_or_create_key()))
    _fails(run_dir, capsys, "entry 0 ", key=pub)


def test_replaced_public_key_is_caught(run_dir: Path, tmp_path: Path, capsys) -> None:
    other = load_or_create_key(tmp_path / "other.key")
    (run_dir / PUBLIC).write_bytes(public_pem(other))
    _fails(run_dir, capsys, PUBLIC, "not the trusted key")


def test_missing_ledger_is_caught(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / LEDGER).unlink()
    _fails(run_dir, capsys, LEDGER, "missing")


def test_verify_json_and_inclusion_proof(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(run_dir), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] and verdict["tree_size"] == len(_lines(run_dir)) - 1
    assert main(["verify", str(run_dir), "--prove", "3", "--json"]) == 0
    proof = json.loads(capsys.readouterr().out)
    assert proof["verified"] and proof["root"] == verdict["root"] and proof["entry"] == 3


def test_bad_arguments_exit_2(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["verify", str(run_dir), "--prove", "100000"]) == 2
    assert "--prove 100000" in capsys.readouterr().err
    (tmp_path / "junk.pub").write_text("not a key")
    assert main(["verify", str(run_dir), "--key", str(tmp_path / "junk.pub")]) == 2
    assert "not an Ed25519 PEM key" in capsys.readouterr().err


def test_untrusted_key_warns(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLASSBOX_LEDGER_KEY", str(tmp_path / "no-such.key"))
    verdict = verify_run(run_dir)
    assert verdict.ok and "no trusted key" in verdict.warnings[0]


def test_reopening_with_another_key_is_refused(run_dir: Path, tmp_path: Path) -> None:
    from glassbox.errors import UserError

    with pytest.raises(UserError, match="signed with key"):
        Run.open(run_dir, key=tmp_path / "someone-else.key")
