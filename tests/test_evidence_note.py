"""Signed notes, checkpoints, cosignatures and the board's signing key, against the C2SP
specifications and the Go reference vectors, so that any other implementation agrees with
what a board signs; and the shipped verifier runs with nothing but Python and cryptography."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cryptography
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.evidence import verifier
from firmware.evidence.merkle import MemoryNodes, MerkleTree
from firmware.evidence.note import KeyFileError, NoteSigner, load_or_create_key
from firmware.evidence.verifier import (
    Checkpoint,
    FormatError,
    Note,
    NoteSignature,
    VerifierKey,
    cosignature_timestamp,
    key_fingerprint,
    leaf_hash,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    verify_cosignature,
    verify_note_signature,
)

EM = "\u2014"

# ----- Go reference vectors ----------------------------------------------------------------
# golang.org/x/mod/sumdb/note, note_test.go (TestNewVerifier, TestNewSigner, TestSign,
# TestOpen): keys, the signed text and both signature lines.
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    f"{EM} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    f"{EM} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox"
    "33WWd1RvMc+QQ=\n"
)


def peter_signer() -> NoteSigner:
    """Go's skey is "PRIVATE+KEY+name+hash+base64(0x01 || 32-byte seed)"."""
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


def test_go_vkey_parses_and_manglings_are_refused() -> None:
    """Every substring and every one-character change of the Go vkey is refused, as in
    TestNewVerifier; so are its wrong-length and unknown-algorithm keys."""
    key = parse_vkey(PETER_VKEY)
    assert (key.name, key.key_hash.hex(), key.alg) == ("PeterNeumann", "c74f20a3", 0x01)
    assert key.vkey() == PETER_VKEY
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(FormatError):
                    parse_vkey(PETER_VKEY[i:j])
    for i, ch in enumerate(PETER_VKEY):
        with pytest.raises(FormatError):
            parse_vkey(PETER_VKEY[:i] + chr(ord(ch) + 1) + PETER_VKEY[i + 1 :])
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(FormatError):
            parse_vkey(bad)


def test_cosignature_vkeys_parse() -> None:
    """Type 0x04 vkeys, from transparency-dev/formats note/note_cosigv1_test.go
    (TestCoSigV1NewVerifier), parse with the key hash checked."""
    key = parse_vkey("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    assert (key.alg, key.key_hash.hex()) == (0x04, "da77ade7")
    with pytest.raises(FormatError):
        parse_vkey("rekor.sigstore.dev+12345678+AwEB")  # type 0x03
    with pytest.raises(FormatError):
        parse_vkey("remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")


def test_signing_reproduces_the_go_signature() -> None:
    """Ed25519 is deterministic: the board's signer must produce Go's bytes exactly."""
    signer = peter_signer()
    assert signer.vkey() == PETER_VKEY
    assert signer.sign(GO_TEXT).render() == GO_TEXT + "\n" + PETER_SIG


def test_go_signed_notes_verify() -> None:
    """TestOpen: a note with Peter's and Enoch's signatures verifies against each key; a key
    with no line on the note does not count as verified."""
    note = parse_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG)
    assert note.text == GO_TEXT
    assert [(s.name, s.key_hash.hex()) for s in note.signatures] == [
        ("PeterNeumann", "c74f20a3"),
        ("EnochRoot", "af0cfe78"),
    ]
    assert verify_note_signature(note, parse_vkey(PETER_VKEY))
    assert verify_note_signature(note, parse_vkey(ENOCH_VKEY))
    assert not verify_note_signature(parse_note(GO_TEXT + "\n" + PETER_SIG), parse_vkey(ENOCH_VKEY))
    assert note.render() == GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG


def test_go_malformed_notes_are_refused() -> None:
    """TestOpen's bad messages, and more than 100 signatures, are malformed."""
    text = GO_TEXT
    bad = [
        text,
        text + "\n",
        text + "\n" + PETER_SIG[:-1],
        "\x01" + text + "\n" + PETER_SIG,
        "\udcff" + text + "\n" + PETER_SIG,  # a byte that is not UTF-8 (surrogateescape)
        text + "\n" + f"{EM} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2"
        "pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        text + "\n" + PETER_SIG + "Unexpected line.\n",
        text + "\n" + PETER_SIG * 101,
        text + "\n" + f"{EM} PeterNeumann x08g\n",  # 3 bytes: no room for key ID + signature
        text + "\n" + "- PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2"
        "pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",  # a hyphen, not an em dash
    ]
    for msg in bad:
        with pytest.raises(FormatError):
            parse_note(msg)


def test_tampered_go_notes_fail() -> None:
    """A changed text, a changed signature or a wrong key hash never verifies."""
    peter = parse_vkey(PETER_VKEY)
    changed = parse_note(GO_TEXT.replace("answer", "answeR") + "\n" + PETER_SIG)
    assert not verify_note_signature(changed, peter)
    # Go's case: four base64 characters inserted into the signature (byte 60 of the line).
    at = len(PETER_SIG.encode()[:60].decode())
    longer = parse_note(GO_TEXT + "\n" + PETER_SIG[:at] + "ABCD" + PETER_SIG[at:])
    assert not verify_note_signature(longer, peter)
    # A valid line next to a broken line by the same key: the whole note is rejected.
    sig = parse_note(GO_TEXT + "\n" + PETER_SIG).signatures[0]
    broken = NoteSignature(sig.name, sig.key_hash, bytes(64))
    assert not verify_note_signature(Note(GO_TEXT, (sig, broken)), peter)
    # Same name, other key hash: not this key's line, so nothing verifies.
    other_hash = Note(GO_TEXT, (NoteSignature(sig.name, b"\x00\x00\x00\x00", sig.sig),))
    assert not verify_note_signature(other_hash, peter)
    # A key with the right name and hash but other key material (a forged vkey) fails.
    forged = VerifierKey(peter.name, peter.key_hash, peter.alg, parse_vkey(ENOCH_VKEY).public)
    assert not verify_note_signature(parse_note(GO_TEXT + "\n" + PETER_SIG), forged)
    with pytest.raises(ValueError):
        verify_note_signature(changed, peter_signer().cosign_key)


# ----- cosignature/v1 ----------------------------------------------------------------------


def test_cosignature_timestamp_vector() -> None:
    """transparency-dev/formats note/note_cosigv1_test.go (TestCosignatureTimestamp): the
    signature's first 8 bytes after the key ID are the big-endian timestamp 1727964367."""
    raw = base64.b64decode(
        "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDc"
        "FiEBYJXORmnFBOBA=="
    )
    assert cosignature_timestamp(raw[4:]) == 1727964367
    wrong_type = base64.b64decode(
        "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY="
    )
    with pytest.raises(FormatError):
        cosignature_timestamp(wrong_type[4:])


ROOT = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")


def log_and_peer() -> tuple[NoteSigner, NoteSigner]:
    return (
        NoteSigner("nvr.example/board-a", Ed25519PrivateKey.generate()),
        NoteSigner("nvr.example/board-b", Ed25519PrivateKey.generate()),
    )


def test_cosignature_round_trip_and_signed_message() -> None:
    """The cosignature signs "cosignature/v1\\ntime T\\n" + the whole checkpoint text, and
    survives render and parse."""
    log, peer = log_and_peer()
    cp = Checkpoint("nvr.example/board-a", 8, ROOT, ("ext line",))
    signed = log.sign(cp.body())
    cosigned = peer.cosign(signed, cp, 1700000000)
    note = parse_note(cosigned.render())
    assert note == cosigned
    assert verify_note_signature(note, parse_vkey(log.vkey()))
    assert verify_cosignature(note, parse_vkey(peer.cosign_vkey())) == 1700000000
    line = note.signatures[-1]
    assert line.key_hash == peer.cosign_key.key_hash != peer.note_key.key_hash
    assert cosignature_timestamp(line.sig) == 1700000000
    msg = b"cosignature/v1\ntime 1700000000\n" + cp.body().encode()
    Ed25519PublicKey.from_public_bytes(peer.public).verify(line.sig[8:], msg)
    # the same key pair's other type does not stand in for the cosignature
    assert not verify_note_signature(note, parse_vkey(peer.vkey()))
    # cosigning again replaces this cosigner's line, keeps the others
    again = peer.cosign(note, cp, 1700000100)
    assert len(again.signatures) == 2
    assert verify_cosignature(again, parse_vkey(peer.cosign_vkey())) == 1700000100


def test_tampered_cosignatures_fail() -> None:
    """A changed timestamp, checkpoint, key or key hash gives None, never a time."""
    log, peer = log_and_peer()
    cp = Checkpoint("nvr.example/board-a", 8, ROOT)
    note = peer.cosign(log.sign(cp.body()), cp, 1700000000)
    key = parse_vkey(peer.cosign_vkey())
    assert verify_cosignature(note, key) == 1700000000
    log_line, line = note.signatures
    moved = NoteSignature(line.name, line.key_hash, (1700000001).to_bytes(8, "big") + line.sig[8:])
    assert verify_cosignature(Note(note.text, (log_line, moved)), key) is None
    other_cp = Checkpoint("nvr.example/board-a", 7, ROOT).body()
    assert verify_cosignature(Note(other_cp, note.signatures), key) is None
    other_key = parse_vkey(log_and_peer()[1].cosign_vkey())
    assert verify_cosignature(note, other_key) is None
    forged = VerifierKey(key.name, key.key_hash, key.alg, log.public)
    assert verify_cosignature(note, forged) is None
    rehashed = NoteSignature(line.name, b"\x00\x00\x00\x00", line.sig)
    assert verify_cosignature(Note(note.text, (log_line, rehashed)), key) is None
    assert verify_cosignature(Note("not a checkpoint\n", (line,)), key) is None
    with pytest.raises(ValueError):
        verify_cosignature(note, parse_vkey(peer.vkey()))
    with pytest.raises(ValueError):
        peer.cosign(note, Checkpoint("nvr.example/board-a", 9, ROOT), 1)
    with pytest.raises(ValueError):
        peer.cosign(note, cp, 2**63)


def test_signer_refuses_text_that_reads_as_a_cosigned_message() -> None:
    """One key pair signs both types; a note text shaped like a cosigned message is refused
    so a note signature can never double as a cosignature."""
    log, _ = log_and_peer()
    with pytest.raises(FormatError):
        log.sign("cosignature/v1\ntime 1\nnvr.example/x\n0\n" + "A" * 43 + "=\n")
    with pytest.raises(FormatError):
        log.sign("no final newline")


# ----- checkpoints and round trips ---------------------------------------------------------

origins = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="+"),
    min_size=1,
    max_size=30,
)
ext_lines = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)


@settings(max_examples=100, deadline=None)
@given(
    origins,
    st.integers(0, 2**64),
    st.binary(min_size=32, max_size=32),
    st.lists(ext_lines, max_size=3),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, exts: list[str]) -> None:
    """parse(body(x)) == x, and the body is the exact C2SP text."""
    cp = Checkpoint(origin, size, root, tuple(exts))
    assert parse_checkpoint(cp.body()) == cp
    expected = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
    assert cp.body() == expected + "".join(e + "\n" for e in exts)


@settings(max_examples=30, deadline=None)
@given(origins, st.integers(0, 2**40), st.binary(min_size=32, max_size=32), st.data())
def test_note_round_trip(origin: str, size: int, root: bytes, data: st.DataObject) -> None:
    """parse(render(x)) == x for notes with several signers and cosigners."""
    log, peer = log_and_peer()
    cp = Checkpoint(origin, size, root)
    note = log.sign(cp.body())
    if data.draw(st.booleans(), label="cosign"):
        note = peer.cosign(note, cp, data.draw(st.integers(0, 2**63 - 1), label="t"))
    assert parse_note(note.render()) == note
    assert verify_note_signature(parse_note(note.render()), parse_vkey(log.vkey()))


def test_malformed_checkpoints_are_refused() -> None:
    """Sizes with leading zeroes or signs, short roots, empty lines, no final newline."""
    root = base64.b64encode(ROOT).decode()
    for text in (
        f"o\n8\n{root}",
        f"o\n08\n{root}\n",
        f"o\n+8\n{root}\n",
        f"o\n 8\n{root}\n",
        f"o\n8_0\n{root}\n",
        f"o\n\u0668\n{root}\n",  # an Arabic-Indic digit that int() would accept
        f"\n8\n{root}\n",
        f"o\n8\n{root[:-4]}\n",
        f"o\n8\n{root}\n\next\n",
        "o\n8\n",
        f"o\n8\n{root.rstrip('=')}\n",
    ):
        with pytest.raises(FormatError):
            parse_checkpoint(text)
    assert parse_checkpoint(f"o\n0\n{root}\n").size == 0
    with pytest.raises(FormatError):
        Checkpoint("o", -1, ROOT)
    with pytest.raises(FormatError):
        Checkpoint("o", 1, ROOT[:31])
    with pytest.raises(FormatError):
        Checkpoint("o\nx", 1, ROOT)


def test_fingerprint_is_short_and_tied_to_the_vkey() -> None:
    """The fingerprint a person compares is 16 hex digits of SHA-256 of the vkey text."""
    key = parse_vkey(PETER_VKEY)
    fp = key_fingerprint(key)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp != key_fingerprint(parse_vkey(ENOCH_VKEY))


# ----- the signing key file ----------------------------------------------------------------


def test_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    """First use makes a 0600 raw seed file; later uses read the same key; no temp is left."""
    path = tmp_path / "evidence.key"
    key = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_size == 32
    inode = path.stat().st_ino
    again = load_or_create_key(path)
    assert path.stat().st_ino == inode
    signer_a, signer_b = NoteSigner("n", key), NoteSigner("n", again)
    assert signer_a.vkey() == signer_b.vkey()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence.key"]


def test_unsafe_or_broken_key_files_are_refused(tmp_path: Path) -> None:
    """A group/world-readable key, a symlink or a file that is not a seed is refused, and the
    file is left as it was (never replaced by a fresh key)."""
    path = tmp_path / "evidence.key"
    load_or_create_key(path)
    before = path.read_bytes()
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="0644"):
        load_or_create_key(path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError):
        load_or_create_key(path)
    assert path.read_bytes() == before
    short = tmp_path / "short.key"
    fd = os.open(short, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x" * 31)
    os.close(fd)
    with pytest.raises(KeyFileError, match="31 bytes"):
        load_or_create_key(short)
    link = tmp_path / "link.key"
    path.chmod(0o600)
    link.symlink_to(path)
    with pytest.raises(KeyFileError):
        load_or_create_key(link)


# ----- the verifier stands alone -----------------------------------------------------------


def test_verifier_imports_nothing_from_the_firmware(tmp_path: Path) -> None:
    """Copied alone next to nothing but cryptography, in an isolated interpreter, the verifier
    imports and checks an inclusion proof, as an export's verify_export.py will."""
    shutil.copy(verifier.__file__, tmp_path / "verify_export.py")
    site = str(Path(cryptography.__file__).resolve().parent.parent)
    leaves = [leaf_hash(bytes([i])) for i in range(3)]
    tree = MerkleTree(MemoryNodes())
    tree.append(leaves)
    proof = [h.hex() for h in tree.inclusion_proof(2, 3)]
    script = textwrap.dedent(
        f"""
        import sys
        import verify_export as v
        assert not any(m.startswith("firmware") for m in sys.modules), "firmware imported"
        proof = [bytes.fromhex(h) for h in {proof!r}]
        leaf = bytes.fromhex({leaves[2].hex()!r})
        root = bytes.fromhex({tree.root().hex()!r})
        assert v.verify_inclusion(leaf, 2, 3, proof, root)
        assert not v.verify_inclusion(leaf, 1, 3, proof, root)
        assert v.main(["--help"]) == 0
        print("ok")
        """
    )
    # -I ignores PYTHONPATH and -S skips site-packages: the standard library plus these two.
    path = [str(tmp_path), site]
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {path!r}\n{script}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    source = (tmp_path / "verify_export.py").read_text()
    assert "firmware" not in "".join(
        line for line in source.splitlines() if line.lstrip().startswith(("import", "from"))
    )
