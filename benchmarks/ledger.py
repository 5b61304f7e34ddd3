"""How long `glassbox verify` takes on a long ledger (the issue's bar: 10,000 entries in under 2 s).

Builds, in a temporary folder, a sealed ledger of ``--entries`` signed
entries that record ``--files`` distinct small files in rotation (each file
rewritten and re-recorded many times, as meta.json and metrics.jsonl are in
a real run), then times ``verify_run`` on it: ``--repeat`` runs after one
warm-up, median reported. A second ledger records a fresh file in every
entry (``distinct_files``), the worst case for artifact hashing. Also
times the parts on their own: Ed25519 checks (serial), the RFC 9162 tree,
and writing (``record``) throughput; and ``verify_run(all_signatures=True)``,
which checks each entry's signature too.

    .venv/bin/python benchmarks/ledger.py            # JSON on stdout
    .venv/bin/glassbox bench ledger
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from glassbox.ledger.chain import Ledger, canonical, signed_part
from glassbox.ledger.merkle import MerkleTree
from glassbox.ledger.signing import check, load_or_create_key
from glassbox.ledger.verify import verify_run


def _build(folder: Path, key: Any, entries: int, files: int) -> float:
    ledger = Ledger.create(folder, key)
    start = time.perf_counter()
    for i in range(entries - 1):
        name = f"f{i % files:05d}.json"
        (folder / name).write_text(json.dumps({"step": i}))
        ledger.record("metrics", [name], data={"step": i})
    ledger.seal()
    return time.perf_counter() - start


def _median_time(fn: Any, repeat: int) -> tuple[float, list[float]]:
    fn()  # warm-up: page cache, imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entries", type=int, default=10_000)
    p.add_argument("--files", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", action="store_true", help="(always JSON; accepted for glassbox bench)")
    args = p.parse_args(argv)
    os.environ.setdefault("GLASSBOX_LEDGER_KEY", str(Path(tempfile.mkdtemp()) / "bench.key"))
    key = load_or_create_key()
    out: dict[str, Any] = {"entries": args.entries, "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as tmp:
        for label, files in (("rotating_files", args.files), ("distinct_files", args.entries)):
            folder = Path(tmp) / label
            folder.mkdir()
            build = _build(folder, key, args.entries, files)
            verdict = verify_run(folder)
            assert verdict.ok, verdict.problems
            med, times = _median_time(lambda folder=folder: verify_run(folder), args.repeat)
            full, _ = _median_time(lambda folder=folder: verify_run(folder, all_signatures=True), args.repeat)
            out[label] = {
                "files": files,
                "verify_s_median": round(med, 4),
                "verify_s_all": [round(t, 4) for t in times],
                "verify_all_signatures_s_median": round(full, 4),
                "record_per_s": round((args.entries - 1) / build),
                "ledger_bytes": (folder / "ledger.jsonl").stat().st_size,
            }
        raw = (Path(tmp) / "rotating_files" / "ledger.jsonl").read_bytes()
        lines = [line for line in raw.split(b"\n") if line]
        entries = [json.loads(line) for line in lines]
        pub = key.public_key()
        med, _ = _median_time(lambda: [check(pub, e["sig"], signed_part(e)) for e in entries], args.repeat)
        out["ed25519_checks_s"] = round(med, 4)
        med, _ = _median_time(lambda: [canonical(json.loads(line)) == line for line in lines], args.repeat)
        out["parse_and_canonical_check_s"] = round(med, 4)
        med, _ = _median_time(lambda: MerkleTree(lines).root(), args.repeat)
        out["merkle_build_and_root_s"] = round(med, 4)
    out["under_2s"] = all(out[k]["verify_s_median"] < 2 for k in ("rotating_files", "distinct_files"))
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
