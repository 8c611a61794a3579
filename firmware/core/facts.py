"""What the board core is told: typed facts, decoded once at the edge (NIC events, recorder
status, hardware readings, the election's view of the peer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from firmware.failover.advert import Health
from firmware.roles import Role


class Link(StrEnum):
    LAN = "lan"
    SYNC = "sync"


class DiskFault(StrEnum):
    MISSING = "disk-missing"
    """Unmounted, swapped, or without this board's identity: nothing may be written."""
    READ_ONLY = "disk-read-only"


@dataclass(frozen=True)
class Carrier:
    link: Link
    up: bool


@dataclass(frozen=True)
class CameraSeen:
    name: str
    session: bool
    """The camera's session is up (recording, or held in a standby's ring): the recorder ends
    a session whose camera sends nothing for its stall limit, so a lost camera path shows
    here, on either board as soon as the recorder says so."""
    report_age: float | None
    """Seconds since the recorder's worker last reported on the camera (every second while it
    runs): a stopped or hung worker shows here. None = never. Not the newest frame's age: a
    board slowed by load (a long fsync) reads its frames late but keeps them."""


@dataclass(frozen=True)
class Cameras:
    enabled: frozenset[str]
    seen: tuple[CameraSeen, ...]


@dataclass(frozen=True)
class Storage:
    fault: DiskFault | None
    detail: str = ""


@dataclass(frozen=True)
class WriteSpace:
    exhausted: bool
    """A write failed for lack of space (critical), not retention at its watermark."""


@dataclass(frozen=True)
class WriteErrors:
    failing: bool
    """A write to the data disk failed, not for lack of space (an I/O error): the board
    cannot record, though the disk is mounted and writable as far as the kernel says."""
    detail: str = ""


@dataclass(frozen=True)
class Power:
    on_battery: bool
    low: bool
    """NUT's critical state: on battery and low battery."""
    detail: str = ""


@dataclass(frozen=True)
class MirrorProgress:
    behind: bool
    """Still fetching what the active peer recorded: not the board to preempt with."""


@dataclass(frozen=True)
class PeerView:
    """The other board, as its newest authenticated advert tells it."""

    board: str
    role: Role
    priority: int
    health: Health
    cameras: int
    fresh: bool
    """Heard within the master-down interval."""
    path_ages: dict[str, float] = field(default_factory=dict)
    """Seconds since an advert came on each path (lan, sync, serial)."""


@dataclass(frozen=True)
class ElectionView:
    role: Role
    peer: PeerView | None
    master_down: float


@dataclass(frozen=True)
class Drops:
    """Adverts dropped since start, as counted at the edge."""

    hmac: int
    version: int


Fact = (
    Carrier
    | Cameras
    | Storage
    | WriteSpace
    | WriteErrors
    | Power
    | MirrorProgress
    | ElectionView
    | Drops
)
