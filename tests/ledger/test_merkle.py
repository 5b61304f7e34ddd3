"""The RFC 9162 Merkle tree agrees with the RFC's own definitions, and its proofs cannot be bent.

The reference below is the RFC's recursion transcribed as directly as possible (slow,
recursive, hashing everything again each time); the module under test is checked against it
for every tree size 1..64, and against Certificate Transparency's published test vectors.
"""

from __future__ import annotations

import hashlib

import pytest

from glassbox.ledger import merkle
from glassbox.ledger.merkle import (
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

MAX = 64

# ----------------------------------------------------------------------------------------
# The reference: RFC 9162 section 2.1, on the list of entries D, with its own hashing.


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + d[0])
    k = _k(n)
    return _sha(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# The shapes of the same recursions: which side each proof element is on. Two sizes with
# the same shape give the verifier the same computation, so (by the RFC's design) a proof
# binds its tree size exactly that far and no further.


def path_shape(m: int, n: int) -> tuple[str, ...]:
    if n == 1:
        return ()
    k = _k(n)
    return (*path_shape(m, k), "R") if m < k else (*path_shape(m - k, n - k), "L")


def subproof_shape(m: int, n: int, b: bool) -> tuple[str, ...]:
    if m == n:
        return () if b else ("old",)
    k = _k(n)
    return (*subproof_shape(m, k, b), "R") if m <= k else (*subproof_shape(m - k, n - k, False), "L")


# ----------------------------------------------------------------------------------------
# Fixtures: one 64-leaf tree answers for every smaller size.

ENTRIES = [b""] + [b"entry %d" % i for i in range(1, MAX)]
TREE = MerkleTree(ENTRIES)
ROOTS = [ref_mth(ENTRIES[:n]) for n in range(MAX + 1)]
LEAVES = [_sha(b"\x00" + e) for e in ENTRIES]
INCLUSION = [(i, n) for n in range(1, MAX + 1) for i in range(n)]
CONSISTENCY = [(m, n) for n in range(1, MAX + 1) for m in range(1, n + 1)]
OTHER = _sha(b"some other hash")


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


# ----------------------------------------------------------------------------------------
# Certificate Transparency's reference vectors (transparency-dev/merkle, testonly/constants.go
# and proof/verify_test.go; the same numbers appear in the certificate-transparency code).

CT_ENTRIES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_LEAF_HASHES = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
# (index, size, proof); the Go vectors count leaves from 1, these from 0.
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CT_TREE = MerkleTree(CT_ENTRIES)


def test_ct_vectors_roots_and_leaf_hashes() -> None:
    assert [leaf_hash(e).hex() for e in CT_ENTRIES] == CT_LEAF_HASHES
    assert [CT_TREE.root(n).hex() for n in range(len(CT_ENTRIES) + 1)] == CT_ROOTS
    assert node_hash(leaf_hash(CT_ENTRIES[0]), leaf_hash(CT_ENTRIES[1])).hex() == CT_ROOTS[2]


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_ct_vectors_inclusion(index: int, size: int, proof: list[str]) -> None:
    assert [p.hex() for p in CT_TREE.inclusion_proof(index, size)] == proof
    leaf = bytes.fromhex(CT_LEAF_HASHES[index])
    assert verify_inclusion(
        leaf, index, size, [bytes.fromhex(p) for p in proof], bytes.fromhex(CT_ROOTS[size])
    )


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_ct_vectors_consistency(old: int, new: int, proof: list[str]) -> None:
    assert [p.hex() for p in CT_TREE.consistency_proof(old, new)] == proof
    roots = bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new])
    assert verify_consistency(old, new, *roots, [bytes.fromhex(p) for p in proof])


# ----------------------------------------------------------------------------------------
# Agreement with the reference for every size 1..64.


def test_leaf_and_node_hashes_follow_the_rfc() -> None:
    assert leaf_hash(b"abc") == _sha(b"\x00abc")
    assert node_hash(LEAVES[0], LEAVES[1]) == _sha(b"\x01" + LEAVES[0] + LEAVES[1])
    # The prefixes keep a 64-byte entry from posing as the node above two leaves.
    assert leaf_hash(LEAVES[0] + LEAVES[1]) != node_hash(LEAVES[0], LEAVES[1])


def test_roots_match_the_reference_for_every_size() -> None:
    assert len(TREE) == MAX
    assert [TREE.root(n) for n in range(MAX + 1)] == ROOTS
    assert TREE.root() == ROOTS[MAX]
    assert MerkleTree().root() == _sha(b"")


def test_appending_one_by_one_equals_building_at_once() -> None:
    grown = MerkleTree()
    for n, entry in enumerate(ENTRIES, start=1):
        grown.append(entry)
        assert len(grown) == n
        assert grown.root() == ROOTS[n]
    # Appending after a bulk build continues the same tree.
    half = MerkleTree(ENTRIES[:37])
    for entry in ENTRIES[37:]:
        half.append(entry)
    assert [half.root(n) for n in range(MAX + 1)] == ROOTS
    assert MerkleTree(iter(ENTRIES)).root() == ROOTS[MAX]  # any iterable, consumed once


def test_inclusion_proofs_match_the_reference_and_verify() -> None:
    for index, size in INCLUSION:
        proof = TREE.inclusion_proof(index, size)
        assert proof == ref_path(index, ENTRIES[:size]), (index, size)
        assert verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size]), (index, size)
    assert TREE.inclusion_proof(5) == ref_path(5, ENTRIES)


def test_consistency_proofs_match_the_reference_and_verify() -> None:
    for old, new in CONSISTENCY:
        proof = TREE.consistency_proof(old, new)
        assert proof == (ref_proof(old, ENTRIES[:new]) if old < new else []), (old, new)
        assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof), (old, new)
    assert TREE.consistency_proof(5) == ref_proof(5, ENTRIES)


# ----------------------------------------------------------------------------------------
# Tampering: every change to a proof, its position or its roots is caught.


def test_tampered_inclusion_proofs_fail() -> None:
    for index, size in INCLUSION:
        proof = TREE.inclusion_proof(index, size)
        leaf, root = LEAVES[index], ROOTS[size]
        where = (index, size)
        for j in range(len(proof)):
            # One flipped bit in each element, the bit varying over the sweep.
            bad = [*proof[:j], flip(proof[j], 7 * index + 13 * size + j), *proof[j + 1 :]]
            assert not verify_inclusion(leaf, index, size, bad, root), (*where, "flip", j)
            assert not verify_inclusion(leaf, index, size, proof[:j] + proof[j + 1 :], root), (
                *where,
                "drop",
                j,
            )
        for j in range(len(proof) + 1):
            for extra in (OTHER, root, leaf):
                bad = [*proof[:j], extra, *proof[j:]]
                assert not verify_inclusion(leaf, index, size, bad, root), (*where, "add", j)
        # Every other index and size in small trees, a deterministic sample in larger ones.
        near = {index - 1, index + 1, index ^ 1, index ^ 2, index ^ 4, index ^ 16, 0, size - 1}
        for other in range(size) if size <= 16 else near:
            if other != index and 0 <= other < size:
                assert not verify_inclusion(leaf, other, size, proof, root), (*where, "index", other)
                assert not verify_inclusion(LEAVES[other], index, size, proof, root), (*where, "leaf", other)
        sizes = {size - 1, size + 1, size * 2, size // 2, size ^ 1, size ^ 4, size + 8, MAX}
        for wrong in range(index + 1, MAX + 1) if size <= 16 else sizes:
            if wrong != size and index < wrong <= MAX:
                accepted = verify_inclusion(leaf, index, wrong, proof, root)
                assert accepted == (path_shape(index, wrong) == path_shape(index, size)), (
                    *where,
                    "size",
                    wrong,
                )
                assert not verify_inclusion(leaf, index, wrong, proof, ROOTS[wrong]), (
                    *where,
                    "size+root",
                    wrong,
                )
        assert not verify_inclusion(leaf, index, size, proof, flip(root, size)), (*where, "root")
        for other_size in (size - 1, size + 1):
            if 0 <= other_size <= MAX:
                assert not verify_inclusion(leaf, index, size, proof, ROOTS[other_size]), (*where, "root")


def test_the_size_an_inclusion_proof_binds() -> None:
    # The RFC's verifier learns the size only from the proof's shape: a proof for leaf 0 of
    # 3 leaves ([leaf 1, leaf 2]) is also the right shape for 4 leaves ([leaf 1, node 2-3]).
    # Anyone holding the root of size 4 rejects it; only the same root can make it pass.
    proof = TREE.inclusion_proof(0, 3)
    assert verify_inclusion(LEAVES[0], 0, 4, proof, ROOTS[3])
    assert not verify_inclusion(LEAVES[0], 0, 4, proof, ROOTS[4])
    assert not verify_inclusion(LEAVES[0], 0, 6, proof, ROOTS[3])  # size * 2: another shape


def test_tampered_consistency_proofs_fail() -> None:
    for old, new in CONSISTENCY:
        proof = TREE.consistency_proof(old, new)
        r1, r2 = ROOTS[old], ROOTS[new]
        where = (old, new)
        for j in range(len(proof)):
            bad = [*proof[:j], flip(proof[j], 5 * old + 11 * new + j), *proof[j + 1 :]]
            assert not verify_consistency(old, new, r1, r2, bad), (*where, "flip", j)
            assert not verify_consistency(old, new, r1, r2, proof[:j] + proof[j + 1 :]), (*where, "drop", j)
        for j in range(len(proof) + 1):
            for extra in (OTHER, r1, r2):
                bad = [*proof[:j], extra, *proof[j:]]
                assert not verify_consistency(old, new, r1, r2, bad), (*where, "add", j)
        # Wrong roots: each flipped, each replaced by a neighbouring size's, the two swapped.
        assert not verify_consistency(old, new, flip(r1, old), r2, proof), (*where, "old root")
        assert not verify_consistency(old, new, r1, flip(r2, new), proof), (*where, "new root")
        for s in (old - 1, old + 1):
            if s != new and 0 <= s <= MAX:
                assert not verify_consistency(old, new, ROOTS[s], r2, proof), (*where, "old root", s)
        if new < MAX:
            assert not verify_consistency(old, new, r1, ROOTS[new + 1], proof), (*where, "new root")
        if old != new:
            assert not verify_consistency(old, new, r2, r1, proof), (*where, "swapped")
        # Wrong sizes, kept with these roots: accepted exactly when the proof has the same shape.
        for o2, n2 in {(old - 1, new), (old + 1, new), (old ^ 2, new), (old, new + 1), (old, new - 1)} | {
            (old, new * 2),
            (old, new // 2),
            (old + 1, new + 1),
        }:
            if (o2, n2) == (old, new) or not 0 <= o2 <= n2:
                continue
            accepted = verify_consistency(o2, n2, r1, r2, proof)
            if old == new or o2 in (0, n2):
                same = old == new and o2 == n2 and o2 > 0
            else:
                same = subproof_shape(o2, n2, True) == subproof_shape(old, new, True)
            assert accepted == same, (*where, "sizes", o2, n2)
            if 0 < o2 and n2 <= MAX:
                assert not verify_consistency(o2, n2, ROOTS[o2], ROOTS[n2], proof) or same, (*where, o2, n2)


# ----------------------------------------------------------------------------------------
# Edge cases of the RFC and malformed input.


def test_equal_sizes_and_the_empty_tree() -> None:
    for n in range(MAX + 1):
        assert TREE.consistency_proof(n, n) == []
        assert verify_consistency(n, n, ROOTS[n], ROOTS[n], [])
        assert not verify_consistency(n, n, ROOTS[n], OTHER, [])
        assert not verify_consistency(n, n, ROOTS[n], ROOTS[n], [OTHER])
        # Every tree extends the empty one, whose root is fixed; the proof is empty.
        assert TREE.consistency_proof(0, n) == []
        assert verify_consistency(0, n, ROOTS[0], ROOTS[n], [])
        assert not verify_consistency(0, n, OTHER, ROOTS[n], [])
        assert not verify_consistency(0, n, ROOTS[0], ROOTS[n], [ROOTS[0]])
    # A non-empty old tree needs a non-empty proof (the RFC's first check).
    assert not verify_consistency(1, 2, ROOTS[1], ROOTS[2], [])
    # A one-leaf tree: the leaf hash is the root and the audit path is empty.
    assert TREE.inclusion_proof(0, 1) == []
    assert verify_inclusion(LEAVES[0], 0, 1, [], ROOTS[1])
    assert not verify_inclusion(LEAVES[0], 0, 0, [], ROOTS[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.root(9), "larger than the tree"),
        (lambda t: t.root(-1), ">= 0"),
        (lambda t: t.inclusion_proof(8), "not a leaf"),
        (lambda t: t.inclusion_proof(3, 3), "not a leaf"),
        (lambda t: t.inclusion_proof(0, 0), "not a leaf"),
        (lambda t: t.inclusion_proof(-1), ">= 0"),
        (lambda t: t.inclusion_proof(0, 9), "larger than the tree"),
        (lambda t: t.consistency_proof(5, 4), "larger than new_size"),
        (lambda t: t.consistency_proof(9), "larger than new_size"),
        (lambda t: t.consistency_proof(1, 9), "new_size 9 is larger than the tree"),
        (lambda t: t.consistency_proof(-1), ">= 0"),
        (lambda t: t.root(1.0), "must be an int"),
        (lambda t: t.inclusion_proof(True), "must be an int"),
    ],
)
def test_bad_arguments_raise_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(MerkleTree(ENTRIES[:8]))


def test_malformed_proofs_are_rejected_without_raising() -> None:
    leaf, root = LEAVES[2], ROOTS[8]
    proof = TREE.inclusion_proof(2, 8)
    assert verify_inclusion(bytearray(leaf), 2, 8, [memoryview(p) for p in proof], bytearray(root))
    bad_inclusion = [
        (leaf[:31], 2, 8, proof, root),
        (leaf, 2, 8, proof, root + b"\x00"),
        (leaf, 2, 8, [*proof[:2], proof[2][:16]], root),
        (leaf, 2, 8, [*proof[:2], "not bytes"], root),
        (leaf, 2, 8, [*proof[:2], None], root),
        (leaf, 2, 8, None, root),
        (leaf, -1, 8, proof, root),
        (leaf, 8, 8, proof, root),
        (leaf, 2, -8, proof, root),
        (leaf, 2.0, 8, proof, root),
        (leaf, True, 8, proof, root),
        ("leaf", 2, 8, proof, root),
        (leaf, 2, 8, [b""] * 3, root),
        (leaf, 2, 8, proof * 30, root),
    ]
    for args in bad_inclusion:
        assert verify_inclusion(*args) is False, args

    r1, r2 = ROOTS[3], ROOTS[8]
    cproof = TREE.consistency_proof(3, 8)
    bad_consistency = [
        (3, 8, r1[:31], r2, cproof),
        (3, 8, r1, r2 + b"\x00", cproof),
        (3, 8, r1, r2, [cproof[0][1:], *cproof[1:]]),
        (3, 8, r1, r2, [*cproof, "x"]),
        (3, 8, r1, r2, None),
        (8, 3, r1, r2, cproof),
        (-3, 8, r1, r2, cproof),
        (3, 8.0, r1, r2, cproof),
        (3, 8, r1, r2, cproof * 30),
        (3, 8, None, r2, cproof),
    ]
    for args in bad_consistency:
        assert verify_consistency(*args) is False, args


def test_proofs_cost_logarithmically_many_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The efficiency claim without a clock: after building, answers only combine the ragged
    # right edge, a few dozen hashes for 10,000 leaves, never a rehash of the leaves.
    tree = MerkleTree(b"%d" % i for i in range(10_000))
    calls = 0
    real = merkle.node_hash

    def counting(left: bytes, right: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return real(left, right)

    monkeypatch.setattr(merkle, "node_hash", counting)
    for size in (10_000, 9_999, 8_193, 4_096, 1):
        tree.root(size)
        tree.inclusion_proof(size // 3, size)
        tree.consistency_proof(size // 2 + 1, size)
    assert calls <= 5 * 3 * 14
    monkeypatch.undo()
    assert tree.root(777) == MerkleTree(b"%d" % i for i in range(777)).root()
