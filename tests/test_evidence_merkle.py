"""The evidence Merkle tree against RFC 6962: roots and proofs equal a brute-force reference,
verify with the shipped verifier, stay unchanged for older sizes, and the SQLite store gives
exactly what the memory store gives. A log nobody else can verify proves nothing."""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.evidence.merkle import MemoryNodes, MerkleTree
from firmware.evidence.nodes_sqlite import SqliteNodes
from firmware.evidence.verifier import (
    EMPTY_ROOT,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# ----- brute-force RFC 6962 section 2.1 over the list of leaf hashes -------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 MTH, literally recursive."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _k(len(leaves))
    return node_hash(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = _k(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 6962 2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    if m == 0 or m == len(leaves):
        return []
    return ref_subproof(m, leaves, True)


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


# ----- known answers -----------------------------------------------------------------------
# Leaf inputs, root hashes for sizes 0..8 and the perfect-subtree node hashes: the Certificate
# Transparency reference vectors as published in transparency-dev/merkle
# testonly/constants.go (LeafInputs, RootHashes, NodeHashes).

CT_LEAF_INPUTS = [
    bytes.fromhex(x)
    for x in [
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
    bytes.fromhex(x)
    for x in [
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
]
# NodeHashes()[level][index] of the same file, the ones the proofs below use.
N0_1 = bytes.fromhex("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")
N0_4 = bytes.fromhex("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")
N1_1 = bytes.fromhex("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e")
N1_2 = bytes.fromhex("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a")
N1_3 = bytes.fromhex("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0")
N2_0 = bytes.fromhex("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")
N2_1 = bytes.fromhex("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")
# Inclusion and consistency proofs of the 8-leaf tree as in the CT reference tests
# (certificate-transparency merkle_tree_test.cc, repeated in transparency-dev/merkle
# proof/verify_test.go): (index, size, proof) and (size1, size2, proof).
CT_INCLUSION = [
    (0, 8, [N0_1, N1_1, N2_1]),
    (5, 8, [N0_4, N1_3, N2_0]),
]
CT_CONSISTENCY = [
    (1, 8, [N0_1, N1_1, N2_1]),
    (2, 5, [N1_1, N0_4]),
    (2, 8, [N1_1, N2_1]),
    (6, 8, [N1_2, N1_3, N2_0]),
]


def ct_tree() -> MerkleTree:
    tree = MerkleTree(MemoryNodes())
    tree.append([leaf_hash(x) for x in CT_LEAF_INPUTS])
    return tree


def test_roots_match_the_ct_reference_vectors() -> None:
    """Prefixes, split rule and empty-tree hash must be RFC 6962's, or no one else agrees."""
    tree = ct_tree()
    assert [tree.root(size) for size in range(9)] == CT_ROOTS
    assert tree.root() == CT_ROOTS[8]
    assert MerkleTree(MemoryNodes()).root() == EMPTY_ROOT


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_inclusion_proofs_match_the_ct_reference(index: int, size: int, proof: list) -> None:
    """The audit paths are the reference ones and verify with the shipped verifier."""
    tree = ct_tree()
    assert tree.inclusion_proof(index, size) == proof
    assert verify_inclusion(leaf_hash(CT_LEAF_INPUTS[index]), index, size, proof, CT_ROOTS[size])


@pytest.mark.parametrize(("size1", "size2", "proof"), CT_CONSISTENCY)
def test_consistency_proofs_match_the_ct_reference(size1: int, size2: int, proof: list) -> None:
    """The consistency proofs are the reference ones and verify with the shipped verifier."""
    tree = ct_tree()
    assert tree.consistency_proof(size1, size2) == proof
    assert verify_consistency(size1, size2, CT_ROOTS[size1], CT_ROOTS[size2], proof)


def test_consistency_edge_cases() -> None:
    """Equal sizes and the empty old tree need an empty proof; anything else is refused."""
    r = CT_ROOTS
    assert verify_consistency(5, 5, r[5], r[5], [])
    assert not verify_consistency(5, 5, r[5], r[4], [])
    assert not verify_consistency(5, 5, r[5], r[5], [r[1]])
    assert verify_consistency(0, 8, EMPTY_ROOT, r[8], [])
    assert not verify_consistency(0, 8, EMPTY_ROOT, r[8], [r[1]])
    assert not verify_consistency(0, 8, r[1], r[8], [])
    assert not verify_consistency(8, 2, r[8], r[2], [N1_1, N2_1])
    assert not verify_consistency(2, 8, r[2], r[8], [])
    assert not verify_consistency(-1, 8, r[2], r[8], [])
    assert not verify_inclusion(leaf_hash(b""), 0, 0, [], EMPTY_ROOT)
    assert not verify_inclusion(leaf_hash(b""), -1, 8, [], r[8])
    assert not verify_inclusion(b"short", 0, 1, [], b"short")


def test_misuse_is_refused() -> None:
    """Sizes beyond the tree, leaves beyond the size and non-hash leaves raise, not guess."""
    tree = ct_tree()
    with pytest.raises(ValueError):
        tree.root(9)
    with pytest.raises(IndexError):
        tree.inclusion_proof(8, 8)
    with pytest.raises(ValueError):
        tree.inclusion_proof(0, 9)
    with pytest.raises(ValueError):
        tree.consistency_proof(5, 4)
    with pytest.raises(ValueError):
        tree.append([b"not a hash"])
    assert tree.size() == 8
    with pytest.raises(IndexError):
        tree.leaf(8)
    assert tree.leaf(3) == leaf_hash(CT_LEAF_INPUTS[3])
    assert tree.append([]) == 8


# ----- properties --------------------------------------------------------------------------

# Leaf lists of 0..300 leaves, the length drawn uniformly (hypothesis alone keeps lists
# short), each leaf distinct and depending on a drawn salt.
leaf_lists = st.tuples(st.integers(0, 300), st.binary(max_size=4)).map(
    lambda t: [leaf_hash(t[1] + i.to_bytes(2, "big")) for i in range(t[0])]
)


def _batches(leaves: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    points = sorted({c % (len(leaves) + 1) for c in cuts} | {0, len(leaves)})
    return [leaves[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=40, deadline=None)
@given(leaf_lists, st.lists(st.integers(0, 400), max_size=6), st.data())
def test_roots_and_proofs_equal_the_rfc_definitions(
    leaves: list[bytes], cuts: list[int], data: st.DataObject
) -> None:
    """Appended in any batches, every root, audit path and consistency proof is exactly the
    RFC 6962 one and verifies with the shipped verifier."""
    tree = MerkleTree(MemoryNodes())
    for batch in _batches(leaves, cuts):
        assert tree.append(batch) == tree.size()
        assert tree.root() == ref_mth(leaves[: tree.size()])
    n = len(leaves)
    assert tree.size() == n
    sizes = data.draw(st.lists(st.integers(0, n), min_size=1, max_size=4), label="sizes")
    for size in sizes:
        assert tree.root(size) == ref_mth(leaves[:size])
    root = tree.root()
    for index in range(n):
        proof = tree.inclusion_proof(index, n)
        assert proof == ref_path(index, leaves)
        assert verify_inclusion(leaves[index], index, n, proof, root)
    if n:
        size = data.draw(st.integers(1, n), label="older size")
        index = data.draw(st.integers(0, size - 1), label="index")
        proof = tree.inclusion_proof(index, size)
        assert proof == ref_path(index, leaves[:size])
        assert verify_inclusion(leaves[index], index, size, proof, ref_mth(leaves[:size]))
    for _ in range(4):
        size2 = data.draw(st.integers(0, n), label="size2")
        size1 = data.draw(st.integers(0, size2), label="size1")
        proof = tree.consistency_proof(size1, size2)
        assert proof == ref_proof(size1, leaves[:size2])
        assert verify_consistency(size1, size2, tree.root(size1), tree.root(size2), proof)


@settings(max_examples=60, deadline=None)
@given(leaf_lists.filter(lambda xs: len(xs) >= 2), st.data())
def test_tampered_inclusion_proofs_fail(leaves: list[bytes], data: st.DataObject) -> None:
    """A flipped bit, another index, another size or a cut proof never verifies."""
    n = len(leaves)
    tree = MerkleTree(MemoryNodes())
    tree.append(leaves)
    size = data.draw(st.integers(2, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = tree.inclusion_proof(index, size)
    root = tree.root(size)
    assert verify_inclusion(leaves[index], index, size, proof, root)
    assert proof, "a tree of two or more leaves has a non-empty audit path"
    pos = data.draw(st.integers(0, len(proof) - 1), label="proof element")
    bit = data.draw(st.integers(0, 255), label="bit")
    bad = [*proof]
    bad[pos] = flip(bad[pos], bit)
    assert not verify_inclusion(leaves[index], index, size, bad, root)
    assert not verify_inclusion(flip(leaves[index], bit), index, size, proof, root)
    assert not verify_inclusion(leaves[index], index, size, proof, flip(root, bit))
    other = (index + data.draw(st.integers(1, size - 1), label="shift")) % size
    assert not verify_inclusion(leaves[index], other, size, proof, root)
    # A size is only meaningful with its own root (both come from one signed checkpoint):
    # the audit path alone cannot tell e.g. leaf 0 of 3 from leaf 0 of 4.
    sizes = [s for s in range(index + 1, n + 1) if s != size]
    if sizes:
        wrong = data.draw(st.sampled_from(sizes), label="wrong size")
        assert not verify_inclusion(leaves[index], index, wrong, proof, tree.root(wrong))
    assert not verify_inclusion(leaves[index], index, size, proof[:-1], root)
    assert not verify_inclusion(leaves[index], index, size, [*proof, proof[0]], root)


@settings(max_examples=60, deadline=None)
@given(leaf_lists.filter(lambda xs: len(xs) >= 3), st.data())
def test_tampered_consistency_proofs_fail(leaves: list[bytes], data: st.DataObject) -> None:
    """A flipped bit, other sizes, a wrong root or a cut proof never verifies."""
    n = len(leaves)
    tree = MerkleTree(MemoryNodes())
    tree.append(leaves)
    size2 = data.draw(st.integers(2, n), label="size2")
    size1 = data.draw(st.integers(1, size2 - 1), label="size1")
    proof = tree.consistency_proof(size1, size2)
    root1, root2 = tree.root(size1), tree.root(size2)
    assert verify_consistency(size1, size2, root1, root2, proof)
    pos = data.draw(st.integers(0, len(proof) - 1), label="proof element")
    bit = data.draw(st.integers(0, 255), label="bit")
    bad = [*proof]
    bad[pos] = flip(bad[pos], bit)
    assert not verify_consistency(size1, size2, root1, root2, bad)
    assert not verify_consistency(size1, size2, flip(root1, bit), root2, proof)
    assert not verify_consistency(size1, size2, root1, flip(root2, bit), proof)
    assert not verify_consistency(size1, size2, root1, root2, proof[:-1])
    assert not verify_consistency(size1, size2, root1, root2, [*proof, proof[0]])
    # Sizes are claimed together with their roots (one signed checkpoint each).
    other1 = data.draw(st.sampled_from([s for s in range(1, size2) if s != size1] or [0]))
    if other1:
        assert not verify_consistency(other1, size2, tree.root(other1), root2, proof)
    other2 = data.draw(st.sampled_from([s for s in range(size1 + 1, n + 1) if s != size2] or [0]))
    if other2:
        assert not verify_consistency(size1, other2, root1, tree.root(other2), proof)


@settings(max_examples=40, deadline=None)
@given(leaf_lists, leaf_lists, st.data())
def test_older_sizes_are_unchanged_by_later_appends(
    first: list[bytes], more: list[bytes], data: st.DataObject
) -> None:
    """A checkpoint signed yesterday still gets the same root and proofs today."""
    tree = MerkleTree(MemoryNodes())
    tree.append(first)
    n = len(first)
    before_roots = [tree.root(s) for s in range(n + 1)]
    before_incl = [tree.inclusion_proof(i, n) for i in range(n)]
    size1 = data.draw(st.integers(0, n), label="size1")
    before_cons = tree.consistency_proof(size1, n)
    tree.append(more)
    assert [tree.root(s) for s in range(n + 1)] == before_roots
    assert [tree.inclusion_proof(i, n) for i in range(n)] == before_incl
    assert tree.consistency_proof(size1, n) == before_cons
    total = n + len(more)
    assert verify_consistency(
        n, total, before_roots[n], tree.root(), tree.consistency_proof(n, total)
    )


class CountingNodes(MemoryNodes):
    """Counts node reads, to hold the tree to O(log n) reads per root or proof."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        return super().get(level, index)


def test_reads_are_logarithmic() -> None:
    """Roots and proofs of any size cost O(log n) node reads, not a walk over the leaves."""
    store = CountingNodes()
    tree = MerkleTree(store)
    n = 5000
    tree.append([leaf_hash(i.to_bytes(4, "big")) for i in range(n)])
    limit = 4 * n.bit_length()
    for size in (1, 2, 3, 1000, 2047, 2049, 4095, 4999, 5000):
        calls = [
            (tree.root, (size,)),
            (tree.inclusion_proof, (size // 2, size)),
            (tree.inclusion_proof, (size - 1, size)),
            (tree.consistency_proof, (size // 3, size)),
            (tree.consistency_proof, (size - 1, size)),
        ]
        for op, args in calls:
            store.reads = 0
            op(*args)
            assert store.reads <= limit, (size, store.reads)


def _run(store: MemoryNodes | SqliteNodes, batches: list[list[bytes]]) -> list:
    tree = MerkleTree(store)
    out: list = []
    for batch in batches:
        out.append(tree.append(batch))
        out.append(tree.root())
    n = tree.size()
    out += [tree.root(s) for s in range(n + 1)]
    out += [tree.inclusion_proof(i, n) for i in range(n)]
    out += [tree.consistency_proof(s, n) for s in range(n + 1)]
    out += [tree.leaf(i) for i in range(n)]
    return out


@settings(max_examples=15, deadline=None)
@given(st.lists(st.lists(st.binary(min_size=32, max_size=32), max_size=40), min_size=1, max_size=4))
def test_sqlite_store_equals_memory_store(batches: list[list[bytes]]) -> None:
    """The on-disk store gives exactly the memory store's roots and proofs, also reopened."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nodes.db"
        store = SqliteNodes(path)
        try:
            assert _run(store, batches) == _run(MemoryNodes(), batches)
        finally:
            store.close()
        reopened = SqliteNodes(path)
        try:
            mem = MemoryNodes()
            MerkleTree(mem).append([h for b in batches for h in b])
            assert reopened.size() == mem.size()
            assert MerkleTree(reopened).root() == MerkleTree(mem).root()
        finally:
            reopened.close()


def test_sqlite_put_is_all_or_nothing(tmp_path: Path) -> None:
    """A put that fails half-way leaves neither its nodes nor its size behind."""
    store = SqliteNodes(tmp_path / "nodes.db")
    try:
        tree = MerkleTree(store)
        tree.append([leaf_hash(b"a"), leaf_hash(b"b")])
        root = tree.root()
        with pytest.raises(sqlite3.IntegrityError):  # (0, 1) exists: the whole batch is rolled back
            store.put([(0, 2, leaf_hash(b"c")), (0, 1, leaf_hash(b"x"))], 3)
        assert store.size() == 2
        with pytest.raises(KeyError):
            store.get(0, 2)
        with pytest.raises(ValueError):
            store.put([], 1)
        assert tree.root() == root
        assert tree.append([leaf_hash(b"c")]) == 3
    finally:
        store.close()
