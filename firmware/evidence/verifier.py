"""Every check of the evidence layer, in one file that needs only Python and `cryptography`.

This file is copied verbatim into every export as `verify_export.py` and run on a machine that
has nothing of the firmware, so it imports only the standard library and `cryptography`.
The board's `nvr verify` uses the same functions, so there is one implementation of each check.

Formats, followed byte for byte:
- RFC 6962 / RFC 9162 Merkle tree hashing (leaf 0x00, node 0x01, SHA-256), inclusion proof
  verification (RFC 9162 2.1.3.2) and consistency proof verification (RFC 9162 2.1.4.2).
- C2SP signed-note v1 (notes, signature lines, verifier keys "name+hash+base64").
- C2SP tlog-checkpoint v1 (origin, size, base64 root, extension lines).
- C2SP tlog-cosignature v1, Ed25519 type 0x04 (timestamped signature over
  "cosignature/v1\\ntime <ts>\\n" followed by the whole checkpoint text).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
KEY_HASH_SIZE = 4
ED25519_SIG_SIZE = 64
COSIGNATURE_SIZE = 8 + ED25519_SIG_SIZE
MAX_TIMESTAMP = 2**63 - 1
# signed-note: verifiers SHOULD limit the signature count and MUST accept 16; Go's
# golang.org/x/mod/sumdb/note accepts up to 100.
MAX_SIGNATURES = 100

SIG_PREFIX = "\u2014 "  # em dash, space
COSIGNATURE_HEADER = "cosignature/v1\n"

_SIZE_RE = re.compile(r"(?:0|[1-9][0-9]*)\Z", re.ASCII)
_HEX8_RE = re.compile(r"[0-9a-fA-F]{8}\Z", re.ASCII)


class FormatError(ValueError):
    """A note, checkpoint or key that does not follow its specification."""


# ---------------------------------------------------------------------------------------------
# RFC 6962 hashing and proof verification


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 2.1: MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 2.1: an interior node is SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _hashes_ok(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does `proof` show leaf hash `leaf` at `index` in the tree of `size`
    leaves whose root is `root`?

    `size` and `root` must come from one verified checkpoint: the audit path alone does not
    pin the size (leaf 0 of a 3-leaf tree has the same path shape as in a 4-leaf tree)."""
    if not _hashes_ok(leaf, root, *proof):
        return False
    if index < 0 or size <= 0 or index >= size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: does `proof` show the tree of `size2` leaves (root `root2`) extends
    the tree of `size1` leaves (root `root1`)?

    Edge cases: equal sizes need an empty proof and equal roots; size1 == 0 needs an empty
    proof and `root1` equal to the empty-tree hash SHA-256("")."""
    if not _hashes_ok(root1, root2, *proof):
        return False
    if size1 < 0 or size2 < size1:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof and root1 == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


# ---------------------------------------------------------------------------------------------
# Text rules shared by notes and checkpoints


def _b64decode(s: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4): alphabet, padding and canonical form."""
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise FormatError(f"{what}: not standard base64: {s!r}") from e
    if base64.b64encode(raw).decode("ascii") != s:
        raise FormatError(f"{what}: base64 is not in canonical form: {s!r}")
    return raw


def _b64encode(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _check_text(text: str, what: str) -> None:
    """signed-note: valid UTF-8, no ASCII control characters other than newline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FormatError(f"{what}: not valid UTF-8") from e
    for ch in text:
        if ch < " " and ch != "\n":
            raise FormatError(f"{what}: control character {ch!r} (only newline is allowed)")


def _is_valid_name(name: str) -> bool:
    """signed-note: key names are non-empty, with no Unicode spaces and no '+'."""
    if not name or "+" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ch.isspace() for ch in name)


# ---------------------------------------------------------------------------------------------
# C2SP tlog-checkpoint


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint note text: origin, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise FormatError("checkpoint origin must be a non-empty single line")
        _check_text(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise FormatError(f"checkpoint size must be a non-negative integer, not {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise FormatError(f"checkpoint root hash must be {HASH_SIZE} bytes")
        for line in self.extensions:
            if not line or "\n" in line:
                raise FormatError("checkpoint extension lines must be non-empty single lines")
            _check_text(line, "checkpoint extension line")

    def body(self) -> str:
        """The note text: every line, the last one included, ends in a newline."""
        lines = [self.origin, str(self.size), _b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text (the note's text, not the signed note with signatures)."""
    if not text.endswith("\n"):
        raise FormatError("checkpoint text must end with a newline")
    _check_text(text, "checkpoint")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise FormatError(f"checkpoint needs at least 3 lines, has {len(lines)}")
    origin, size_line, root_line, *extensions = lines
    if not origin:
        raise FormatError("checkpoint origin line is empty")
    if not _SIZE_RE.match(size_line):
        raise FormatError(
            f"checkpoint size line {size_line!r} is not a decimal without leading zeroes"
        )
    root = _b64decode(root_line, "checkpoint root hash")
    if len(root) != HASH_SIZE:
        raise FormatError(f"checkpoint root hash is {len(root)} bytes, expected {HASH_SIZE}")
    if any(not line for line in extensions):
        raise FormatError("checkpoint has an empty extension line")
    return Checkpoint(origin, int(size_line), root, tuple(extensions))


# ---------------------------------------------------------------------------------------------
# C2SP signed-note


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID (key hash) and the signature bytes."""

    name: str
    key_hash: bytes
    sig: bytes

    def __post_init__(self) -> None:
        if not _is_valid_name(self.name):
            raise FormatError(f"signature key name {self.name!r} is empty or has a space or '+'")
        if len(self.key_hash) != KEY_HASH_SIZE:
            raise FormatError(f"signature key hash must be {KEY_HASH_SIZE} bytes")
        if not self.sig:
            raise FormatError("signature is empty")

    def line(self) -> str:
        return f"{SIG_PREFIX}{self.name} {_b64encode(self.key_hash + self.sig)}\n"


@dataclass(frozen=True)
class Note:
    """A signed note: its text (ending in a newline) and one or more signatures."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        if not self.text.endswith("\n"):
            raise FormatError("note text must end with a newline")
        _check_text(self.text, "note text")
        if len(self.signatures) > MAX_SIGNATURES:
            raise FormatError(f"note has more than {MAX_SIGNATURES} signatures")

    def render(self) -> str:
        """text, a blank line, one line per signature (a note needs at least one)."""
        if not self.signatures:
            raise FormatError("a note without signatures cannot be rendered")
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def parse_note(data: str) -> Note:
    """Split a signed note into its text and signature lines (no signature is checked here).

    The text is everything up to the last blank line; every signature line is
    "— <name> <base64(key hash || signature)>" and ends in a newline."""
    _check_text(data, "note")
    split = data.rfind("\n\n")
    if split < 0:
        raise FormatError("note has no blank line before its signatures")
    text, block = data[: split + 1], data[split + 2 :]
    if not block:
        raise FormatError("note has no signature lines")
    if not block.endswith("\n"):
        raise FormatError("note does not end with a newline")
    sigs: list[NoteSignature] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise FormatError(f"note signature line does not start with an em dash: {line!r}")
        name, sep, b64 = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or not b64:
            raise FormatError(f"note signature line has no signature: {line!r}")
        if not _is_valid_name(name):
            raise FormatError(f"note signature key name {name!r} is not valid")
        raw = _b64decode(b64, "note signature")
        if len(raw) < KEY_HASH_SIZE + 1:
            raise FormatError("note signature is shorter than a key hash and one byte")
        sigs.append(NoteSignature(name, raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:]))
        if len(sigs) > MAX_SIGNATURES:
            raise FormatError(f"note has more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(sigs))


# ---------------------------------------------------------------------------------------------
# Verifier keys


def key_hash(name: str, alg: int, public: bytes) -> bytes:
    """signed-note key ID: SHA-256(name || 0x0A || alg || public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    """A verifier key: name, key ID, signature type (0x01 note, 0x04 cosignature/v1), key."""

    name: str
    key_hash: bytes
    alg: int
    public: bytes

    def vkey(self) -> str:
        """The "name+hexhash+base64(alg||key)" text form."""
        return f"{self.name}+{self.key_hash.hex()}+{_b64encode(bytes([self.alg]) + self.public)}"


def parse_vkey(s: str) -> VerifierKey:
    """Parse "name+hexhash+base64(alg||pubkey)" and check the key hash and key length."""
    name, sep1, rest = s.partition("+")
    hash16, sep2, key64 = rest.partition("+")
    if not sep1 or not sep2:
        raise FormatError("verifier key is not of the form name+hash+key")
    if not _is_valid_name(name):
        raise FormatError(f"verifier key name {name!r} is not valid")
    if not _HEX8_RE.match(hash16):
        raise FormatError(f"verifier key hash {hash16!r} is not 8 hex digits")
    raw = _b64decode(key64, "verifier key")
    if not raw:
        raise FormatError("verifier key is empty")
    alg, public = raw[0], raw[1:]
    if key_hash(name, alg, public) != bytes.fromhex(hash16):
        raise FormatError(f"verifier key hash {hash16} does not match the key")
    if alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise FormatError(f"verifier key type 0x{alg:02x} is not supported (0x01, 0x04 are)")
    if len(public) != 32:
        raise FormatError(f"Ed25519 verifier key is {len(public)} bytes, expected 32")
    return VerifierKey(name, bytes.fromhex(hash16), alg, public)


def key_fingerprint(key: VerifierKey) -> str:
    """A short fingerprint for people to compare: SHA-256 of the vkey text, first 16 hex."""
    return hashlib.sha256(key.vkey().encode("utf-8")).hexdigest()[:16]


def _ed25519_ok(public: bytes, sig: bytes, msg: bytes) -> bool:
    if len(sig) != ED25519_SIG_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, msg)
    except (InvalidSignature, ValueError):
        return False
    return True


def _matching(note: Note, key: VerifierKey) -> list[NoteSignature]:
    return [s for s in note.signatures if s.name == key.name and s.key_hash == key.key_hash]


def verify_note_signature(note: Note, key: VerifierKey) -> bool:
    """True when the note carries a valid Ed25519 (type 0x01) signature by `key` and no
    signature line claiming to be `key` is invalid (signed-note: reject the whole note then).

    Raises ValueError when `key` is not a type 0x01 key (a configuration mistake)."""
    if key.alg != ALG_ED25519:
        raise ValueError(f"key {key.name} is type 0x{key.alg:02x}, not a note key (0x01)")
    sigs = _matching(note, key)
    msg = note.text.encode("utf-8")
    return bool(sigs) and all(_ed25519_ok(key.public, s.sig, msg) for s in sigs)


def cosigned_message(text: str, timestamp: int) -> bytes:
    """tlog-cosignature v1 Ed25519 signed message: header line, time line, whole note text."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


def cosignature_timestamp(sig: bytes) -> int:
    """The timestamp of a cosignature/v1 signature (without its key hash): u64 big-endian."""
    if len(sig) != COSIGNATURE_SIZE:
        raise FormatError(f"cosignature is {len(sig)} bytes, expected {COSIGNATURE_SIZE}")
    return int.from_bytes(sig[:8], "big")


def verify_cosignature(note: Note, key: VerifierKey) -> int | None:
    """The timestamp of `key`'s valid cosignature/v1 on this checkpoint note, else None.

    None also when the note text is not a checkpoint, when no signature line matches `key`,
    or when any line claiming to be `key` fails (signed-note: reject the whole note then).
    Raises ValueError when `key` is not a type 0x04 key (a configuration mistake)."""
    if key.alg != ALG_COSIGNATURE_V1:
        raise ValueError(f"key {key.name} is type 0x{key.alg:02x}, not a cosignature key (0x04)")
    try:
        parse_checkpoint(note.text)
    except FormatError:
        return None
    sigs = _matching(note, key)
    if not sigs:
        return None
    times: list[int] = []
    for s in sigs:
        if len(s.sig) != COSIGNATURE_SIZE:
            return None
        ts = cosignature_timestamp(s.sig)
        if ts > MAX_TIMESTAMP:
            return None
        if not _ed25519_ok(key.public, s.sig[8:], cosigned_message(note.text, ts)):
            return None
        times.append(ts)
    return max(times)


# ---------------------------------------------------------------------------------------------
# Command line of the export verifier.
# ===== EXPORT CHECK GOES HERE =====
# An export directory (firmware/evidence/export.py writes it): manifest.json, segments/ with
# the files as recorded, this file as verify_export.py, README.txt, maybe view.mp4 (for
# viewing only: never checked). What is proven: each segment file's bytes are the ones whose
# log entry is in the recording board's tree at the checkpoint, and that checkpoint is signed
# by the board key and cosigned by the peer key given in the manifest. What is not: that those
# keys are the boards' (a person compares the printed fingerprints with `nvr status` on each
# board), and the gaps' reasons (the board's statement; only that segments and gaps together
# cover the range is checked).

EXPORT_FORMAT = "nvr-evidence-export/1"
MANIFEST_FILE = "manifest.json"
SEGMENTS_DIR = "segments"
EXIT_PASS, EXIT_FAIL, EXIT_UNUSABLE = 0, 1, 2


class Unusable(Exception):
    """The directory is not an export this verifier can read (no manifest, not JSON)."""


@dataclass(frozen=True)
class ExportReport:
    """The outcome: failures (each one line that says what it means), warnings, key
    fingerprints and what was checked."""

    failures: tuple[str, ...]
    warnings: tuple[str, ...]
    board_fingerprint: str | None
    peer_fingerprint: str | None
    segments: int
    checkpoint_size: int | None
    witnessed: bool

    @property
    def passed(self) -> bool:
        return not self.failures


def _iso(us: int) -> str:
    dt = datetime.fromtimestamp(us / 1e6, tz=timezone.utc)  # noqa: UP017 - Python 3.8+
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _sha256_file(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _load_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST_FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise Unusable(f"{path}: cannot be read ({e.strerror or e}): not an export") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Unusable(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise Unusable(f"{path}: not an export manifest of format {EXPORT_FORMAT}")
    for key, kind in (
        ("camera", str),
        ("start_us", int),
        ("end_us", int),
        ("segments", list),
        ("gaps", list),
        ("checkpoint", dict),
        ("keys", dict),
    ):
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise Unusable(f"{path}: {key!r} is missing or not a {kind.__name__}")
    return manifest


def _check_checkpoint(
    manifest: dict, fail: list[str], warn: list[str], accept_unwitnessed: bool
) -> tuple[Checkpoint | None, str | None, str | None, bool]:
    """The checkpoint, if it is signed by the board key; fingerprints; witnessed."""
    keys = manifest["keys"]
    board_fp = peer_fp = None
    board_key = peer_key = None
    try:
        board_key = parse_vkey(str(keys.get("board")))
        if board_key.alg != ALG_ED25519:
            raise FormatError("the board key is not a note key (type 0x01)")
        board_fp = key_fingerprint(board_key)
    except FormatError as e:
        fail.append(f"keys: the board key does not read: {e}")
    if keys.get("peer_cosign") is not None:
        try:
            peer_key = parse_vkey(str(keys["peer_cosign"]))
            if peer_key.alg != ALG_COSIGNATURE_V1:
                raise FormatError("the peer key is not a cosignature key (type 0x04)")
            # The fingerprint `nvr status` shows: of the same key pair's note key.
            as_note = VerifierKey(
                peer_key.name,
                key_hash(peer_key.name, ALG_ED25519, peer_key.public),
                ALG_ED25519,
                peer_key.public,
            )
            peer_fp = key_fingerprint(as_note)
        except FormatError as e:
            fail.append(f"keys: the peer key does not read: {e}")
            peer_key = None
    cpm = manifest["checkpoint"]
    try:
        note = parse_note(str(cpm.get("note")))
        cp = parse_checkpoint(note.text)
    except FormatError as e:
        fail.append(f"checkpoint: does not read ({e}): nothing in this export can be proven")
        return None, board_fp, peer_fp, False
    if board_key is not None and (
        cp.origin != board_key.name or not verify_note_signature(note, board_key)
    ):
        fail.append(
            "checkpoint: not signed by the board key: the checkpoint or the key in "
            "the manifest was changed"
        )
    witnessed = False
    if peer_key is None:
        why = "no peer key in the manifest"
    elif board_key is not None and peer_key.public == board_key.public:
        why = "the peer key is the recording board's own key"
    elif verify_cosignature(note, peer_key) is None:
        why = "no valid cosignature by the peer key"
    else:
        why, witnessed = "", True
    if not witnessed:
        text = (
            f"checkpoint: not cosigned by the peer ({why}): not witnessed, so a board "
            "that rewrote its own log could have signed it alone"
        )
        (warn if accept_unwitnessed else fail).append(text)
    return cp, board_fp, peer_fp, witnessed


def _check_segment(
    directory: str, i: int, entry: object, manifest: dict, cp: Checkpoint | None, fail: list[str]
) -> bool:
    """One manifest entry: file, hashes, log entry, inclusion proof. True when all hold."""
    if not isinstance(entry, dict):
        fail.append(f"segment #{i}: the manifest entry is not an object")
        return False
    sid = str(entry.get("id", f"#{i}"))
    name = entry.get("file")
    if (
        not isinstance(name, str)
        or not name.startswith(SEGMENTS_DIR + "/")
        or "/" in name[len(SEGMENTS_DIR) + 1 :]
        or name.endswith(("/.", "/.."))
    ):
        fail.append(f"segment {sid}: the manifest names no file under {SEGMENTS_DIR}/")
        return False
    path = os.path.join(directory, *name.split("/"))
    ok = True
    try:
        digest, size = _sha256_file(path)
    except OSError:
        fail.append(f"segment {sid}: {name} is missing from the export")
        digest, size, ok = None, None, False
    try:
        leaf_text = entry["leaf"]
        if not isinstance(leaf_text, str):
            raise TypeError
        leaf_bytes = leaf_text.encode("utf-8")
        leaf = json.loads(leaf_bytes)
        if not isinstance(leaf, dict):
            raise TypeError
    except (KeyError, TypeError, ValueError, UnicodeEncodeError):
        leaf_bytes, leaf = b"", {}
    if digest is not None and leaf and digest != leaf.get("sha256"):
        edited = "; the manifest was edited to match" if digest == entry.get("sha256") else ""
        fail.append(
            f"segment {sid}: the file was changed after recording (its SHA-256 is not the one "
            f"in the board's log{edited})"
        )
        ok = False
    elif digest is not None and not leaf and digest != entry.get("sha256"):
        fail.append(
            f"segment {sid}: the file was changed after recording (its SHA-256 is not the one "
            "in the manifest)"
        )
    if not leaf:
        fail.append(
            f"segment {sid}: not in the board's log (the manifest has no readable log entry for it)"
        )
        return False
    if size is not None and leaf.get("bytes") != size:
        ok = False
    mismatched = [
        k
        for k, v in (
            ("kind", "segment"),
            ("id", entry.get("id")),
            ("camera", manifest["camera"]),
            ("start_us", entry.get("start_us")),
            ("end_us", entry.get("end_us")),
            ("sha256", entry.get("sha256")),
            ("bytes", entry.get("bytes")),
        )
        if leaf.get(k) != v
    ]
    if mismatched:
        fail.append(
            f"segment {sid}: the manifest does not match the board's log entry "
            f"({', '.join(mismatched)} differ)"
        )
        ok = False
    index, proof_b64 = entry.get("leaf_index"), entry.get("proof")
    try:
        if not _is_int(index) or not isinstance(proof_b64, list):
            raise FormatError("no leaf index or proof")
        proof = [_b64decode(str(p), "proof hash") for p in proof_b64]
    except FormatError:
        proof, index = None, None
    if (
        cp is None
        or proof is None
        or not verify_inclusion(leaf_hash(leaf_bytes), index, cp.size, proof, cp.root)
    ):
        fail.append(
            f"segment {sid}: not in the board's log (its entry is not proven to be in "
            "the checkpoint's tree)"
        )
        ok = False
    return ok


def _check_coverage(manifest: dict, spans: list[tuple[int, int]], fail: list[str]) -> None:
    """Segments and listed gaps together cover [start, end): nothing left unexplained."""
    start, end = manifest["start_us"], manifest["end_us"]
    if end <= start:
        fail.append("range: the end is not after the start")
        return
    for g in manifest["gaps"]:
        if (
            not isinstance(g, dict)
            or not _is_int(g.get("start_us"))
            or not _is_int(g.get("end_us"))
            or not isinstance(g.get("reason"), str)
        ):
            fail.append(f"gaps: an entry does not read: {g!r:.80}")
            continue
        spans.append((g["start_us"], g["end_us"]))
    at = start
    for s, e in sorted(spans):
        if s > at and at < end:
            fail.append(
                f"range: {_iso(at)} .. {_iso(min(s, end))} is neither an exported "
                "segment nor a listed gap"
            )
        at = max(at, e)
    if at < end:
        fail.append(
            f"range: {_iso(at)} .. {_iso(end)} is neither an exported segment nor a listed gap"
        )


def verify_export(directory: str, accept_unwitnessed: bool = False) -> ExportReport:
    """Every check of an export directory. Raises Unusable when there is nothing to check."""
    manifest = _load_manifest(directory)
    fail: list[str] = []
    warn: list[str] = []
    cp, board_fp, peer_fp, witnessed = _check_checkpoint(manifest, fail, warn, accept_unwitnessed)
    spans: list[tuple[int, int]] = []
    listed: set[str] = set()
    seen_ids: set[str] = set()
    for i, entry in enumerate(manifest["segments"]):
        if isinstance(entry, dict):
            if isinstance(entry.get("file"), str):
                listed.add(entry["file"])
            if entry.get("id") in seen_ids:
                fail.append(f"segment {entry.get('id')}: listed twice in the manifest")
            seen_ids.add(str(entry.get("id")))
        _check_segment(directory, i, entry, manifest, cp, fail)
        if isinstance(entry, dict) and _is_int(entry.get("start_us")) \
                and _is_int(entry.get("end_us")):  # fmt: skip
            # What the manifest lists covers its range: a failed segment is reported as such,
            # not again as a hole.
            spans.append((entry["start_us"], entry["end_us"]))
    if not manifest["segments"]:
        fail.append("segments: the manifest lists none")
    seg_dir = os.path.join(directory, SEGMENTS_DIR)
    try:
        present = sorted(os.listdir(seg_dir))
    except OSError:
        present = []
    for name in present:
        if f"{SEGMENTS_DIR}/{name}" not in listed:
            fail.append(
                f"{SEGMENTS_DIR}/{name}: not listed in the manifest: nothing proves what it is"
            )
    _check_coverage(manifest, spans, fail)
    return ExportReport(
        tuple(fail),
        tuple(warn),
        board_fp,
        peer_fp,
        len(manifest["segments"]),
        None if cp is None else cp.size,
        witnessed,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `verify_export.py DIR`: 0 PASS, 1 FAIL, 2 not an export."""
    parser = argparse.ArgumentParser(
        prog="verify_export.py",
        description="Check an NVR evidence export offline: Merkle inclusion and consistency "
        "proofs, the recording board's signed checkpoints and the peer board's cosignatures.",
    )
    parser.add_argument(
        "directory", nargs="?", default=".", help="the export directory (default: the current one)"
    )
    parser.add_argument(
        "--accept-unwitnessed",
        action="store_true",
        help="pass a checkpoint the peer board did not cosign (say so in your "
        "report: the recording board alone vouches for it)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_UNUSABLE
    try:
        report = verify_export(args.directory, args.accept_unwitnessed)
    except Unusable as e:
        print(f"UNUSABLE: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    for line in report.failures:
        print(f"FAIL: {line}")
    for line in report.warnings:
        print(f"WARNING: {line}")
    print(f"recording board key fingerprint: {report.board_fingerprint or 'unknown'}")
    print(f"peer board key fingerprint:      {report.peer_fingerprint or 'unknown'}")
    print(
        "  compare both with the keys `nvr status` shows on each board (evidence log), or with "
        "the fingerprints you were given by another channel; this check cannot tell whose keys "
        "they are"
    )
    print(
        f"{report.segments} segments; checkpoint of {report.checkpoint_size} log entries, "
        f"{'cosigned by the peer' if report.witnessed else 'NOT witnessed by the peer'}"
    )
    print("PASS" if report.passed else "FAIL")
    return EXIT_PASS if report.passed else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
