"""What the mirror feed carries, defined once for both ends: catalog rows as frozen dataclasses
whose field names are the JSON names, with the run named by its pair-wide uid instead of this
board's row id, and the path left to the receiver's own layout.

The serving board encodes with `to_json`; the fetching board decodes an authenticated answer
once with `decode_page`, and everything after works on the dataclasses. The peer is not trusted
blindly: every name, id and number must follow the rules of this board's own rows, so nothing
it sends can name a path outside the data directory or overflow the catalog. Both boards of a pair
speak this format, so a field's JSON name never changes; fields a newer peer adds are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, TypeAdapter, ValidationError

from firmware.catalog import Run, Segment, run_uid, segment_id
from firmware.config import NAME
from firmware.evidence.locks import LOCK_ID, REASON_MAX, EvidenceLock
from firmware.mirror.plan import PeerCamera, Summary

FEED_PATH = "/mirror/v1/feed"
SEGMENT_PATH = "/mirror/v1/segments/"
FEED_LIMIT = 500
"""Rows of each kind in one feed answer."""

# What a row from the peer may hold: the rules this board's own rows follow. Names become
# directory names and ids file names, so a row that breaks them is refused at this edge.
TEXT_MAX = 64
ROW_MAX_BYTES = 2048
"""A segment row with its run, every field at its longest, encoded: well under this."""
FEED_CAMERAS_MAX = 1024
LOCK_FEED_LIMIT = 50
"""Evidence locks in one feed answer: few, and each may carry two long reasons."""
LOCK_ROW_MAX_BYTES = 4096
"""A lock row with both reasons at their longest, every character escaped: under this."""
MAX_FEED_BYTES = (
    FEED_LIMIT * 2 * ROW_MAX_BYTES
    + LOCK_FEED_LIMIT * LOCK_ROW_MAX_BYTES
    + FEED_CAMERAS_MAX * 128
    + 4096
)
"""The longest feed answer a peer can send (FEED_LIMIT segments and runs, LOCK_FEED_LIMIT
locks): what the fetching board reads at most, before the answer's MAC is checked."""


def _name(v: str) -> str:
    if not NAME.fullmatch(v):
        raise ValueError("not a board or camera name (1-63 letters, digits, '-' or '_')")
    return v


def parse_segment_id(sid: str) -> tuple[str, int, str] | None:
    """(camera, start µs, origin) of an id as `segment_id` makes them, or None."""
    parts = sid.split(".")
    if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit():
        return None
    camera, ms, origin = parts
    if not (NAME.fullmatch(camera) and NAME.fullmatch(origin)) or len(ms) > 18:
        return None
    return camera, int(ms) * 1000, origin


def _sid(v: str) -> str:
    if parse_segment_id(v) is None:
        raise ValueError("not a segment id (<camera>.<start ms>.<board>)")
    return v


Name = Annotated[str, AfterValidator(_name)]
SegmentId = Annotated[str, AfterValidator(_sid)]
Micros = Annotated[int, Field(ge=0, lt=1 << 62)]
Count = Annotated[int, Field(ge=0, lt=1 << 62)]
MediaMicros = Annotated[int, Field(gt=-(1 << 62), lt=1 << 62)]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX, pattern=r"^[\x20-\x7e]*$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _printable(v: str) -> str:
    if not v.isprintable():
        raise ValueError("not one line of printable text")
    return v


LockId = Annotated[str, StringConstraints(pattern=LOCK_ID.pattern)]
Reason = Annotated[
    str, StringConstraints(min_length=1, max_length=REASON_MAX), AfterValidator(_printable)
]
Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{0,32}$")]


class FeedError(ValueError):
    """A feed answer that cannot be read at all (not JSON, or its cursors are missing)."""


@dataclass(frozen=True, slots=True)
class FeedRun:
    """A run as the peer has it."""

    uid: str
    camera: Name
    origin: Name
    start_us: Micros
    end_us: Micros
    end_reason: Text | None
    continues: SegmentId | None

    @classmethod
    def of(cls, run: Run) -> FeedRun:
        return cls(run.uid, run.camera, run.origin, run.start_us, run.end_us, run.end_reason,
                   run.continues)  # fmt: skip

    def to_run(self) -> Run:
        """For Catalog.merge_run, which finds or makes the local row by uid (id 0: unknown)."""
        return Run(0, self.camera, self.origin, self.start_us, self.end_us, self.end_reason,
                   self.uid, self.continues)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FeedSegment:
    """A committed segment of the peer's, with its run."""

    id: str
    camera: Name
    start_us: Micros
    end_us: Micros
    media_start_us: MediaMicros
    media_end_us: MediaMicros
    frames: Count
    bytes: Count
    sha256: Sha256
    origin: Name
    codec: Text
    salvaged: bool
    last_frame: Fingerprint = ""
    """Empty from a peer whose firmware predates takeover by frame content."""
    run: FeedRun = field(kw_only=True)
    """Last on the wire, as it always was."""

    @classmethod
    def of(cls, seg: Segment, run: Run) -> FeedSegment:
        return cls(seg.id, seg.camera, seg.start_us, seg.end_us, seg.media_start_us,
                   seg.media_end_us, seg.frames, seg.bytes, seg.sha256, seg.origin, seg.codec,
                   seg.salvaged, seg.last_frame, run=FeedRun.of(run))  # fmt: skip

    def to_segment(self, run_id: int, path: str) -> Segment:
        """This board's catalog row: its own run id and its own path."""
        return Segment(self.id, self.camera, run_id, path, self.start_us, self.end_us,
                       self.media_start_us, self.media_end_us, self.frames, self.bytes,
                       self.sha256, self.origin, self.codec, self.salvaged,
                       self.last_frame)  # fmt: skip

    @property
    def summary(self) -> Summary:
        return Summary(self.id, self.camera, self.start_us, self.bytes, self.sha256)

    @property
    def duration_us(self) -> int:
        return self.end_us - self.start_us

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FeedLock:
    """An evidence lock as the peer has it (firmware/evidence/locks.py)."""

    id: LockId
    camera: Name | None
    start_us: Micros
    end_us: Micros
    reason: Reason
    created_us: Micros
    released_us: Micros | None
    release_reason: Reason | None

    @classmethod
    def of(cls, lock: EvidenceLock) -> FeedLock:
        return cls(lock.id, lock.camera, lock.start_us, lock.end_us, lock.reason,
                   lock.created_us, lock.released_us, lock.release_reason)  # fmt: skip

    def to_lock(self) -> EvidenceLock:
        """For Catalog.merge_lock (this board numbers its own change counter)."""
        return EvidenceLock(self.id, self.camera, self.start_us, self.end_us, self.reason,
                            self.created_us, self.released_us, self.release_reason)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One feed answer: rows after the cursors the request gave, and the new cursors."""

    board: str
    segments: tuple[FeedSegment, ...]
    runs: tuple[FeedRun, ...]
    seg: int
    """Segment cursor: the catalog row id of the newest segment in this page."""
    run: int
    """Run cursor: the change counter of the newest run in this page."""
    more: bool
    """A page was full: ask again at once."""
    cameras: Mapping[str, PeerCamera]
    received_us: int | None = None
    sent_us: int | None = None
    """The serving board's wall clock when the request came and when this answer left: with
    the asker's own times they bound the offset of the two clocks (firmware/clockcheck.py).
    None from a peer on older firmware."""
    locks: tuple[FeedLock, ...] = ()
    """Evidence locks made or released after the lock cursor the request gave (none from a
    peer on older firmware)."""
    lock: int = 0
    """Lock cursor: the change counter of the newest lock in this page."""

    def to_json(self) -> dict[str, Any]:
        extra = {"received_us": self.received_us, "sent_us": self.sent_us} | self._locks_json()
        return {
            "board": self.board,
            "segments": [s.to_json() for s in self.segments],
            "runs": [r.to_json() for r in self.runs],
            "seg": self.seg,
            "run": self.run,
            "more": self.more,
            "cameras": {name: asdict(c) for name, c in self.cameras.items()},
        } | {k: v for k, v in extra.items() if v is not None}

    def _locks_json(self) -> dict[str, Any]:
        """Only once the serving board has locks: until then the answer is what older
        firmware sends."""
        if not self.locks and not self.lock:
            return {}
        return {"locks": [lk.to_json() for lk in self.locks], "lock": self.lock}


@dataclass(frozen=True, slots=True)
class _Camera:
    end_us: Micros | None
    recording: bool


@dataclass(frozen=True, slots=True)
class _Head:
    """A feed answer before its rows are read one by one."""

    board: Name
    segments: Annotated[list[Any], Field(max_length=FEED_LIMIT)]
    runs: Annotated[list[Any], Field(max_length=FEED_LIMIT)]
    seg: Count
    run: Count
    more: bool
    cameras: Annotated[dict[Name, _Camera], Field(max_length=FEED_CAMERAS_MAX)]
    received_us: Micros | None = None
    sent_us: Micros | None = None
    locks: Annotated[list[Any], Field(max_length=LOCK_FEED_LIMIT)] = field(default_factory=list)
    lock: Count = 0


_HEAD = TypeAdapter(_Head)
_SEGMENT = TypeAdapter(FeedSegment)
_RUN = TypeAdapter(FeedRun)
_LOCK = TypeAdapter(FeedLock)


def _why(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in e.errors()
    )


def _row_name(raw: object, i: int) -> str:
    rid = (raw.get("id") or raw.get("uid")) if isinstance(raw, dict) else None
    return f"#{i} {rid[:80]!r}" if isinstance(rid, str) else f"#{i}"


def _check_run(r: FeedRun) -> None:
    """What no field can say alone: the uid is the one the run's own facts give."""
    if r.uid != run_uid(r.camera, r.start_us, r.origin):
        raise ValueError("uid: not the run's <camera>.<start µs>.<board>")


def _check_segment(s: FeedSegment) -> None:
    """The id is the one this board would give the same recording (so it is a safe file name
    and names nothing else), and the segment belongs to its run."""
    if s.id != segment_id(s.camera, s.start_us, s.origin):
        raise ValueError("id: not the segment's <camera>.<start ms>.<board>")
    if s.run.camera != s.camera:
        raise ValueError("run.camera: not the segment's camera")
    _check_run(s.run)


def _check_lock(lk: FeedLock) -> None:
    if lk.start_us >= lk.end_us:
        raise ValueError("end_us: not after start_us")


def _refusal(kind: str, raw: object, i: int, why: str) -> str:
    return f"{kind} {_row_name(raw, i)} refused: {why}"


def decode_page(body: bytes) -> tuple[FeedPage, list[str]]:
    """The page, and why each row that does not decode was left out. A malformed row is
    skipped so the rest of the peer's footage still mirrors; a malformed page raises
    FeedError. Nothing else escapes, whatever the body holds."""
    if len(body) > MAX_FEED_BYTES:
        raise FeedError(f"feed answer malformed: longer than {MAX_FEED_BYTES} bytes")
    try:
        head = _HEAD.validate_python(json.loads(body))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, ValidationError, nesting
        why = _why(e) if isinstance(e, ValidationError) else str(e)[:200]
        raise FeedError(f"feed answer malformed: {why}") from None
    refused: list[str] = []
    segments: list[FeedSegment] = []
    runs: list[FeedRun] = []
    locks: list[FeedLock] = []
    for kind, adapter, check, raws, out in (
        ("segment", _SEGMENT, _check_segment, head.segments, segments),
        ("run", _RUN, _check_run, head.runs, runs),
        ("lock", _LOCK, _check_lock, head.locks, locks),
    ):
        for i, raw in enumerate(raws):
            try:
                row = adapter.validate_python(raw)
                check(row)
            except ValidationError as e:
                refused.append(_refusal(kind, raw, i, _why(e)))
            except ValueError as e:
                refused.append(_refusal(kind, raw, i, str(e)))
            else:
                out.append(row)
    cameras = {name: PeerCamera(c.end_us, c.recording) for name, c in head.cameras.items()}
    page = FeedPage(head.board, tuple(segments), tuple(runs), head.seg, head.run, head.more,
                    cameras, head.received_us, head.sent_us, tuple(locks),
                    head.lock)  # fmt: skip
    return page, refused
