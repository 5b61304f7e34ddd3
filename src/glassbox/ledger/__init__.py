"""The provenance ledger: a signed, Merkle-sealed record of everything a run wrote.

``chain`` appends entries, ``signing`` holds the Ed25519 keys, ``merkle`` the
RFC 9162 tree, ``verify`` checks a run folder against its ledger.
"""

from glassbox.ledger.chain import LEDGER, PUBLIC, Ledger, kind_for
from glassbox.ledger.verify import Verdict, inclusion, verify_run

__all__ = ["LEDGER", "PUBLIC", "Ledger", "Verdict", "inclusion", "kind_for", "verify_run"]
