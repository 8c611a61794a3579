"""What a drill run measured: the typed record behind `<drill>.json`, its picture and the
summary table. Times are Unix seconds (float) of the rig's host clock.

The JSON schema is versioned (SCHEMA_VERSION); docs/DRILLS.md describes every field. Bump the
version when a field changes meaning or goes away; adding a field keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

SCHEMA_VERSION = 1


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_POSSIBLE = "not-possible"
    """The fault cannot be made on this kind of target (the report says why)."""
    ERROR = "error"
    """The drill itself broke (the rig, not the pair): nothing was measured."""


class FrameMethod(StrEnum):
    SIMULATOR_NUMBERS = "simulator-frame-numbers"
    """Every frame carries its number from the camera simulator (exact)."""
    TIMESTAMPS = "timestamps-and-content"
    """Real cameras: gaps and overlaps in the recorded timestamps, overlaps compared by
    content hash."""


@dataclass(frozen=True)
class Span:
    """Footage one board holds of one camera from start to end (a segment)."""

    board: str
    camera: str
    start: float
    end: float
    origin: str
    """The board that recorded it (a segment mirrored from the peer has the peer's name)."""


@dataclass(frozen=True)
class FrameGap:
    """Frames first..last (inclusive) of a camera that no board kept."""

    camera: str
    first: int
    last: int
    at: float | None
    """When the camera sent the last frame kept before them (None: nothing kept before)."""


@dataclass(frozen=True)
class RoleChange:
    board: str
    at: float
    role: str


@dataclass(frozen=True)
class VipSample:
    """Which board answered on the floating IP at `at` (None: nothing answered)."""

    at: float
    board: str | None


@dataclass(frozen=True)
class AlertSeen:
    board: str
    alert: str
    severity: str
    raised_at: float
    cleared_at: float | None
    """None: still raised when the drill ended."""


@dataclass(frozen=True)
class Thresholds:
    rto_vip_seconds: float | None
    """None: the VIP is not expected to move (or to be lost) in this drill."""
    rto_recording_seconds: float | None
    frames_lost: int = 0
    frames_duplicated: int = 0


@dataclass
class DrillReport:
    drill: str
    env: str
    fault: str
    """What was done, in words (e.g. "power cut of the active board a")."""
    expected: str
    """The outcome the pair must show."""
    outcome: Outcome
    started_at: float
    ended_at: float
    fault_at: float | None = None
    healed_at: float | None = None
    firmware: dict[str, str | None] = field(default_factory=dict)
    """Board name -> firmware version (None when the board did not answer)."""
    rto_vip_seconds: float | None = None
    """Fault -> clients reach the board that is active at the end on the VIP, for good
    (0.0: it answered throughout)."""
    vip_outage_seconds: float | None = None
    """The longest time after the fault in which nothing answered on the VIP."""
    rto_recording_seconds: float | None = None
    """Fault -> the first frame recorded after it, worst camera."""
    frames_lost: int | None = None
    frames_duplicated: int | None = None
    frame_method: FrameMethod = FrameMethod.SIMULATOR_NUMBERS
    frames_checked: int | None = None
    frame_gaps: list[FrameGap] = field(default_factory=list)
    mirror_lag_at_fault_seconds: float | None = None
    alerts: list[AlertSeen] = field(default_factory=list)
    thresholds: Thresholds | None = None
    failures: list[str] = field(default_factory=list)
    """Why it failed (or why it was not possible / broke)."""
    spans: list[Span] = field(default_factory=list)
    roles: list[RoleChange] = field(default_factory=list)
    vip: list[VipSample] = field(default_factory=list)

    @property
    def passed(self) -> bool | None:
        if self.outcome in (Outcome.PASSED, Outcome.FAILED):
            return self.outcome is Outcome.PASSED
        return None
