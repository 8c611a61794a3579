"""What a board decides when the peer offers its newest checkpoint for cosigning.

Sans-IO: the offer and `now` in, a verdict out. A board cosigns a checkpoint of the peer's log
only if it is signed by the key it pinned for that log and the new tree contains the last tree
it cosigned (a consistency proof). A peer whose log was truncated or rewritten, even re-signed
with its own key, then cannot get a cosignature: what this board holds contradicts it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from firmware.evidence.note import NoteSigner
from firmware.evidence.verifier import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    FormatError,
    Note,
    VerifierKey,
    key_hash,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    verify_consistency,
    verify_cosignature,
    verify_note_signature,
)


class Problem(StrEnum):
    MALFORMED = "malformed"
    """The offer does not parse: a buggy or hostile peer, not evidence of tampering."""
    KEY_CHANGED = "key-changed"
    """The peer's log is signed by another key than the one pinned: a new log in its place."""
    BAD_SIGNATURE = "bad-signature"
    SHRANK = "shrank"
    """The peer's tree is smaller than one this board cosigned: its log was truncated."""
    FORKED = "forked"
    """The peer's tree does not contain the one this board cosigned: its log was rewritten."""


TAMPER = frozenset({Problem.KEY_CHANGED, Problem.BAD_SIGNATURE, Problem.SHRANK, Problem.FORKED})
"""Problems that mean a log's history was changed (critical alert on both boards)."""


@dataclass(frozen=True)
class Held:
    """The newest checkpoint of the peer's log that this board cosigned."""

    checkpoint: Checkpoint
    note: str
    """The signed note as cosigned (the peer's signature and this board's cosignature)."""


@dataclass(frozen=True)
class Offer:
    """What the peer sends: its newest signed checkpoint and a consistency proof from the
    size this board holds, with the verifier keys it signs with."""

    note: str
    proof: tuple[bytes, ...]
    vkey: str


@dataclass(frozen=True)
class Cosigned:
    held: Held
    pin: VerifierKey | None
    """The key to pin: set on the first offer (the pair's authenticated channel vouches)."""


@dataclass(frozen=True)
class Unchanged:
    """The same tree as held: nothing to cosign again."""


@dataclass(frozen=True)
class Refused:
    problem: Problem
    text: str


Verdict = Cosigned | Unchanged | Refused


def judge(
    offer: Offer, held: Held | None, pinned: VerifierKey | None, signer: NoteSigner, now_s: int
) -> Verdict:
    """Cosign the offered checkpoint, or say why not."""
    try:
        key = parse_vkey(offer.vkey)
        note = parse_note(offer.note)
        cp = parse_checkpoint(note.text)
    except (FormatError, ValueError) as e:
        return Refused(Problem.MALFORMED, f"the peer's checkpoint does not read: {e}")
    if key.alg != ALG_ED25519:
        return Refused(Problem.MALFORMED, "the peer's log key is not an Ed25519 note key")
    if pinned is not None and key != pinned:
        return Refused(
            Problem.KEY_CHANGED,
            f"the peer's log is now signed by key {key.name}+{key.key_hash.hex()}, not by "
            f"{pinned.name}+{pinned.key_hash.hex()} that signed its earlier checkpoints",
        )
    if cp.origin != key.name:
        return Refused(Problem.MALFORMED, f"checkpoint origin {cp.origin!r} is not the key's")
    if not verify_note_signature(note, key):
        return Refused(Problem.BAD_SIGNATURE, "the peer's checkpoint is not signed by its key")
    if held is not None:
        old = held.checkpoint
        if cp.size < old.size:
            return Refused(
                Problem.SHRANK,
                f"the peer's log shrank from {old.size} entries (cosigned) to {cp.size}",
            )
        if cp.size == old.size:
            if cp.root != old.root:
                return Refused(Problem.FORKED, f"the peer's log of {cp.size} entries changed")
            return Unchanged()
        if not verify_consistency(old.size, cp.size, old.root, cp.root, list(offer.proof)):
            return Refused(
                Problem.FORKED,
                f"the peer's log of {cp.size} entries does not contain the {old.size} entries "
                "this board cosigned: its history was rewritten",
            )
    cosigned = signer.cosign(note, cp, now_s)
    return Cosigned(Held(cp, cosigned.render()), key if pinned is None else None)


def cosign_key_of(note_key: VerifierKey) -> VerifierKey:
    """A board cosigns with the key pair its log signs with (C2SP: a type 0x04 key)."""
    pub = note_key.public
    return VerifierKey(note_key.name, key_hash(note_key.name, ALG_COSIGNATURE_V1, pub),
                       ALG_COSIGNATURE_V1, pub)  # fmt: skip


def cosignature_ok(note: Note, peer_key: VerifierKey) -> bool:
    """The cosignature handed back is really by the peer whose log key was pinned."""
    return verify_cosignature(note, cosign_key_of(peer_key)) is not None
