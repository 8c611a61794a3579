"""An append-only RFC 6962 Merkle tree over a node store, without I/O of its own.

Only the nodes of perfect subtrees are stored: node (level, index) is the hash of leaves
[index * 2**level, (index + 1) * 2**level), written once when its last leaf arrives and never
changed. Every other hash (the root of any size, the imperfect right edge of a proof) is
composed from O(log n) of them, so roots and proofs for any older size stay available and
identical after further appends.

Proofs follow RFC 6962 2.1.1 (PATH) and 2.1.2 (PROOF/SUBPROOF) exactly, so they verify with
`verifier.verify_inclusion` / `verifier.verify_consistency` (RFC 9162 2.1.3.2 / 2.1.4.2).
"""

from __future__ import annotations

from typing import Protocol

from firmware.evidence.verifier import EMPTY_ROOT, HASH_SIZE, node_hash


class NodeStore(Protocol):
    """Storage of perfect-subtree nodes and the tree size."""

    def size(self) -> int:
        """Number of leaves committed."""
        ...

    def get(self, level: int, index: int) -> bytes:
        """The stored node; KeyError when it is not stored."""
        ...

    def put(self, nodes: list[tuple[int, int, bytes]], size: int) -> None:
        """Store the new nodes and the new size together, atomically."""
        ...


class MemoryNodes:
    """A NodeStore in memory, for tests and for building trees that are thrown away."""

    def __init__(self) -> None:
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._size = 0

    def size(self) -> int:
        return self._size

    def get(self, level: int, index: int) -> bytes:
        return self._nodes[(level, index)]

    def put(self, nodes: list[tuple[int, int, bytes]], size: int) -> None:
        if size < self._size:
            raise ValueError(f"tree size cannot shrink from {self._size} to {size}")
        for level, index, _ in nodes:
            if (level, index) in self._nodes:
                raise ValueError(f"node ({level}, {index}) is already stored")
        for level, index, h in nodes:
            self._nodes[(level, index)] = h
        self._size = size


def _split(n: int) -> int:
    """RFC 6962: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """The tree over a NodeStore; one writer at a time."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store

    def size(self) -> int:
        return self.store.size()

    def append(self, leaf_hashes: list[bytes]) -> int:
        """Add leaf hashes (see `verifier.leaf_hash`); store every perfect subtree node they
        complete, with the new size, in one `put`. Returns the new size."""
        for h in leaf_hashes:
            if not isinstance(h, bytes) or len(h) != HASH_SIZE:
                raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
        start = self.store.size()
        if not leaf_hashes:
            return start
        pending: dict[tuple[int, int], bytes] = {}

        def node(level: int, index: int) -> bytes:
            got = pending.get((level, index))
            return got if got is not None else self.store.get(level, index)

        for offset, h in enumerate(leaf_hashes):
            level, index = 0, start + offset
            pending[(level, index)] = h
            while index & 1:  # a right child completes its parent
                h = node_hash(node(level, index - 1), h)
                level, index = level + 1, index >> 1
                pending[(level, index)] = h
        new_size = start + len(leaf_hashes)
        self.store.put([(lv, ix, h) for (lv, ix), h in pending.items()], new_size)
        return new_size

    def _check_size(self, size: int) -> int:
        current = self.store.size()
        if size < 0 or size > current:
            raise ValueError(f"tree size {size} is outside 0..{current}")
        return size

    def _mth(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end), where start is a multiple of a power of two >= the
        length (true of every subtree RFC 6962 recursion visits); O(log n) reads."""
        n = end - start
        if n & (n - 1) == 0:
            return self.store.get(n.bit_length() - 1, start >> (n.bit_length() - 1))
        # the perfect subtrees left to right, then folded from the right
        parts: list[bytes] = []
        pos = start
        for bit in range(n.bit_length() - 1, -1, -1):
            if n >> bit & 1:
                parts.append(self.store.get(bit, pos >> bit))
                pos += 1 << bit
        h = parts[-1]
        for left in reversed(parts[:-1]):
            h = node_hash(left, h)
        return h

    def root(self, size: int | None = None) -> bytes:
        """RFC 6962 MTH of the first `size` leaves (default: all); SHA-256("") when empty."""
        size = self.store.size() if size is None else self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._mth(0, size)

    def leaf(self, index: int) -> bytes:
        """The leaf hash at `index`."""
        if index < 0 or index >= self.store.size():
            raise IndexError(f"leaf {index} is outside the tree of {self.store.size()}")
        return self.store.get(0, index)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 2.1.1 PATH(index, D[size]): the audit path of leaf `index`."""
        self._check_size(size)
        if index < 0 or index >= size:
            raise IndexError(f"leaf {index} is outside the tree of {size}")
        proof: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index - lo < k:
                proof.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._mth(lo, lo + k))
                lo += k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """RFC 6962 2.1.2 PROOF(size1, D[size2]); empty when size1 is 0 or equals size2."""
        self._check_size(size2)
        if size1 < 0 or size1 > size2:
            raise ValueError(f"size1 {size1} is outside 0..{size2}")
        if size1 == 0 or size1 == size2:
            return []
        proof: list[bytes] = []
        lo, hi, m, whole = 0, size2, size1, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._mth(lo, lo + k))
                lo += k
                m -= k
                whole = False
        if not whole:
            proof.append(self._mth(lo, hi))
        proof.reverse()
        return proof
