"""Recording drives: the planner (firmware/drives.py), the volume actions' parsers, the sim
backend, and `nvr storage` on real loop devices: a btrfs raid1 made, written, degraded, mounted
at "boot", and made whole with a third drive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.alert_ids import AlertId
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.drives import (
    AddDevice,
    Choice,
    ConvertToRaid1,
    Drive,
    Layout,
    MakeFilesystem,
    MountVolume,
    RecordVolume,
    Refused,
    RemoveMissing,
    ReplaceDevice,
    Unconfirmed,
    Unfit,
    WipeSignatures,
    WriteIdentity,
    candidates,
    plan_init,
    plan_replace,
    unfit,
    volume_label,
)
from firmware.hw.storage import health_alerts
from firmware.storagecli import Storage, init_volume, replace_drive, status_lines
from hal.disks import BlockDevice, RaidState
from hal.errors import DeviceIOError
from hal.linux.disks import LinuxDisks
from hal.linux.volumes import LinuxVolumes, _run_when_free, parse_blkid_export, parse_replace_status
from hal.sim.disks import SimDisks
from hal.sim.volumes import SimVolumes
from hal.volumes import ReplaceState
from tests.conftest import wait_until

GiB = 1 << 30
TB = 10**12
ID = "2500335b-1870-4815-9e00-a749420e5854"


def drive(name: str, size: int = 4 * TB, serial: str | None = None, signature: str | None = None,
          **kw) -> Drive:  # fmt: skip
    flags = {k: kw.pop(k) for k in ("read_only", "removable") if k in kw}
    dev = BlockDevice(name, f"/dev/{name}", size, "WDC WD40PURZ", serial, **flags)
    return Drive(dev, signature, **kw)


def plan(drives, *names, confirmed=(), **kw):
    return plan_init(drives, Choice(tuple(names), frozenset(confirmed), **kw), identity=ID,
                     board="a", mount_point="/data/nvr")  # fmt: skip


# --- the planner ---------------------------------------------------------------------------------


def test_two_blank_drives_make_a_raid1_labelled_with_the_identity():
    drives = [drive("mmcblk0", 32 * GiB, system=True), drive("sda", serial="WD-1"),
              drive("sdb", serial="WD-2")]  # fmt: skip
    p = plan(drives, "sda", "WD-2")  # by kernel name and by serial
    assert p.layout == Layout.RAID1 and p.label == "nvr-" + ID == volume_label(ID)
    assert p.steps == (
        WipeSignatures("/dev/sda"),
        WipeSignatures("/dev/sdb"),
        MakeFilesystem(p.label, Layout.RAID1, ("/dev/sda", "/dev/sdb")),
        MountVolume(("/dev/sda", "/dev/sdb"), "/data/nvr"),
        WriteIdentity("/data/nvr", ID, "a"),
        RecordVolume(p.label, Layout.RAID1, "/data/nvr",
                     (("/dev/sda", "WDC WD40PURZ", "WD-1"), ("/dev/sdb", "WDC WD40PURZ", "WD-2"))),
    )  # fmt: skip
    assert plan(drives, "/dev/sda").layout == Layout.SINGLE


def test_unfit_drives_are_refused_with_the_reason():
    drives = [drive("mmcblk0", 32 * GiB, system=True), drive("sdc", read_only=True),
              drive("sdd", removable=True), drive("sde", 512 << 20), drive("sdf", in_use=True),
              drive("sdg", smart_passed=False), drive("zram0"), drive("sdh")]  # fmt: skip
    want = {"mmcblk0": Unfit.SYSTEM, "sdc": Unfit.READ_ONLY, "sdd": Unfit.REMOVABLE,
            "sde": Unfit.TOO_SMALL, "sdf": Unfit.IN_USE, "sdg": Unfit.FAILING,
            "zram0": Unfit.NOT_A_DRIVE, "sdh": None}  # fmt: skip
    assert {d.device.name: unfit(d) for d in drives} == want
    assert [d.device.name for d in candidates(drives)] == ["sdh"]
    assert unfit(drives[2], allow_removable=True) is None
    for name, why in want.items():
        if why is None:
            continue
        with pytest.raises(Refused) as e:
            plan(drives, name, "sdh")
        assert why.value in str(e.value) and f"/dev/{name}" in str(e.value)
    with pytest.raises(Refused, match="no such drive"):
        plan(drives, "sdz")
    with pytest.raises(Refused, match="chosen twice"):
        plan(drives, "sdh", "/dev/sdh")
    with pytest.raises(Refused, match="no drive chosen"):
        plan(drives)


def test_a_drive_with_data_needs_its_serial_confirmed():
    drives = [drive("sda", serial="WD-1", signature="ext4"), drive("loop3", signature="gpt")]
    with pytest.raises(Unconfirmed) as e:
        plan(drives, "sda", "loop3", confirmed={"WD-2"})
    assert [d.key for d in e.value.drives] == ["WD-1", "/dev/loop3"]  # no serial: its path
    assert "serial WD-1" in str(e.value) and "WDC WD40PURZ" in str(e.value)
    with pytest.raises(Unconfirmed) as e:
        plan(drives, "sda", "loop3", confirmed={"WD-1"})
    assert [d.key for d in e.value.drives] == ["/dev/loop3"]
    p = plan(drives, "sda", "loop3", confirmed={"WD-1", "/dev/loop3"})
    assert [d.key for d in p.wiped] == ["WD-1", "/dev/loop3"]


def _raid(failed: list[str], members: list[str] | None = None, degraded: bool = True):
    members = members or ["/dev/sda", "devid:2"]
    return RaidState("/data/nvr", "btrfs", "raid1", members, failed, degraded, "devid 2 missing")


def test_replace_plans():
    drives = [drive("mmcblk0", 32 * GiB, system=True), drive("sda", serial="WD-1", in_use=True),
              drive("sdc", serial="WD-3"), drive("sdd", 2 * TB, serial="WD-4"),
              drive("sde", serial="WD-5", signature="xfs")]  # fmt: skip
    p = plan_replace(drives, _raid(["devid:2"]), "sdc")
    assert p.steps == (WipeSignatures("/dev/sdc"), ReplaceDevice("/data/nvr", "2", "/dev/sdc"),
                       ConvertToRaid1("/data/nvr"))  # fmt: skip
    assert p.tracks_progress and p.old == "devid 2"
    # Only counted as missing: add the new drive, drop the missing one.
    p = plan_replace(drives, _raid(["devid:?"], ["/dev/sda", "devid:?"]), "WD-3")
    assert p.steps == (WipeSignatures("/dev/sdc"), AddDevice("/data/nvr", "/dev/sdc"),
                       RemoveMissing("/data/nvr"), ConvertToRaid1("/data/nvr"))  # fmt: skip
    assert not p.tracks_progress
    # A failing member named: replaced by path.
    whole = _raid(["/dev/sda"], ["/dev/sda", "/dev/sdb"], degraded=False)
    p = plan_replace(drives, whole, "sdc", old="/dev/sda")
    assert ReplaceDevice("/data/nvr", "/dev/sda", "/dev/sdc") in p.steps
    with pytest.raises(Refused, match="is whole"):
        plan_replace(drives, whole, "sdc")
    with pytest.raises(Refused, match="smaller"):
        plan_replace(drives, _raid(["devid:2"]), "sdd")
    with pytest.raises(Refused, match="the system disk"):
        plan_replace(drives, _raid(["devid:2"]), "mmcblk0")
    with pytest.raises(Refused, match="no btrfs volume"):
        plan_replace(drives, None, "sdc")
    with pytest.raises(Unconfirmed):
        plan_replace(drives, _raid(["devid:2"]), "sde")
    assert plan_replace(drives, _raid(["devid:2"]), "sde", confirmed=frozenset({"WD-5"}))


_rarely = st.sampled_from([False] * 5 + [True])
_drives = st.lists(
    st.builds(
        lambda i, size, serial, sig, system, ro, rem, used, smart: drive(
            f"sd{chr(97 + i)}", size, serial, sig, system=system, read_only=ro, removable=rem,
            in_use=used, smart_passed=smart),
        st.integers(0, 3), st.sampled_from([GiB // 2, 2 * GiB, 4 * TB, 4 * TB]),
        st.sampled_from([None, "S1", "S2", "S3"]), st.sampled_from([None, "ext4", "gpt"]),
        _rarely, _rarely, _rarely, _rarely, st.sampled_from([None, True, True, False]),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda d: d.device.name,
)  # fmt: skip
_keys = st.frozensets(st.sampled_from(["S1", "S2", "S3", "/dev/sda", "/dev/sdb"]))


def _names(drives: list[Drive]) -> st.SearchStrategy[list[str]]:
    """Mostly drives that are there (by name, path or serial), now and then one that is not."""
    aliases = [[n for n in (d.device.name, d.path, d.device.serial) if n] for d in drives]
    some = st.lists(st.sampled_from(aliases), min_size=1, max_size=3, unique_by=id).flatmap(
        lambda picked: st.tuples(*(st.sampled_from(a) for a in picked)).map(list)
    )
    return st.one_of(some, some, some, some.map(lambda names: [*names, "sdq"]), st.just([]))


def _touched(steps) -> set[str]:
    out = set()
    for s in steps:
        for attr in ("device", "devices", "target"):
            v = getattr(s, attr, None)
            out |= set(v) if isinstance(v, tuple) else {v} if v else set()
    return out


@settings(max_examples=300, deadline=None)
@given(_drives, _keys, st.booleans(), st.data())
def test_never_a_format_of_the_system_disk_or_unconfirmed_data(drives, keys, removable, data):
    names = data.draw(_names(drives))
    try:
        p = plan(drives, *names, confirmed=keys, allow_removable=removable)
    except (Refused, Unconfirmed):
        return
    touched = _touched(p.steps)
    by_path = {d.path: d for d in drives}
    assert touched == {d.path for d in p.drives}
    for path in touched:
        d = by_path[path]
        assert not d.system and not d.in_use and not d.device.read_only
        assert d.smart_passed is not False and d.device.size_bytes >= GiB
        assert not d.has_data or d.key in keys
        assert removable or not d.device.removable


@settings(max_examples=300, deadline=None)
@given(_drives, st.sampled_from(["sda", "sdb", "S1", "S3"]), _keys)
def test_never_a_replace_onto_the_system_disk_or_unconfirmed_data(drives, new, keys):
    try:
        p = plan_replace(drives, _raid(["devid:2"]), new, confirmed=keys)
    except (Refused, Unconfirmed):
        return
    d = p.new
    assert _touched(p.steps) == {d.path}
    assert not d.system and not d.in_use and (not d.has_data or d.key in keys)


# --- parsers -------------------------------------------------------------------------------------


def test_parse_replace_status():
    """Fixture texts: `btrfs replace status -1` (btrfs-progs 6.2)."""
    p = parse_replace_status("Never started\n")
    assert (p.state, p.percent) == (ReplaceState.NEVER, None)
    p = parse_replace_status("12.9% done, 0 write errs, 0 uncorr. read errs\n")
    assert (p.state, p.percent) == (ReplaceState.RUNNING, 12.9)
    p = parse_replace_status("Started on  1.Dec 00:15:47, finished on  1.Dec 00:15:49, "
                             "2 write errs, 1 uncorr. read errs\n")  # fmt: skip
    assert (p.state, p.percent, p.write_errors, p.read_errors) == (ReplaceState.FINISHED, 100.0,
                                                                   2, 1)  # fmt: skip
    p = parse_replace_status("Started on  1.Dec 00:15:47, canceled on  1.Dec 00:16:01 at 40.1%"
                             ", 0 write errs, 0 uncorr. read errs")  # fmt: skip
    assert (p.state, p.percent) == (ReplaceState.CANCELED, 40.1)
    with pytest.raises(DeviceIOError, match="unrecognised"):
        parse_replace_status("ERROR: something else")
    assert parse_blkid_export("DEVNAME=/dev/loop3\nTYPE=ext4\nUSAGE=filesystem\n")["TYPE"] == "ext4"


def _fake_btrfs(tmp_path: Path, busy_times: int, other_error: str = "") -> Path:
    """A btrfs that answers `balance start` the way the kernel does while a finished replace
    still holds the volume, `busy_times` times, then succeeds (or fails with `other_error`)."""
    count = tmp_path / "calls"
    script = tmp_path / "btrfs"
    script.write_text(f"""#!/bin/sh
n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}
if [ $n -le {busy_times} ]; then
  echo "ERROR: unable to start balance, another exclusive operation 'device replace' \
in progress" >&2
  exit 1
fi
if [ -n "{other_error}" ]; then echo "ERROR: {other_error}" >&2; exit 1; fi
echo "Done, had to relocate 3 out of 7 chunks"
""")
    script.chmod(0o755)
    return script


def test_the_convert_balance_waits_for_a_finished_replace_to_let_go(tmp_path):
    vols = LinuxVolumes(btrfs=str(_fake_btrfs(tmp_path, busy_times=2)))
    vols.convert_raid1(str(tmp_path))
    assert (tmp_path / "calls").read_text().strip() == "3"


def test_the_convert_balance_raises_other_errors_at_once_and_busy_after_the_wait(tmp_path):
    vols = LinuxVolumes(btrfs=str(_fake_btrfs(tmp_path, busy_times=0, other_error="no space")))
    with pytest.raises(DeviceIOError, match="no space"):
        vols.convert_raid1(str(tmp_path))
    assert (tmp_path / "calls").read_text().strip() == "1"
    (tmp_path / "calls").unlink()
    busy = _fake_btrfs(tmp_path, busy_times=1000)
    t = [0.0]
    with pytest.raises(DeviceIOError, match="another exclusive operation"):
        _run_when_free([str(busy), "balance", "start", str(tmp_path)], 10, 1.0,
                       sleep=lambda s: t.__setitem__(0, t[0] + s), clock=lambda: t[0])  # fmt: skip
    assert int((tmp_path / "calls").read_text()) == 6  # at 0, 0.2, ... 1.0 s: then it gives up


# --- the sim backend: the same commands, scripted ---------------------------------------------


def _sim(tmp_path: Path) -> tuple[Storage, SimDisks, SimVolumes]:
    disks = SimDisks()
    disks.add_device("mmcblk0", 32 * GiB, model="eMMC", serial="E-1")
    for i, letter in enumerate("abc"):
        disks.add_device(f"sd{letter}", 4 * TB, model="WDC WD40PURZ", serial=f"WD-{i + 1}")
    vols = SimVolumes(disks)
    vols.system.add("/dev/mmcblk0")
    vols.signatures["/dev/sdb"] = "ntfs"
    (tmp_path / "data").mkdir()
    return Storage(disks, vols, tmp_path / "data", tmp_path / "root", "a"), disks, vols


def test_sim_lists_model_serial_smart_and_contents(tmp_path):
    storage, _, _ = _sim(tmp_path)
    found = {d.device.name: d for d in storage.drives()}
    assert found["sda"].device.model == "WDC WD40PURZ" and found["sda"].device.serial == "WD-1"
    assert found["sda"].smart_passed is True and found["sdb"].signature == "ntfs"
    assert found["mmcblk0"].system


def test_sim_init_asks_twice_and_replace_reports_progress(tmp_path):
    storage, disks, vols = _sim(tmp_path)
    said: list[str] = []
    answers = iter(["y", "WD-9"])  # a wrong serial: nothing done
    assert init_volume(storage, ["sda", "sdb"], yes=False, wipe_data=[], allow_removable=False,
                       ask=lambda q: next(answers), say=said.append) == 1  # fmt: skip
    assert vols.actions == [] and vols.signatures["/dev/sdb"] == "ntfs"
    assert any("model WDC WD40PURZ serial WD-2" in s and "ntfs" in s for s in said)
    answers = iter(["y", "WD-2"])
    assert init_volume(storage, ["sda", "sdb"], yes=False, wipe_data=[], allow_removable=False,
                       ask=lambda q: next(answers), say=said.append) == 0  # fmt: skip
    assert vols.actions[2][:3] == ("mkfs", "nvr-" + storage.record().label[4:], "raid1")
    ident = json.loads((tmp_path / "data" / "nvr-data.json").read_text())
    assert storage.record().label == "nvr-" + ident["id"]
    assert "whole" in status_lines(storage)[-1]
    disks.remove_device("sdb")
    assert "DEGRADED" in status_lines(storage)[-1]
    said.clear()
    assert replace_drive(storage, "sdc", old=None, yes=True, wipe_data=[], ask=input,
                         say=said.append, poll=0) == 0  # fmt: skip
    progress = [s for s in said if s.startswith("replace:")]
    assert progress == ["replace: running 33.3%", "replace: running 66.7%",
                        "replace: finished 100.0%"]  # fmt: skip
    assert said[-1] == "storage: the volume is whole again"
    assert [d["path"] for d in storage.record().drives] == ["/dev/sda", "/dev/sdc"]


# --- real loop devices ---------------------------------------------------------------------------


def _missing_tool() -> str | None:
    if os.geteuid() != 0:
        return "loop devices and mkfs need root"
    for tool in ("losetup", "mkfs.btrfs", "btrfs", "wipefs", "blkid", "mkfs.ext4"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} is not installed"
    if "btrfs" not in Path("/proc/filesystems").read_text():
        return "btrfs is not in this kernel (/proc/filesystems)"
    if subprocess.run(["losetup", "--find"], capture_output=True).returncode != 0:
        return "losetup --find fails (no loop devices)"
    return None


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


class Loops:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.devs, self.mounts = tmp, [], []

    def attach(self, size: int = 2 * GiB) -> str:
        img = self.tmp / f"drive{len(self.devs)}.img"
        with open(img, "wb") as f:
            f.truncate(size)  # sparse: costs nothing
        dev = _sh("losetup", "--find", "--show", str(img)).strip()
        self.devs.append(dev)
        return dev

    def forget(self, dev: str) -> None:
        """Unregistered from btrfs once the unmount has let go of it, then detached."""
        wait_until(lambda: subprocess.run(["btrfs", "device", "scan", "--forget", dev],
                                          capture_output=True).returncode == 0,
                   10, f"btrfs to let go of {dev}")  # fmt: skip
        _sh("losetup", "-d", dev)
        name = os.path.basename(dev)
        wait_until(lambda: Path(f"/sys/block/{name}/size").read_text().strip() == "0", 10,
                   f"{dev} to be detached")  # fmt: skip

    def close(self) -> None:
        for mnt in self.mounts:
            while Path(mnt).is_mount() and subprocess.run(["umount", mnt]).returncode == 0:
                pass
        for dev in self.devs:
            subprocess.run(["btrfs", "device", "scan", "--forget", dev], capture_output=True)
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        attached = _sh("losetup", "-a")
        assert not [d for d in self.devs if f"{d}:" in attached and str(self.tmp) in attached]


@pytest.fixture
def loops(tmp_path) -> Iterator[Loops]:
    if why := _missing_tool():
        pytest.skip(why)
    lp = Loops(tmp_path)
    lp.mounts.append(str(tmp_path / "data"))
    try:
        yield lp
    finally:
        lp.close()


def nvr(tmp: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "firmware.cli", "storage", *args, "--config",
            str(tmp / "none.toml"), "--data-dir", str(tmp / "data"),
            "--data-root", str(tmp / "root")]  # fmt: skip
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent.parent)  # fmt: skip


def _ours(tmp: Path) -> RaidState | None:
    found = [r for r in LinuxDisks().raid() if r.name == str((tmp / "data").resolve())]
    return found[0] if found else None


def test_list_shows_loop_devices_with_size(loops, tmp_path):
    a = loops.attach()
    res = nvr(tmp_path, "list", "--json")
    assert res.returncode == 0, res.stderr
    found = {d["path"]: d for d in json.loads(res.stdout)}
    assert found[a]["size_bytes"] == 2 * GiB and found[a]["contents"] is None
    assert {"model", "serial", "smart_passed"} <= found[a].keys()  # a loop device has none
    assert found[a]["unfit"] is None
    text = nvr(tmp_path, "list").stdout
    assert f"{a} model (none) serial (none) 2.1 GB SMART none contents blank: can record" in text


def test_raid1_made_written_degraded_mounted_at_boot_and_replaced(loops, tmp_path):
    a, b, c = loops.attach(), loops.attach(), loops.attach()
    res = nvr(tmp_path, "init", a, b, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    data = tmp_path / "data"
    ident = json.loads((data / "nvr-data.json").read_text())["id"]
    assert _sh("blkid", "-p", "-s", "LABEL", "-o", "value", a).strip() == f"nvr-{ident}"
    r = _ours(tmp_path)
    assert r is not None and (r.level, r.members, r.degraded) == ("raid1", [a, b], False)
    payload = os.urandom(1 << 20) * 64
    (data / "segment").write_bytes(payload)
    os.sync()

    # A drive is lost; the boot-time mount finds the other one and mounts it degraded.
    _sh("umount", str(data))
    loops.forget(b)
    res = nvr(tmp_path, "mount")
    assert res.returncode == 0 and "mounting it degraded" in res.stdout, res.stderr
    r = _ours(tmp_path)
    assert r is not None and r.degraded and "devid 2 missing" in r.detail
    assert RaiseAlert in {type(x) for x in health_alerts([r], []) if
                          getattr(x, "id", None) == AlertId.RAID_DEGRADED}  # fmt: skip
    assert (data / "segment").read_bytes() == payload  # still readable: recording goes on
    assert "DEGRADED" in nvr(tmp_path, "status").stdout

    res = nvr(tmp_path, "replace", c, "--yes", "--poll", "0.05")
    assert res.returncode == 0, res.stdout + res.stderr
    progress = [ln for ln in res.stdout.splitlines() if ln.startswith("replace:")]
    assert progress[-1] == "replace: finished 100.0%"
    pcts = [float(ln.split()[-1].rstrip("%")) for ln in progress]
    assert pcts == sorted(pcts)
    assert "storage: the volume is whole again" in res.stdout
    r = _ours(tmp_path)
    assert r is not None and not r.degraded and r.members == [a, c] and r.level == "raid1"
    assert ClearAlert(AlertId.RAID_DEGRADED) in health_alerts([r], [])
    assert (data / "segment").read_bytes() == payload
    status = nvr(tmp_path, "status").stdout
    assert "whole" in status and "replace: finished 100.0%" in status
    assert json.loads((tmp_path / "root/storage/volume.json").read_text())["drives"][1]["path"] == c


def test_a_drive_with_ext4_is_not_formatted_unconfirmed(loops, tmp_path):
    a = loops.attach()
    _sh("mkfs.ext4", "-q", "-F", a)
    res = nvr(tmp_path, "init", a, "--yes")
    assert res.returncode == 1
    assert f"{a} model (none) serial (none)" in res.stderr and f"--wipe-data {a}" in res.stderr
    res = nvr(tmp_path, "init", a, stdin="y\n/dev/loop-wrong\n")
    assert res.returncode == 1 and "Type its device path" in res.stdout
    res = nvr(tmp_path, "init", a, "--yes", "--wipe-data", "NOSUCH")
    assert res.returncode == 1 and "names no chosen drive" in res.stdout + res.stderr
    assert _sh("blkid", "-p", "-s", "TYPE", "-o", "value", a).strip() == "ext4"  # untouched
    res = nvr(tmp_path, "init", a, stdin=f"y\n{a}\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _sh("blkid", "-p", "-s", "TYPE", "-o", "value", a).strip() == "btrfs"
    assert Path(tmp_path / "data").is_mount()
    assert _ours(tmp_path) is None  # one drive: no RAID to report


def test_a_volume_mounted_degraded_is_whole_once_every_member_and_block_has_its_copy():
    """`degraded` stays among the mount options after a replacement; the state then follows
    the members and the block profiles (fixture text: `btrfs filesystem show --raw`)."""
    from hal.linux.disks import Mount, btrfs_state, parse_btrfs_show

    show = parse_btrfs_show("Label: 'nvr-x'  uuid: 84c81241-debe-4308-8179-226c777086b1\n"
                            "\tTotal devices 2 FS bytes used 147456\n"
                            "\tdevid    1 size 2147483648 used 1 path /dev/loop0\n"
                            "\tdevid    2 size 2147483648 used 1 path /dev/loop2\n")  # fmt: skip
    mount = Mount("0:40", "/data/nvr", "btrfs", "/dev/loop0", frozenset({"rw", "degraded"}))
    assert not btrfs_state(mount, show, {}, "raid1").degraded
    assert btrfs_state(mount, show, {}, "raid1+single").degraded  # written while degraded
    assert btrfs_state(mount, show, {}, "").degraded  # profiles unknown: not claimed whole
    clean = Mount("0:40", "/data/nvr", "btrfs", "/dev/loop0", frozenset({"rw"}))
    assert not btrfs_state(clean, show, {}, "raid1+single").degraded


def test_the_policy_follows_a_btrfs_volume_whose_named_member_was_replaced():
    from firmware.hw.storage import MISSING, Expected, StoragePolicy, StorageView
    from hal.disks import MountState

    policy = StoragePolicy(Expected(ID, "/data/nvr", "/dev/sda"), require_mount=True)

    def look(device: str, fstype: str, identity: str = ID) -> list:
        mount = MountState("/data/nvr", "/data/nvr", device, fstype, False, 4 * TB, TB)
        return policy.update(StorageView(identity, mount))

    assert ClearAlert(MISSING) in look("/dev/sda", "btrfs")
    assert ClearAlert(MISSING) in look("/dev/sdc", "btrfs")  # sda replaced by sdc
    assert not policy.holding

    def missing(actions: list) -> bool:
        return any(isinstance(a, RaiseAlert) and a.id == MISSING for a in actions)

    assert missing(look("/dev/sdc", "btrfs", "other-id"))  # another volume
    assert missing(look("/dev/sdc", "ext4"))  # the volume is gone: the disk below


def test_console_storage_lists_picks_and_replaces_with_progress(tmp_path):
    """The console's `storage`: numbered drives with model, serial, size, SMART; the same two
    questions as the command line; a replacement's progress on the screen."""
    from firmware.storagecli import console_storage

    storage, disks, vols = _sim(tmp_path)
    said: list[str] = []
    answers = iter(["2", "1 2", "y", "WD-2"])  # menu: make the volume; drives 1 and 2
    assert console_storage(storage, [], lambda q: next(answers), said.append) == 0
    listed = [s for s in said if s.startswith(("1) ", "2) ", "3) "))]
    assert listed[1].startswith("2) /dev/sdb model WDC WD40PURZ serial WD-2 4.0 TB SMART ok "
                                "contents ntfs")  # fmt: skip
    assert "mmcblk0" not in " ".join(listed)  # the system disk is not offered
    assert vols.labels == {storage.record().label: ["/dev/sda", "/dev/sdb"]}
    disks.remove_device("sdb")
    said.clear()
    answers = iter(["1", "y"])  # the only usable drive left: sdc
    assert console_storage(storage, ["replace"], lambda q: next(answers), said.append, 0) == 0
    assert any("DEGRADED" in s for s in said)
    assert "replace: finished 100.0%" in said and said[-1].endswith("whole again")
    assert console_storage(storage, ["frob"], lambda q: None, said.append) == 2


def test_wizard_step_offers_none_one_or_all_and_asks_for_data_drives(tmp_path):
    from firmware.storagecli import wizard_storage

    storage, _, vols = _sim(tmp_path)
    said: list[str] = []
    wizard_storage(storage, lambda q: "none", said.append)
    assert vols.actions == [] and "recording stays on the system disk" in said[-1]
    assert [s for s in said if s.startswith("  ")] == [
        "  1) /dev/sda model WDC WD40PURZ serial WD-1 4.0 TB SMART ok contents blank: can record",
        "  2) /dev/sdb model WDC WD40PURZ serial WD-2 4.0 TB SMART ok contents ntfs: can record",
        "  3) /dev/sdc model WDC WD40PURZ serial WD-3 4.0 TB SMART ok contents blank: can record",
    ]
    asked: list[str] = []
    answers = iter(["all", "y", "WD-2"])
    wizard_storage(storage, lambda q: asked.append(q) or next(answers), said.append)
    assert "record on: none, all (raid1), or a drive's number" in asked[0]
    assert "serial WD-2" in asked[2]
    assert vols.labels[storage.record().label] == ["/dev/sda", "/dev/sdb", "/dev/sdc"]
    said.clear()
    wizard_storage(storage, lambda q: "all", said.append)  # mounted now: said, not asked
    assert said == [f"recording drives: a volume is mounted at {storage.data_dir} "
                    "(nvr storage status)"]  # fmt: skip


def test_wizard_step_leaves_loop_devices_alone(tmp_path):
    from firmware.storagecli import wizard_storage

    disks = SimDisks()
    disks.add_device("loop7", 4 * TB, smart=False)
    storage = Storage(disks, SimVolumes(disks), tmp_path, tmp_path / "root", "a")
    said: list[str] = []
    wizard_storage(storage, lambda q: pytest.fail(f"asked {q}"), said.append)
    assert said == []
