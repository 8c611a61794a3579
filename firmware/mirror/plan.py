"""Which segments go which way between the two boards: pure, from two catalog summaries.

Segments are identified by id (`<camera>.<start ms>.<origin>`), so the same footage recorded by
both boards during a dual-active episode has two ids and is copied both ways; removing the
frames both hold from the merged timeline is the reader's job, by frame content.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Order = Literal["oldest", "newest"]


@dataclass(frozen=True, slots=True)
class Summary:
    """What a board tells its peer about one committed segment."""

    id: str
    camera: str
    start_us: int
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    direction: Literal["push", "pull"]
    """push: we send it to the peer; pull: we ask the peer for it."""
    start_us: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """The same id with different content on the two boards: never overwritten, alerted."""

    id: str
    local_sha256: str
    remote_sha256: str


@dataclass(frozen=True, slots=True)
class Plan:
    transfers: list[Transfer]
    conflicts: list[Conflict]

    @property
    def bytes_to_push(self) -> int:
        return sum(t.bytes for t in self.transfers if t.direction == "push")

    @property
    def bytes_to_pull(self) -> int:
        return sum(t.bytes for t in self.transfers if t.direction == "pull")


def reconcile(
    local: Iterable[Summary],
    remote: Iterable[Summary],
    order: Order = "oldest",
    deleted: Iterable[str] = (),
) -> Plan:
    """Both ways: what the peer lacks is pushed, what we lack is pulled. `deleted` holds ids
    this board's retention already removed, so a peer still holding them does not bring them
    back. Transfers come in the configured order: oldest first (the timeline fills from the
    start) or newest first (the most recent footage is safe soonest)."""
    mine = {s.id: s for s in local}
    theirs = {s.id: s for s in remote}
    gone = set(deleted)
    transfers: list[Transfer] = []
    conflicts: list[Conflict] = []
    for sid, seg in mine.items():
        other = theirs.get(sid)
        if other is None:
            transfers.append(Transfer(sid, "push", seg.start_us, seg.bytes))
        elif other.sha256 != seg.sha256:
            conflicts.append(Conflict(sid, seg.sha256, other.sha256))
    for sid, seg in theirs.items():
        if sid not in mine and sid not in gone:
            transfers.append(Transfer(sid, "pull", seg.start_us, seg.bytes))
    transfers.sort(key=lambda t: (t.start_us, t.id), reverse=order == "newest")
    conflicts.sort(key=lambda c: c.id)
    return Plan(transfers, conflicts)


@dataclass(frozen=True, slots=True)
class RunFacts:
    uid: str
    start_us: int
    end_us: int
    ended: bool
    continues: str | None
    """Segment id a takeover run went on after, frame for frame."""


@dataclass(frozen=True, slots=True)
class SegFacts:
    id: str
    run_uid: str
    start_us: int
    end_us: int


COVER_SLACK_US = 1000


def _covers(segs: list[SegFacts], start_us: int, end_us: int) -> bool:
    """Whether segs (one run's, oldest first) hold every moment of [start_us, end_us)."""
    reached = None
    for s in segs:
        if reached is None:
            if s.start_us > start_us + COVER_SLACK_US:
                return False
            reached = s.end_us
        elif s.start_us > reached + COVER_SLACK_US:
            return False
        else:
            reached = max(reached, s.end_us)
        if reached >= end_us - COVER_SLACK_US:
            return True
    return False


def superseded(runs: Iterable[RunFacts], segments: Iterable[SegFacts]) -> set[str]:
    """Segments this board holds whose every frame it also holds in another run: the two
    recordings of one stretch of footage that a takeover leaves behind (the old active
    board's last segments after a power cut or handover, or either board's copy of a
    dual-active episode). Decided only once it cannot change: when the takeover run went on
    past the end of the run it took over from (that run ended), the old run's segments after
    the takeover point are spare; when the old run went on past the end of the takeover run
    (which ended), the takeover run's are. A segment is dropped only if the other run's
    segments that this board holds cover it without a hole, so nothing is lost."""
    by_uid = {r.uid: r for r in runs}
    segs = sorted(segments, key=lambda s: s.start_us)
    by_id = {s.id: s for s in segs}
    by_run: dict[str, list[SegFacts]] = {}
    for s in segs:
        by_run.setdefault(s.run_uid, []).append(s)
    out: set[str] = set()
    for r in by_uid.values():
        point = by_id.get(r.continues or "")
        base = by_uid.get(point.run_uid) if point else None
        if point is None or base is None or base.uid == r.uid:
            continue
        if r.ended and base.end_us >= r.end_us:
            spare, keep = by_run.get(r.uid, []), by_run.get(base.uid, [])
        elif base.ended and r.end_us >= base.end_us:
            spare = [s for s in by_run.get(base.uid, []) if s.start_us >= point.end_us]
            keep = by_run.get(r.uid, [])
        else:
            continue
        out.update(s.id for s in spare if _covers(keep, s.start_us, s.end_us))
    return out


@dataclass(frozen=True, slots=True)
class PeerCamera:
    end_us: int | None
    """End of the peer's newest committed segment of the camera (None: none yet)."""
    recording: bool
    """The peer is writing the camera now (its open segment starts at end_us)."""


def lag(
    peer: dict[str, PeerCamera], missing: Iterable[Summary], durations: dict[str, int], now_us: int
) -> tuple[float, int]:
    """(seconds of footage, bytes) this board is behind the peer: per camera, what it still
    lacks of the peer's committed segments plus the peer's open segment; the worst camera
    counts. `durations` gives each missing id's length in microseconds."""
    behind_us: dict[str, int] = {}
    nbytes = 0
    for s in missing:
        behind_us[s.camera] = behind_us.get(s.camera, 0) + durations.get(s.id, 0)
        nbytes += s.bytes
    for camera, p in peer.items():
        if p.recording and p.end_us is not None:
            behind_us[camera] = behind_us.get(camera, 0) + max(0, now_us - p.end_us)
    return (max(behind_us.values(), default=0) / 1e6, nbytes)
