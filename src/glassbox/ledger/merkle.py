"""RFC 9162 (Certificate Transparency v2) Merkle trees: hashes, inclusion and consistency proofs.

The tree is the one of RFC 9162 section 2.1, so roots and proofs made here can be
checked by any other Certificate Transparency implementation, and the other way round:

- the empty tree's hash is ``SHA-256("")``;
- a leaf's hash is ``SHA-256(0x00 || entry)``;
- an interior node's hash is ``SHA-256(0x01 || left || right)``, where the left
  subtree holds the largest power of two of the leaves that is smaller than their count.

Only the standard library is used. Leaves are the raw entry bytes; ``verify_inclusion``
takes the leaf *hash* (what a verifier holding the entry computes with ``leaf_hash``).

>>> tree = MerkleTree([b"a", b"b", b"c"])
>>> proof = tree.inclusion_proof(2)
>>> verify_inclusion(leaf_hash(b"c"), 2, len(tree), proof, tree.root())
True
>>> tree.append(b"d")
>>> verify_consistency(3, 4, tree.root(3), tree.root(), tree.consistency_proof(3))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = ["HASH_SIZE", "MerkleTree", "leaf_hash", "node_hash", "verify_consistency", "verify_inclusion"]

HASH_SIZE = 32  # SHA-256

# Distinct domain prefixes for leaves and interior nodes: without them a leaf whose entry is
# the 64 bytes ``left || right`` would hash like the node above ``left`` and ``right``, and a
# log could prove "inclusion" of an entry that was never appended (a second preimage).
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

_EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 hash of one leaf entry: ``SHA-256(0x00 || data)``.

    >>> leaf_hash(b"").hex()
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d'
    """
    return hashlib.sha256(_LEAF_PREFIX + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an interior node: ``SHA-256(0x01 || left || right)``.

    >>> node_hash(leaf_hash(b""), leaf_hash(b"\\x00")).hex()
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125'
    """
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2): the RFC's ``k``."""
    # Not the midpoint: the RFC fixes the split so that every left subtree is perfect,
    # which is what makes old roots recomputable from a newer tree (consistency proofs).
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


class MerkleTree:
    """An append-only RFC 9162 Merkle tree that answers for every size it has had.

    The hashes of all complete, power-of-two aligned subtrees are kept level by level
    (``_levels[h][i]`` covers leaves ``[i * 2**h, (i + 1) * 2**h)``), filled in as leaves
    arrive: n appends cost fewer than 2n hashes in all. Every subtree the RFC's recursion
    visits on its left is such a complete subtree, so a root or proof for any size is
    O(log n) lookups plus the few hashes of the ragged right edge.

    >>> tree = MerkleTree([b"", b"\\x00"])
    >>> len(tree), tree.root().hex()[:16]
    (2, 'fac54203e7cc696c')
    >>> tree.root(0) == MerkleTree().root()
    True
    """

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        self._extend(leaves)

    def _extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaves level by level: the same hashes as ``append`` one at a time, less overhead."""
        sha256 = hashlib.sha256
        level = self._levels[0]
        first_new = len(level)
        level.extend([sha256(_LEAF_PREFIX + bytes(d)).digest() for d in leaves])
        height = 0
        while len(level) // 2 > first_new // 2:
            # Pairs that the new nodes completed at this level, from the first one touched.
            lo = first_new - first_new % 2
            parents = [
                sha256(_NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(lo, len(level) - 1, 2)
            ]
            height += 1
            if height == len(self._levels):
                self._levels.append([])
            level = self._levels[height]
            first_new = len(level)
            level.extend(parents)

    def append(self, data: bytes) -> None:
        """Add one entry (its raw bytes) as the next leaf.

        >>> tree = MerkleTree()
        >>> tree.append(b"entry")
        >>> tree.root() == leaf_hash(b"entry")
        True
        """
        node = leaf_hash(data)
        height = 0
        while True:
            level = self._levels[height]
            level.append(node)
            # An even count at this level means the new node completed a pair: their parent
            # is a new complete subtree one level up, and it never changes again.
            if len(level) % 2:
                return
            node = node_hash(level[-2], level[-1])
            height += 1
            if height == len(self._levels):
                self._levels.append([])

    def __len__(self) -> int:
        return len(self._levels[0])

    def _size(self, size: int | None, name: str = "size") -> int:
        if size is None:
            return len(self)
        _check_size(name, size)
        if size > len(self):
            raise ValueError(f"{name} {size} is larger than the tree, which has {len(self)} leaves")
        return size

    def _hash(self, start: int, end: int) -> bytes:
        """MTH of leaves ``[start, end)``, ``end > start``."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return self._levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self._hash(start, start + k), self._hash(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """The Merkle Tree Hash of the first ``size`` leaves (default: all of them).

        >>> MerkleTree().root().hex()
        'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
        """
        size = self._size(size)
        return self._hash(0, size) if size else _EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path ``PATH(index, D[size])`` of RFC 9162 section 2.1.3.1, nearest sibling first.

        >>> tree = MerkleTree([b"a", b"b", b"c"])
        >>> tree.inclusion_proof(2) == [tree.root(2)]
        True
        """
        size = self._size(size)
        _check_size("index", index)
        if index >= size:
            raise ValueError(f"index {index} is not a leaf of a tree of size {size}")
        path: list[bytes] = []
        start, end = 0, size
        # Walk down from the root; the RFC lists siblings from the leaf up, so reverse at the end.
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                path.append(self._hash(start + k, end))
                end = start + k
            else:
                path.append(self._hash(start, start + k))
                start += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The proof ``PROOF(old_size, D[new_size])`` of RFC 9162 section 2.1.4.1.

        It is empty when ``old_size`` is 0 (every tree extends the empty one) or equals
        ``new_size`` (the roots themselves must match).

        >>> tree = MerkleTree([b"a", b"b", b"c"])
        >>> tree.consistency_proof(2) == [leaf_hash(b"c")]
        True
        """
        new_size = self._size(new_size, "new_size")
        _check_size("old_size", old_size)
        if old_size > new_size:
            raise ValueError(f"old_size {old_size} is larger than new_size {new_size}")
        if old_size in (0, new_size):
            return []
        proof: list[bytes] = []
        start, end, m = 0, new_size, old_size
        # SUBPROOF's flag b: true while the old tree's root is the left spine of the walk,
        # where the verifier already has it; once we step right it must be sent.
        known = True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self._hash(start + k, end))
                end = start + k
            else:
                proof.append(self._hash(start, start + k))
                start += k
                m -= k
                known = False
        if not known:
            proof.append(self._hash(start, end))
        proof.reverse()
        return proof


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray | memoryview) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows the leaf hash ``leaf`` at ``index`` in the tree of ``size`` with ``root``.

    The algorithm of RFC 9162 section 2.1.3.2. Malformed input (a wrong hash length, an
    index outside the tree, a proof of the wrong length) gives False, never an exception.

    >>> tree = MerkleTree([b"a", b"b", b"c", b"d", b"e"])
    >>> proof = tree.inclusion_proof(1)
    >>> verify_inclusion(leaf_hash(b"b"), 1, 5, proof, tree.root())
    True
    >>> verify_inclusion(leaf_hash(b"x"), 1, 5, proof, tree.root())
    False
    """
    try:
        if not (_is_size(index) and _is_size(size) and index < size):
            return False
        if not (_is_hash(leaf) and _is_hash(root)):
            return False
        proof = list(proof)
        if not all(_is_hash(p) for p in proof):
            return False
        fn, sn = index, size - 1
        r = bytes(leaf)
        for p in proof:
            if sn == 0:
                return False  # longer than the path to the root
            if fn & 1 or fn == sn:
                r = node_hash(bytes(p), r)
                # Levels where this node is the right edge's only child have no sibling.
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
            else:
                r = node_hash(r, bytes(p))
            fn >>= 1
            sn >>= 1
        # sn == 0 binds the proof's length to the size; without it a prefix of a valid path
        # would "prove" an interior node.
        return sn == 0 and r == bytes(root)
    except Exception:
        return False


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows that the tree of ``new_size`` with ``new_root`` extends the older one.

    The algorithm of RFC 9162 section 2.1.4.2, plus the cases it leaves out: equal sizes
    need an empty proof and equal roots; an old size of 0 needs an empty proof and
    ``old_root`` equal to the empty tree's hash (the RFC defines proofs only for
    ``0 < old_size``; every tree extends the empty one, so nothing more is to be shown).
    Malformed input gives False, never an exception.

    >>> tree = MerkleTree([b"a", b"b", b"c", b"d", b"e"])
    >>> proof = tree.consistency_proof(3)
    >>> verify_consistency(3, 5, tree.root(3), tree.root(), proof)
    True
    >>> verify_consistency(2, 5, tree.root(2), tree.root(), proof)
    False
    """
    try:
        if not (_is_size(old_size) and _is_size(new_size) and old_size <= new_size):
            return False
        if not (_is_hash(old_root) and _is_hash(new_root)):
            return False
        path = [bytes(p) for p in proof] if all(_is_hash(p) for p in proof) else None
        if path is None:
            return False
        old_root, new_root = bytes(old_root), bytes(new_root)
        if old_size == new_size or old_size == 0:
            if path or (old_size == 0 and old_root != _EMPTY_ROOT):
                return False
            # Equal sizes: the same tree or a fork. From empty: any tree extends it.
            return old_root == new_root or old_size < new_size
        if not path:
            return False
        # A power-of-two old tree is a complete left subtree of the new one, so the proof
        # omits its root: the verifier has it already.
        if old_size & (old_size - 1) == 0:
            path.insert(0, old_root)
        fn, sn = old_size - 1, new_size - 1
        # Skip the levels where the old tree's last node is a right child inside a complete
        # subtree of the old tree: the proof starts at the smallest subtree holding that node.
        while fn & 1:
            fn >>= 1
            sn >>= 1
        fr = sr = path[0]
        for c in path[1:]:
            if sn == 0:
                return False  # more elements than the new tree has levels
            if fn & 1 or fn == sn:
                fr = node_hash(c, fr)
                sr = node_hash(c, sr)
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
            else:
                # Right of the old tree: only the new root depends on it.
                sr = node_hash(sr, c)
            fn >>= 1
            sn >>= 1
        return fr == old_root and sr == new_root and sn == 0
    except Exception:
        return False
