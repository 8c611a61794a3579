"""Volume actions on Linux: blkid and wipefs to probe and clear drives, btrfs-progs to make,
grow and repair the recording volume, mount(8). Works without a udev daemon: members are named
to the kernel at mount time (device=...), and labels are found by probing every device."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from hal.errors import DeviceIOError, DeviceTimeout, Unavailable
from hal.linux.disks import MOUNTINFO, SYS_BLOCK, parse_mountinfo, whole_disk
from hal.volumes import ReplaceProgress, ReplaceState

SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/usr", "/data")
SYS_FS_BTRFS = "/sys/fs/btrfs"
QUICK_S = 60
"""probe, wipe, mkfs, mount, starting a replace."""
LONG_S = 7 * 24 * 3600
"""remove missing and the convert balance move data: as long as the drives need."""
BUSY = "another exclusive operation"
"""btrfs's answer while a replace, balance or device change holds the volume. The kernel
drops a finished replace's hold a moment after `replace status` says finished."""
BUSY_POLL_S = 0.2


def _run(
    argv: list[str], timeout: float, ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise Unavailable(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise DeviceTimeout(f"{' '.join(argv)}: no answer in {timeout:.0f} s") from None
    if proc.returncode not in ok:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise DeviceIOError(f"{' '.join(argv)}: {msg[-1] if msg else f'exit {proc.returncode}'}")
    return proc


def parse_blkid_export(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
_ERRS = re.compile(r"(\d+) write errs, (\d+) uncorr\. read errs")


def parse_replace_status(text: str) -> ReplaceProgress:
    """`btrfs replace status -1`: `Never started`, `12.3% done, 0 write errs, 0 uncorr. read
    errs`, `Started on ..., finished on ..., ...`, `..., canceled on ... at 12.3%, ...`,
    `..., suspended on ... at 12.3%, ...`."""
    line = text.strip().splitlines()[-1].strip() if text.strip() else ""
    errs = _ERRS.search(line)
    w, r = (int(errs.group(1)), int(errs.group(2))) if errs else (0, 0)
    pct = _PERCENT.search(line)
    percent = float(pct.group(1)) if pct else None
    if line.startswith("Never started"):
        state = ReplaceState.NEVER
    elif "finished on" in line:
        state, percent = ReplaceState.FINISHED, 100.0
    elif "canceled on" in line:
        state = ReplaceState.CANCELED
    elif "suspended on" in line:
        state = ReplaceState.SUSPENDED
    elif "% done" in line:
        state = ReplaceState.RUNNING
    else:
        raise DeviceIOError(f"btrfs replace status: unrecognised answer {line[:80]!r}")
    return ReplaceProgress(state, percent, w, r, line)


class LinuxVolumes:
    def __init__(self, btrfs: str = "btrfs", sys_block: str = SYS_BLOCK,
                 sys_fs_btrfs: str = SYS_FS_BTRFS) -> None:  # fmt: skip
        self.btrfs, self.sys_block, self.sys_fs_btrfs = btrfs, sys_block, sys_fs_btrfs

    # probing

    def signature(self, device: str) -> str | None:
        name = os.path.basename(device)
        sysdir = Path(self.sys_block, name)
        if any((p / "partition").exists() for p in sysdir.glob(name + "*")):
            return "partitions"
        proc = _run(["blkid", "-p", "-o", "export", device], QUICK_S, ok=(0, 2))
        if proc.returncode == 2:
            return None  # nothing found
        tags = parse_blkid_export(proc.stdout)
        return tags.get("TYPE") or tags.get("PTTYPE") or "unknown signature"

    def _mounts(self) -> list:
        with open(MOUNTINFO, "rb") as f:
            return parse_mountinfo(f.read())

    def system_disks(self) -> set[str]:
        return {
            whole_disk(m.source)
            for m in self._mounts()
            if m.mount_point in SYSTEM_MOUNTS and m.source and m.source.startswith("/dev/")
        }

    def in_use(self) -> set[str]:
        used = {whole_disk(m.source) for m in self._mounts()
                if m.source and m.source.startswith("/dev/")}  # fmt: skip
        for members in Path(self.sys_fs_btrfs).glob("*/devices/*"):
            used.add(whole_disk("/dev/" + members.name))
        for holders in Path(self.sys_block).glob("*/holders/*"):
            used.add("/dev/" + holders.parent.parent.name)
        for holders in Path(self.sys_block).glob("*/*/holders/*"):  # a partition's
            used.add("/dev/" + holders.parent.parent.parent.name)
        return used

    def find_label(self, label: str) -> list[str]:
        """Probes every device (no udev cache needed): `blkid -c /dev/null`."""
        proc = _run(["blkid", "-c", "/dev/null", "-t", f"LABEL={label}", "-o", "device"],
                    QUICK_S, ok=(0, 2))  # fmt: skip
        return sorted(line.strip() for line in proc.stdout.splitlines() if line.strip())

    # making the volume

    def wipe(self, device: str) -> None:
        _run(["wipefs", "--all", "--quiet", device], QUICK_S)
        # A btrfs member the kernel still remembers would join the next mount by its old fsid.
        subprocess.run([self.btrfs, "device", "scan", "--forget", device], capture_output=True)

    def mkfs_btrfs(self, label: str, profile: str, devices: list[str]) -> None:
        meta = "dup" if profile == "single" else profile
        _run(["mkfs.btrfs", "--quiet", "--force", "--label", label, "--data", profile,
              "--metadata", meta, *devices], QUICK_S * 5)  # fmt: skip

    def mount(self, devices: list[str], mount_point: str, degraded: bool = False) -> None:
        opts = ["noatime", *(f"device={d}" for d in devices)]
        if degraded:
            opts.append("degraded")
        Path(mount_point).mkdir(parents=True, exist_ok=True)
        _run(["mount", "-t", "btrfs", "-o", ",".join(opts), devices[0], mount_point], QUICK_S)

    def unmount(self, mount_point: str) -> None:
        _run(["umount", mount_point], QUICK_S)

    # repairing it

    def replace_start(self, mount_point: str, source: str, target: str) -> None:
        _run([self.btrfs, "replace", "start", "-f", source, target, mount_point], QUICK_S)

    def replace_status(self, mount_point: str) -> ReplaceProgress:
        proc = _run([self.btrfs, "replace", "status", "-1", mount_point], QUICK_S)
        return parse_replace_status(proc.stdout)

    def add_device(self, mount_point: str, device: str) -> None:
        _run([self.btrfs, "device", "add", "-f", device, mount_point], QUICK_S)

    def remove_missing(self, mount_point: str) -> None:
        _run([self.btrfs, "device", "remove", "missing", mount_point], LONG_S)

    def convert_raid1(self, mount_point: str) -> None:
        argv = [self.btrfs, "balance", "start", "-dconvert=raid1,soft", "-mconvert=raid1,soft",
                mount_point]  # fmt: skip
        _run_when_free(argv, LONG_S, QUICK_S)


def _run_when_free(
    argv: list[str], timeout: float, wait_s: float, sleep=time.sleep, clock=time.monotonic
) -> subprocess.CompletedProcess:
    """Runs an exclusive btrfs operation, waiting up to `wait_s` for one still holding the
    volume (a replace that has just finished) to let go; any other failure is raised at once."""
    deadline = clock() + wait_s
    while True:
        try:
            return _run(argv, timeout)
        except DeviceIOError as e:
            if BUSY not in str(e) or clock() >= deadline:
                raise
        sleep(BUSY_POLL_S)
