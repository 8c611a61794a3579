"""Advert wire format for the pair election.

Fixed-size big-endian layout so a decoder never has to trust a length field from the wire
before the HMAC is checked (all offsets in bytes):

    0   4  magic b"NVRA"
    4   1  version (2)
    5   1  state (0 init, 1 standby, 2 active)
    6   1  priority (0..255)
    7   1  cameras live on the sender (0..255, saturating)
    8   8  epoch (u64)
    16  8  seq (u64)
    24  4  interval_ms (u32, > 0)
    28  4  health bitmask (u32, see Health)
    32  1  length of pair_id, then 32 bytes pair_id utf-8, zero padded
    65  1  length of board_id, then 32 bytes board_id utf-8, zero padded
    98  1  length of newest_segment, then 96 bytes utf-8, zero padded
    195 32 HMAC-SHA256 over bytes 0..194
    227    total
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntFlag
from typing import Final

MAGIC: Final = b"NVRA"
VERSION: Final = 2
"""Version 2 carries the live camera count where version 1 had a reserved zero byte; both
boards of a pair must speak the same version (a mismatch is dropped and raises an alert)."""
STATES: Final = ("init", "standby", "active")
MAX_ID_BYTES: Final = 32
MAX_SEGMENT_BYTES: Final = 96
U64_MAX: Final = 2**64 - 1
U32_MAX: Final = 2**32 - 1

_BODY = struct.Struct(">4sBBBBQQIIB32sB32sB96s")
_MAC_LEN: Final = hashlib.sha256().digest_size
BODY_SIZE: Final = _BODY.size
WIRE_SIZE: Final = BODY_SIZE + _MAC_LEN


class Health(IntFlag):
    """Faults a board reports; each lowers its effective priority so a sick board hands over."""

    NONE = 0
    RECORDER_UNHEALTHY = 1
    DISK_FAILED = 2
    DISK_FULL = 4
    LAN_DOWN = 8
    UPS_ON_BATTERY = 16
    UPS_LOW = 32
    MIRROR_BEHIND = 64
    SYNC_DOWN = 128
    """The sender's sync cable has no carrier: it is alive although the sync link went dark,
    so the peer must not read the carrier drop as this board's death."""


HEALTH_MASK: Final = int(
    Health.RECORDER_UNHEALTHY
    | Health.DISK_FAILED
    | Health.DISK_FULL
    | Health.LAN_DOWN
    | Health.UPS_ON_BATTERY
    | Health.UPS_LOW
    | Health.MIRROR_BEHIND
    | Health.SYNC_DOWN
)


class AdvertError(ValueError):
    """Raised for any advert that must be ignored; `reason` feeds the drop counters."""

    REASONS: Final = ("short", "magic", "version", "hmac", "malformed")

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown advert error reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _check_text(name: str, value: object, limit: int, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be str")
    raw = value.encode("utf-8")
    if len(raw) > limit:
        raise ValueError(f"{name} longer than {limit} bytes utf-8")
    if not allow_empty and not raw:
        raise ValueError(f"{name} must not be empty")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}..{high}")


@dataclass(frozen=True, slots=True)
class Advert:
    """One heartbeat: who is speaking, in which role, how healthy, and how fresh its data is."""

    pair_id: str
    board_id: str
    priority: int
    state: str
    epoch: int
    seq: int
    interval_ms: int
    health: Health = Health.NONE
    newest_segment: str = ""
    cameras: int = 0
    """Cameras the sender records or holds live: the pair is active where more are live."""
    version: int = VERSION

    def __post_init__(self) -> None:
        # Validate on construction so encode() can never emit something decode() rejects.
        if self.version != VERSION:
            raise ValueError(f"version must be {VERSION}")
        _check_text("pair_id", self.pair_id, MAX_ID_BYTES, allow_empty=False)
        _check_text("board_id", self.board_id, MAX_ID_BYTES, allow_empty=False)
        _check_text("newest_segment", self.newest_segment, MAX_SEGMENT_BYTES, allow_empty=True)
        _check_int("priority", self.priority, 0, 255)
        _check_int("cameras", self.cameras, 0, 255)
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        _check_int("epoch", self.epoch, 0, U64_MAX)
        _check_int("seq", self.seq, 0, U64_MAX)
        _check_int("interval_ms", self.interval_ms, 1, U32_MAX)
        _check_int("health", int(self.health), 0, HEALTH_MASK)
        if int(self.health) & ~HEALTH_MASK:
            raise ValueError("health has unknown bits")
        object.__setattr__(self, "health", Health(int(self.health)))


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def encode(advert: Advert, key: bytes) -> bytes:
    """Serialize and sign; the HMAC covers every byte so no field can be altered in transit."""
    pair = advert.pair_id.encode("utf-8")
    board = advert.board_id.encode("utf-8")
    newest = advert.newest_segment.encode("utf-8")
    body = _BODY.pack(
        MAGIC,
        advert.version,
        STATES.index(advert.state),
        advert.priority,
        advert.cameras,
        advert.epoch,
        advert.seq,
        advert.interval_ms,
        int(advert.health),
        len(pair),
        pair,
        len(board),
        board,
        len(newest),
        newest,
    )
    return body + _mac(key, body)


def _text(length: int, field: bytes, limit: int) -> str:
    if length > limit:
        raise ValueError("length out of range")
    if any(field[length:]):
        raise ValueError("padding not zero")
    return field[:length].decode("utf-8")


def decode(data: bytes, key: bytes) -> Advert:
    """Parse and authenticate; any problem becomes AdvertError so callers need one except."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AdvertError("malformed", "not bytes")
    data = bytes(data)
    if len(data) < len(MAGIC) + 1:
        raise AdvertError("short", f"{len(data)} bytes")
    if data[: len(MAGIC)] != MAGIC:
        raise AdvertError("magic")
    if data[len(MAGIC)] != VERSION:
        raise AdvertError("version", str(data[len(MAGIC)]))
    if len(data) < WIRE_SIZE:
        raise AdvertError("short", f"{len(data)} bytes")
    if len(data) > WIRE_SIZE:
        raise AdvertError("malformed", f"{len(data)} bytes, expected {WIRE_SIZE}")
    body, mac = data[:BODY_SIZE], data[BODY_SIZE:]
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise AdvertError("hmac")
    try:
        (
            _magic,
            version,
            state,
            priority,
            cameras,
            epoch,
            seq,
            interval_ms,
            health,
            pair_len,
            pair,
            board_len,
            board,
            newest_len,
            newest,
        ) = _BODY.unpack(body)
        if state >= len(STATES):
            raise ValueError("unknown state")
        if health & ~HEALTH_MASK:
            raise ValueError("unknown health bits")
        return Advert(
            version=version,
            pair_id=_text(pair_len, pair, MAX_ID_BYTES),
            board_id=_text(board_len, board, MAX_ID_BYTES),
            priority=priority,
            state=STATES[state],
            epoch=epoch,
            seq=seq,
            interval_ms=interval_ms,
            health=Health(health),
            newest_segment=_text(newest_len, newest, MAX_SEGMENT_BYTES),
            cameras=cameras,
        )
    except (ValueError, struct.error) as exc:  # UnicodeDecodeError is a ValueError
        raise AdvertError("malformed", str(exc)) from exc
