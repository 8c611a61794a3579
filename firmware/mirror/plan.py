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
