"""The signing side of the evidence layer: this board's Ed25519 key, its note signatures
(C2SP signed-note, type 0x01) on its own checkpoints, and its cosignatures (C2SP
tlog-cosignature v1, type 0x04) on the peer board's checkpoints.

One key pair serves both roles; the two signature types have different key IDs and the
cosigned message starts with "cosignature/v1\\n", a first line `sign` refuses, so a note
signature can never be taken for a cosignature or the other way round.

The key file is the raw 32-byte Ed25519 seed (RFC 8032 private key), mode 0600."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.evidence.verifier import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    COSIGNATURE_HEADER,
    MAX_TIMESTAMP,
    Checkpoint,
    FormatError,
    Note,
    NoteSignature,
    VerifierKey,
    cosigned_message,
    key_hash,
)
from firmware.recorder.segment_file import fsync_dir

SEED_SIZE = 32


class KeyFileError(Exception):
    """The signing key file is unsafe (readable by others) or not a key."""


class NoteSigner:
    """Signs notes and cosigns checkpoints as `name` with one Ed25519 key pair."""

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        self.name = name
        self._private = private
        self.public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.note_key = VerifierKey(
            name, key_hash(name, ALG_ED25519, self.public), ALG_ED25519, self.public
        )
        self.cosign_key = VerifierKey(
            name,
            key_hash(name, ALG_COSIGNATURE_V1, self.public),
            ALG_COSIGNATURE_V1,
            self.public,
        )
        NoteSignature(name, self.note_key.key_hash, b"\x00")  # rejects an invalid key name

    def vkey(self) -> str:
        """The verifier key of this board's note signatures (type 0x01)."""
        return self.note_key.vkey()

    def cosign_vkey(self) -> str:
        """The verifier key of this board's cosignatures (type 0x04, same key pair)."""
        return self.cosign_key.vkey()

    def sign(self, text: str) -> Note:
        """A note of `text` signed by this board (Ed25519 over the text, type 0x01)."""
        if text.startswith(COSIGNATURE_HEADER):
            raise FormatError("refusing to note-sign a text that reads as a cosigned message")
        Note(text, ())  # validates the text before anything is signed
        sig = self._private.sign(text.encode("utf-8"))
        return Note(text, (NoteSignature(self.name, self.note_key.key_hash, sig),))

    def cosign(self, note: Note, checkpoint: Checkpoint, timestamp: int) -> Note:
        """`note` with this board's cosignature/v1 line added (replacing an earlier one by the
        same key). The caller has checked the checkpoint's signature and consistency; the note
        text must be exactly `checkpoint.body()`."""
        if note.text != checkpoint.body():
            raise ValueError("the note text is not the checkpoint being cosigned")
        if isinstance(timestamp, bool) or not 0 <= timestamp <= MAX_TIMESTAMP:
            raise ValueError(f"cosignature timestamp {timestamp!r} is outside 0..2^63-1")
        sig = self._private.sign(cosigned_message(note.text, timestamp))
        line = NoteSignature(
            self.name, self.cosign_key.key_hash, timestamp.to_bytes(8, "big") + sig
        )
        kept = tuple(
            s
            for s in note.signatures
            if not (s.name == self.name and s.key_hash == self.cosign_key.key_hash)
        )
        return Note(note.text, (*kept, line))


def read_key(path: Path) -> Ed25519PrivateKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise KeyFileError(f"cannot open signing key {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"signing key {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"signing key {path} has mode {st.st_mode & 0o777:04o}; it must be readable "
                f"by its owner only (chmod 600), refusing to use it"
            )
        data = os.read(fd, SEED_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) != SEED_SIZE:
        raise KeyFileError(
            f"signing key {path} is {len(data)} bytes, not a {SEED_SIZE}-byte Ed25519 seed"
        )
    return Ed25519PrivateKey.from_private_bytes(data)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """This board's signing key: read from `path` (raw 32-byte Ed25519 seed, mode 0600), or
    made at first use. A new key is written to a 0600 temporary file in the same directory
    (O_EXCL), fsynced, linked into place (never over an existing key: if another process got
    there first, its key is used) and the directory fsynced.

    Raises KeyFileError for a key file readable by group or others, a symlink, or a file that
    is not a 32-byte seed."""
    path = Path(path)
    if os.path.lexists(path):
        return read_key(path)
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(seed)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # an atomic rename that refuses to replace an existing key
        except FileExistsError:
            return read_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return private
