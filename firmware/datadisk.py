"""The data partition, the disk it is on and its filesystem, as the console's `system` shows
them: an installer sees that /data took the whole system disk at first boot (docs/IMAGE.md,
"Growing the data partition"). Reads sysfs, the partition's ext4 superblock and the disk's
primary GPT header; writes nothing. /dev and /sys/class/block are parameters, so tests fake
them."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

DATA_LABEL = "data"
MIB = 1 << 20
SYSFS_SECTOR = 512
"""sysfs gives `start` and `size` in 512-byte units whatever the disk's sector size."""
EXT4_MAGIC = 0xEF53
GPT_SIGNATURE = b"EFI PART"


@dataclass(frozen=True)
class DataDisk:
    partition: str
    """Its device name, e.g. vda4."""
    disk: str
    partition_bytes: int
    disk_bytes: int
    after_bytes: int
    """Bytes of the disk after the partition's end (the GPT's backup needs 16.5 KiB of them)."""
    filesystem_bytes: int | None
    """The ext4 filesystem's size from its superblock; None: no ext4 superblock there."""
    backup_gpt_lba: int | None
    """Where the primary GPT header says the backup header is; None: no primary header."""
    last_lba: int


def ext4_bytes(device: Path, offset: int = 0) -> int | None:
    """The size of the ext4 filesystem whose superblock is at `offset` + 1024 of `device`
    (block count x block size, the 64-bit count when the filesystem has it)."""
    with open(device, "rb") as f:
        f.seek(offset + 1024)
        sb = f.read(1024)
    if len(sb) < 1024 or struct.unpack_from("<H", sb, 56)[0] != EXT4_MAGIC:
        return None
    blocks = struct.unpack_from("<I", sb, 4)[0]
    if struct.unpack_from("<I", sb, 96)[0] & 0x80:  # INCOMPAT_64BIT: the high half counts
        blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
    return blocks * (1024 << struct.unpack_from("<I", sb, 24)[0])


def gpt_backup_lba(disk: Path, sector: int) -> int | None:
    """The backup header's LBA as the primary GPT header (LBA 1) gives it."""
    with open(disk, "rb") as f:
        f.seek(sector)
        header = f.read(92)
    if len(header) < 92 or header[:8] != GPT_SIGNATURE:
        return None
    return struct.unpack_from("<Q", header, 32)[0]


def _number(path: Path) -> int:
    return int(path.read_text().strip())


def probe(dev: Path, sys_block: Path) -> DataDisk | None:
    """The partition labelled `data` and its disk; None when there is none (not a board)."""
    link = dev / "disk" / "by-partlabel" / DATA_LABEL
    if not link.exists():
        return None
    node = (sys_block / link.resolve().name).resolve()  # .../block/vda/vda4
    disk_dir = node.parent
    start, size = _number(node / "start"), _number(node / "size")
    disk_sectors = _number(disk_dir / "size")
    block = disk_dir / "queue" / "logical_block_size"
    sector = _number(block) if block.exists() else SYSFS_SECTOR
    disk_bytes = disk_sectors * SYSFS_SECTOR
    return DataDisk(
        partition=node.name,
        disk=disk_dir.name,
        partition_bytes=size * SYSFS_SECTOR,
        disk_bytes=disk_bytes,
        after_bytes=disk_bytes - (start + size) * SYSFS_SECTOR,
        filesystem_bytes=ext4_bytes(link),
        backup_gpt_lba=gpt_backup_lba(dev / disk_dir.name, sector),
        last_lba=disk_bytes // sector - 1,
    )


def _mib(n: int) -> str:
    return f"{n // MIB} MiB"


def lines(d: DataDisk) -> list[str]:
    out = [
        f"data partition: {d.partition} {_mib(d.partition_bytes)} of disk {d.disk} "
        f"{_mib(d.disk_bytes)}, {d.after_bytes // 1024} KiB after it",
        "data filesystem: "
        + ("no ext4 superblock" if d.filesystem_bytes is None else _mib(d.filesystem_bytes)),
    ]
    if d.backup_gpt_lba is None:
        out.append(f"gpt: no primary header on {d.disk}")
    elif d.backup_gpt_lba == d.last_lba:
        out.append("gpt backup header: at the disk's end")
    else:
        out.append(
            f"gpt backup header: at sector {d.backup_gpt_lba}, not the disk's end ({d.last_lba})"
        )
    return out


def data_disk_lines(dev: Path, sys_block: Path) -> list[str]:
    """`lines` of the data partition; nothing when there is none; the error when unreadable."""
    try:
        found = probe(dev, sys_block)
    except (OSError, ValueError) as e:
        return [f"data partition: unreadable: {e}"]
    return [] if found is None else lines(found)
