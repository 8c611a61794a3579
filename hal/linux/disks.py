"""Disks on Linux: sysfs and udev for the devices, mountinfo for the data directory, smartctl
for SMART, /proc/mdstat and btrfs-progs for RAID."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hal.disks import BlockDevice, DiskEvent, MountState, RaidState, SmartHealth
from hal.errors import DeviceIOError, DeviceTimeout, Unavailable

SYS_BLOCK = "/sys/block"
MOUNTINFO = "/proc/self/mountinfo"
MDSTAT = "/proc/mdstat"
SYS_FS_BTRFS = "/sys/fs/btrfs"
UDEV_CONTROL = "/run/udev/control"
WATCH_POLL_S = 0.5
SMARTCTL_TIMEOUT_S = 60
BTRFS_TIMEOUT_S = 20
BTRFS_PROFILES = (
    "single",
    "dup",
    "raid0",
    "raid1",
    "raid1c3",
    "raid1c4",
    "raid10",
    "raid5",
    "raid6",
)
REDUNDANT_PROFILES = frozenset({"raid1", "raid1c3", "raid1c4", "raid10", "raid5", "raid6"})

# smartctl(8) exit status bits.
SMART_NO_DEVICE = 0b11  # command line refused (unknown device type) / open or IDENTIFY failed
SMART_FAILING = 0b1000


def _read(path: str | Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").strip()
    except OSError:
        return None


def _unescape(field: bytes) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040...)."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)
    return os.fsdecode(raw)


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo."""

    dev: str
    """major:minor of the superblock (shared by every mount of one btrfs)."""
    mount_point: str
    fstype: str
    source: str | None
    options: frozenset[str]
    """Per-mount and per-superblock options together."""


READ_ONLY_OPTIONS = frozenset({"ro", "emergency_ro"})
"""A read-only mount, or an ext4 superblock the kernel turned read-only after an error: newer
kernels say `emergency_ro` in the superblock options and keep `rw` on the mount."""


def parse_mountinfo(data: bytes) -> list[Mount]:
    mounts = []
    for line in data.splitlines():
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-", 6)
            fstype, source, sb_opts = fields[sep + 1 : sep + 4]
        except ValueError:
            continue
        opts = set(fields[5].decode().split(",")) | set(sb_opts.decode().split(","))
        src = _unescape(source)
        mounts.append(
            Mount(
                dev=fields[2].decode(),
                mount_point=_unescape(fields[4]),
                fstype=_unescape(fstype),
                source=src if src and src != "none" else None,
                options=frozenset(opts),
            )
        )
    return mounts


def _contains(mount_point: str, path: str) -> bool:
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def mount_of(mounts: list[Mount], path: str) -> Mount | None:
    """The mount a resolved path lives on: the longest containing mount point; of several
    mounts stacked on one point, the last (topmost) one."""
    best = None
    for m in mounts:
        if _contains(m.mount_point, path) and (
            best is None or len(m.mount_point) >= len(best.mount_point)
        ):
            best = m
    return best


# --- md ----------------------------------------------------------------------------------------

_MD_HEAD = re.compile(r"^(\S+)\s*:\s*(active|inactive)\b(.*)$")
_MD_MEMBER = re.compile(r"^(\S+?)\[\d+\]((?:\([A-Z]\))*)$")
_MD_STATUS = re.compile(r"\[(\d+)/(\d+)\]\s+\[([U_]+)\]")
_MD_PROGRESS = re.compile(r"\b(recovery|resync|reshape|check|repair)\s*=\s*(\S+)")


def parse_mdstat(text: str) -> list[RaidState]:
    """md arrays from /proc/mdstat. Degraded: a missing slot ('_' in [UU_], fewer working
    than wanted), a member marked (F), or an array that is not running."""
    arrays: list[RaidState] = []
    blocks: list[tuple[re.Match[str], list[str]]] = []
    for line in text.splitlines():
        if head := _MD_HEAD.match(line):
            blocks.append((head, []))
        elif blocks and line.startswith((" ", "\t")):
            blocks[-1][1].append(line)
    for head, lines in blocks:
        name, state, rest = head.groups()
        tokens = rest.split()
        notes = [t.strip("()") for t in tokens if t.startswith("(") and t.endswith(")")]
        tokens = [t for t in tokens if not (t.startswith("(") and t.endswith(")"))]
        level = ""
        if tokens and not _MD_MEMBER.match(tokens[0]):
            level = tokens.pop(0)
        members, failed, spares = [], [], []
        for t in tokens:
            m = _MD_MEMBER.match(t)
            if not m:
                continue
            dev = "/dev/" + m.group(1).replace("!", "/")
            members.append(dev)
            if "(F)" in m.group(2):
                failed.append(dev)
            elif "(S)" in m.group(2):
                spares.append(dev)
        body = " ".join(lines)
        degraded = state != "active" or bool(failed)
        detail = [] if state == "active" else [state]
        detail += notes
        status = _MD_STATUS.search(body)
        if status:
            want, have, slots = int(status.group(1)), int(status.group(2)), status.group(3)
            degraded = degraded or have < want or "_" in slots
            detail.append(f"{have}/{want} [{slots}]")
        for what, progress in _MD_PROGRESS.findall(body):
            detail.append(f"{what} {progress}")
        if spares:
            detail.append("spare " + " ".join(spares))
        arrays.append(
            RaidState(
                name=name,
                kind="md",
                level=level,
                members=members,
                failed=failed,
                degraded=degraded,
                detail="; ".join(detail),
            )
        )
    return arrays


# --- btrfs -------------------------------------------------------------------------------------

_BTRFS_DEVID = re.compile(r"^\s*devid\s+(\d+)\s+size\s+\S+\s+used\s+\S+\s+path\s*(.*?)\s*$")


@dataclass(frozen=True)
class BtrfsShow:
    uuid: str | None
    total: int
    devices: dict[int, str | None]
    """devid -> path; None when the device is missing."""


def parse_btrfs_show(text: str) -> BtrfsShow:
    """`btrfs filesystem show` of one filesystem. Missing devices are listed as 'path
    <missing disk>' or 'path  MISSING' (by version), or only counted ('*** Some devices
    missing') when the kernel never saw them."""
    uuid = None
    total = 0
    devices: dict[int, str | None] = {}
    for line in text.splitlines():
        if m := re.search(r"\buuid:\s*([0-9a-fA-F-]{36})", line):
            uuid = m.group(1)
        elif m := re.search(r"Total devices\s+(\d+)", line):
            total = int(m.group(1))
        elif m := _BTRFS_DEVID.match(line):
            path = m.group(2)
            if path.endswith("MISSING"):
                path = ""
            devices[int(m.group(1))] = None if path in ("", "<missing disk>") else path
    return BtrfsShow(uuid, max(total, len(devices)), devices)


def parse_btrfs_stats(text: str) -> dict[str, dict[str, int]]:
    """`btrfs device stats`: device (a path, or devid:N when missing) -> counter -> value."""
    stats: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        m = re.match(r"^\[(.+)\]\.(\w+)\s+(\d+)\s*$", line)
        if m:
            stats.setdefault(m.group(1), {})[m.group(2)] = int(m.group(3))
    return stats


def btrfs_state(
    mount: Mount, show: BtrfsShow, stats: dict[str, dict[str, int]], level: str
) -> RaidState:
    members, failed, detail = [], [], []
    for devid, path in sorted(show.devices.items()):
        members.append(path or f"devid:{devid}")
        if path is None:
            failed.append(f"devid:{devid}")
            detail.append(f"devid {devid} missing")
    for n in range(show.total - len(show.devices)):
        members.append("devid:?")
        failed.append("devid:?")
        detail.append("a device is missing" if n == 0 else "another device is missing")
    for dev, counters in sorted(stats.items()):
        errors = {k: v for k, v in counters.items() if v}
        if not errors:
            continue
        detail.append(dev + " " + " ".join(f"{k}={v}" for k, v in sorted(errors.items())))
        if dev in members and dev not in failed:
            failed.append(dev)
    if "degraded" in mount.options:
        detail.insert(0, "mounted degraded")
    missing = any(p is None for p in show.devices.values()) or show.total > len(show.devices)
    # Mounted `degraded` stays in the options after a replaced member is back; then only
    # blocks written meanwhile without a second copy (a non-redundant profile) keep it so.
    redundant = bool(level) and all(p in REDUNDANT_PROFILES for p in level.split("+"))
    return RaidState(
        name=mount.mount_point,
        kind="btrfs",
        level=level,
        members=members,
        failed=failed,
        degraded=missing or ("degraded" in mount.options and not redundant),
        detail="; ".join(detail),
    )


def btrfs_from_sysfs(
    root: Path, source: str
) -> tuple[BtrfsShow, dict[str, dict[str, int]], str] | None:
    """The kernel's view of the btrfs that `source` (/dev/vdb) belongs to, readable without
    privileges (`btrfs filesystem show` opens the member devices: root only, and the firmware
    is not root). `devices/` holds one link per member the kernel opened; a member pulled
    while mounted leaves its link dangling, one missing at mount has none: either way the
    members in `devinfo/` outnumber the present ones. Errors come from `error_stats`."""
    name = os.path.basename(os.path.realpath(source))
    try:
        filesystems = sorted(root.iterdir())
    except OSError:
        return None
    for fs in filesystems:
        links = fs / "devices"
        if not (links / name).is_symlink():
            continue
        present = sorted(p.name for p in links.iterdir() if p.exists())
        ids = sorted(int(d.name) for d in (fs / "devinfo").iterdir() if d.name.isdigit())
        stats = {}
        for i in ids:
            with contextlib.suppress(OSError):
                pairs = (ln.split() for ln in (fs / "devinfo" / str(i) / "error_stats")
                         .read_text().splitlines() if ln.strip())  # fmt: skip
                stats[f"devid:{i}"] = {k: int(v) for k, v in pairs}
        try:
            profiles = os.listdir(fs / "allocation" / "data")
        except OSError:
            profiles = []
        level = "+".join(sorted(p for p in profiles if p in BTRFS_PROFILES))
        gone = [i for i in ids if _read(fs / "devinfo" / str(i) / "missing") == "1"]
        # Names for the others in order (sysfs does not say which name has which devid);
        # one pulled while mounted has no name left and is counted as missing.
        others = [i for i in ids if i not in gone]
        named = zip(others, (f"/dev/{n}" for n in present), strict=False)  # fewer names: pulled
        devices: dict[int, str | None] = {i: None for i in gone} | dict(named)
        return BtrfsShow(fs.name, len(ids), devices), stats, level
    return None


# --- SMART -------------------------------------------------------------------------------------


def _first_int(text: object) -> int | None:
    m = re.match(r"\s*(\d+)", str(text)) if text is not None else None
    return int(m.group(1)) if m else None


def parse_smartctl(device: str, report: dict, status: int) -> SmartHealth:
    """smartctl --json -H -A -i output and exit status. A device smartctl cannot open or
    identify (loop, most USB bridges) has no SMART: passed is None, not an error."""
    model = report.get("model_name") or report.get("scsi_model_name")
    serial = report.get("serial_number")
    if status & SMART_NO_DEVICE:
        return SmartHealth(device, None, model=model, serial=serial)
    passed = report.get("smart_status", {}).get("passed")
    if status & SMART_FAILING:
        passed = False
    temp = report.get("temperature", {}).get("current")
    hours = report.get("power_on_time", {}).get("hours")
    attrs = {
        a.get("id"): a.get("raw", {})
        for a in report.get("ata_smart_attributes", {}).get("table", [])
    }
    if temp is None and 194 in attrs:
        temp = _first_int(attrs[194].get("string"))
    if hours is None and 9 in attrs:
        hours = _first_int(attrs[9].get("string"))
    nvme = report.get("nvme_smart_health_information_log", {})
    if nvme:
        temp = nvme.get("temperature", temp)
        hours = nvme.get("power_on_hours", hours)
    return SmartHealth(
        device=device,
        passed=passed if isinstance(passed, bool) else None,
        temperature_c=float(temp) if temp is not None else None,
        power_on_hours=hours,
        reallocated_sectors=attrs[5].get("value") if 5 in attrs else None,
        pending_sectors=attrs[197].get("value") if 197 in attrs else None,
        media_errors=nvme.get("media_errors"),
        model=model,
        serial=serial,
    )


def whole_disk(path: str) -> str:
    """SMART belongs to the disk: /dev/sda1 -> /dev/sda, /dev/nvme0n1p2 -> /dev/nvme0n1."""
    try:
        st = os.stat(path)
        sys_dev = os.path.realpath(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    except OSError:
        return path
    if os.path.exists(os.path.join(sys_dev, "partition")):
        return "/dev/" + os.path.basename(os.path.dirname(sys_dev)).replace("!", "/")
    return path


def _run(argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise Unavailable(f"{argv[0]} is not installed; cannot read {what}") from None
    except subprocess.TimeoutExpired:
        raise DeviceTimeout(f"{argv[0]} took more than {timeout} s for {what}") from None


# --- the backend -------------------------------------------------------------------------------


class LinuxDisks:
    def __init__(
        self,
        smartctl: str = "smartctl",
        btrfs: str = "btrfs",
        sys_block: str = SYS_BLOCK,
        mdstat: str = MDSTAT,
        sys_fs_btrfs: str = SYS_FS_BTRFS,
    ) -> None:
        self.smartctl, self.btrfs = smartctl, btrfs
        self.sys_block, self.mdstat = sys_block, mdstat
        self.sys_fs_btrfs = Path(sys_fs_btrfs)

    # devices

    def devices(self) -> list[BlockDevice]:
        """Whole disks with a medium: an unattached loop device or an empty card reader
        (size 0) is not listed."""
        out = []
        for name, props in self._enumerate():
            dev = self._device(name, props)
            if dev is not None:
                out.append(dev)
        return sorted(out, key=lambda d: d.name)

    def _enumerate(self) -> list[tuple[str, dict[str, str]]]:
        """udev's view (with its ID_* properties where it keeps a database); sysfs alone when
        libudev cannot be used."""
        try:
            import pyudev

            ctx = pyudev.Context()
            found = [
                (d.sys_name, dict(d.properties))
                for d in ctx.list_devices(subsystem="block", DEVTYPE="disk")
            ]
            if found:
                return found
        except Exception:  # no libudev, or no sysfs view for it
            pass
        try:
            return [(n, {}) for n in os.listdir(self.sys_block)]
        except OSError as e:
            raise Unavailable(f"{self.sys_block}: {e.strerror}") from None

    def _device(self, name: str, props: dict[str, str]) -> BlockDevice | None:
        sysdir = os.path.join(self.sys_block, name)
        size = _read(os.path.join(sysdir, "size"))
        if not size or not size.isdigit() or int(size) == 0:
            return None
        model = _read(os.path.join(sysdir, "device", "model"))
        if not model and props.get("ID_MODEL"):
            model = props["ID_MODEL"].replace("_", " ")
        serial = props.get("ID_SERIAL_SHORT") or _read(os.path.join(sysdir, "device", "serial"))
        serial = serial or _read(os.path.join(sysdir, "serial")) or _vpd_serial(sysdir)
        return BlockDevice(
            name=name,
            path=props.get("DEVNAME") or "/dev/" + name.replace("!", "/"),
            size_bytes=int(size) * 512,  # sysfs counts 512-byte sectors whatever the device's
            model=model or None,
            serial=serial or None,
            read_only=_read(os.path.join(sysdir, "ro")) == "1",
            removable=_read(os.path.join(sysdir, "removable")) == "1",
        )

    # the data directory

    def mount_state(self, path: Path) -> MountState:
        try:
            real = str(Path(path).resolve(strict=True))
            with open(MOUNTINFO, "rb") as f:
                mounts = parse_mountinfo(f.read())
            st = os.statvfs(real)
        except (FileNotFoundError, NotADirectoryError):
            raise Unavailable(f"{path}: no such directory (is the data disk there?)") from None
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                raise  # this process is out of descriptors: no fact about the disk
            raise DeviceIOError(f"{path}: {e.strerror}") from None
        mount = mount_of(mounts, real)
        if mount is None:
            raise Unavailable(f"{path}: not on any mounted filesystem")
        return MountState(
            path=real,
            mount_point=mount.mount_point,
            device=mount.source,
            fstype=mount.fstype,
            read_only=bool(READ_ONLY_OPTIONS & mount.options),
            total_bytes=st.f_blocks * st.f_frsize,
            free_bytes=st.f_bavail * st.f_frsize,  # what df shows as available
        )

    # SMART

    def smart(self, device: str) -> SmartHealth:
        path = device if device.startswith("/") else "/dev/" + device
        if not os.path.exists(path):
            raise Unavailable(f"{path}: no such device")
        disk = whole_disk(path)
        if os.geteuid() != 0 and not os.access(disk, os.R_OK | os.W_OK):
            # smartctl would say "no SMART", which is not true: say who lacks what.
            raise Unavailable(
                f"SMART of {disk}: this process (uid {os.geteuid()}) cannot open the disk; "
                "smartctl needs root (the console's `nvr hw disks` shows it)"
            )
        argv = [self.smartctl, "--json", "-H", "-A", "-i", disk]
        proc = _run(argv, SMARTCTL_TIMEOUT_S, f"SMART of {disk}")
        if proc.returncode < 0:
            raise DeviceIOError(f"smartctl on {disk} died of signal {-proc.returncode}")
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            if proc.returncode & SMART_NO_DEVICE:
                return SmartHealth(disk, None)
            raise DeviceIOError(f"smartctl on {disk}: unreadable output") from None
        return parse_smartctl(disk, report, proc.returncode)

    # RAID

    def raid(self) -> list[RaidState]:
        try:
            arrays = parse_mdstat(Path(self.mdstat).read_text())
        except FileNotFoundError:
            arrays = []  # no md driver: no md arrays
        with open(MOUNTINFO, "rb") as f:
            mounts = parse_mountinfo(f.read())
        seen: set[str] = set()
        for m in mounts:
            if m.fstype != "btrfs" or m.dev in seen:
                continue
            seen.add(m.dev)  # one filesystem, however many subvolumes are mounted
            try:
                state = self._btrfs(m)
            except DeviceIOError:
                with open(MOUNTINFO, "rb") as f:
                    if m not in parse_mountinfo(f.read()):
                        continue  # unmounted meanwhile
                raise
            if state is not None:
                arrays.append(state)
        return arrays

    def _btrfs(self, m: Mount) -> RaidState | None:
        """`btrfs filesystem show` where it may open the members (root: it names the devid
        of a missing one, which a replacement needs); else the kernel's view in sysfs, which
        needs no privileges (the firmware's own user)."""
        try:
            out = self._btrfs_cmd("filesystem", "show", "--raw", m.mount_point)
        except DeviceIOError:
            seen = btrfs_from_sysfs(self.sys_fs_btrfs, m.source) if m.source else None
            if seen is None:
                raise
            show, stats, level = seen
            return btrfs_state(m, show, stats, level) if show.total >= 2 else None
        show = parse_btrfs_show(out)
        if show.total < 2:
            return None
        # A member pulled while mounted stays listed under its old name: btrfs marks devices
        # missing only at mount. Its device node gone (udev removed it) is the fact that says.
        gone = {i: None for i, p in show.devices.items() if p and not os.path.exists(p)}
        show = dataclasses.replace(show, devices={**show.devices, **gone})
        stats = parse_btrfs_stats(self._btrfs_cmd("device", "stats", m.mount_point))
        level = ""
        if show.uuid:
            try:
                profiles = os.listdir(f"/sys/fs/btrfs/{show.uuid}/allocation/data")
                level = "+".join(sorted(p for p in profiles if p in BTRFS_PROFILES))
            except OSError:
                pass
        return btrfs_state(m, show, stats, level)

    def _btrfs_cmd(self, *args: str) -> str:
        proc = _run([self.btrfs, *args], BTRFS_TIMEOUT_S, f"btrfs {args[-1]}")
        if proc.returncode != 0:
            raise DeviceIOError(f"btrfs {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    # changes

    def watch(self, stop: threading.Event) -> Iterator[DiskEvent]:
        """Changes after this call returns (the baseline is taken here, not at the first
        next()). udev's monitor only wakes the scan up; the events come from comparing sysfs
        snapshots, so both ways report the same: add/remove when a medium appears or goes
        (size 0 counts as gone, as for loop devices), change when the size or ro flag moves."""
        before = self._snapshot()
        monitor = _udev_monitor()
        return self._watch(stop, before, monitor)

    def _watch(
        self, stop: threading.Event, before: dict[str, tuple[int, bool]], monitor: Any
    ) -> Iterator[DiskEvent]:
        while not stop.is_set():
            if monitor is None:
                stop.wait(WATCH_POLL_S)
            elif monitor.poll(timeout=WATCH_POLL_S) is not None:
                while monitor.poll(timeout=0) is not None:
                    pass  # one rescan for a burst of events
            now = self._snapshot()
            for name in sorted(before.keys() | now.keys()):
                old, new = before.get(name), now.get(name)
                if old == new:
                    continue
                action = "add" if old is None else "remove" if new is None else "change"
                yield DiskEvent(action, name)
            before = now

    def _snapshot(self) -> dict[str, tuple[int, bool]]:
        """name -> (size in sectors, read-only) of every disk with a medium."""
        snap = {}
        try:
            names = os.listdir(self.sys_block)
        except OSError as e:
            raise Unavailable(f"{self.sys_block}: {e.strerror}") from None
        for name in names:
            size = _read(os.path.join(self.sys_block, name, "size"))
            if size and size.isdigit() and int(size) > 0:
                snap[name] = (int(size), _read(os.path.join(self.sys_block, name, "ro")) == "1")
        return snap


def _vpd_serial(sysdir: str) -> str | None:
    """SCSI/SATA serial from VPD page 0x80: 4 header bytes, then the ASCII serial."""
    try:
        with open(os.path.join(sysdir, "device", "vpd_pg80"), "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[4:].decode("ascii", "replace").strip("\0 ") or None


def _udev_monitor() -> Any:
    """A started pyudev monitor for block events when a udev daemon runs, else None."""
    if not os.path.exists(UDEV_CONTROL):
        return None
    try:
        import pyudev

        monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        monitor.filter_by("block")
        monitor.start()
        return monitor
    except Exception:  # no libudev or no netlink socket: polling still works
        return None
