"""Recording drives: which drives may become the recording volume, what making it takes, and how
a degraded volume gets a new drive. Pure: drives and the installer's choice in, a plan of typed
steps (or a typed refusal) out; `firmware/storagecli.py` carries the steps out through
`hal/linux/volumes.py`.

The volume is btrfs: one drive `single`, two or more `raid1` for data and metadata (every block
on two drives; checksums tell which copy is good; a volume missing a drive mounts `degraded` and
keeps recording). md RAID1 is not used: it has no checksums (a bad copy is returned as good
half of the time) and needs its own daemon and boot assembly.

Safety: the system disk, a drive in use, a read-only one and (unless asked) a removable stick
are never candidates; a drive that carries data (a filesystem or partition table signature) is
only planned for formatting when its key (serial, or the device path for a drive without one)
is among the confirmed ones."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from hal.disks import BlockDevice, RaidState

MIN_DRIVE_BYTES = 1 << 30
"""Smaller than this is no recording drive (a card reader's card, a boot partition)."""
NOT_DRIVES = ("zram", "ram", "sr", "md", "dm-", "nbd", "mmcblk0boot", "mmcblk1boot")
"""Kernel names of block devices that are not drives to record on."""
LABEL_PREFIX = "nvr-"
BTRFS_LABEL_MAX = 255


class Layout(StrEnum):
    SINGLE = "single"
    RAID1 = "raid1"


class Unfit(StrEnum):
    """Why a drive is not offered for the recording volume."""

    SYSTEM = "the system disk"
    NOT_A_DRIVE = "not a drive"
    READ_ONLY = "read-only"
    REMOVABLE = "removable (a stick or card; --allow-removable to use it)"
    TOO_SMALL = "too small"
    IN_USE = "in use (mounted or part of a volume)"
    FAILING = "SMART says it is failing"


@dataclass(frozen=True)
class Drive:
    """A block device as the planner needs it."""

    device: BlockDevice
    signature: str | None = None
    """What is on it now: a filesystem type (ext4, btrfs...) or partition table (gpt, dos);
    None when the drive is blank."""
    smart_passed: bool | None = None
    system: bool = False
    """Holds the root, the boot or the data partition."""
    in_use: bool = False
    """Mounted (itself or a partition), or a member of a mounted volume."""

    @property
    def path(self) -> str:
        return self.device.path

    @property
    def key(self) -> str:
        """What names this drive in a confirmation: its serial, or its path when it has none."""
        return self.device.serial or self.device.path

    @property
    def has_data(self) -> bool:
        return self.signature is not None

    def describe(self) -> str:
        d = self.device
        return (f"{d.path} model {d.model or '(none)'} serial {d.serial or '(none)'} "
                f"{size_text(d.size_bytes)}")  # fmt: skip


def size_text(n: int) -> str:
    for unit, div in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def unfit(drive: Drive, allow_removable: bool = False,
          min_bytes: int = MIN_DRIVE_BYTES) -> Unfit | None:  # fmt: skip
    """The first reason this drive may not be formatted for recording, or None."""
    d = drive.device
    if drive.system:
        return Unfit.SYSTEM
    if d.name.startswith(NOT_DRIVES):
        return Unfit.NOT_A_DRIVE
    if drive.in_use:
        return Unfit.IN_USE
    if d.read_only:
        return Unfit.READ_ONLY
    if d.removable and not allow_removable:
        return Unfit.REMOVABLE
    if d.size_bytes < min_bytes:
        return Unfit.TOO_SMALL
    if drive.smart_passed is False:
        return Unfit.FAILING
    return None


def candidates(drives: Iterable[Drive], allow_removable: bool = False,
               min_bytes: int = MIN_DRIVE_BYTES) -> list[Drive]:  # fmt: skip
    return [d for d in drives if unfit(d, allow_removable, min_bytes) is None]


def volume_label(identity: str) -> str:
    """The filesystem label: the board's data identity (the id in nvr-data.json)."""
    return (LABEL_PREFIX + identity)[:BTRFS_LABEL_MAX]


# --- steps ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WipeSignatures:
    device: str


@dataclass(frozen=True)
class MakeFilesystem:
    label: str
    layout: Layout
    devices: tuple[str, ...]


@dataclass(frozen=True)
class MountVolume:
    devices: tuple[str, ...]
    mount_point: str


@dataclass(frozen=True)
class WriteIdentity:
    """nvr-data.json on the new volume, so the firmware finds its identity there."""

    mount_point: str
    identity: str
    board: str


@dataclass(frozen=True)
class RecordVolume:
    """The record that makes the volume mount at the data directory at every boot."""

    label: str
    layout: Layout
    mount_point: str
    drives: tuple[tuple[str, str | None, str | None], ...]
    """(path, model, serial) at the time it was made."""


@dataclass(frozen=True)
class ReplaceDevice:
    """btrfs replace start: copies the missing (devid) or failing (path) member's data."""

    mount_point: str
    source: str
    """A devid (digits) or a member's path."""
    target: str


@dataclass(frozen=True)
class AddDevice:
    mount_point: str
    device: str


@dataclass(frozen=True)
class RemoveMissing:
    mount_point: str


@dataclass(frozen=True)
class ConvertToRaid1:
    """Blocks written while degraded may be `single`: a soft balance makes them raid1 again
    (only those; the rest is not moved)."""

    mount_point: str


Step = (WipeSignatures | MakeFilesystem | MountVolume | WriteIdentity | RecordVolume
        | ReplaceDevice | AddDevice | RemoveMissing | ConvertToRaid1)  # fmt: skip


# --- refusals ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    what: str
    """The drive (its description) or the choice the problem is about."""
    why: str

    def __str__(self) -> str:
        return f"{self.what}: {self.why}"


class Refused(Exception):
    """The choice cannot be carried out; nothing was done."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))


class Unconfirmed(Exception):
    """These drives carry data: each must be confirmed by its key (serial, or path without
    one) before it is formatted."""

    def __init__(self, drives: list[Drive]) -> None:
        self.drives = drives
        super().__init__(
            "; ".join(f"{d.describe()} has data on it ({d.signature})" for d in drives)
        )


# --- making the volume ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    devices: tuple[str, ...]
    """The chosen drives, by path, kernel name or serial."""
    confirmed: frozenset[str] = frozenset()
    """Keys of drives with data the installer confirmed to wipe."""
    allow_removable: bool = False


@dataclass(frozen=True)
class InitPlan:
    layout: Layout
    drives: tuple[Drive, ...]
    label: str
    steps: tuple[Step, ...]
    wiped: tuple[Drive, ...] = field(default=())
    """Drives whose data is destroyed (all confirmed)."""


def find(drives: Iterable[Drive], name: str) -> list[Drive]:
    """Drives a name means: a path, a kernel name or a serial."""
    return [
        d
        for d in drives
        if name in (d.path, d.device.name, d.device.serial, "/dev/" + d.device.name)
    ]


def _pick(drives: list[Drive], names: Iterable[str]) -> tuple[list[Drive], list[Problem]]:
    chosen: list[Drive] = []
    problems = []
    for name in names:
        found = find(drives, name)
        if len(found) != 1:
            why = "no such drive" if not found else "names more than one drive"
            problems.append(Problem(name, why))
        elif found[0] in chosen:
            problems.append(Problem(name, "chosen twice"))
        else:
            chosen.append(found[0])
    return chosen, problems


def needs_confirmation(drives: Iterable[Drive], confirmed: frozenset[str]) -> list[Drive]:
    return [d for d in drives if d.has_data and d.key not in confirmed]


def plan_init(
    drives: list[Drive],
    choice: Choice,
    *,
    identity: str,
    board: str,
    mount_point: str,
    min_bytes: int = MIN_DRIVE_BYTES,
) -> InitPlan:
    """Raises Refused (a drive not fit, a name that is no drive) or Unconfirmed (data on a
    chosen drive not confirmed by its key)."""
    if not choice.devices:
        raise Refused([Problem("the choice", "no drive chosen")])
    chosen, problems = _pick(drives, choice.devices)
    for d in chosen:
        if (why := unfit(d, choice.allow_removable, min_bytes)) is not None:
            problems.append(Problem(d.describe(), f"not usable: {why.value}"))
    if problems:
        raise Refused(problems)
    if unconfirmed := needs_confirmation(chosen, choice.confirmed):
        raise Unconfirmed(unconfirmed)
    layout = Layout.SINGLE if len(chosen) == 1 else Layout.RAID1
    label = volume_label(identity)
    paths = tuple(d.path for d in chosen)
    steps: list[Step] = [WipeSignatures(p) for p in paths]
    steps += [
        MakeFilesystem(label, layout, paths),
        MountVolume(paths, mount_point),
        WriteIdentity(mount_point, identity, board),
        RecordVolume(label, layout, mount_point,
                     tuple((d.path, d.device.model, d.device.serial) for d in chosen)),
    ]  # fmt: skip
    return InitPlan(layout, tuple(chosen), label, tuple(steps),
                    tuple(d for d in chosen if d.has_data))  # fmt: skip


# --- replacing a drive ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplacePlan:
    new: Drive
    old: str
    """What is replaced: `devid N` or a member's path."""
    steps: tuple[Step, ...]
    tracks_progress: bool
    """btrfs replace reports its progress (replace status); add + remove missing does not."""


def _member_devices(drives: list[Drive], raid: RaidState) -> list[Drive]:
    return [d for d in drives if d.path in raid.members]


def plan_replace(
    drives: list[Drive],
    raid: RaidState | None,
    new: str,
    *,
    confirmed: frozenset[str] = frozenset(),
    old: str | None = None,
    allow_removable: bool = False,
    min_bytes: int = MIN_DRIVE_BYTES,
) -> ReplacePlan:
    """A new drive for the volume `raid` (the recording volume's state): it takes the place of
    the missing member, or of `old` (a failing member's path) when named. Raises Refused or
    Unconfirmed as plan_init."""
    if raid is None or raid.kind != "btrfs":
        raise Refused([Problem("the recording volume", "no btrfs volume with two drives is "
                               "mounted at the data directory")])  # fmt: skip
    found, problems = _pick(drives, [new])
    if problems:
        raise Refused(problems)
    target = found[0]
    mp = raid.name
    if target.path in raid.members:
        raise Refused([Problem(target.describe(), "already a member of the volume")])
    if (why := unfit(target, allow_removable, min_bytes)) is not None:
        raise Refused([Problem(target.describe(), f"not usable: {why.value}")])
    present = _member_devices(drives, raid)
    if present and target.device.size_bytes < min(d.device.size_bytes for d in present):
        raise Refused([Problem(target.describe(), "smaller than the drives of the volume")])
    missing = [f for f in raid.failed if f.startswith("devid:")]
    gone = [f for f in raid.failed if f.startswith("/") and not find(drives, f)]
    if old is not None:
        if old not in raid.members:
            raise Refused([Problem(old, "not a member of the volume")])
        source = old
    elif missing:
        devid = missing[0].removeprefix("devid:")
        source = devid
    elif gone:  # a member path that is no longer among the drives: pulled out
        source = gone[0]
    elif raid.degraded:
        raise Refused([Problem("the volume", f"degraded ({raid.detail}) but no member is "
                               "missing: name the failing one with --old")])  # fmt: skip
    else:
        raise Refused([Problem("the volume", "is whole: no drive to replace (name a failing "
                               "member with --old to swap it anyway)")])  # fmt: skip
    if unconfirmed := needs_confirmation([target], confirmed):
        raise Unconfirmed(unconfirmed)
    steps: list[Step] = [WipeSignatures(target.path)]
    if source.isdigit() or source.startswith("/"):
        steps.append(ReplaceDevice(mp, source, target.path))
        tracked = True
        what = f"devid {source}" if source.isdigit() else source
    else:  # a member btrfs only counts ("devid:?"): add the new one, drop the missing one
        steps += [AddDevice(mp, target.path), RemoveMissing(mp)]
        tracked = False
        what = "the missing drive"
    steps.append(ConvertToRaid1(mp))
    return ReplacePlan(target, what, tuple(steps), tracked)
