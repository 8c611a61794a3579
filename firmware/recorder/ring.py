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


def fingerprint(data: Any) -> str:
    """Names one encoded frame on both boards (64 bits: collisions within a ring are moot).
    Takes the packet itself (a buffer): no copy of its bytes."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Held:
    packet: Any
    """The demuxed packet, opaque here."""
    video: bool
    keyframe: bool
    fingerprint: str
    """Empty for audio; empty for video too when the packet is a buffer of the frame's bytes
    (the ingest's): then it is taken from the packet at takeover, not for every frame held."""
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
        self._keys: deque[int] = deque()
        """Arrival (monotonic) of each keyframe held, oldest first."""

    def __len__(self) -> int:
        return len(self._held)

    @property
    def seconds(self) -> float:
        if not self._held:
            return 0.0
        return (self._held[-1].clocks.mono_us - self._held[0].clocks.mono_us) / 1e6

    def clear(self) -> None:
        self._held.clear()
        self._keys.clear()

    def push(self, held: Held) -> None:
        """Keep at least span_us, starting at a keyframe so what is kept can be written."""
        key = held.video and held.keyframe
        if not self._held and not key:
            return
        self._held.append(held)
        keys = self._keys
        if key:
            keys.append(held.clocks.mono_us)
        newest = held.clocks.mono_us
        # While the second GOP arrived span_us ago or more, dropping the first still keeps
        # span_us. A ring holding one GOP keeps it, however long.
        while len(keys) > 1 and newest - keys[1] >= self.span_us:
            keys.popleft()
            self._held.popleft()
            while not (self._held[0].video and self._held[0].keyframe):
                self._held.popleft()

    def takeover(self, points: list[Point]) -> Takeover:
        """What to write when this board starts recording. `points` are the newest segments
        of the camera this board holds (from the mirror), newest first. Recording continues
        after the newest one whose last frame is in the ring and is followed by a keyframe
        (a segment cut short by a handover ends mid-GOP, so the one before it is used and the
        short one becomes a spare copy). Without such a point: from the first keyframe after
        the newest point's end by time, or from the oldest keyframe held."""
        held = list(self._held)
        index = {h.fingerprint or fingerprint(h.packet): i
                 for i, h in enumerate(held) if h.video} if points else {}  # fmt: skip
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
