"""What the mirror feed carries, defined once for both ends: catalog rows as frozen dataclasses
whose field names are the JSON names, with the run named by its pair-wide uid instead of this
board's row id, and the path left to the receiver's own layout.

The serving board encodes with `to_json`; the fetching board decodes an authenticated answer
once with `decode_page`, and everything after works on the dataclasses. Both boards of a pair
speak this format, so a field's JSON name never changes; fields a newer peer adds are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from firmware.catalog import Run, Segment
from firmware.mirror.plan import PeerCamera, Summary

FEED_PATH = "/mirror/v1/feed"
SEGMENT_PATH = "/mirror/v1/segments/"
FEED_LIMIT = 500


class FeedError(ValueError):
    """A feed answer that cannot be read at all (not JSON, or its cursors are missing)."""


@dataclass(frozen=True, slots=True)
class FeedRun:
    """A run as the peer has it."""

    uid: str
    camera: str
    origin: str
    start_us: int
    end_us: int
    end_reason: str | None
    continues: str | None

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
    camera: str
    start_us: int
    end_us: int
    media_start_us: int
    media_end_us: int
    frames: int
    bytes: int
    sha256: str
    origin: str
    codec: str
    salvaged: bool
    last_frame: str = ""
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

    def to_json(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "segments": [s.to_json() for s in self.segments],
            "runs": [r.to_json() for r in self.runs],
            "seg": self.seg,
            "run": self.run,
            "more": self.more,
            "cameras": {name: asdict(c) for name, c in self.cameras.items()},
        }


@dataclass(frozen=True, slots=True)
class _Head:
    """A feed answer before its rows are read one by one."""

    board: str
    segments: list[Any]
    runs: list[Any]
    seg: int
    run: int
    more: bool
    cameras: dict[str, PeerCamera]


_HEAD = TypeAdapter(_Head)
_SEGMENT = TypeAdapter(FeedSegment)
_RUN = TypeAdapter(FeedRun)


def _why(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in e.errors()
    )


def _row_name(raw: object, i: int) -> str:
    rid = (raw.get("id") or raw.get("uid")) if isinstance(raw, dict) else None
    return f"#{i} {rid!r}" if isinstance(rid, str) else f"#{i}"


def decode_page(body: bytes) -> tuple[FeedPage, list[str]]:
    """The page, and why each row that does not decode was left out. A malformed row is
    skipped so the rest of the peer's footage still mirrors; a malformed page raises
    FeedError."""
    try:
        head = _HEAD.validate_python(json.loads(body))
    except ValueError as e:  # json.JSONDecodeError and ValidationError alike
        why = _why(e) if isinstance(e, ValidationError) else str(e)
        raise FeedError(f"feed answer malformed: {why}") from None
    refused: list[str] = []
    segments: list[FeedSegment] = []
    runs: list[FeedRun] = []
    for kind, adapter, raws, out in (
        ("segment", _SEGMENT, head.segments, segments),
        ("run", _RUN, head.runs, runs),
    ):
        for i, raw in enumerate(raws):
            try:
                out.append(adapter.validate_python(raw))
            except ValidationError as e:
                refused.append(f"{kind} {_row_name(raw, i)} refused: {_why(e)}")
    page = FeedPage(head.board, tuple(segments), tuple(runs), head.seg, head.run, head.more,
                    head.cameras)  # fmt: skip
    return page, refused
