"""Evidence locks: a time range of one camera (or of every camera) kept from retention until
someone releases it, with a reason.

A lock is a catalog row (firmware/catalog.py), carried to the peer by the mirror, so the
standby that takes over keeps the same footage. A lock is released, never deleted: the row
stays with the time and reason of its release. Taking and releasing a lock are audit events
(`evidence-lock`, `evidence-unlock`), and so entries of the board's transparency log.

Times are half-open, as segments are: a lock [start, end) holds a segment [s, e) when
s < end and e > start, so a segment that ends exactly where a lock starts is not held.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from firmware.audit import AuditLog
from firmware.timefmt import iso

REASON_MAX = 200
"""Characters of a reason (a case number, a ticket, a sentence): bounded, as every row is."""
LOCK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LOCK_EVENT = "evidence-lock"
UNLOCK_EVENT = "evidence-unlock"


class LockError(ValueError):
    """A lock that cannot be taken or released as asked; the text says why, in one line."""


@dataclass(frozen=True)
class EvidenceLock:
    id: str
    """Pair-wide: made on one board, the same on the peer (the mirror carries it)."""
    camera: str | None
    """None: every camera."""
    start_us: int
    end_us: int
    reason: str
    created_us: int
    released_us: int | None = None
    release_reason: str | None = None
    changed: int = 0
    """Change counter of this board's catalog: the mirror sends locks changed since the peer
    last asked."""

    @property
    def active(self) -> bool:
        return self.released_us is None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "camera": self.camera,
            "start": iso(self.start_us),
            "end": iso(self.end_us),
            "reason": self.reason,
            "created": iso(self.created_us),
            "released": iso(self.released_us),
            "release_reason": self.release_reason,
            "active": self.active,
        }


@dataclass(frozen=True)
class LockHold:
    """What active locks keep on this disk now."""

    locks: int
    segments: int
    bytes: int
    past_retention: int = 0
    """Of those segments, how many retention would have deleted for age by now."""

    def to_json(self) -> dict:
        return {
            "active": self.locks,
            "held_segments": self.segments,
            "held_bytes": self.bytes,
            "held_past_retention": self.past_retention,
        }

    def text(self) -> str:
        return (
            f"evidence locks hold {self.segments} segments, {self.bytes} bytes "
            f"({self.locks} active locks; {self.past_retention} segments past retention)"
        )

    def freeing_note(self) -> str:
        """For a disk alert: how much the locks hold, and that releasing them frees it."""
        if not self.bytes:
            return ""
        return (
            f"; evidence locks hold {self.bytes / 1e6:.1f} MB ({self.segments} segments) "
            "that retention may not delete: releasing them frees it (nvr locks, nvr unlock ID)"
        )


NO_HOLD = LockHold(0, 0, 0)


def overlaps(lock: EvidenceLock, camera: str, start_us: int, end_us: int) -> bool:
    """The lock's range and camera cover some of [start_us, end_us) of `camera`, released or
    not (see `holds`)."""
    if lock.camera is not None and lock.camera != camera:
        return False
    return start_us < lock.end_us and end_us > lock.start_us


def holds(lock: EvidenceLock, camera: str, start_us: int, end_us: int) -> bool:
    """Retention may not delete that footage because of this lock: active and overlapping."""
    return lock.active and overlaps(lock, camera, start_us, end_us)


def check_reason(reason: str, what: str = "reason") -> str:
    """The reason as stored: stripped, not empty, one printable line, bounded."""
    text = reason.strip()
    if not text:
        raise LockError(f"{what}: empty; say why (a case number, a ticket, a sentence)")
    if len(text) > REASON_MAX:
        raise LockError(f"{what}: {len(text)} characters, at most {REASON_MAX}")
    if not text.isprintable():
        raise LockError(f"{what}: one line of printable text, no control characters")
    return text


def validate(
    camera: str | None,
    start_us: int,
    end_us: int,
    reason: str,
    cameras: Collection[str] | None = None,
) -> str:
    """Raises LockError with what is wrong; returns the reason as stored. `cameras`: the
    names a lock may name (the config's, and those with footage); None skips that check."""
    if start_us >= end_us:
        raise LockError(f"end ({iso(end_us)}) is not after start ({iso(start_us)})")
    if start_us < 0:
        raise LockError(f"start ({start_us} µs) is before 1970")
    if camera is not None and cameras is not None and camera not in cameras:
        known = ", ".join(sorted(cameras)) or "none"
        raise LockError(f"no camera named {camera!r} (cameras: {known})")
    return check_reason(reason)


def new_lock_id() -> str:
    """Short enough to type into `nvr unlock`, random enough to be unique across the pair."""
    return "lk-" + secrets.token_hex(4)


def make_lock(
    camera: str | None,
    start_us: int,
    end_us: int,
    reason: str,
    now_us: int,
    cameras: Collection[str] | None = None,
) -> EvidenceLock:
    text = validate(camera, start_us, end_us, reason, cameras)
    return EvidenceLock(new_lock_id(), camera, start_us, end_us, text, now_us)


def parse_local(text: str, now_us: int) -> int:
    """A time as the console takes it: "last N minutes" (or hours), "now", or ISO 8601 where a
    time without a zone is this board's local time. Raises LockError."""
    t = text.strip().lower()
    if t == "now":
        return now_us
    m = re.fullmatch(r"(?:last\s+)?(\d{1,6})\s*(m|min|mins|minutes?|h|hours?)(?:\s+ago)?", t)
    if m:
        n = int(m.group(1)) * (3600 if m.group(2).startswith("h") else 60)
        return now_us - n * 1_000_000
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise LockError(
            f"{text.strip()[:40]!r}: not a time (ISO 8601 like 2026-11-30T14:05, "
            "or 'last 30 minutes')"
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    return round(dt.timestamp() * 1_000_000)


def lock_fields(lock: EvidenceLock, source: str) -> dict[str, object]:
    """The `evidence-lock` audit event's fields; source: cli, api or console."""
    return {"id": lock.id, "camera": lock.camera, "start": iso(lock.start_us),
            "end": iso(lock.end_us), "reason": lock.reason, "source": source}  # fmt: skip


def release_fields(lock: EvidenceLock, source: str) -> dict[str, object]:
    """The `evidence-unlock` audit event's fields."""
    return {"id": lock.id, "reason": lock.release_reason, "source": source}


def audit_lock(audit: AuditLog, lock: EvidenceLock, source: str, now_us: int) -> None:
    audit.append(now_us, LOCK_EVENT, **lock_fields(lock, source))


def audit_release(audit: AuditLog, lock: EvidenceLock, source: str, now_us: int) -> None:
    audit.append(now_us, UNLOCK_EVENT, **release_fields(lock, source))
