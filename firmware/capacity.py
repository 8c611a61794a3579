"""Capacity planning: how many days of footage this storage holds at the cameras' measured
rates, against the `retention_days` the installer configured.

Retention keeps footage for `retention_days` only while the disk holds it; beyond that it
deletes the oldest for space (firmware/recorder/retention.py) and the promised days silently
shrink. Said up front instead: status shows the days the storage gives, and
`retention-short` is raised while they fall below the configured ones.

Sans-IO: the sizes and the measured rates in, the estimate and the alert action out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from firmware.alert_ids import AlertId, Severity
from firmware.core.actions import ClearAlert, RaiseAlert

DAY_S = 86_400.0
MIN_MEASURED_S = 60.0
"""Less footage than this per camera says too little of its rate: no estimate from it yet."""
CLEAR_MARGIN = 1.05
"""Cleared only 5 % above the configured days, so a rate near the line does not flap."""


@dataclass(frozen=True)
class Rate:
    """What a camera wrote in the window measured: bytes over the seconds of footage."""

    bytes: int
    seconds: float


@dataclass(frozen=True)
class Capacity:
    footage_bytes_max: int
    """What footage may fill: the disk less what is not footage and less the free reserve."""
    bytes_per_day: float | None
    """All cameras together; None until every recording camera has been measured."""
    days: float | None

    def to_json(self) -> dict:
        return {
            "footage_bytes_max": self.footage_bytes_max,
            "bytes_per_day": None if self.bytes_per_day is None else round(self.bytes_per_day),
            "days": None if self.days is None else round(self.days, 2),
        }


def estimate(
    total_bytes: int,
    free_bytes: int,
    footage_bytes: int,
    reserve_bytes: int,
    rates: Mapping[str, Rate],
) -> Capacity:
    """The days of footage the storage holds at `rates` (per camera), beside what is not
    footage (logs, the catalog, foreign files) and the free-space reserve retention keeps."""
    other = max(0, total_bytes - free_bytes - footage_bytes)
    room = max(0, total_bytes - other - reserve_bytes)
    if not rates or any(r.seconds < MIN_MEASURED_S for r in rates.values()):
        return Capacity(room, None, None)
    per_day = sum(r.bytes / r.seconds for r in rates.values()) * DAY_S
    return Capacity(room, per_day, room / per_day if per_day > 0 else None)


def judge(cap: Capacity, retention_days: float, raised: bool) -> RaiseAlert | ClearAlert | None:
    """The alert's next action, given whether it is raised now; None: nothing to change."""
    if cap.days is None:
        return None
    if cap.days < retention_days:
        text = (
            f"the storage holds {cap.days:.1f} days of footage at the cameras' measured "
            f"{cap.bytes_per_day / 1e9:.1f} GB/day, less than retention_days = "
            f"{retention_days:g}: the oldest footage goes early (more storage, fewer or "
            "lower-rate cameras, or a shorter retention)"
        )
        return RaiseAlert(AlertId.RETENTION_SHORT, Severity.WARNING, text)
    if raised and cap.days >= retention_days * CLEAR_MARGIN:
        return ClearAlert(AlertId.RETENTION_SHORT)
    return None
