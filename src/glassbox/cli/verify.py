"""``glassbox verify RUN``: check a run folder against its signed ledger (exit 0 holds, 1 fails)."""

from __future__ import annotations

from typing import Annotated

import typer

from glassbox.cli.common import print_json


def verify(
    run: Annotated[str, typer.Argument(metavar="RUN", help="A run folder, e.g. runs/<time>-<name>.")],
    key: Annotated[
        str | None,
        typer.Option(
            metavar="PUB",
            help="The public key to trust (PEM); default: this machine's signing key.",
        ),
    ] = None,
    prove: Annotated[
        int | None,
        typer.Option(metavar="N", help="Print an RFC 9162 inclusion proof of entry N instead."),
    ] = None,
    all_signatures: Annotated[
        bool,
        typer.Option(
            "--all-signatures",
            help="Check every entry's signature, not only those the signed tree head does not vouch for.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Example: glassbox verify runs/20261201-120000-healthcare

    Recompute every artifact's SHA-256, the hash chain, every Ed25519
    signature and the Merkle tree heads of RUN's ledger.jsonl. Exit 0 when
    all hold; exit 1 naming the first entry that fails, when anything was
    edited, deleted, added, reordered, truncated or re-signed with another key.
    """
    from glassbox.ledger import inclusion, verify_run

    if prove is not None:
        proof = inclusion(run, prove)
        if as_json:
            print_json(proof)
        else:
            print(f"entry {proof['entry']} is leaf {proof['leaf_hash']}")
            print(f"in the tree of {proof['tree_size']} entries with root {proof['root']}")
            print("audit path (RFC 9162 2.1.3), leaf to root:")
            for h in proof["proof"]:
                print(f"  {h}")
            print("verified" if proof["verified"] else "NOT verified")
        raise typer.Exit(0 if proof["verified"] else 1)
    verdict = verify_run(run, key=key, all_signatures=all_signatures)
    if as_json:
        print_json(verdict.to_dict())
    else:
        for w in verdict.warnings:
            print(f"warning: {w}")
        if verdict.ok:
            print(
                f"ok: {verdict.entries} entries, {verdict.artifacts} files, "
                f"Merkle root {verdict.root} over {verdict.tree_size} entries"
            )
            print(f"signed by key {verdict.key} ({verdict.key_source})")
            vouched = verdict.entries - verdict.signatures_checked
            if vouched:
                print(
                    f"{verdict.signatures_checked} signatures checked one by one; {vouched} entries vouched"
                    " for by the signed Merkle root (--all-signatures checks each)"
                )
        else:
            print(f"FAILED: {verdict.problems[0]}")
            for p in verdict.problems[1:]:
                print(f"  also: {p}")
    raise typer.Exit(0 if verdict.ok else 1)


def register(app: typer.Typer) -> None:
    app.command("verify", short_help="Check a run folder against its signed ledger.")(verify)
