"""The storage policy: is the data directory still the disk we record to? Pure, fed by the disk
monitor's readings; alerts and a `Storage` fact out.

A data disk that was unmounted, swapped or has failed must never be written to by mistake: the
directory then shows another filesystem, or lacks our identity file, or is read-only. The board
core then holds the cameras in memory (writes nothing) and hands the pair to a healthy peer."""

from __future__ import annotations

from dataclasses import dataclass

from firmware.alert_ids import AlertId, Severity
from firmware.core.actions import Action, ClearAlert, RaiseAlert
from firmware.core.facts import DiskFault, Storage
from hal.disks import MountState, RaidState, SmartHealth

MISSING = AlertId.DISK_MISSING
OUT_OF_FDS = AlertId.FD_EXHAUSTED
READ_ONLY = AlertId.DISK_READ_ONLY
RAID_DEGRADED = AlertId.RAID_DEGRADED
SMART_FAILING = AlertId.SMART_FAILING


@dataclass(frozen=True)
class StorageView:
    """One look at the data directory."""

    identity: str | None
    """The id in the directory's identity file now; None if it is missing or unreadable."""
    mount: MountState | None
    """None if the directory cannot be looked at (gone, I/O error)."""
    error: str | None = None
    out_of_fds: bool = False
    """The look failed only because this process had no file descriptor left: that says
    nothing about the disk."""


@dataclass(frozen=True)
class Expected:
    identity: str
    mount_point: str
    device: str | None


class StoragePolicy:
    def __init__(self, expected: Expected, require_mount: bool = False) -> None:
        """require_mount: the directory must be a mount point of its own (a data disk)."""
        self.expected = expected
        self.require_mount = require_mount
        self.fact = Storage(None)

    @property
    def holding(self) -> bool:
        return self.fact.fault is not None

    def _problem(self, v: StorageView) -> tuple[AlertId, str] | None:
        e = self.expected
        if v.mount is None:
            return MISSING, f"the data directory cannot be read: {v.error}"
        m = v.mount
        if self.require_mount and m.mount_point != m.path:
            return MISSING, f"no data disk is mounted on {m.path} (it lies on {m.mount_point})"
        # A multi-drive btrfs is named by its lowest-numbered member, which changes when that
        # drive is replaced (`nvr storage replace`); the identity file still tells a swap.
        moved = m.device != e.device and m.fstype != "btrfs"
        if m.mount_point != e.mount_point or moved:
            return MISSING, (
                f"the data directory's disk is gone: it was {e.device} on {e.mount_point}, "
                f"now {m.device} on {m.mount_point}"
            )
        if v.identity != e.identity:
            what = "has no identity file" if v.identity is None else f"is disk {v.identity}"
            return MISSING, f"the data directory {what}, not this board's disk {e.identity}"
        if m.read_only:
            return READ_ONLY, f"the data disk {m.device} on {m.mount_point} turned read-only"
        return None

    def update(self, view: StorageView) -> list[Action]:
        if view.out_of_fds:
            # The disk could not be looked at; the last verdict on it stands.
            text = (f"the firmware ran out of file descriptors ({view.error}); the data disk "
                    "could not be checked")  # fmt: skip
            return [RaiseAlert(OUT_OF_FDS, Severity.CRITICAL, text)]
        problem = self._problem(view)
        if problem is None:
            self.fact = Storage(None)
            return [ClearAlert(MISSING), ClearAlert(READ_ONLY), ClearAlert(OUT_OF_FDS)]
        alert, text = problem
        self.fact = Storage(DiskFault(alert.value), text)
        other = READ_ONLY if alert == MISSING else MISSING
        held = f"{text}; nothing is written until it is back"
        return [
            ClearAlert(other),
            ClearAlert(OUT_OF_FDS),
            RaiseAlert(alert, Severity.CRITICAL, held),
        ]


def health_alerts(raids: list[RaidState], smart: list[SmartHealth]) -> list[Action]:
    """RAID and SMART: warnings for the installer; the disk still records."""
    out: list[Action] = []
    degraded = [r for r in raids if r.degraded]
    if degraded:
        names = ", ".join(
            f"{r.name} ({r.kind} {r.level}{', failed ' + ' '.join(r.failed) if r.failed else ''})"
            for r in degraded
        )
        out.append(RaiseAlert(RAID_DEGRADED, Severity.WARNING, f"RAID degraded: {names}"))
    else:
        out.append(ClearAlert(RAID_DEGRADED))
    failing = [s for s in smart if s.passed is False]
    if failing:
        names = ", ".join(s.device for s in failing)
        out.append(RaiseAlert(SMART_FAILING, Severity.WARNING,
                              f"SMART says the disk is failing: {names}; replace it"))  # fmt: skip
    else:
        out.append(ClearAlert(SMART_FAILING))
    return out
