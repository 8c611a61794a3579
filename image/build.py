"""Builds the flashable disk image and the signed RAUC update bundle (see docs/IMAGE.md).

Stdlib only and never imports the firmware (it runs the firmware's board check as a command):
the firmware goes into the image as a wheel, with its dependencies as wheels, installed into
/opt/nvr inside the image's own Python.

    python3 image/build.py image  [--board B] [--version V] [--factory-config F] [--keys DIR]
                                  [--release]
    python3 image/build.py bundle [--board B] --version V [--keys DIR] [--name NAME]
    python3 image/build.py keys   DIR [--common-name CN]

--board names a board profile, image/boards/B.toml (default qemu-x86_64), which the firmware
reads and checks (`python -m firmware.hw.boardfiles --check`, in the project's .venv): the
Debian architecture, kernel, serial console and packages of the image, and RAUC's compatible,
come from its answer. Output goes to image/out/B/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import NamedTuple

TOP = Path(__file__).resolve().parent.parent
IMAGE_DIR = TOP / "image"
OUT_TOP = IMAGE_DIR / "out"
BOARDS_DIR = IMAGE_DIR / "boards"
DEFAULT_BOARD = "qemu-x86_64"
DEFAULT_KEYS = OUT_TOP / "keys-dev"
"""The development keys of every board's default build: one vendor signs all its boards'
bundles, and RAUC's compatible keeps each board's bundles to that board."""
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
DEV_MARK = "DEVELOPMENT KEY - NOT FOR RELEASE"
# What the firmware and the board need at run time, beyond minbase.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "initramfs-tools",
    "python3",
    "python3-venv",
    "rauc",
    "rauc-service",
    "grub-common",
    "iproute2",
    "iputils-ping",
    "procps",
    "util-linux",
    "e2fsprogs",
    "dosfstools",
    "btrfs-progs",
    "smartmontools",
    "libudev1",
    "ca-certificates",
    "less",
    "chrony",
)
# Partition sizes in MiB. A slot holds one compressed root; data grows to the disk on a board.
ESP_MIB, SLOT_MIB, DATA_MIB = 64, 640, 512
# Fixed identities, so the same sources give the same disk.
DISK_UUID = "5b8d0f3a-7c1e-4f59-9a43-2f0e6c1d9b10"
PART_UUIDS = {
    "esp": "5b8d0f3a-7c1e-4f59-9a43-2f0e6c1d9b11",
    "rootfs-a": "5b8d0f3a-7c1e-4f59-9a43-2f0e6c1d9b12",
    "rootfs-b": "5b8d0f3a-7c1e-4f59-9a43-2f0e6c1d9b13",
    "data": "5b8d0f3a-7c1e-4f59-9a43-2f0e6c1d9b14",
}
DATA_FS_UUID = "7d3c2b1a-0e9f-4d8c-b7a6-5f4e3d2c1b0a"
# Present in the root of an image whose board keeps its data on separate drives: the data
# partition then keeps its size instead of growing to the system disk's end at first boot
# (nvr-data-grow.service's condition; --data-on-separate-drives).
DATA_SEPARATE_MARK = "usr/lib/nvr/data-on-separate-drives"
ESP_VOLUME_ID = "4e565231"  # "NVR1"
GRUB_MODULES = (
    "part_gpt fat squash4 ext2 normal linux configfile loadenv test echo regexp search "
    "search_fs_uuid search_label ls cat xzio gzio terminal efi_gop all_video sleep"
)
PYTHON_VERSION = "3.11"
"""bookworm's python3: the image's venv, and the ABI of the wheels installed into it."""


class Arch(NamedTuple):
    """What a Debian architecture means for the image: GRUB's EFI target and the name UEFI
    boots from a disk without boot entries, the machine name of manylinux wheels, and whether
    GRUB drives the serial line itself (x86: a 16550 UART) or through UEFI's console (arm64:
    the firmware's console is the PL011 already)."""

    grub_target: str
    efi_binary: str
    wheel_machine: str
    grub_serial: bool

    @property
    def grub_package(self) -> str:
        """The Debian package with GRUB's modules for the target, installed into the root
        (its own architecture's package; the host's grub-mkimage reads its modules)."""
        return (
            "grub-efi-" + self.grub_target.removesuffix("-efi").replace("x86_64", "amd64") + "-bin"
        )


ARCHES = {
    "amd64": Arch("x86_64-efi", "BOOTX64.EFI", "x86_64", grub_serial=True),
    "arm64": Arch("arm64-efi", "BOOTAA64.EFI", "aarch64", grub_serial=False),
}


class Board(NamedTuple):
    """The parts of a board profile (image/boards/NAME.toml) the image build uses."""

    name: str
    product: str
    compatible: str
    """RAUC's compatible: a bundle installs only on a board of the same name."""
    arch: str
    kernel: str
    console: str
    packages: tuple[str, ...]
    profile: Path

    @property
    def target(self) -> Arch:
        return ARCHES[self.arch]


class BuildError(Exception):
    """A build step failed; the message says which and why."""


def load_board(name_or_path: str) -> Board:
    """A board by name (image/boards/NAME.toml) or by the path of its profile, as the firmware
    reads it (`boardfiles --check`): the firmware validates the whole profile, which the image
    carries to it, and says what the image needs (e.g. mdadm for md data)."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = BOARDS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BOARDS_DIR.glob("*.toml")))
        raise BuildError(f"no board profile {path} (boards: {known})")
    py = TOP / ".venv" / "bin" / "python"
    facts = json.loads(run([str(py), "-m", "firmware.hw.boardfiles", "--check", str(path)],
                           cwd=TOP, capture_output=True).stdout)  # fmt: skip
    if facts["arch"] not in ARCHES or facts["bootloader"] != "grub-efi":
        raise BuildError(f"{path}: {facts['arch']} with {facts['bootloader']} is not built here")
    return Board(name=facts["board"], product=facts["product"],
                 compatible=facts["compatible"], arch=facts["arch"],
                 kernel=facts["kernel"], console=facts["console"],
                 packages=tuple(facts["packages"]), profile=path.resolve())  # fmt: skip


def log(msg: str) -> None:
    print(f"build: {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    try:
        return subprocess.run(cmd, check=True, **kw)
    except FileNotFoundError as e:
        raise BuildError(
            f"{cmd[0]} is not installed (run image/build.sh, which installs it)"
        ) from e
    except subprocess.CalledProcessError as e:
        said = (e.stderr or e.stdout or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise BuildError(f"{cmd[0]} failed with exit {e.returncode}: {' / '.join(said)}") from e


def project_version() -> str:
    with open(TOP / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(TOP), *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def source_date_epoch() -> int:
    """The build date: $SOURCE_DATE_EPOCH, else the last commit's date."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        return int(env)
    commit = git("log", "-1", "--format=%ct")
    return int(commit) if commit else 0


def release_text(version: str, revision: str, epoch: int, compatible: str) -> str:
    """/etc/nvr-release: shell-quoted key=value, like os-release."""
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    fields = {
        "NAME": "nvr-pair",
        "VERSION": version,
        "GIT_REVISION": revision or "unknown",
        "BUILD_DATE": date,
        "SOURCE_DATE_EPOCH": str(epoch),
        "COMPATIBLE": compatible,
    }
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in fields.items())


# --- signing keys ----------------------------------------------------------------------------


def make_keys(directory: Path, common_name: str) -> None:
    """A CA (the keyring the image trusts) and a signing certificate issued by it.

    Made here for development and tests only: their names carry DEV_MARK, and a --release
    build refuses them. Release keys are made and kept offline by the vendor."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key.pem", directory / "ca.cert.pem"
    key, csr, cert = (
        directory / "signing.key.pem",
        directory / "signing.csr",
        directory / "signing.cert.pem",
    )
    ext = directory / "signing.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n")
    subj = f"/O=nvr-pair/CN={common_name}"
    run(["openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-days", "3650",
         "-keyout", str(ca_key), "-out", str(ca_cert), "-subj", f"{subj} CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"], capture_output=True)  # fmt: skip
    run(["openssl", "req", "-newkey", "rsa:3072", "-nodes", "-keyout", str(key),
         "-out", str(csr), "-subj", subj], capture_output=True)  # fmt: skip
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "3650", "-out", str(cert), "-extfile", str(ext)],
        capture_output=True)  # fmt: skip
    for p in (ca_key, key):
        p.chmod(0o600)
    (directory / "README").write_text(
        f"{DEV_MARK}\n\nMade by image/build.py for development builds and tests. Bundles signed\n"
        "with these keys install only on images that trust this CA (development images).\n"
    )


def dev_keys(out: Path) -> Path:
    keys = out / "keys-dev"
    if not (keys / "signing.cert.pem").exists():
        log(f"making development signing keys in {keys}")
        make_keys(keys, f"nvr-pair {DEV_MARK}")
    return keys


def check_release_keys(keys: Path) -> None:
    for name in ("ca.cert.pem", "signing.cert.pem"):
        subject = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-in", str(keys / name)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        if DEV_MARK in subject:
            raise BuildError(f"{keys / name} is a development key; a release needs release keys")


# --- root filesystem -------------------------------------------------------------------------


def wheel_platforms(machine: str) -> list[str]:
    """pip's --platform tags of the wheels the image's Python runs: every manylinux up to
    bookworm's glibc (2.36), legacy aliases included (pip does not expand manylinux_2_x)."""
    legacy = [f"manylinux{v}_{machine}" for v in ("1", "2010", "2014")]
    return legacy + [f"manylinux_2_{minor}_{machine}" for minor in range(5, 37)]


WHEEL_SOURCES = ("pyproject.toml", "README.md", "firmware", "hal")
"""What the firmware's wheel is built from (pyproject's packages and metadata)."""


def stage_source(work: Path) -> Path:
    """The firmware's sources alone, copied out of the checkout: setuptools' package finder
    walks every directory of the project following links, and another board's build in
    image/out has /proc mounted in its root (whose links lead back to /)."""
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in WHEEL_SOURCES:
        path = TOP / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=skip)
        else:
            shutil.copy2(path, src / name)
    return src


def build_wheels(work: Path, board: Board) -> Path:
    """The firmware and every dependency as wheels for the board's architecture, so the
    image installs offline. The same way for every board: the host resolves and builds the
    set (the firmware, and pure-Python dependencies published as sources only); each wheel
    built for one platform is then fetched again, at the same version, as the target's
    binary wheel for bookworm's CPython."""
    wheels = work / "wheels"
    resolved = work / "wheels-resolved"
    for d in (wheels, resolved):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    py = TOP / ".venv" / "bin" / "python"
    run(
        [str(py), "-m", "pip", "wheel", "-q", "--wheel-dir", str(resolved), str(stage_source(work))]
    )
    binary: list[str] = []
    for whl in sorted(resolved.glob("*.whl")):
        dist, version, *_, platform = whl.stem.split("-")
        if platform == "any":
            shutil.copy2(whl, wheels / whl.name)
        else:
            binary.append(f"{dist}=={version}")
    if binary:
        platforms = [a for p in wheel_platforms(board.target.wheel_machine)
                     for a in ("--platform", p)]  # fmt: skip
        run([str(py), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             *platforms, "--python-version", PYTHON_VERSION, "--implementation", "cp",
             "--abi", "cp" + PYTHON_VERSION.replace(".", ""), "--dest", str(wheels),
             *binary])  # fmt: skip
    got = {w.stem.split("-")[0].lower() for w in wheels.glob("*.whl")}
    missing = [b for b in binary if b.split("==")[0].lower() not in got]
    if missing:
        raise BuildError(f"no {board.arch} wheels of {', '.join(missing)}")
    shutil.rmtree(resolved)
    shutil.rmtree(work / "src")
    return wheels


def customize_script(
    work: Path,
    release: str,
    factory: Path,
    keys: Path,
    data_separate: bool = False,
    board: Board | None = None,
) -> Path:
    """The hook that lays the firmware and the overlay on a root (mmdebstrap's customize hook,
    or again on the last root): runs on the host with the root as $1 (a foreign
    architecture's root runs its programs under qemu-user, through binfmt). Writes RAUC's
    system.conf it copies in; the wheels it installs are work/wheels (build_wheels)."""
    board = board or load_board(DEFAULT_BOARD)
    wheels = work / "wheels"
    (work / "system.conf").write_text(system_conf(board.compatible))
    tty = shlex.quote(board.console)
    mark_separate = (
        f'echo "data on separate drives: not grown" > "$root/{DATA_SEPARATE_MARK}"'
        if data_separate
        else ""
    )
    script = work / "customize.sh"
    script.write_text(
        f"""#!/bin/sh
set -eu
root="$1"
export SOURCE_DATE_EPOCH={source_date_epoch()}
cp -a {shlex.quote(str(wheels))} "$root/tmp/wheels"
chroot "$root" python3 -m venv /opt/nvr
chroot "$root" /opt/nvr/bin/pip install -q --no-index --no-cache-dir --force-reinstall \
    --find-links /tmp/wheels nvr-pair
rm -rf "$root/tmp/wheels"
ln -sf /opt/nvr/bin/nvr "$root/usr/bin/nvr"

# The overlay, then what the overlay's files point to.
rm -rf "$root/etc/nvr" "$root/var/lib/nvr" "$root/var/log"
cp -a --no-preserve=ownership {shlex.quote(str(TOP / "rootfs"))}/. "$root/"
# The installer console and its root-only port on the board's serial line (the overlay names
# ttyS0; each board its own).
sed -i "s/ttyS0/"{tty}"/g" "$root/usr/lib/systemd/system/nvr-console.service"
sed -i 's/^KERNEL=="ttyS0", /KERNEL=="'{tty}'", /' "$root/etc/udev/rules.d/70-nvr.rules"
grep -q "^TTYPath=/dev/"{tty}"$" "$root/usr/lib/systemd/system/nvr-console.service"
grep -q '^KERNEL=="'{tty}'", GROUP="root", MODE="0600"$' "$root/etc/udev/rules.d/70-nvr.rules"
# What the firmware derives from the board profile: board.toml, the NICs' names, the
# watchdog, the banner.
(cd {shlex.quote(str(TOP))} && .venv/bin/python -m firmware.hw.boardfiles \
    {shlex.quote(str(board.profile))} "$root")
mkdir -p "$root/usr/share/nvr" "$root/data" "$root/boot/efi" "$root/etc/rauc"
cp {shlex.quote(str(factory))} "$root/usr/share/nvr/nvr.toml"
rm -rf "$root/etc/nvr"
ln -s /data/etc/nvr "$root/etc/nvr"
ln -s /data/nvr "$root/var/lib/nvr"
# The board's own .network files (nvr setup); the image's defaults are in /usr/lib.
rm -rf "$root/etc/systemd/network"
ln -s /data/etc/systemd/network "$root/etc/systemd/network"
mkdir -p "$root/var/log"
mkdir -p "$root/usr/share/doc/nvr-pair"
cp {shlex.quote(str(TOP / "README.md"))} {shlex.quote(str(TOP / "docs" / "IMAGE.md"))} \\
   "$root/usr/share/doc/nvr-pair/"
printf '%s' {shlex.quote(release)} > "$root/etc/nvr-release"
rm -f "$root/{DATA_SEPARATE_MARK}"
{mark_separate}
cp {shlex.quote(str(work / "system.conf"))} "$root/etc/rauc/system.conf"
cp {shlex.quote(str(keys / "ca.cert.pem"))} "$root/etc/rauc/keyring.pem"
echo nvr > "$root/etc/hostname"
# The firmware's user and groups (sysusers.d/nvr.conf): made now, as /etc is read-only on the
# board.
chroot "$root" systemd-sysusers

# systemd: the firmware, its console on the serial line instead of a login prompt, networkd, chrony
# (the only time service: timesyncd is masked).
chroot "$root" systemctl enable nvr.service nvr-firstboot.service nvr-mark-good.service \\
    nvr-console.service nvr-poweroff.path nvr-network-boot.service systemd-networkd.service \\
    chrony.service nvr-data-grow.service
# Masked: the serial getty (the console has the port), timesyncd (chrony keeps time), apt's
# timers, and what a board has no use for, each a process or a mount at every boot that the
# firmware's start waits behind on a small CPU: dpkg's database backup (it would write to the
# read-only root), e2scrub (LVM snapshots), FUSE, DRM (no display), debugfs and tracefs,
# hugepages, foreign binaries (binfmt), network settings from the kernel's command line,
# configfs (no USB gadget), POSIX message queues, pstore's crash records in EFI variables,
# logind (no one logs in: the console is no login session), and the early loads of loop and
# dm_mod (the nodes kmod-static-nodes makes load them when RAUC first opens them).
chroot "$root" systemctl mask serial-getty@{tty}.service getty@tty1.service \\
    systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \\
    e2scrub_all.timer e2scrub_reap.service modprobe@fuse.service modprobe@drm.service \\
    sys-fs-fuse-connections.mount sys-kernel-debug.mount sys-kernel-tracing.mount \\
    dev-hugepages.mount proc-sys-fs-binfmt_misc.automount systemd-binfmt.service \\
    systemd-network-generator.service modprobe@configfs.service sys-kernel-config.mount \\
    dev-mqueue.mount modprobe@efi_pstore.service systemd-pstore.service \\
    systemd-logind.service modprobe@loop.service modprobe@dm_mod.service 2>/dev/null || true
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"

# No password anywhere: root is locked, and no other account can log in.
chroot "$root" passwd -l root >/dev/null
chroot "$root" update-initramfs -u -k all
rm -rf "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/* "$root/var/log"/* "$root/tmp"/*
"""
    )
    return script


def hook_env() -> dict[str, str]:
    """The host's environment for the image's hooks, less the host's pip settings (they name
    host paths; the image's pip installs from the wheels alone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "SOURCE_DATE_EPOCH": str(source_date_epoch())}


def root_packages(board: Board) -> list[str]:
    """The root's packages: the firmware's, the board's kernel and extras, and GRUB's modules
    for the board's EFI (grub-mkimage on the host builds the ESP's loader from them)."""
    return [*PACKAGES, board.kernel, board.target.grub_package, *board.packages]


def build_root(
    work: Path, board: Board, args: argparse.Namespace, release: str, keys: Path
) -> Path:
    root = work / "root"
    if root.exists():
        shutil.rmtree(root)
    build_wheels(work, board)
    script = customize_script(
        work, release, Path(args.factory_config), keys, args.data_on_separate_drives, board
    )
    cmd = [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
        f"--architectures={board.arch}",
        "--include=" + ",".join(root_packages(board)),
        "--aptopt=Acquire::Retries \"3\"",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        f"--customize-hook=sh {shlex.quote(str(script))} \"$1\"",
        SUITE, str(root), *MIRRORS,
    ]  # fmt: skip
    run(cmd, env=hook_env())
    return root


def refresh_root(
    work: Path, board: Board, args: argparse.Namespace, release: str, keys: Path
) -> Path:
    """The last root with the firmware and overlay laid on again (development turnaround)."""
    root = work / "root"
    build_wheels(work, board)
    script = customize_script(
        work, release, Path(args.factory_config), keys, args.data_on_separate_drives, board
    )
    mounted: list[Path] = []
    try:
        for src, fstype in (("proc", "proc"), ("sys", "sysfs")):
            run(["mount", "-t", fstype, src, str(root / src)])
            mounted.append(root / src)
        run(["mount", "--bind", "/dev", str(root / "dev")])
        mounted.append(root / "dev")
        run(["sh", str(script), str(root)], env=hook_env())
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], check=False)
    return root


SYSTEM_CONF = """# RAUC: two root slots, chosen by GRUB (see docs/IMAGE.md).
[system]
compatible=@COMPATIBLE@
bootloader=grub
grubenv=/boot/efi/EFI/BOOT/grubenv
statusfile=/data/rauc/status.raucs
bundle-formats=-plain

[keyring]
path=/etc/rauc/keyring.pem

[slot.rootfs.0]
device=/dev/disk/by-partlabel/rootfs-a
type=raw
bootname=A

[slot.rootfs.1]
device=/dev/disk/by-partlabel/rootfs-b
type=raw
bootname=B
"""


def system_conf(compatible: str) -> str:
    """RAUC's system.conf of a board: it installs only bundles whose compatible is its own."""
    return SYSTEM_CONF.replace("@COMPATIBLE@", compatible)


PYC_CHECKED_HASH, PYC_UNCHECKED_HASH = 0b11, 0b01
"""The flags word of a hash-based .pyc (PEP 552): bit 0 hash-based, bit 1 check the source."""


def unchecked_bytecode(root: Path) -> int:
    """Makes the root's byte-code unchecked-hash .pyc; how many were changed. The root is built
    with SOURCE_DATE_EPOCH set, under which pip and Debian's py3compile write checked-hash
    .pyc (reproducible), so every import would read and hash its .py again to check it. On a
    read-only root whose sources and byte-code come and go together (a whole slot per update)
    that check never fails, and under QEMU without KVM it is seconds of each Python start
    (docs/IMAGE.md "Boot time"). Only the flags word changes; the hash and the code stay."""
    changed = 0
    for top in (root / "usr" / "lib", root / "opt"):
        for path, _dirs, files in os.walk(top):  # links are not followed out of the root
            if not path.endswith("__pycache__"):
                continue
            for name in files:
                if not name.endswith(".pyc"):
                    continue
                with open(os.path.join(path, name), "r+b") as f:
                    head = f.read(8)
                    if len(head) == 8 and int.from_bytes(head[4:], "little") == PYC_CHECKED_HASH:
                        f.seek(4)
                        f.write(PYC_UNCHECKED_HASH.to_bytes(4, "little"))
                        changed += 1
    return changed


def squash(root: Path, dest: Path, epoch: int, compression: str) -> None:
    dest.unlink(missing_ok=True)
    level = ["-Xcompression-level", "1"] if compression == "gzip" else []
    run(["mksquashfs", str(root), str(dest), "-comp", compression, *level, "-b", "256K",
         "-noappend", "-no-progress", "-quiet", "-mkfs-time", str(epoch), "-all-time", str(epoch),
         "-wildcards", "-e", "proc/*", "sys/*", "dev/*", "run/*"],
        env={k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"})  # fmt: skip
    if dest.stat().st_size > SLOT_MIB * 2**20:
        raise BuildError(
            f"{dest} is {dest.stat().st_size >> 20} MiB, more than a slot's {SLOT_MIB}"
        )


# --- boot partition and disk -----------------------------------------------------------------

GRUB_CFG = r"""# A/B boot with one try per new slot (RAUC's grub backend writes the variables):
#   ORDER  the slots in preference order, X_OK=1 a bootable slot, X_TRY=1 a slot that was
#   started and not yet marked good. A slot gets one try: started with X_TRY=0, it is set to
#   1 here; `rauc status mark-good` after a healthy start sets it back to 0. A slot left at 1
#   is skipped, so the board falls back to the other slot.
@TERMINAL@
# No menu wait: nobody is at a board's console to choose (the slot is chosen below).
set timeout=0
set ORDER="A B"
set A_OK=0
set A_TRY=0
set B_OK=0
set B_TRY=0
load_env --file $prefix/grubenv
regexp --set=1:disk '^\(([^,]+),' "$cmdpath"
set chosen=""
for SLOT in $ORDER; do
  if [ "$SLOT" = "A" -a "$A_OK" = "1" -a "$A_TRY" = "0" ]; then set A_TRY=1; set chosen=A; break; fi
  if [ "$SLOT" = "B" -a "$B_OK" = "1" -a "$B_TRY" = "0" ]; then set B_TRY=1; set chosen=B; break; fi
done
if [ -z "$chosen" ]; then
  # Every slot has used its try: boot the first bootable one rather than none.
  for SLOT in $ORDER; do
    if [ "$SLOT" = "A" -a "$A_OK" = "1" ]; then set chosen=A; break; fi
    if [ "$SLOT" = "B" -a "$B_OK" = "1" ]; then set chosen=B; break; fi
  done
fi
if [ -z "$chosen" ]; then set chosen=A; fi
save_env --file $prefix/grubenv A_TRY B_TRY
if [ "$chosen" = "A" ]; then set default=0; else set default=1; fi
set CMDLINE="console=@CONSOLE@,115200 net.ifnames=0 ro quiet loglevel=3 panic=10"
set CMDLINE="$CMDLINE systemd.show_status=no"

menuentry "nvr-pair slot A" {
  linux ($disk,gpt2)/vmlinuz root=PARTUUID=@A@ rootfstype=squashfs $CMDLINE rauc.slot=A
  initrd ($disk,gpt2)/initrd.img
}
menuentry "nvr-pair slot B" {
  linux ($disk,gpt3)/vmlinuz root=PARTUUID=@B@ rootfstype=squashfs $CMDLINE rauc.slot=B
  initrd ($disk,gpt3)/initrd.img
}
"""


def grub_cfg(board: Board) -> str:
    """The board's grub.cfg: its serial console for GRUB and for the kernel. On x86 GRUB
    drives the 16550 UART itself; on arm64 UEFI's console already is the serial line."""
    terminal = (
        "serial --unit=0 --speed=115200\nterminal_input serial console\n"
        "terminal_output serial console"
        if board.target.grub_serial
        else "terminal_input console\nterminal_output console"
    )
    return (
        GRUB_CFG.replace("@TERMINAL@", terminal)
        .replace("@CONSOLE@", board.console)
        .replace("@A@", PART_UUIDS["rootfs-a"])
        .replace("@B@", PART_UUIDS["rootfs-b"])
    )


def grub_modules(board: Board) -> list[str]:
    return GRUB_MODULES.split() + (["serial"] if board.target.grub_serial else [])


def build_esp(work: Path, board: Board, root: Path, epoch: int) -> Path:
    esp_dir = work / "esp"
    shutil.rmtree(esp_dir, ignore_errors=True)
    boot = esp_dir / "EFI" / "BOOT"
    boot.mkdir(parents=True)
    (boot / "grub.cfg").write_text(grub_cfg(board))
    target = board.target.grub_target
    modules = root / "usr" / "lib" / "grub" / target  # the root's GRUB, for its architecture
    run(["grub-mkimage", "-O", target, "-d", str(modules), "-p", "/EFI/BOOT",
         "-o", str(boot / board.target.efi_binary), *grub_modules(board)])  # fmt: skip
    env = boot / "grubenv"
    run(["grub-editenv", str(env), "create"])
    run(["grub-editenv", str(env), "set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0"])
    img = work / "esp.vfat"
    img.unlink(missing_ok=True)
    run(["mkfs.vfat", "-F", "32", "-n", "ESP", "-i", ESP_VOLUME_ID, "-C", str(img),
         str(ESP_MIB * 1024)], capture_output=True)  # fmt: skip
    for p in sorted(esp_dir.rglob("*")):
        os.utime(p, (epoch, epoch))
    run(["mcopy", "-s", "-m", "-i", str(img), str(esp_dir / "EFI"), "::/"],
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})  # fmt: skip
    return img


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def build_data(
    work: Path, board: Board, epoch: int, squashfs: Path, version: str, root: Path
) -> Path:
    """A data filesystem with the layout the root points into, the first boot's config (the
    factory config with the board's hardware, marked done for the root's release: the first
    boot starts no Python before the console; `python -m firmware.provision`), and RAUC's
    status of slot A as if the flashed root had been installed from its bundle (so `rauc
    status` and the console show slot A's version from the first boot)."""
    tree = work / "data"
    shutil.rmtree(tree, ignore_errors=True)
    for sub in ("etc/nvr", "nvr", "log", "rauc"):
        (tree / sub).mkdir(parents=True)
    (tree / "etc" / "nvr").chmod(0o700)
    share = root / "usr" / "share" / "nvr"
    run([str(TOP / ".venv" / "bin" / "python"), "-m", "firmware.provision",
         str(share / "nvr.toml"), str(tree / "etc" / "nvr" / "nvr.toml"),
         str(share / "board.toml"), str(root / "etc" / "nvr-release")], cwd=TOP)  # fmt: skip
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    (tree / "rauc" / "status.raucs").write_text(
        f"[slot.rootfs.0]\nbundle.compatible={board.compatible}\nbundle.version={version}\n"
        f"status=ok\nsha256={sha256_file(squashfs)}\nsize={squashfs.stat().st_size}\n"
        f"installed.timestamp={stamp}\ninstalled.count=1\n"
    )
    img = work / "data.ext4"
    img.unlink(missing_ok=True)
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(epoch)}
    run(["mke2fs", "-q", "-t", "ext4", "-L", "data", "-U", DATA_FS_UUID,
         "-E", f"hash_seed={DATA_FS_UUID},root_owner=0:0", "-d", str(tree), str(img),
         f"{DATA_MIB}M"], env=env)  # fmt: skip
    return img


def genimage_config(work: Path) -> str:
    def part(name: str, image: str, size: int, extra: str = "") -> str:
        return (
            f'  partition {name} {{\n    image = "{image}"\n    size = {size}M\n'
            f'    partition-uuid = "{PART_UUIDS[name]}"\n{extra}  }}\n'
        )

    return (
        'image disk.img {\n  hdimage {\n    partition-table-type = "gpt"\n    align = 1M\n'
        f'    disk-uuid = "{DISK_UUID}"\n  }}\n'
        + part("esp", "esp.vfat", ESP_MIB, '    partition-type-uuid = "U"\n    bootable = true\n')
        + part("rootfs-a", "rootfs.squashfs", SLOT_MIB, '    partition-type-uuid = "L"\n')
        + f"  partition rootfs-b {{\n    size = {SLOT_MIB}M\n"
        f'    partition-uuid = "{PART_UUIDS["rootfs-b"]}"\n    partition-type-uuid = "L"\n  }}\n'
        + part("data", "data.ext4", DATA_MIB, '    partition-type-uuid = "L"\n')
        + "}\n"
    )


def build_disk(work: Path, out: Path) -> Path:
    cfg = work / "genimage.cfg"
    cfg.write_text(genimage_config(work))
    tmp = work / "genimage-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    empty = work / "genimage-root"
    empty.mkdir(exist_ok=True)
    run(["genimage", "--config", str(cfg), "--inputpath", str(work), "--outputpath", str(out),
         "--tmppath", str(tmp), "--rootpath", str(empty)])  # fmt: skip
    return out / "disk.img"


# --- bundle ----------------------------------------------------------------------------------


def signing_key_of(keys: Path, uri: str | None) -> str:
    """The key that signs bundles: a PKCS#11 URI (a token or HSM; RAUC_PKCS11_MODULE and
    RAUC_PKCS11_PIN name the module and the PIN) or the keys directory's signing.key.pem."""
    if uri:
        if not uri.startswith("pkcs11:"):
            raise BuildError(f"--signing-key {uri!r}: not a PKCS#11 URI (pkcs11:token=...)")
        return uri
    pem = keys / "signing.key.pem"
    if not pem.exists():
        raise BuildError(
            f"no {pem}: put the signing key there or name it in a token with "
            "--signing-key 'pkcs11:token=...;object=...' (docs/VENDOR.md)"
        )
    return str(pem)


def build_bundle(
    work: Path,
    out: Path,
    squashfs: Path,
    version: str,
    keys: Path,
    name: str,
    compatible: str,
    signing_key: str | None = None,
) -> Path:
    """signing_key: a PKCS#11 URI; None: the keys directory's signing.key.pem."""
    key = signing_key_of(keys, signing_key)
    content = work / "bundle"
    shutil.rmtree(content, ignore_errors=True)
    content.mkdir(parents=True)
    os.link(squashfs, content / "rootfs.squashfs")
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion={version}\n"
        f"build={git('rev-parse', '--short=12', 'HEAD') or 'unknown'}\n\n"
        "[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.squashfs\n"
    )
    bundle = out / f"{name}.raucb"
    bundle.unlink(missing_ok=True)
    try:
        run(["rauc", "bundle", "--cert", str(keys / "signing.cert.pem"), "--key", key,
             "--keyring", str(keys / "ca.cert.pem"), str(content), str(bundle)],
            capture_output=True)  # fmt: skip
    except BuildError:
        bundle.unlink(missing_ok=True)  # never a half-signed bundle beside the good ones
        raise
    return bundle


def write_checksums(out: Path) -> None:
    lines = []
    for p in sorted(out.iterdir()):
        if p.is_file() and p.suffix in (".img", ".raucb", ".json"):
            lines.append(f"{sha256_file(p)}  {p.name}\n")
    (out / "SHA256SUMS").write_text("".join(lines))


def set_release(root: Path, release: str) -> None:
    (root / "etc" / "nvr-release").write_text(release)


# --- commands --------------------------------------------------------------------------------


def root_release_field(root: Path, key: str) -> str | None:
    """One field of the root's /etc/nvr-release, None without it."""
    path = root / "etc" / "nvr-release"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        words = shlex.split(line)
        if words and words[0].startswith(f"{key}="):
            return words[0].split("=", 1)[1]
    return None


def cmd_image(args: argparse.Namespace) -> int:
    started = time.monotonic()
    board: Board = args.board
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("rootfs-*.squashfs"):  # bundles of the previous root
        stale.unlink()
    keys = Path(args.keys) if args.keys else dev_keys(args.keys_home)
    if args.release:
        check_release_keys(keys)
    epoch = source_date_epoch()
    revision = git("rev-parse", "--short=12", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        revision += "-dirty"
    version = args.version or project_version() + ("" if args.release else "-dev")
    release = release_text(version, revision, epoch, board.compatible)
    reuse = args.reuse_root and (work / "root" / "etc" / "nvr-release").exists()
    if reuse and root_release_field(work / "root", "COMPATIBLE") != board.compatible:
        raise BuildError(
            f"{work / 'root'} is another board's root: build it anew (no --reuse-root)"
        )
    if reuse:
        root = refresh_root(work, board, args, release, keys)
    else:
        root = build_root(work, board, args, release, keys)
    log(f"byte-code: {unchecked_bytecode(root)} .pyc made unchecked-hash")
    root_seconds = time.monotonic() - started
    squashfs = work / "rootfs.squashfs"
    squash(root, squashfs, epoch, args.compression)
    (work / "compression").write_text(args.compression)
    build_esp(work, board, root, epoch)
    build_data(work, board, epoch, squashfs, version, root)
    disk = build_disk(work, out)
    bundle = build_bundle(work, out, squashfs, version, keys, f"{board.product}-{version}",
                          board.compatible, args.signing_key)  # fmt: skip
    info = {
        "board": board.name,
        "arch": board.arch,
        "compatible": board.compatible,
        "version": version,
        "git_revision": revision,
        "source_date_epoch": epoch,
        "disk": disk.name,
        "disk_bytes": disk.stat().st_size,
        "disk_allocated_bytes": disk.stat().st_blocks * 512,
        "rootfs_bytes": squashfs.stat().st_size,
        "bundle": bundle.name,
        "bundle_bytes": bundle.stat().st_size,
        "build_seconds": round(time.monotonic() - started, 1),
        "root_seconds": round(root_seconds, 1),
        "root_reused": reuse,
        "compression": args.compression,
        "development_keys": not args.release,
        "data_grows_to_disk": not args.data_on_separate_drives,
    }
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    write_checksums(out)
    log(f"done in {info['build_seconds']} s: {disk}, {bundle}")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    """Another version of the last built root, as a bundle: for update tests and hotfixes.
    --board names the board the bundle is for (its compatible): another board than the root's
    makes a bundle that board's RAUC installs and this one's refuses (the image test's)."""
    board: Board = args.board
    out = Path(args.out)
    work = out / "work"
    root = work / "root"
    if not root.is_dir():
        raise BuildError(f"no root in {root}; build the image first")
    keys = Path(args.keys) if args.keys else dev_keys(args.keys_home)
    if args.release:
        check_release_keys(keys)
    epoch = source_date_epoch()
    old = (root / "etc" / "nvr-release").read_text()
    revision = root_release_field(root, "GIT_REVISION") or "unknown"
    built_for = root_release_field(root, "COMPATIBLE") or "unknown"
    if built_for != board.compatible:
        if args.release:
            raise BuildError(f"the root is {built_for}'s, not {board.compatible}'s")
        log(f"the root is {built_for}'s: a bundle for {board.compatible} that is not its root")
    squashfs = work / f"rootfs-{args.version}.squashfs"
    if not squashfs.exists():  # one root per version, whichever key signs it
        compression = (work / "compression").read_text().strip()
        try:
            set_release(root, release_text(args.version, revision, epoch, built_for))
            squash(root, squashfs, epoch, compression)
        finally:
            set_release(root, old)
    name = args.name or f"{board.product}-{args.version}"
    bundle = build_bundle(work, out, squashfs, args.version, keys, name, board.compatible,
                          args.signing_key)  # fmt: skip
    write_checksums(out)
    log(f"bundle {bundle}")
    return 0


SIGNING_KEY_HELP = (
    "the signing key as a PKCS#11 URI (pkcs11:token=...;object=...), so it stays in its token;"
    " --keys then needs only ca.cert.pem and signing.cert.pem (default: --keys' signing.key.pem)"
)


def cmd_keys(args: argparse.Namespace) -> int:
    make_keys(Path(args.dir), args.common_name)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="image/build.py", description=__doc__.splitlines()[0])
    # --board and --out are taken before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--board", default=argparse.SUPPRESS,
                        help=f"board profile: a name in image/boards or a .toml path"
                        f" (default {DEFAULT_BOARD})")  # fmt: skip
    common.add_argument("--out", default=argparse.SUPPRESS,
                        help="output directory (default image/out/BOARD)")  # fmt: skip
    p.add_argument("--board", default=DEFAULT_BOARD, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="output directory (default image/out/BOARD)")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("image", parents=[common], help="disk image + bundle + checksums")
    i.add_argument("--version", help="default: pyproject's version, -dev unless --release")
    i.add_argument("--factory-config", default=str(TOP / "rootfs" / "etc" / "nvr" / "nvr.toml"),
                   help="the config a new or factory-reset board starts from")  # fmt: skip
    i.add_argument("--keys", help="directory with ca.cert.pem, signing.{cert,key}.pem")
    i.add_argument("--release", action="store_true", help="refuse development keys")
    i.add_argument("--signing-key", help=SIGNING_KEY_HELP)
    i.add_argument("--compression", choices=("xz", "gzip"), default="xz",
                   help="of the root (gzip: fast, for test builds)")  # fmt: skip
    i.add_argument("--data-on-separate-drives", action="store_true",
                   help="the board keeps its data on drives of its own: the data partition"
                   " keeps its size (default: grows to its disk's end at first boot)")  # fmt: skip
    i.add_argument("--reuse-root", action="store_true",
                   help="lay the firmware on the last root again (development)")  # fmt: skip
    i.set_defaults(func=cmd_image)
    b = sub.add_parser("bundle", parents=[common],
                       help="a bundle of the last built root under another version")  # fmt: skip
    b.add_argument("--version", required=True)
    b.add_argument("--keys")
    b.add_argument("--name", help="file name without .raucb")
    b.add_argument("--release", action="store_true", help="refuse development keys")
    b.add_argument("--signing-key", help=SIGNING_KEY_HELP)
    b.set_defaults(func=cmd_bundle)
    k = sub.add_parser("keys", help="make a CA and a signing certificate")
    k.add_argument("dir")
    k.add_argument("--common-name", default=f"nvr-pair {DEV_MARK}")
    k.set_defaults(func=cmd_keys)
    args = p.parse_args(argv)
    try:
        if args.cmd in ("image", "bundle"):
            args.board = load_board(args.board)
            # The default output shares one set of development keys among the boards; an
            # output of one's own (--out) has its own.
            if args.out is None:
                args.out, args.keys_home = str(OUT_TOP / args.board.name), DEFAULT_KEYS.parent
            else:
                args.keys_home = Path(args.out)
        return args.func(args)
    except BuildError as e:
        print(f"build: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
