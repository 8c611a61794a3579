"""Simulated disks: devices, mounts, SMART and RAID in memory, scripted by tests and the sim
board. Paths are real directories: mount_state() of one that does not exist, or that lay below
a mount point since unmounted (its disk took it away), raises Unavailable."""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hal.disks import BlockDevice, DiskEvent, MountState, RaidState, SmartHealth
from hal.errors import Unavailable

GiB = 1 << 30


@dataclass
class _Mount:
    device: str
    fstype: str
    total_bytes: int
    free_bytes: int
    read_only: bool = False


class SimDisks:
    def __init__(self, root_device: str = "/dev/sim0", root_total_bytes: int = 64 * GiB) -> None:
        """Starts with the root filesystem on root_device, so an unmounted data directory
        falls back to it as on a real board."""
        self._lock = threading.Lock()
        self._devices: dict[str, BlockDevice] = {}
        self._smart: dict[str, SmartHealth] = {}
        self._mounts: dict[str, _Mount] = {
            "/": _Mount(root_device, "ext4", root_total_bytes, root_total_bytes // 2)
        }
        self._raids: dict[str, RaidState] = {}
        self._unmounted: set[str] = set()
        self._watchers: list[queue.Queue[DiskEvent]] = []

    def _emit(self, action: str, name: str) -> None:
        for q in self._watchers:
            q.put(DiskEvent(action, name))

    def _get(self, name: str) -> BlockDevice:
        name = name.removeprefix("/dev/")
        if name not in self._devices:
            raise Unavailable(f"/dev/{name}: no such device")
        return self._devices[name]

    # scripting

    def add_device(
        self,
        name: str,
        size_bytes: int,
        model: str | None = None,
        serial: str | None = None,
        removable: bool = False,
        smart: bool = True,
    ) -> BlockDevice:
        """smart=False: a device without SMART (loop, USB bridge)."""
        dev = BlockDevice(name, f"/dev/{name}", size_bytes, model, serial, False, removable)
        with self._lock:
            self._devices[name] = dev
            health = SmartHealth(dev.path, None, model=model, serial=serial)
            if smart:
                health = dataclasses.replace(health, passed=True, temperature_c=35.0,
                                             power_on_hours=0, reallocated_sectors=0,
                                             pending_sectors=0)  # fmt: skip
            self._smart[name] = health
            self._emit("add", name)
        return dev

    def remove_device(self, name: str) -> None:
        """Pulled out: its mounts go with it, and any RAID it belonged to is degraded."""
        with self._lock:
            dev = self._get(name)
            del self._devices[dev.name]
            for mp in [mp for mp, m in self._mounts.items() if m.device == dev.path]:
                self._unmount(mp)
            for raid in list(self._raids.values()):
                if dev.path in raid.members:
                    self._fail_member(raid.name, dev.path)
            self._emit("remove", dev.name)

    def set_read_only(self, name: str, read_only: bool = True) -> None:
        """The device turns read-only, and so does every filesystem on it (as ext4 with
        errors=remount-ro does after a failed write)."""
        with self._lock:
            dev = self._get(name)
            self._devices[dev.name] = dataclasses.replace(dev, read_only=read_only)
            for m in self._mounts.values():
                if m.device == dev.path:
                    m.read_only = read_only
            self._emit("change", dev.name)

    def mount(
        self,
        name: str,
        mount_point: Path | str,
        fstype: str = "ext4",
        free_bytes: int | None = None,
        read_only: bool = False,
    ) -> None:
        with self._lock:
            dev = self._get(name)
            free = dev.size_bytes if free_bytes is None else free_bytes
            ro = read_only or dev.read_only
            key = _key(mount_point)
            self._mounts[key] = _Mount(dev.path, fstype, dev.size_bytes, free, ro)
            self._unmounted.discard(key)

    def remount(self, mount_point: Path | str, read_only: bool) -> None:
        with self._lock:
            self._mount(mount_point).read_only = read_only

    def unmount(self, mount_point: Path | str) -> None:
        with self._lock:
            self._unmount(_key(mount_point))

    def _unmount(self, key: str) -> None:
        if self._mounts.pop(key, None) is not None and key != "/":
            self._unmounted.add(key)

    def set_free(self, mount_point: Path | str, free_bytes: int) -> None:
        with self._lock:
            m = self._mount(mount_point)
            m.free_bytes = max(0, min(free_bytes, m.total_bytes))

    def fail_smart(self, name: str, reallocated_sectors: int = 2048) -> None:
        with self._lock:
            dev = self._get(name)
            self._smart[dev.name] = dataclasses.replace(
                self._smart[dev.name], passed=False, reallocated_sectors=reallocated_sectors
            )

    def add_raid(self, name: str, kind: str, level: str, members: list[str]) -> None:
        with self._lock:
            self._raids[name] = RaidState(name, kind, level, list(members))

    def degrade_raid(self, name: str, member: str) -> None:
        """member fails (md marks it (F); btrfs reports it missing)."""
        with self._lock:
            self._fail_member(name, member)

    def _fail_member(self, name: str, member: str) -> None:
        raid = self._raids[name]
        failed = [*raid.failed, member] if member not in raid.failed else raid.failed
        self._raids[name] = dataclasses.replace(
            raid, failed=failed, degraded=True, detail=f"{member} failed"
        )

    def _mount(self, mount_point: Path | str) -> _Mount:
        key = _key(mount_point)
        if key not in self._mounts:
            raise Unavailable(f"{key}: not mounted")
        return self._mounts[key]

    # the Disks contract

    def devices(self) -> list[BlockDevice]:
        with self._lock:
            return sorted(self._devices.values(), key=lambda d: d.name)

    def mount_state(self, path: Path) -> MountState:
        try:
            real = str(Path(path).resolve(strict=True))
        except OSError:
            raise Unavailable(f"{path}: no such directory (is the data disk there?)") from None
        with self._lock:
            mp = max((mp for mp in self._mounts if _contains(mp, real)), key=len)
            for gone in self._unmounted:
                if real != gone and _contains(gone, real) and len(gone) > len(mp):
                    raise Unavailable(f"{path}: no such directory (is the data disk there?)")
            m = self._mounts[mp]
            return MountState(
                real, mp, m.device, m.fstype, m.read_only, m.total_bytes, m.free_bytes
            )

    def smart(self, device: str) -> SmartHealth:
        with self._lock:
            return self._smart[self._get(device).name]

    def raid(self) -> list[RaidState]:
        with self._lock:
            return list(self._raids.values())

    def watch(self, stop: threading.Event) -> Iterator[DiskEvent]:
        """Events scripted after this call returns."""
        q: queue.Queue[DiskEvent] = queue.Queue()
        with self._lock:
            self._watchers.append(q)
        return self._drain(stop, q)

    def _drain(self, stop: threading.Event, q: queue.Queue[DiskEvent]) -> Iterator[DiskEvent]:
        try:
            while not stop.is_set():
                try:
                    yield q.get(timeout=0.05)
                except queue.Empty:
                    continue
        finally:
            with self._lock:
                self._watchers.remove(q)


def _key(mount_point: Path | str) -> str:
    return os.path.realpath(mount_point)


def _contains(mount_point: str, path: str) -> bool:
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
