"""The files a board profile puts into the image's root (run by image/build.py on the build host):

    python -m firmware.hw.boardfiles PROFILE ROOT    write them under ROOT
    python -m firmware.hw.boardfiles --check PROFILE validate; print what the build needs (JSON)

The root is read-only on the board, so what depends on the board and must be known before the
firmware runs (the ports' names, which watchdog PID 1 holds, the data mount) is written here;
the rest the firmware reads from the profile at first boot (firmware/hw/boardconfig.py).
`render` is pure: profile in, files out.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import tomlkit

from firmware.config import ConfigError
from firmware.hw.profile import (
    BOARD_FILE,
    LAN_NAME,
    SYNC_NAME,
    BoardProfile,
    NicMatch,
    load_profile,
    parse_profile,
)

DATA_DIR = "/data/nvr"
"""The firmware's data directory on the image (/var/lib/nvr points there)."""
NIC_RULES = PurePosixPath("/usr/lib/udev/rules.d/81-nvr-nics.rules")
WATCHDOG_CONF = PurePosixPath("/etc/systemd/system.conf.d/nvr.conf")
DATA_MOUNT = PurePosixPath("/usr/lib/systemd/system/data-nvr.mount")
DATA_MOUNT_WANTS = PurePosixPath("/usr/lib/systemd/system/local-fs.target.wants/data-nvr.mount")
MDADM_CONF = PurePosixPath("/etc/mdadm/mdadm.conf")
INITRAMFS_CONF = PurePosixPath("/etc/initramfs-tools/conf.d/nvr-board.conf")
INITRAMFS_MODULES = PurePosixPath("/etc/initramfs-tools/modules")


@dataclass(frozen=True)
class ImageFile:
    path: PurePosixPath
    text: str
    symlink: bool = False
    """text is the link's target."""


def _nic_rule(m: NicMatch, name: str) -> str:
    key = f'ENV{{ID_PATH}}=="{m.path}"' if m.path is not None else f'ATTR{{address}}=="{m.mac}"'
    return f'{key}, NAME="{name}"'


def nic_rules(p: BoardProfile) -> str:
    return "\n".join(
        [
            f"# The ports of {p.board.name} by where they sit, not by the kernel's probe order",
            "# (image/boards/*.toml [nic]; written by the image build).",
            'SUBSYSTEM!="net", GOTO="nvr_nics_end"',
            'ACTION!="add", GOTO="nvr_nics_end"',
            'IMPORT{builtin}="path_id"',
            _nic_rule(p.nic.lan, LAN_NAME),
            _nic_rule(p.nic.sync, SYNC_NAME),
            'LABEL="nvr_nics_end"',
            "",
        ]
    )


def watchdog_conf(p: BoardProfile) -> str:
    dog = p.watchdog
    if dog.device is None:
        return (
            "# This board has no hardware watchdog (its profile): systemd's software watchdog\n"
            "# (WatchdogSec= in nvr.service) still restarts a hung firmware.\n"
            "[Manager]\nRuntimeWatchdogSec=off\n"
        )
    if dog.owner == "firmware":
        return (
            f'# The firmware holds {dog.device} itself ([watchdog] backend = "linux", from\n'
            "# the board profile), so PID 1 must not.\n[Manager]\nRuntimeWatchdogSec=off\n"
        )
    return (
        f"# PID 1 holds the hardware watchdog ({dog.device}, from the board profile): a hung\n"
        "# kernel or init resets the board. The firmware is supervised by systemd (WatchdogSec=\n"
        '# in nvr.service), so [watchdog] backend stays "none".\n'
        f"[Manager]\nWatchdogDevice={dog.device}\nRuntimeWatchdogSec=30s\nRebootWatchdogSec=2min\n"
    )


def data_mount(p: BoardProfile) -> str:
    """The board's own data device at the data directory. nvr.service needs it
    (RequiresMountsFor), and [disks] require_mount keeps footage off the system disk."""
    d = p.disks
    return (
        f"# The board's data {'array' if d.data == 'md' else 'disk'} (its profile's [disks]).\n"
        "[Unit]\nDescription=NVR data on the board's own storage\n"
        "Before=nvr-firstboot.service nvr.service\n"
        f"[Mount]\nWhat={d.device}\nWhere={DATA_DIR}\nType={d.filesystem}\n"
        "Options=noatime,nodev,nosuid,noexec\nTimeoutSec=120\n"
    )


def mdadm_conf(p: BoardProfile) -> str:
    devices = " ".join(p.disks.members)
    return (
        "# The board's data array (its profile's [disks]); mdadm assembles it at boot.\n"
        f"DEVICE {devices}\nARRAY {p.disks.device} metadata=1.2\nMAILADDR root\n"
    )


def profile_text(source: str) -> str:
    """The profile as the firmware reads it on the board: without the lab's [qemu] part."""
    doc = tomlkit.parse(source)
    doc.pop("qemu", None)
    return tomlkit.dumps(doc).rstrip("\n") + "\n"


def render(source: str, origin: str = "<profile>") -> list[ImageFile]:
    p = parse_profile(source, origin)
    files = [
        ImageFile(PurePosixPath(str(BOARD_FILE)), profile_text(source)),
        ImageFile(NIC_RULES, nic_rules(p)),
        ImageFile(WATCHDOG_CONF, watchdog_conf(p)),
    ]
    if p.disks.data != "system":
        files.append(ImageFile(DATA_MOUNT, data_mount(p)))
        files.append(ImageFile(DATA_MOUNT_WANTS, "../data-nvr.mount", symlink=True))
    if p.disks.data == "md":
        files.append(ImageFile(MDADM_CONF, mdadm_conf(p)))
    if p.image.initramfs_modules:
        files.append(
            ImageFile(
                INITRAMFS_CONF, "# From the board profile: only the modules listed.\nMODULES=list\n"
            )
        )
        files.append(ImageFile(INITRAMFS_MODULES, initramfs_modules(p)))
    return files


def initramfs_modules(p: BoardProfile) -> str:
    """initramfs-tools' modules file: what reaches this board's root (MODULES=list)."""
    head = f"# The modules that reach the root of {p.board.name} (its profile's [image]).\n"
    return head + "".join(f"{m}\n" for m in p.image.initramfs_modules)


def write(files: list[ImageFile], root: Path) -> None:
    for f in files:
        dest = root / f.path.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        if f.symlink:
            dest.symlink_to(f.text)
        else:
            dest.write_text(f.text)
            dest.chmod(0o644)


def build_facts(p: BoardProfile) -> dict[str, object]:
    """What image/build.py takes from the profile (it reads no TOML of its own)."""
    return {
        "board": p.board.name,
        "arch": p.image.arch,
        "bootloader": p.image.bootloader,
        "kernel": p.image.kernel,
        "console": p.image.console,
        "packages": p.packages,
        "compatible": p.compatible,
        "product": p.brand.product,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware.hw.boardfiles", description=__doc__)
    ap.add_argument("--check", action="store_true", help="only validate the profile")
    ap.add_argument("profile", type=Path)
    ap.add_argument("root", type=Path, nargs="?")
    args = ap.parse_args(argv)
    try:
        p = load_profile(args.profile)
        if args.check:
            print(json.dumps(build_facts(p)))
            return 0
        if args.root is None:
            ap.error("ROOT is needed unless --check")
        files = render(args.profile.read_text(), str(args.profile))
    except ConfigError as e:
        print(f"board profile: {e}", file=sys.stderr)
        return 2
    write(files, args.root)
    for f in files:
        print(f"board profile: {f.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
