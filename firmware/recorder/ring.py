"""The standby's ring: the last seconds of a camera's stream, held in memory, never on disk.

Pure: the ingest pushes packets with the clocks it read; on takeover the ring says which of
its packets to write, matched by content against the last frame the mirror brought from the
peer. The two boards' sessions to one camera carry the same encoded frames, so a frame's
fingerprint names it on both boards, whatever the sessions' timestamps are.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from firmware.recorder.policy import Clocks


def fingerprint(data: bytes) -> str:
    """Names one encoded frame on both boards (64 bits: collisions within a ring are moot)."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Held:
    packet: Any
    """The demuxed packet, opaque here."""
    video: bool
    keyframe: bool
    fingerprint: str
    """Empty for audio."""
    clocks: Clocks
    """When it arrived: replayed into the segment policy on takeover."""


@dataclass(frozen=True, slots=True)
class Point:
    """A segment this board holds: where a takeover may continue."""

    id: str
    last_frame: str
    end_us: int


@dataclass(frozen=True, slots=True)
class Takeover:
    packets: list[Held]
    after: Point | None
    """Set when the first video packet is the frame right after this segment's last one: no
    gap, no duplicate, and the run continues that segment's wall-clock timeline."""
    note: str


class StandbyRing:
    def __init__(self, span_us: int) -> None:
        self.span_us = span_us
        self._held: deque[Held] = deque()

    def __len__(self) -> int:
        return len(self._held)

    @property
    def seconds(self) -> float:
        if not self._held:
            return 0.0
        return (self._held[-1].clocks.mono_us - self._held[0].clocks.mono_us) / 1e6

    def clear(self) -> None:
        self._held.clear()

    def push(self, held: Held) -> None:
        """Keep at least span_us, starting at a keyframe so what is kept can be written."""
        if not self._held and not (held.video and held.keyframe):
            return
        self._held.append(held)
        newest = held.clocks.mono_us
        while (second := self._second_keyframe_mono()) is not None and newest - second >= (
            self.span_us
        ):
            self._held.popleft()
            while self._held and not (self._held[0].video and self._held[0].keyframe):
                self._held.popleft()

    def _second_keyframe_mono(self) -> int | None:
        """Arrival of the second GOP: dropping the first still keeps span_us. None while the
        ring holds one GOP only (it is kept, however long)."""
        seen = False
        for h in self._held:
            if h.video and h.keyframe:
                if seen:
                    return h.clocks.mono_us
                seen = True
        return None

    def takeover(self, points: list[Point]) -> Takeover:
        """What to write when this board starts recording. `points` are the newest segments
        of the camera this board holds (from the mirror), newest first. Recording continues
        after the newest one whose last frame is in the ring and is followed by a keyframe
        (a segment cut short by a handover ends mid-GOP, so the one before it is used and the
        short one becomes a spare copy). Without such a point: from the first keyframe after
        the newest point's end by time, or from the oldest keyframe held."""
        held = list(self._held)
        index = {h.fingerprint: i for i, h in enumerate(held) if h.video}
        for point in points:
            i = index.get(point.last_frame)
            if i is None:
                continue
            rest = held[i + 1 :]
            first = next((j for j, h in enumerate(rest) if h.video), None)
            if first is None:
                return Takeover([], point, "continues after the newest held frame")
            if rest[first].keyframe:
                return Takeover(rest[first:], point, f"continues after {point.id}")
        if not held:
            return Takeover([], None, "nothing held: from the next keyframe")
        if points:
            after = points[0].end_us
            k = next((j for j, h in enumerate(held)
                      if h.video and h.keyframe and h.clocks.wall_us >= after), None)  # fmt: skip
            return Takeover(
                held[k:] if k is not None else [], None,
                f"{points[0].id} not matched in the ring: from the next keyframe by time",
            )  # fmt: skip
        return Takeover(held, None, "no footage before: from the oldest held keyframe")
