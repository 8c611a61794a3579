"""Volume actions on the recording drives: probe what is on a drive, make and mount a btrfs
volume, swap a member and follow the copy. Device actions only: what may be done to which drive
is decided in firmware/drives.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Protocol


class ReplaceState(StrEnum):
    NEVER = "never started"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELED = "canceled"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class ReplaceProgress:
    """What `btrfs replace status` says about the copy onto a new member."""

    state: ReplaceState
    percent: float | None
    write_errors: int = 0
    read_errors: int = 0
    """Uncorrectable read errors: blocks neither copy could give."""
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


class Volumes(Protocol):
    """Raises hal.errors: Unavailable (a tool or device is not there), DeviceIOError (the tool
    refused or failed; its message is in the error), DeviceTimeout."""

    def signature(self, device: str) -> str | None:
        """What is on the drive: a filesystem type or partition table type, `partitions` when
        the kernel sees partitions; None when it is blank."""
        ...

    def system_disks(self) -> set[str]:
        """Whole-disk paths holding the root, /boot, /boot/efi, /usr or /data."""
        ...

    def in_use(self) -> set[str]:
        """Whole-disk paths that are mounted (themselves or a partition), members of a mounted
        btrfs, or held by md/dm."""
        ...

    def wipe(self, device: str) -> None: ...

    def mkfs_btrfs(self, label: str, profile: str, devices: list[str]) -> None:
        """profile: single (one drive; metadata dup) or raid1 (data and metadata)."""
        ...

    def mount(self, devices: list[str], mount_point: str, degraded: bool = False) -> None: ...

    def unmount(self, mount_point: str) -> None: ...

    def find_label(self, label: str) -> list[str]:
        """Devices carrying a filesystem of this label (all members of a multi-device btrfs)."""
        ...

    def replace_start(self, mount_point: str, source: str, target: str) -> None:
        """Starts in the background; replace_status follows it."""
        ...

    def replace_status(self, mount_point: str) -> ReplaceProgress: ...

    def add_device(self, mount_point: str, device: str) -> None: ...

    def remove_missing(self, mount_point: str) -> None: ...

    def convert_raid1(self, mount_point: str) -> None:
        """Blocks that are not raid1 (written while degraded) become raid1 again."""
        ...
