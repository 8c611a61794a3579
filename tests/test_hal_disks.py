"""One contract for disks: the simulated backend always, the Linux one on real loop devices
(ext4 and a two-device btrfs raid1), plus the parsers against fixture texts."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import hal.linux.disks as linux_disks
from hal.disks import DiskEvent
from hal.errors import Unavailable
from hal.linux.disks import (
    READ_ONLY_OPTIONS,
    LinuxDisks,
    Mount,
    btrfs_state,
    mount_of,
    parse_btrfs_show,
    parse_btrfs_stats,
    parse_mdstat,
    parse_mountinfo,
    parse_smartctl,
)
from hal.sim.disks import SimDisks
from tests.conftest import wait_until

MiB = 1 << 20


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def _loops_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "loop devices need root"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control (no loop driver)"
    probe = subprocess.run(["losetup", "--find"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"losetup --find fails: {probe.stderr.strip()}"
    return None


class SimRig:
    """The same steps as LoopRig, scripted on SimDisks."""

    def __init__(self, tmp_path: Path) -> None:
        self.disks = SimDisks()
        self.count = 0

    def attach(self, size: int = 64 * MiB) -> str:
        self.count += 1
        name = f"loop{100 + self.count}"
        self.disks.add_device(name, size, smart=False)  # a loop device has no SMART
        return name

    def detach(self, name: str) -> None:
        self.disks.remove_device(name)

    def set_read_only(self, name: str) -> None:
        self.disks.set_read_only(name)

    def mkfs_mount(self, name: str, mnt: Path) -> None:
        mnt.mkdir(parents=True, exist_ok=True)
        self.disks.mount(name, mnt)

    def remount_ro(self, mnt: Path) -> None:
        self.disks.remount(mnt, read_only=True)

    def umount(self, mnt: Path) -> None:
        self.disks.unmount(mnt)

    def btrfs_raid1(self, mnt: Path) -> list[str]:
        names = [self.attach(128 * MiB), self.attach(128 * MiB)]
        self.disks.add_raid(str(mnt), "btrfs", "raid1", [f"/dev/{n}" for n in names])
        self.mkfs_mount(names[0], mnt)
        return names

    def lose_second_and_mount_degraded(self, mnt: Path, names: list[str]) -> None:
        self.umount(mnt)
        self.detach(names[1])
        self.disks.mount(names[0], mnt)

    def close(self) -> None:
        pass


class LoopRig:
    """Real loop devices on sparse files; whatever was set up is torn down in close()."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.disks = LinuxDisks()
        self.loops: list[str] = []
        self.mounts: list[Path] = []

    def attach(self, size: int = 64 * MiB) -> str:
        img = self.dir / f"disk{len(self.loops)}-{os.urandom(3).hex()}.img"
        with open(img, "wb") as f:
            f.truncate(size)
        dev = _run("losetup", "--find", "--show", str(img)).strip()
        self.loops.append(dev)
        return os.path.basename(dev)

    def detach(self, name: str) -> None:
        dev = f"/dev/{name}"
        _forget(dev)
        _run("losetup", "-d", dev)
        self.loops.remove(dev)
        _writable(dev)

    def set_read_only(self, name: str) -> None:
        _run("blockdev", "--setro", f"/dev/{name}")

    def _mount(self, mnt: Path, *args: str) -> None:
        mnt.mkdir(parents=True, exist_ok=True)
        _run("mount", *args, str(mnt))
        self.mounts.append(mnt)

    def mkfs_mount(self, name: str, mnt: Path) -> None:
        _run("mkfs.ext4", "-q", "-F", f"/dev/{name}")
        self._mount(mnt, f"/dev/{name}")

    def remount_ro(self, mnt: Path) -> None:
        _run("mount", "-o", "remount,ro", str(mnt))

    def umount(self, mnt: Path) -> None:
        _run("umount", str(mnt))
        self.mounts.remove(mnt)

    def btrfs_raid1(self, mnt: Path) -> list[str]:
        a, b = self.attach(128 * MiB), self.attach(128 * MiB)
        _run("mkfs.btrfs", "-q", "-f", "-d", "raid1", "-m", "raid1", f"/dev/{a}", f"/dev/{b}")
        # No udev here to register the members with the kernel: name them at mount.
        self._mount(mnt, "-o", f"device=/dev/{a},device=/dev/{b}", f"/dev/{a}")
        return [a, b]

    def lose_second_and_mount_degraded(self, mnt: Path, names: list[str]) -> None:
        self.umount(mnt)
        self.detach(names[1])
        self._mount(mnt, "-o", f"degraded,device=/dev/{names[0]}", f"/dev/{names[0]}")

    def close(self) -> None:
        for mnt in reversed(self.mounts):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        for dev in self.loops:
            _forget(dev)
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        for dev in self.loops:
            with contextlib.suppress(AssertionError):
                _writable(dev)


def _forget(dev: str) -> None:
    """The kernel keeps a btrfs member registered after losetup -d; a later degraded mount
    must not find it."""
    subprocess.run(["btrfs", "device", "scan", "--forget", dev], capture_output=True)


def _writable(dev: str) -> None:
    """The read-only flag of blockdev --setro stays on the device node after losetup -d and
    would carry over to whoever attaches it next. Cleared once detached (which the kernel
    defers while anyone has the device open), so that this makes no change event."""
    size = Path("/sys/block", os.path.basename(dev), "size")
    wait_until(lambda: size.read_text().strip() == "0", 5, f"{dev} to be detached")
    subprocess.run(["blockdev", "--setrw", dev], capture_output=True)


@pytest.fixture(params=["sim", "linux"])
def rig(request, tmp_path) -> Iterator[SimRig | LoopRig]:
    if request.param == "linux" and (why := _loops_unavailable()):
        pytest.skip(why)
    r = SimRig(tmp_path) if request.param == "sim" else LoopRig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def test_devices_lists_an_attached_disk_with_its_size(rig):
    name = rig.attach(64 * MiB)
    found = {d.name: d for d in rig.disks.devices()}
    assert name in found
    dev = found[name]
    assert dev.path == f"/dev/{name}"
    assert dev.size_bytes == 64 * MiB
    assert not dev.read_only and not dev.removable


def test_mount_state_of_the_data_disk(rig, tmp_path):
    name = rig.attach(64 * MiB)
    mnt = tmp_path / "data disk"  # a space: mountinfo escapes it as \040
    rig.mkfs_mount(name, mnt)
    (mnt / "recordings").mkdir()
    st = rig.disks.mount_state(mnt / "recordings")
    assert st.path == str((mnt / "recordings").resolve())
    assert st.mount_point == str(mnt.resolve())
    assert st.device == f"/dev/{name}"
    assert st.fstype == "ext4"
    assert not st.read_only
    assert 0 < st.free_bytes <= st.total_bytes <= 64 * MiB
    if isinstance(rig, LoopRig):
        vfs = os.statvfs(mnt)
        assert st.total_bytes == vfs.f_blocks * vfs.f_frsize
        size, avail = map(int, _run("df", "-B1", "--output=size,avail", str(mnt)).split()[-2:])
        assert st.total_bytes == size
        assert abs(st.free_bytes - avail) <= MiB
        assert st.total_bytes > 48 * MiB  # ext4's own metadata takes the rest


def test_read_only_remount_is_reported(rig, tmp_path):
    name = rig.attach()
    mnt = tmp_path / "data"
    rig.mkfs_mount(name, mnt)
    assert rig.disks.mount_state(mnt).read_only is False
    rig.remount_ro(mnt)
    assert rig.disks.mount_state(mnt).read_only is True


def test_an_unmounted_data_disk_is_noticed(rig, tmp_path):
    name = rig.attach()
    mnt = tmp_path / "data"
    rig.mkfs_mount(name, mnt)
    (mnt / "recordings").mkdir()
    before = rig.disks.mount_state(mnt)
    rig.umount(mnt)
    after = rig.disks.mount_state(mnt)  # the bare directory on the filesystem below
    assert after.mount_point != before.mount_point
    assert after.device != before.device
    assert len(after.mount_point) < len(str(mnt.resolve()))
    with pytest.raises(Unavailable):
        rig.disks.mount_state(mnt / "recordings")  # went away with the disk


def _watch_disks(rig) -> None:
    """A disk comes, turns read-only, goes: each step is seen within 5 s, in order."""
    stop = threading.Event()
    seen: list[DiskEvent] = []
    events = rig.disks.watch(stop)  # changes from here on are reported

    def collect() -> None:
        for ev in events:
            seen.append(ev)

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    try:
        name = rig.attach()
        wait_until(lambda: DiskEvent("add", name) in seen, 5, f"add event for {name}")
        rig.set_read_only(name)
        wait_until(lambda: DiskEvent("change", name) in seen, 5, f"change event for {name}")
        assert {d.name: d for d in rig.disks.devices()}[name].read_only
        rig.detach(name)
        wait_until(lambda: DiskEvent("remove", name) in seen, 5, f"remove event for {name}")
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()
    mine = [ev.action for ev in seen if ev.device == name]
    assert mine == ["add", "change", "remove"]


def test_watch_sees_a_disk_come_change_and_go(rig):
    _watch_disks(rig)


def test_watch_rescans_when_udev_wakes_it(monkeypatch, tmp_path):
    """Where a udev daemon runs, its monitor paces the rescans (none runs here: a stand-in
    monitor that reports an event at every poll)."""
    if why := _loops_unavailable():
        pytest.skip(why)

    class Monitor:
        polls = 0

        def poll(self, timeout: float | None = None) -> object | None:
            self.polls += 1
            return object() if self.polls % 2 else None

    monitor = Monitor()
    monkeypatch.setattr(linux_disks, "_udev_monitor", lambda: monitor)
    r = LoopRig(tmp_path)
    try:
        _watch_disks(r)
    finally:
        r.close()
    assert monitor.polls > 0


def test_smart_of_a_disk_without_smart_is_not_an_error(rig):
    name = rig.attach()
    health = rig.disks.smart(f"/dev/{name}")
    assert health.passed is None
    assert health.device == f"/dev/{name}"
    with pytest.raises(Unavailable):
        rig.disks.smart("/dev/no-such-disk")


def test_btrfs_raid1_is_listed_then_degraded(rig, tmp_path):
    mnt = tmp_path / "pool"
    names = rig.btrfs_raid1(mnt)

    def ours():
        found = [r for r in rig.disks.raid() if r.name == str(mnt.resolve())]
        assert len(found) == 1, rig.disks.raid()
        return found[0]

    r = ours()
    assert (r.kind, r.level) == ("btrfs", "raid1")
    assert r.members == [f"/dev/{n}" for n in names]
    assert not r.degraded and r.failed == []

    rig.lose_second_and_mount_degraded(mnt, names)
    r = ours()
    assert r.degraded
    assert len(r.failed) == 1 and f"/dev/{names[0]}" not in r.failed
    assert len(r.members) == 2 and f"/dev/{names[0]}" in r.members


def test_single_device_filesystems_are_not_raid(rig, tmp_path):
    mnt = tmp_path / "data"
    rig.mkfs_mount(rig.attach(), mnt)
    assert all(r.name != str(mnt.resolve()) for r in rig.disks.raid())


def test_sim_scripting(tmp_path):
    disks = SimDisks()
    disks.add_device("sda", 4 << 40, model="WDC WD40PURZ", serial="WD-1")
    disks.add_device("sdb", 4 << 40)
    disks.mount("sda", tmp_path)
    disks.set_free(tmp_path, 10 * MiB)
    assert disks.mount_state(tmp_path).free_bytes == 10 * MiB
    assert disks.smart("/dev/sda").passed is True
    disks.fail_smart("sda")
    assert disks.smart("sda").passed is False
    disks.add_raid("md0", "md", "raid1", ["/dev/sda", "/dev/sdb"])
    assert not disks.raid()[0].degraded
    disks.degrade_raid("md0", "/dev/sdb")
    [md] = disks.raid()
    assert md.degraded and md.failed == ["/dev/sdb"]
    disks.remove_device("sda")  # takes its filesystem along, and the array's other half
    assert disks.mount_state(tmp_path).device == "/dev/sim0"
    assert disks.raid()[0].failed == ["/dev/sdb", "/dev/sda"]
    with pytest.raises(Unavailable):
        disks.smart("sda")


# --- Linux specifics without devices ---------------------------------------------------------


def test_smartctl_missing_is_unavailable():
    with pytest.raises(Unavailable, match="not installed"):
        LinuxDisks(smartctl="/nonexistent/smartctl").smart("/dev/null")


def test_smartctl_failing_bit_is_honoured(tmp_path):
    """A stand-in smartctl that says PASSED in its JSON but exits with bit 3 (DISK FAILING)."""
    fake = tmp_path / "smartctl"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(ATA_REPORT)}\nEOF\nexit 8\n")
    fake.chmod(0o755)
    health = LinuxDisks(smartctl=str(fake)).smart("/dev/null")
    assert health.passed is False
    assert health.reallocated_sectors == 8


def test_mount_state_of_a_missing_path_is_unavailable(tmp_path):
    with pytest.raises(Unavailable):
        LinuxDisks().mount_state(tmp_path / "gone")


# Fixture text: smartctl 7.3 --json -H -A -i of a SATA surveillance disk (trimmed).
ATA_REPORT = {
    "smartctl": {"version": [7, 3], "exit_status": 0},
    "device": {"name": "/dev/sda", "info_name": "/dev/sda [SAT]", "type": "sat"},
    "model_family": "Western Digital Purple",
    "model_name": "WDC WD40PURZ-85AKKY0",
    "serial_number": "WD-WX12D1234567",
    "smart_status": {"passed": True},
    "ata_smart_attributes": {
        "revision": 16,
        "table": [
            {"id": 5, "name": "Reallocated_Sector_Ct", "value": 200, "worst": 200,
             "thresh": 140, "raw": {"value": 8, "string": "8"}},
            {"id": 9, "name": "Power_On_Hours", "value": 71, "worst": 71, "thresh": 0,
             "raw": {"value": 21456, "string": "21456"}},
            {"id": 194, "name": "Temperature_Celsius", "value": 113, "worst": 98,
             "thresh": 0, "raw": {"value": 184684773413, "string": "37 (Min/Max 18/43)"}},
            {"id": 197, "name": "Current_Pending_Sector", "value": 200, "worst": 200,
             "thresh": 0, "raw": {"value": 2, "string": "2"}},
        ],
    },
    "power_on_time": {"hours": 21456},
    "temperature": {"current": 37},
}  # fmt: skip

# Fixture text: smartctl 7.3 --json -H -A -i of an NVMe SSD (trimmed).
NVME_REPORT = {
    "smartctl": {"version": [7, 3], "exit_status": 0},
    "device": {"name": "/dev/nvme0", "info_name": "/dev/nvme0", "type": "nvme"},
    "model_name": "Samsung SSD 970 EVO Plus 1TB",
    "serial_number": "S4EWNX0R123456A",
    "smart_status": {"passed": True, "nvme": {"value": 0}},
    "nvme_smart_health_information_log": {
        "critical_warning": 0, "temperature": 41, "available_spare": 100,
        "percentage_used": 2, "power_on_hours": 5120, "media_errors": 3,
        "num_err_log_entries": 12,
    },
    "temperature": {"current": 41},
    "power_on_time": {"hours": 5120},
}  # fmt: skip


def test_parse_smartctl_ata():
    h = parse_smartctl("/dev/sda", ATA_REPORT, 0)
    assert h.passed is True
    assert (h.temperature_c, h.power_on_hours) == (37.0, 21456)
    assert (h.reallocated_sectors, h.pending_sectors, h.media_errors) == (8, 2, None)
    assert (h.model, h.serial) == ("WDC WD40PURZ-85AKKY0", "WD-WX12D1234567")
    # Without the summary fields the attributes' raw strings are used (not the packed raw
    # value, which carries min/max in its upper bytes).
    bare = copy.deepcopy(ATA_REPORT)
    del bare["temperature"], bare["power_on_time"]
    h = parse_smartctl("/dev/sda", bare, 0)
    assert (h.temperature_c, h.power_on_hours) == (37.0, 21456)


def test_parse_smartctl_nvme():
    h = parse_smartctl("/dev/nvme0n1", NVME_REPORT, 0)
    assert h.passed is True
    assert (h.temperature_c, h.power_on_hours, h.media_errors) == (41.0, 5120, 3)
    assert h.reallocated_sectors is None


def test_parse_smartctl_exit_bits():
    assert parse_smartctl("/dev/sda", ATA_REPORT, 0b1000).passed is False  # DISK FAILING
    assert parse_smartctl("/dev/sda", ATA_REPORT, 0b0100_0000).passed is True  # error log only
    assert parse_smartctl("/dev/sdb", {}, 0b10).passed is None  # open/IDENTIFY failed
    assert parse_smartctl("/dev/loop0", {}, 0b01).passed is None  # unknown device type


# Fixture texts: /proc/mdstat as the kernel writes it.
MDSTAT_CLEAN_RAID1 = """\
Personalities : [raid1] [linear] [multipath] [raid0] [raid6] [raid5] [raid4] [raid10]
md0 : active raid1 sdb1[1] sda1[0]
      976630464 blocks super 1.2 [2/2] [UU]
      bitmap: 0/8 pages [0KB], 65536KB chunk

unused devices: <none>
"""

MDSTAT_DEGRADED_RAID1 = """\
Personalities : [raid1]
md0 : active raid1 sda1[0]
      976630464 blocks super 1.2 [2/1] [U_]
      bitmap: 3/8 pages [12KB], 65536KB chunk

unused devices: <none>
"""

MDSTAT_FAILED_MEMBER = """\
Personalities : [raid1]
md0 : active raid1 sdb1[1](F) sda1[0]
      976630464 blocks super 1.2 [2/1] [U_]
      bitmap: 3/8 pages [12KB], 65536KB chunk

unused devices: <none>
"""

MDSTAT_RAID5_RECOVERING = """\
Personalities : [raid6] [raid5] [raid4]
md1 : active raid5 sde1[4] sdd1[2] sdc1[1] sdb1[0]
      5860147200 blocks super 1.2 level 5, 512k chunk, algorithm 2 [4/3] [UUU_]
      [=====>...............]  recovery = 27.3% (533401216/1953382400) finish=118.4min \
speed=199792K/sec
      bitmap: 0/15 pages [0KB], 65536KB chunk

md0 : active (auto-read-only) raid1 nvme1n1p1[1] nvme0n1p1[0]
      523264 blocks super 1.2 [2/2] [UU]

md127 : inactive sdf[0](S)
      1953382488 blocks super 1.2

unused devices: <none>
"""


def test_parse_mdstat_clean_raid1():
    [md] = parse_mdstat(MDSTAT_CLEAN_RAID1)
    assert (md.name, md.kind, md.level) == ("md0", "md", "raid1")
    assert md.members == ["/dev/sdb1", "/dev/sda1"]
    assert md.failed == [] and not md.degraded


def test_parse_mdstat_degraded_raid1():
    [md] = parse_mdstat(MDSTAT_DEGRADED_RAID1)
    assert md.degraded and md.failed == [] and md.members == ["/dev/sda1"]
    assert "[U_]" in md.detail


def test_parse_mdstat_failed_member():
    [md] = parse_mdstat(MDSTAT_FAILED_MEMBER)
    assert md.degraded
    assert md.failed == ["/dev/sdb1"]
    assert md.members == ["/dev/sdb1", "/dev/sda1"]


def test_parse_mdstat_raid5_recovering_and_others():
    md1, md0, md127 = parse_mdstat(MDSTAT_RAID5_RECOVERING)
    assert (md1.name, md1.level, md1.degraded, md1.failed) == ("md1", "raid5", True, [])
    assert len(md1.members) == 4 and "recovery 27.3%" in md1.detail
    assert (md0.level, md0.degraded) == ("raid1", False) and "auto-read-only" in md0.detail
    assert md0.members == ["/dev/nvme1n1p1", "/dev/nvme0n1p1"]
    assert (md127.level, md127.degraded) == ("", True) and "inactive" in md127.detail
    assert parse_mdstat("Personalities : \nunused devices: <none>\n") == []


# Fixture texts: `btrfs filesystem show --raw` with a missing member, older and newer progs.
BTRFS_SHOW_OLD = """\
Label: 'video'  uuid: 84c81241-debe-4308-8179-226c777086b1
\tTotal devices 2 FS bytes used 147456
\tdevid    1 size 134217728 used 109051904 path /dev/sdb
\t*** Some devices missing
"""

BTRFS_SHOW_MISSING_DISK = """\
Label: none  uuid: 84c81241-debe-4308-8179-226c777086b1
\tTotal devices 2 FS bytes used 147456
\tdevid    1 size 134217728 used 109051904 path /dev/sdb
\tdevid    2 size 0 used 0 path <missing disk>
"""

BTRFS_STATS = """\
[/dev/sdb].write_io_errs    0
[/dev/sdb].read_io_errs     5
[/dev/sdb].flush_io_errs    0
[/dev/sdb].corruption_errs  0
[/dev/sdb].generation_errs  0
[devid:2].write_io_errs    0
"""


def test_parse_btrfs_show_variants():
    old = parse_btrfs_show(BTRFS_SHOW_OLD)
    assert old.uuid == "84c81241-debe-4308-8179-226c777086b1"
    assert (old.total, old.devices) == (2, {1: "/dev/sdb"})
    new = parse_btrfs_show(BTRFS_SHOW_MISSING_DISK)
    assert (new.total, new.devices) == (2, {1: "/dev/sdb", 2: None})
    stats = parse_btrfs_stats(BTRFS_STATS)
    assert stats["/dev/sdb"]["read_io_errs"] == 5 and stats["devid:2"]["write_io_errs"] == 0


def test_btrfs_error_counters_and_uncounted_missing_devices():
    mount = Mount("0:40", "/srv/video", "btrfs", "/dev/sdb", frozenset({"rw"}))
    show = parse_btrfs_show(BTRFS_SHOW_MISSING_DISK.replace("<missing disk>", "/dev/sdc"))
    r = btrfs_state(mount, show, parse_btrfs_stats(BTRFS_STATS), "raid1")
    assert not r.degraded  # errors alone: still both copies there
    assert r.failed == ["/dev/sdb"] and "read_io_errs=5" in r.detail
    r = btrfs_state(mount, parse_btrfs_show(BTRFS_SHOW_OLD), {}, "raid1")
    assert r.degraded and r.members == ["/dev/sdb", "devid:?"] and r.failed == ["devid:?"]


def test_mountinfo_escapes_and_stacking():
    """Fixture text: /proc/self/mountinfo lines (octal escapes, a mount stacked on another)."""
    data = (
        b"27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        b"50 27 7:0 / /mnt/a rw,relatime shared:7 - ext4 /dev/loop0 rw\n"
        b"51 27 7:1 / /mnt/ab rw - ext4 /dev/loop1 rw\n"
        b"52 50 7:2 / /mnt/a rw - xfs /dev/loop2 ro,attr2\n"
        b"53 27 0:40 / /srv/my\\040data\\134x rw - tmpfs none rw\n"
    )
    mounts = parse_mountinfo(data)
    top = mount_of(mounts, "/mnt/a/x")
    assert top is not None and (top.source, top.fstype) == ("/dev/loop2", "xfs")
    assert "ro" in top.options  # read-only through its superblock options
    other = mount_of(mounts, "/mnt/ab")
    assert other is not None and other.source == "/dev/loop1"
    odd = mount_of(mounts, "/srv/my data\\x/file")
    assert odd is not None and odd.mount_point == "/srv/my data\\x" and odd.source is None


def test_an_ext4_the_kernel_made_read_only_counts_as_read_only():
    """After an ext4 error newer kernels keep `rw` on the mount and say `emergency_ro` in the
    superblock options; either form is read-only to the storage policy."""
    data = (
        b"27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        b"50 27 7:0 / /data rw,relatime - ext4 /dev/loop0 rw,errors=remount-ro,emergency_ro\n"
    )
    mount = mount_of(parse_mountinfo(data), "/data/x")
    assert mount is not None and READ_ONLY_OPTIONS & mount.options
    root = mount_of(parse_mountinfo(data), "/x")
    assert root is not None and not READ_ONLY_OPTIONS & root.options


def _sysfs_btrfs(root: Path, links: dict[str, bool], devinfo: dict[int, str]) -> Path:
    """/sys/fs/btrfs/<uuid> as the kernel lays it out: devices/<name> links (dangling when the
    block device went away), devinfo/<devid>/{missing,error_stats}, allocation/data/raid1."""
    fs = root / "57175c84-5017-4b4d-a142-9d0317a2245f"
    (fs / "devices").mkdir(parents=True)
    (fs / "allocation" / "data" / "raid1").mkdir(parents=True)
    for name, there in links.items():
        target = root / "block" / name
        if there:
            target.mkdir(parents=True)
        (fs / "devices" / name).symlink_to(target)
    for devid, missing in devinfo.items():
        d = fs / "devinfo" / str(devid)
        d.mkdir(parents=True)
        (d / "missing").write_text(missing + "\n")
        (d / "error_stats").write_text(f"write_errs {135 if devid == 2 else 0}\nread_errs 0\n")
    return root


def test_btrfs_from_sysfs_sees_a_member_pulled_while_mounted_and_one_missing_at_mount(tmp_path):
    """The kernel's view, read without privileges: a drive pulled out of a mounted raid1 keeps
    a dangling link and `missing` 0 (seen on the image); one absent at a degraded mount has no
    link and `missing` 1. Both make the volume degraded for the firmware's RAID check."""
    from hal.linux.disks import Mount, btrfs_from_sysfs, btrfs_state

    mount = Mount("0:42", "/data/nvr", "btrfs", "/dev/vdb", frozenset({"rw"}))
    pulled = _sysfs_btrfs(tmp_path / "a", {"vdb": True, "vdc": False}, {1: "0", 2: "0"})
    show, stats, level = btrfs_from_sysfs(pulled, "/dev/vdb")
    st = btrfs_state(mount, show, stats, level)
    assert (st.level, st.degraded, st.members) == ("raid1", True, ["/dev/vdb", "devid:?"])
    assert "write_errs=135" in st.detail
    at_mount = _sysfs_btrfs(tmp_path / "b", {"vdb": True}, {1: "0", 2: "1"})
    st = btrfs_state(mount, *btrfs_from_sysfs(at_mount, "/dev/vdb"))
    assert st.degraded and "devid 2 missing" in st.detail
    whole = _sysfs_btrfs(tmp_path / "c", {"vdb": True, "vdc": True}, {1: "0", 2: "0"})
    st = btrfs_state(mount, *btrfs_from_sysfs(whole, "/dev/vdb"))
    assert not st.degraded and st.members == ["/dev/vdb", "/dev/vdc"]
    assert btrfs_from_sysfs(whole, "/dev/sda") is None  # not a btrfs member: the command asks
