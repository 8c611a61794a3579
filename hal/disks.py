"""Storage facts: block devices, the data directory's mount, SMART and RAID health."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class BlockDevice:
    name: str
    """Kernel name, e.g. sda, nvme0n1, loop3."""
    path: str
    size_bytes: int
    model: str | None = None
    serial: str | None = None
    read_only: bool = False
    removable: bool = False

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MountState:
    """Where a directory's filesystem comes from and how full it is."""

    path: str
    mount_point: str
    device: str | None
    """The mount source, e.g. /dev/sda1; None when the mount table names none."""
    fstype: str
    read_only: bool
    total_bytes: int
    free_bytes: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SmartHealth:
    device: str
    passed: bool | None
    """SMART overall self-assessment; None if the device has no SMART."""
    temperature_c: float | None = None
    power_on_hours: int | None = None
    reallocated_sectors: int | None = None
    pending_sectors: int | None = None
    media_errors: int | None = None
    """NVMe media and data integrity errors."""
    model: str | None = None
    serial: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RaidState:
    name: str
    """md0, or the btrfs mount point."""
    kind: str
    """md or btrfs."""
    level: str
    members: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    degraded: bool = False
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DiskEvent:
    """A block device appeared, vanished or changed (udev, or a poll that noticed)."""

    action: str
    """add, remove or change."""
    device: str


class Disks(Protocol):
    """Raises hal.errors; mount_state of a directory that is gone raises Unavailable."""

    def devices(self) -> list[BlockDevice]: ...

    def mount_state(self, path: Path) -> MountState: ...

    def smart(self, device: str) -> SmartHealth: ...

    def raid(self) -> list[RaidState]:
        """md arrays and btrfs multi-device filesystems that are mounted."""
        ...

    def watch(self, stop: threading.Event) -> Iterator[DiskEvent]:
        """Changes as they happen until stop is set (checked often)."""
        ...
