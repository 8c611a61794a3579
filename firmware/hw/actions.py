"""What the hardware policies ask the board to do; the board carries it out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RaiseAlert:
    id: str
    severity: str
    text: str


@dataclass(frozen=True)
class ClearAlert:
    id: str


@dataclass(frozen=True)
class HandOver:
    """Planned handover (priority 0) to the peer, which is healthy and listening."""

    reason: str


@dataclass(frozen=True)
class ShutDown:
    """Commit everything, stop the firmware cleanly, then run the configured command."""

    reason: str


@dataclass(frozen=True)
class HoldWrites:
    """The data disk is not ours or not writable: keep the cameras in memory, write nothing."""

    hold: bool
    reason: str


Action = RaiseAlert | ClearAlert | HandOver | ShutDown | HoldWrites
