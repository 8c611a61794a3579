"""The data partition's growth to the system disk's end, without booting (seconds): the
systemd-repart definitions match the partitions the build makes, systemd-repart grows a disk
laid out by the build's own genimage config and then writes nothing, the switch for boards
with separate data drives, and the console's data disk lines. tests/test_image.py boots the
image on a bigger disk."""

from __future__ import annotations

import configparser
import importlib.util
import io
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from firmware.console import Console
from firmware.datadisk import data_disk_lines, ext4_bytes
from firmware.provision import NOT_FOUND, Result

TOP = Path(__file__).resolve().parent.parent
REPART_D = TOP / "rootfs" / "usr" / "lib" / "nvr" / "repart.d"
UNIT = TOP / "rootfs" / "usr" / "lib" / "systemd" / "system" / "nvr-data-grow.service"
GENIMAGE_TYPES = {"L": "linux-generic", "U": "esp"}
MIB = 2**20

spec = importlib.util.spec_from_file_location("image_build", TOP / "image" / "build.py")
assert spec is not None and spec.loader is not None
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def definitions() -> list[tuple[str, dict[str, str]]]:
    """(file name, [Partition] keys) in the order systemd-repart reads them."""
    found = []
    for path in sorted(REPART_D.glob("*.conf"), key=lambda p: p.name):
        cp = configparser.ConfigParser(interpolation=None)
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read_string(path.read_text())
        found.append((path.name, dict(cp["Partition"])))
    return found


def genimage_partitions() -> list[tuple[str, str, str]]:
    """(name, repart type, size) of each partition of the build's genimage config, in order."""
    cfg = build.genimage_config(Path("."))
    parts = re.findall(r"partition (\S+) \{(.*?)\n  \}", cfg, re.S)
    out = []
    for name, body in parts:
        kind = re.search(r'partition-type-uuid = "(\w)"', body)
        size = re.search(r"size = (\S+)", body)
        assert kind and size, body
        out.append((name, GENIMAGE_TYPES[kind[1]], size[1]))
    return out


def test_repart_definitions_match_the_partitions_the_build_makes():
    """systemd-repart pairs the n-th definition of a type with the n-th partition of that type
    on the disk: each Linux partition of the build gets the definition of its own name, the
    slots keep their size, only data (the last partition) may grow, the ESP is left alone."""
    parts = genimage_partitions()
    defs = definitions()
    assert [d["Label"] for _, d in defs] == [n for n, t, _ in parts if t == "linux-generic"]
    by_label = {d["Label"]: d for _, d in defs}
    for name, kind, size in parts:
        if kind != "linux-generic":
            assert all(d["Type"] != kind for _, d in defs), f"{name} must have no definition"
            continue
        d = by_label[name]
        assert d["Type"] == kind, name
        if name == "data":
            assert "SizeMaxBytes" not in d and d["SizeMinBytes"] == size
        else:
            assert d["SizeMinBytes"] == d["SizeMaxBytes"] == size, name
    assert parts[-1][0] == "data"  # the last on the disk: the free space follows it


def unit_keys(text: str) -> dict[str, list[str]]:
    """A unit file's settings as "Section.Key" -> every value given (keys repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(f"{section}.{key}", []).extend(value.split())
    return found


def test_the_grow_unit_runs_before_data_is_checked_and_skips_on_separate_drives(monkeypatch):
    u = unit_keys(UNIT.read_text())
    before = u["Unit.Before"]
    assert "systemd-fsck@dev-disk-by\\x2dpartlabel-data.service" in before
    assert "data.mount" in before and "local-fs-pre.target" in before
    assert u["Unit.ConditionPathExists"] == ["!/" + build.DATA_SEPARATE_MARK]
    assert u["Service.ExecStart"] == ["/usr/lib/nvr/data-grow"]
    assert u["Install.WantedBy"] == ["local-fs-pre.target"]
    assert os.access(TOP / "rootfs" / "usr" / "lib" / "nvr" / "data-grow", os.X_OK)
    fstab = (TOP / "rootfs" / "etc" / "fstab").read_text()
    data_line = next(ln for ln in fstab.splitlines() if ln.startswith("PARTLABEL=data"))
    assert "x-systemd.growfs" in data_line.split()[3].split(",")

    # The build writes the switch only for a board whose data is on separate drives, and
    # removes one a previous build of the same root left behind.
    monkeypatch.setattr(build, "build_wheels", lambda work: work / "wheels")
    factory, keys = TOP / "rootfs" / "etc" / "nvr" / "nvr.toml", Path("/nonexistent")
    for separate in (False, True):
        work = Path(os.environ.get("TMPDIR", "/tmp")) / f"nvr-grow-{os.getpid()}-{separate}"
        work.mkdir(parents=True, exist_ok=True)
        try:
            text = build.customize_script(work, "R", factory, keys, separate).read_text()
        finally:
            shutil.rmtree(work)
        assert f'rm -f "$root/{build.DATA_SEPARATE_MARK}"' in text
        writes = f'> "$root/{build.DATA_SEPARATE_MARK}"' in text
        assert writes is separate
        enable = text.split("systemctl enable", 1)[1].split("\nchroot", 1)[0]
        assert "nvr-data-grow.service" in enable


# --- systemd-repart on a disk laid out by the build's genimage config -------------------------


def read_gpt(disk: Path) -> dict:
    """The primary and backup GPT headers (checked by their CRCs) and the partitions."""
    last = disk.stat().st_size // 512 - 1
    found: dict = {"last_lba": last}
    with open(disk, "rb") as f:
        for which, lba in (("primary", 1), ("backup", last)):
            f.seek(lba * 512)
            head = f.read(512)
            if head[:8] != b"EFI PART":
                found[which] = None
                continue
            size, crc = struct.unpack_from("<II", head, 12)
            alt, _, last_usable = struct.unpack_from("<QQQ", head, 32)
            ent_lba, count, esize, ent_crc = struct.unpack_from("<QIII", head, 72)
            f.seek(ent_lba * 512)
            ents = f.read(count * esize)
            parts = [
                (e[56:128].decode("utf-16-le").rstrip("\0"), *struct.unpack_from("<QQ", e, 32))
                for e in (ents[i * esize : (i + 1) * esize] for i in range(count))
                if e[:16] != bytes(16)
            ]
            ok = zlib.crc32(head[:16] + bytes(4) + head[20:size]) == crc
            found[which] = {
                "valid": ok and zlib.crc32(ents) == ent_crc,
                "alternate_lba": alt,
                "last_usable_lba": last_usable,
                "partitions": parts,
                "bytes": head[:size] + ents,
            }
    return found


TOOLS = [t for t in ("genimage", "systemd-repart", "mke2fs") if shutil.which(t) is None]


@pytest.fixture
def flashed(tmp_path) -> Path:
    """The build's partition layout (its own genimage config, placeholder contents) written
    to a 3 GiB disk, as flashed onto a disk bigger than the image."""
    if TOOLS:
        pytest.skip(f"missing {', '.join(TOOLS)} (bash image/build.sh tools installs them)")
    work = tmp_path / "work"
    work.mkdir()
    (work / "esp.vfat").write_bytes(b"\0" * 4096)
    (work / "rootfs.squashfs").write_bytes(b"\0" * 4096)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "data", str(work / "data.ext4"),
                    f"{build.DATA_MIB}M"], check=True)  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    disk = build.build_disk(work, out)
    with open(disk, "r+b") as f:
        f.truncate(3 * 2**30)
    return disk


def repart(disk: Path) -> str:
    done = subprocess.run(
        ["systemd-repart", "--dry-run=no", "--no-pager", "--pretty=no",
         f"--definitions={REPART_D}", str(disk)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_repart_grows_only_data_to_the_disk_end_and_then_writes_nothing(flashed):
    before = read_gpt(flashed)
    assert before["primary"]["alternate_lba"] < before["last_lba"]  # the image's end
    said = repart(flashed)
    assert "Growing existing partition 3." in said, said
    after = read_gpt(flashed)
    last = after["last_lba"]
    assert after["primary"]["valid"] and after["backup"]["valid"]
    assert after["primary"]["alternate_lba"] == last and after["backup"]["alternate_lba"] == 1
    assert after["primary"]["partitions"] == after["backup"]["partitions"]
    assert after["primary"]["partitions"][:3] == before["primary"]["partitions"][:3]
    name, start, end = after["primary"]["partitions"][3]
    assert (name, start) == ("data", before["primary"]["partitions"][3][1])
    assert end <= after["primary"]["last_usable_lba"] == last - 33
    assert last - end < MIB // 512  # all but the backup table and the alignment
    assert ext4_bytes(flashed, start * 512) == build.DATA_MIB * MIB  # growfs does the rest

    again = repart(flashed)
    assert "No changes." in again and "Growing" not in again, again
    for which in ("primary", "backup"):
        assert read_gpt(flashed)[which]["bytes"] == after[which]["bytes"]


# --- the console's data disk lines ------------------------------------------------------------


def fake_board(
    tmp_path: Path, disk: Path, part: tuple[int, int] | None = None
) -> tuple[Path, Path]:
    """/dev and /sys/class/block of a board whose disk vda is `disk` and whose vda4 is the
    data partition (start, size in sectors; default: read from the disk's GPT)."""
    dev, sysb = tmp_path / "dev", tmp_path / "sys" / "class" / "block"
    (dev / "disk" / "by-partlabel").mkdir(parents=True)
    devices = tmp_path / "sys" / "devices" / "virtio" / "block" / "vda"
    (devices / "vda4").mkdir(parents=True)
    (devices / "queue").mkdir()
    sysb.mkdir(parents=True)
    if part is None:
        _, first, last = read_gpt(disk)["primary"]["partitions"][3]
        part = (first, last - first + 1)
    (devices / "size").write_text(f"{disk.stat().st_size // 512}\n")
    (devices / "queue" / "logical_block_size").write_text("512\n")
    (devices / "vda4" / "start").write_text(f"{part[0]}\n")
    (devices / "vda4" / "size").write_text(f"{part[1]}\n")
    (sysb / "vda").symlink_to(devices)
    (sysb / "vda4").symlink_to(devices / "vda4")
    os.link(disk, dev / "vda")
    # The partition's node: its bytes from the disk (only the superblock is read).
    with open(disk, "rb") as f, open(dev / "vda4", "wb") as p:
        f.seek(part[0] * 512)
        p.write(f.read(4096))
    (dev / "disk" / "by-partlabel" / "data").symlink_to("../../vda4")
    return dev, sysb


def test_console_shows_the_data_partition_filesystem_and_backup_header(flashed, tmp_path):
    dev, sysb = fake_board(tmp_path / "before", flashed)
    data_mib = build.DATA_MIB
    assert data_disk_lines(dev, sysb) == [
        f"data partition: vda4 {data_mib} MiB of disk vda 3072 MiB, "
        f"{(3072 - 1 - build.ESP_MIB - 2 * build.SLOT_MIB - data_mib) * 1024} KiB after it",
        f"data filesystem: {data_mib} MiB",
        f"gpt backup header: at sector {read_gpt(flashed)['primary']['alternate_lba']}, "
        f"not the disk's end ({3 * 2**30 // 512 - 1})",
    ]
    repart(flashed)
    dev, sysb = fake_board(tmp_path / "after", flashed)
    lines = data_disk_lines(dev, sysb)
    grown = 3072 - 1 - build.ESP_MIB - 2 * build.SLOT_MIB - 1  # less the end's GPT, aligned
    assert re.fullmatch(rf"data partition: vda4 {grown} MiB of disk vda 3072 MiB, \d+ KiB after it",
                        lines[0]), lines  # fmt: skip
    assert lines[1:] == [f"data filesystem: {data_mib} MiB", "gpt backup header: at the disk's end"]

    # In `system`, after the slots; a console off a board (no data partition) shows none.
    con = Console(Path("/nonexistent.toml"), Path("/nonexistent"), io.StringIO("system\n"),
                  out := io.StringIO(), runner=lambda argv, on_line=None: Result(NOT_FOUND, ""),
                  proc=tmp_path / "proc", dev=dev, sys_class_block=sysb,
                  sys_class_watchdog=tmp_path / "watchdog")  # fmt: skip
    con.execute("system")
    assert out.getvalue().splitlines()[-3:] == lines
    assert data_disk_lines(tmp_path / "nodev", sysb) == []


def test_console_says_why_the_data_disk_is_unreadable(tmp_path):
    dev = tmp_path / "dev"
    (dev / "disk" / "by-partlabel").mkdir(parents=True)
    (dev / "disk" / "by-partlabel" / "data").symlink_to("../../vda4")
    (dev / "vda4").write_bytes(b"")
    lines = data_disk_lines(dev, tmp_path / "sys")
    assert len(lines) == 1 and lines[0].startswith("data partition: unreadable:"), lines
    assert ext4_bytes(dev / "vda4") is None  # too short for a superblock


GROW = TOP / "rootfs" / "usr" / "lib" / "nvr" / "data-grow"


def fake_sysfs(top: Path, disks: dict[str, tuple[int, list[tuple[str, int, int]]]],
               root: str) -> dict[str, str]:  # fmt: skip
    """A /sys and /proc as data-grow reads them: {disk: (sectors, [(label, start, size)])},
    the root mounted from the partition `root` (e.g. vda2). The environment that points the
    script at them, with a systemd-repart that says how it was called."""
    sys_, proc = top / "sys", top / "proc"
    (sys_ / "class" / "block").mkdir(parents=True)
    (sys_ / "dev" / "block").mkdir(parents=True)
    (proc / "self").mkdir(parents=True)
    major = 250
    for disk, (sectors, parts) in disks.items():
        major += 1
        ddir = sys_ / "devices" / "pci0000:00" / disk / "block" / disk
        ddir.mkdir(parents=True)
        (ddir / "size").write_text(f"{sectors}\n")
        (sys_ / "class" / "block" / disk).symlink_to(ddir)
        for n, (label, start, size) in enumerate(parts, 1):
            name = f"{disk}{n}"
            pdir = ddir / name
            pdir.mkdir()
            (pdir / "partition").write_text(f"{n}\n")
            (pdir / "start").write_text(f"{start}\n")
            (pdir / "size").write_text(f"{size}\n")
            uevent = f"MAJOR={major}\nMINOR={n}\nDEVNAME={name}\nDEVTYPE=partition\n"
            (pdir / "uevent").write_text(uevent + f"PARTN={n}\nPARTNAME={label}\n")
            (sys_ / "class" / "block" / name).symlink_to(pdir)
            (sys_ / "dev" / "block" / f"{major}:{n}").symlink_to(pdir)
            if name == root:
                (proc / "self" / "mountinfo").write_text(
                    "1 0 0:2 / / rw - rootfs rootfs rw\n"
                    f"22 1 {major}:{n} / / ro,relatime shared:1 - squashfs /dev/{name} ro\n"
                    "23 22 0:5 / /dev rw - devtmpfs udev rw\n"
                )
    repart = top / "repart"
    repart.write_text('#!/bin/sh\necho "repart $*"\n')
    repart.chmod(0o755)
    return {**os.environ, "NVR_SYS": str(sys_), "NVR_PROC": str(proc), "NVR_REPART": str(repart)}


def grow(env: dict[str, str]) -> str:
    done = subprocess.run(["sh", str(GROW)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


IMAGE_PARTS = [("esp", 2048, 131072), ("rootfs-a", 133120, 1310720),
               ("rootfs-b", 1443840, 1310720), ("data", 2754560, 1048576)]  # fmt: skip
IMAGE_END = 2754560 + 1048576 + 33


def test_data_grow_runs_systemd_repart_on_the_root_s_disk_only_when_there_is_room(tmp_path):
    """Flashed onto a bigger disk: systemd-repart on that disk. A disk the partition already
    fills (every boot after the first): no systemd-repart started. A "data" partition on a
    stick is never the one looked at, whichever comes first in sysfs."""
    bigger = fake_sysfs(tmp_path / "a", {"vda": (IMAGE_END * 4, IMAGE_PARTS)}, root="vda2")
    assert grow(bigger) == ("repart --dry-run=no --no-pager "
                            "--definitions=/usr/lib/nvr/repart.d /dev/vda")  # fmt: skip
    same = fake_sysfs(tmp_path / "b", {"vda": (IMAGE_END + 2047, IMAGE_PARTS)}, root="vda2")
    assert grow(same) == "the data partition reaches the end of vda: nothing to grow"
    stick = {"sda": (10**7, [("data", 2048, 4096)]), "vdb": (IMAGE_END, IMAGE_PARTS)}
    assert grow(fake_sysfs(tmp_path / "c", stick, root="vdb3")) == (
        "the data partition reaches the end of vdb: nothing to grow"
    )
    alone = {"sda": (10**7, [("data", 2048, 4096)]), "vdb": (IMAGE_END, IMAGE_PARTS[:3])}
    assert grow(fake_sysfs(tmp_path / "d", alone, root="vdb2")) == (
        "no data partition on the system disk vdb: not grown"
    )
