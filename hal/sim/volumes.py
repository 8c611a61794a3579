"""Simulated volume actions over SimDisks: signatures scripted by tests, a made volume shows as
a mount and (two drives or more) a btrfs raid1 in the SimDisks it was given; a replace runs in
steps that replace_status reports (one step per look)."""

from __future__ import annotations

import threading
from pathlib import Path

from hal.errors import DeviceIOError
from hal.sim.disks import SimDisks
from hal.volumes import ReplaceProgress, ReplaceState


class SimVolumes:
    def __init__(self, disks: SimDisks, replace_steps: int = 3) -> None:
        self.disks = disks
        self.replace_steps = replace_steps
        self._lock = threading.Lock()
        self.signatures: dict[str, str] = {}
        """device path -> what is on it (scripted; None = blank)."""
        self.system: set[str] = set()
        self.used: set[str] = set()
        self.labels: dict[str, list[str]] = {}
        self.actions: list[tuple] = []
        self._replace: tuple[str, str, str] | None = None
        self._progress = 0

    # probing

    def signature(self, device: str) -> str | None:
        return self.signatures.get(device)

    def system_disks(self) -> set[str]:
        return set(self.system)

    def in_use(self) -> set[str]:
        return set(self.used) | self.system

    def find_label(self, label: str) -> list[str]:
        return list(self.labels.get(label, []))

    # actions

    def wipe(self, device: str) -> None:
        self.actions.append(("wipe", device))
        self.signatures.pop(device, None)

    def mkfs_btrfs(self, label: str, profile: str, devices: list[str]) -> None:
        self.actions.append(("mkfs", label, profile, tuple(devices)))
        for d in devices:
            self.signatures[d] = "btrfs"
        self.labels[label] = list(devices)

    def mount(self, devices: list[str], mount_point: str, degraded: bool = False) -> None:
        self.actions.append(("mount", tuple(devices), mount_point, degraded))
        Path(mount_point).mkdir(parents=True, exist_ok=True)
        self.disks.mount(devices[0].removeprefix("/dev/"), mount_point, fstype="btrfs")
        self.used.update(devices)
        if len(devices) > 1:
            self.disks.add_raid(str(Path(mount_point).resolve()), "btrfs", "raid1", devices)

    def unmount(self, mount_point: str) -> None:
        self.actions.append(("unmount", mount_point))
        self.disks.unmount(mount_point)

    def replace_start(self, mount_point: str, source: str, target: str) -> None:
        self.actions.append(("replace", mount_point, source, target))
        with self._lock:
            self._replace, self._progress = (mount_point, source, target), 0

    def replace_status(self, mount_point: str) -> ReplaceProgress:
        with self._lock:
            if self._replace is None:
                return ReplaceProgress(ReplaceState.NEVER, None)
            self._progress += 1
            if self._progress < self.replace_steps:
                pct = 100.0 * self._progress / self.replace_steps
                return ReplaceProgress(ReplaceState.RUNNING, pct)
            self._whole(*self._replace)
            return ReplaceProgress(ReplaceState.FINISHED, 100.0)

    def _whole(self, mount_point: str, source: str, target: str) -> None:
        """The new member takes the failed one's place; the volume is whole."""
        key = str(Path(mount_point).resolve())
        for raid in self.disks.raid():
            if raid.name == key:
                gone = raid.failed[0] if raid.failed else source
                members = [target if m == gone else m for m in raid.members]
                if target not in members:
                    members = [m for m in members if m not in raid.failed] + [target]
                self.disks.add_raid(key, raid.kind, raid.level, members)
        self.used.add(target)

    def add_device(self, mount_point: str, device: str) -> None:
        self.actions.append(("add", mount_point, device))
        self._whole(mount_point, "", device)

    def remove_missing(self, mount_point: str) -> None:
        self.actions.append(("remove missing", mount_point))

    def convert_raid1(self, mount_point: str) -> None:
        self.actions.append(("convert", mount_point))
        if not any(r.name == str(Path(mount_point).resolve()) for r in self.disks.raid()):
            raise DeviceIOError(f"{mount_point}: no volume")
