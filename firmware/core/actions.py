"""What the board core and the hardware policies ask the board to do; the board carries it
out (election, recorder, mirror, alerts, shutdown)."""

from __future__ import annotations

from dataclasses import dataclass

from firmware.alert_ids import AlertId, Severity
from firmware.failover.advert import Health
from firmware.roles import RecorderMode


@dataclass(frozen=True)
class RaiseAlert:
    id: AlertId | str
    """An AlertId; per-camera alerts carry the camera in the id (camera-<name>)."""
    severity: Severity
    text: str


@dataclass(frozen=True)
class ClearAlert:
    id: AlertId | str


@dataclass(frozen=True)
class SetHealth:
    """Advertise these flags and this many live cameras (the election sends at once)."""

    flags: Health
    cameras: int


@dataclass(frozen=True)
class HandOver:
    """Planned handover (priority 0) to the peer, which can do the job better."""

    reason: str


@dataclass(frozen=True)
class ShutDown:
    """Commit everything, stop the firmware cleanly, then run the configured command."""

    reason: str


@dataclass(frozen=True)
class HoldWrites:
    """The data disk is not ours or not writable: keep the cameras in memory, write nothing,
    fetch nothing from the peer (it would land on the wrong disk)."""

    hold: bool
    reason: str


@dataclass(frozen=True)
class SetRecorderMode:
    mode: RecorderMode


Action = RaiseAlert | ClearAlert | SetHealth | HandOver | ShutDown | HoldWrites | SetRecorderMode
