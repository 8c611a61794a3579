"""The flashable image of one board, end to end: build it, boot it under QEMU, update it with
RAUC.

The board under test is $NVR_BOARD (image/boards/NAME.toml; `bash image/test.sh --board NAME`
sets it), qemu-x86_64 by default. Everything is checked over the serial console, as an
installer sees the board: the firmware service runs and records the camera, /etc/nvr-release
is right, the root is read-only, PID 1 holds the watchdog; a bundle signed by another key is
refused, and so is a bundle made for another board (its compatible); the signed bundle goes
into slot B and the board comes back on the new version. Skipped only when the build tools are
not installed (`bash image/test.sh` installs them and runs this test alone).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.hw.profile import load_profile
from hil.bootfigures import boot_report
from hil.camera.client import CameraSim
from hil.camera.spec import StreamSpec
from hil.vm import (
    BOARD_LAN,
    BOARDS_DIR,
    CAMERA_ADDR,
    PROMPT,
    Vm,
    emulated_board,
    make_stick,
)
from hil.wait import wait_until
from hil.wizardrun import (
    ADMIN_PW,
    BOOT_S,
    LAB_FACTORY,
    READY_S,
    VIP,
    first_boot_to_recording,
    recording_as,
    setup_cameras_and_apply,
    setup_steps_1_to_3,
    wait_console,
)
from hil.wizardrun import parse_json as _json
from hil.wizardrun import root_shell as _root_shell
from hil.wizardrun import status_json as _status

TOP = Path(__file__).resolve().parent.parent
BOARD = emulated_board()
"""The board under test ($NVR_BOARD, default qemu-x86_64)."""
assert BOARD.qemu is not None  # emulated_board() refuses a board the lab cannot emulate
OTHER_BOARD = next(p.stem for p in sorted(BOARDS_DIR.glob("*.toml")) if p.stem != BOARD.board.name)
"""Another board, whose bundles this one must refuse."""
FIGURES = TOP / "image" / "out" / BOARD.board.name / "test-figures.json"
BOOT_REPORT = FIGURES.with_name("boot-report.txt")
"""The boot test's systemd-analyze, critical chain to the firmware and blame, as read."""
TOOLS = ("mmdebstrap", "genimage", "rauc", "mksquashfs", "grub-mkimage", "mcopy", "mkfs.vfat",
         BOARD.qemu.binary, "qemu-img")  # fmt: skip
MISSING = [t for t in TOOLS if shutil.which(t) is None] + [
    f"{f} (UEFI firmware)" for f in (BOARD.qemu.code, BOARD.qemu.vars) if not Path(f).exists()
]
BOOT = BOOT_S * (2 if BOARD.qemu.accel == "tcg" else 1)
"""Power on to the console: a board emulated by TCG on purpose (arm64 on this host) boots in
minutes (docs/BENCHMARKS.md), twice the margin of one that falls back to it."""
SKIP_UNDER_TCG = pytest.mark.skipif(
    BOARD.qemu.accel == "tcg",
    reason=f"{BOARD.board.name} is emulated instruction by instruction (TCG): too slow for this"
    " drill; it runs on qemu-x86_64 (KVM)",
)
pytestmark = [
    pytest.mark.skipif(
        bool(MISSING) or os.geteuid() != 0,
        reason=f"image build tools missing: {', '.join(MISSING)} (bash image/test.sh installs them)"
        if MISSING
        else "building an image needs root",
    ),
    pytest.mark.timeout(3000),
    pytest.mark.image,
]
V1, V2 = "1.0.0-test.1", "1.0.0-test.2"
EPOCH = 1_790_000_000  # 2026-09-21T14:13:20Z
INSTALL_S = 600


def _build(*args: str, out: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    cmd = [sys.executable, str(TOP / "image" / "build.py"), "--out", str(out), *args]
    if args[0] in ("image", "bundle") and "--board" not in args:
        cmd += ["--board", BOARD.board.name]
    subprocess.run(cmd, check=True, env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("image-out")
    factory = out / "factory.toml"
    factory.write_text(LAB_FACTORY)
    started = time.monotonic()
    _build("image", "--version", V1, "--compression", "gzip", "--factory-config", str(factory),
           out=out)  # fmt: skip
    build_s = time.monotonic() - started
    _build("bundle", "--version", V2, out=out)
    _build("keys", str(out / "keys-other"), "--common-name", "another vendor", out=out)
    _build("bundle", "--version", V2, "--keys", str(out / "keys-other"), "--name", "other-key",
           out=out)  # fmt: skip
    # The same root and key, made for another board: its compatible names that board.
    _build("bundle", "--board", OTHER_BOARD, "--version", V2, "--name", "other-board", out=out)
    info = json.loads((out / "build.json").read_text())
    info["build_seconds_measured"] = round(build_s, 1)
    yield {"out": out, "info": info}
    shutil.rmtree(out / "work", ignore_errors=True)


@pytest.fixture(scope="module")
def camera():
    with CameraSim([StreamSpec("cam1", fps=25, gop=25, width=320, height=240)]) as cam:
        yield cam


def field(text: str, key: str) -> str:
    m = re.search(rf"^{re.escape(key)}: (.*)$", text, re.M)
    assert m, f"no {key!r} line in:\n{text}"
    return m.group(1).strip()


def test_image_boots_records_and_updates_through_signed_bundles(built, camera, tmp_path):
    out, info = built["out"], built["info"]
    disk = out / "disk.img"
    sums = (out / "SHA256SUMS").read_text()
    for name in ("disk.img", f"nvr-pair-{V1}.raucb", f"nvr-pair-{V2}.raucb"):
        assert re.search(rf"^[0-9a-f]{{64}}  {re.escape(name)}$", sums, re.M), sums
    # The board's identity everywhere RAUC and the console read it.
    compatible = f"nvr-pair-{BOARD.board.name}"
    assert BOARD.compatible == compatible
    assert (info["board"], info["compatible"]) == (BOARD.board.name, compatible), info
    work = out / "work"
    assert f"\ncompatible={compatible}\n" in (work / "root/etc/rauc/system.conf").read_text()
    assert f"bundle.compatible={compatible}\n" in (work / "data/rauc/status.raucs").read_text()
    # The profile the firmware reads at first boot: the board's, less the lab's [qemu].
    installed = load_profile(work / "root/usr/share/nvr/board.toml")
    assert installed.compatible == compatible and installed.qemu is None
    assert installed.nic == BOARD.nic and installed.image == BOARD.image
    efi = {"amd64": "BOOTX64.EFI", "arm64": "BOOTAA64.EFI"}[BOARD.image.arch]
    assert (work / "esp/EFI/BOOT" / efi).is_file()
    assert f"console={BOARD.image.console}," in (work / "esp/EFI/BOOT/grub.cfg").read_text()
    console_unit = (work / "root/usr/lib/systemd/system/nvr-console.service").read_text()
    assert f"TTYPath=/dev/{BOARD.image.console}\n" in console_unit
    rules = (work / "root/etc/udev/rules.d/70-nvr.rules").read_text()
    assert f'KERNEL=="{BOARD.image.console}", GROUP="root", MODE="0600"' in rules
    # No password anywhere: every account of the built root is locked or has none at all.
    shadow = (out / "work" / "root" / "etc" / "shadow").read_text().splitlines()
    assert any(line.startswith("root:") for line in shadow)
    open_accounts = [ln.split(":")[0] for ln in shadow if ln.split(":")[1][:1] not in ("!", "*")]
    assert open_accounts == [], f"accounts with a password: {open_accounts}"
    # The firmware's own account (sysusers.d at build time; /etc is read-only on the board).
    passwd = (out / "work" / "root" / "etc" / "passwd").read_text()
    assert re.search(r"^nvr:x:\d+:\d+:NVR pair firmware:/var/lib/nvr:/usr/sbin/nologin$",
                     passwd, re.M), passwd  # fmt: skip
    wants = out / "work" / "root" / "etc" / "systemd" / "system" / "systemd-networkd.service.wants"
    assert (wants / "nvr-network-boot.service").is_symlink()  # the rollback before networkd
    group = (out / "work" / "root" / "etc" / "group").read_text()
    assert re.search(r"^i2c:x:", group, re.M) and re.search(r"^nvr:x:", group, re.M)
    stick = make_stick(
        tmp_path / "stick.img",
        [out / f"nvr-pair-{V2}.raucb", out / "other-key.raucb", out / "other-board.raucb"],
    )
    vm = Vm(disk, tmp_path / "vm", camera_port=camera.port, stick=stick, board=BOARD)
    figures: dict[str, float] = {}
    try:
        vm.start()
        t0 = vm.powered_on  # QEMU's start: the rig's own KVM probe is no part of the boot
        first, status = first_boot_to_recording(vm, BOOT)
        figures |= first
        st = json.loads(status[status.index("{") : status.rindex("}") + 1])
        assert st["board"] == "north" and st["role"] == "unpaired"  # records alone
        assert [c["name"] for c in st["cameras"]] == ["cam1"]

        release = vm.command("release")
        assert "NAME=nvr-pair" in release
        assert f"VERSION={V1}" in release
        revision = subprocess.run(["git", "-C", str(TOP), "rev-parse", "--short=12", "HEAD"],
                                  capture_output=True, text=True).stdout.strip()  # fmt: skip
        assert re.search(rf"^GIT_REVISION={revision}(-dirty)?$", release, re.M), release
        assert "BUILD_DATE=2026-09-21T14:13:20Z" in release
        assert f"COMPATIBLE={compatible}" in release

        system = wait_console(vm, "system", lambda t: "service: active" in t, READY_S,
                              "the firmware service active")  # fmt: skip
        assert field(system, "root") == "read-only"
        held = r"^watchdog: /dev/watchdog\d? \((watchdog0, )?i6300ESB timer\) held by systemd"
        assert re.search(held, system, re.M), system

        # Where the boot went (figures only): before the kernel, kernel, initramfs, systemd,
        # and the firmware's own start to READY=1; the texts beside the figures.
        boot = boot_report(vm, t0)
        figures |= boot.figures
        BOOT_REPORT.parent.mkdir(parents=True, exist_ok=True)
        BOOT_REPORT.write_text(boot.text)
        print(f"boot: {json.dumps(boot.figures)}\n{boot.text}")
        assert {"loader_s", "kernel_s", "userspace_s", "firmware_start_s"} <= set(boot.figures), (
            boot.text)  # fmt: skip

        # The setup's time settings reached the running chronyd by its reload, not a restart
        # (firmware/timesync.py TAKE_IN): started once, the peer a source and allowed to ask.
        chrony = _root_shell(vm, "journalctl -u chrony -b --no-pager -o cat; chronyc -n sources; "
                             "chronyc accheck 198.51.100.2")  # fmt: skip
        assert chrony.count("chronyd version") == 1, chrony
        assert "Reloaded chrony.service" in chrony, chrony
        assert re.search(r"^\^. 198\.51\.100\.2 ", chrony, re.M), chrony
        assert "208 Access allowed" in chrony, chrony

        system = wait_console(vm, "system", lambda t: "boot_status=good" in t, READY_S,
                              "slot A marked good")  # fmt: skip
        assert field(system, "slot") == "A"
        assert re.search(rf"^slot rootfs\.0: bootname=A state=booted boot_status=good version={V1}",
                         system, re.M), system  # fmt: skip

        refused = vm.command("update other-key.raucb", timeout=INSTALL_S)
        assert "update failed" in refused, refused
        assert re.search(r"signature|certificate|verify", refused, re.I), refused
        assert field(vm.command("system"), "slot") == "A"

        # Signed by the right key, made for another board: RAUC refuses it by its compatible,
        # and the board goes on running its slot.
        refused = vm.command("update other-board.raucb", timeout=INSTALL_S)
        assert "update failed" in refused, refused
        assert re.search(r"compatible", refused, re.I), refused
        assert f"nvr-pair-{OTHER_BOARD}" in refused, refused
        system = vm.command("system")
        assert field(system, "slot") == "A"
        assert re.search(rf"^slot rootfs\.0: bootname=A state=booted boot_status=good version={V1}",
                         system, re.M), system  # fmt: skip
        assert "service: active" in system, system

        t_install = time.monotonic()
        done = vm.command(f"update nvr-pair-{V2}.raucb", timeout=INSTALL_S)
        figures["install_s"] = time.monotonic() - t_install
        assert f"update: installed nvr-pair-{V2}.raucb" in done, done
        system = vm.command("system")
        assert re.search(r"^slot rootfs\.1: bootname=B .*version=" + re.escape(V2) + " primary$",
                         system, re.M), system  # fmt: skip

        t_reboot = time.monotonic()
        vm.send("reboot\r")
        vm.answer("admin password", ADMIN_PW, BOOT)  # set up once: a login from now on
        vm.expect(r"version: " + re.escape(V2), 60)
        vm.expect(re.escape(PROMPT), 60)
        assert f"VERSION={V2}" in vm.command("release")
        system = wait_console(vm, "system", lambda t: "service: active" in t and
                              re.search(r"rootfs\.1: .*state=booted boot_status=good", t),
                              READY_S, "slot B up and marked good")  # fmt: skip
        assert field(system, "slot") == "B"
        assert field(system, "root") == "read-only"
        figures["reboot_to_new_version_s"] = time.monotonic() - t_reboot
    finally:
        vm.stop()
        report = {**info, **{k: round(v, 1) for k, v in figures.items()}, "kvm": vm.accel == "kvm"}
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text(json.dumps(report, indent=2) + "\n")


BROKEN = "1.0.0-test.broken"


@pytest.mark.drill
def test_update_that_never_becomes_healthy_is_rolled_back(built, camera, tmp_path):
    """A slot whose firmware never reports READY is not marked good: the board reboots by
    itself (nvr.service's start limit), the bootloader skips the slot that used its try, and
    slot A comes back with the failed slot marked bad."""
    out = built["out"]
    root = out / "work" / "root"
    dropin = root / "etc" / "systemd" / "system" / "nvr.service.d" / "broken.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("[Service]\nExecStart=\nExecStart=/bin/false\n")
    try:
        _build("bundle", "--version", BROKEN, out=out)
    finally:
        shutil.rmtree(dropin.parent)
    stick = make_stick(tmp_path / "stick.img", [out / f"nvr-pair-{BROKEN}.raucb"])
    vm = Vm(out / "disk.img", tmp_path / "vm", camera_port=camera.port, stick=stick, board=BOARD)
    try:
        vm.start()
        vm.expect(r"nvr-pair first-boot setup", BOOT)
        setup_steps_1_to_3(vm, "a", "north", BOARD_LAN, "192.0.2.12")
        vm.answer("show a code, join with one, or skip (code/join/skip)", "skip")
        setup_cameras_and_apply(vm, None)
        wait_console(vm, "system", lambda t: "service: active" in t and "boot_status=good" in t,
                     READY_S, "slot A up and marked good")  # fmt: skip
        done = vm.command("update", timeout=INSTALL_S)
        assert f"update: installed nvr-pair-{BROKEN}.raucb" in done, done
        t_reboot = time.monotonic()
        vm.send("reboot\r")
        vm.answer("admin password", ADMIN_PW, BOOT)
        vm.expect(r"version: " + re.escape(BROKEN), 60)  # slot B starts ...
        vm.answer("admin password", ADMIN_PW, BOOT + READY_S)
        vm.expect(r"version: " + re.escape(V1), 60)  # ... and A is back
        vm.expect(re.escape(PROMPT), 60)
        system = wait_console(vm, "system", lambda t: "service: active" in t and
                              re.search(r"rootfs\.1: .*boot_status=bad", t), READY_S,
                              "slot A running, slot B marked bad")  # fmt: skip
        assert field(system, "slot") == "A"
        assert re.search(r"^slot rootfs\.0: bootname=A state=booted boot_status=good", system,
                         re.M), system  # fmt: skip
        rollback_s = time.monotonic() - t_reboot
        report = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        report["rollback_reboot_to_a_s"] = round(rollback_s, 1)
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        vm.stop()


@SKIP_UNDER_TCG
def test_two_boards_from_one_image_set_up_by_their_consoles_form_a_pair(built, tmp_path):
    """The installer's proof: two VMs from the same disk.img (each on its own overlay), a LAN
    with the camera and a client, a direct sync link; set up only through their serial
    consoles with the wizard (paired by the code one shows and the other types), they record
    the camera, the standby mirrors, the VIP answers the client, and a power cut of the
    active VM moves the VIP to the other."""
    from hil.vmnet import VmPairNet

    disk = built["out"] / "disk.img"
    vip = VIP.split("/")[0]
    lan = {"a": BOARD_LAN, "b": "192.0.2.12"}
    name = {"a": "north", "b": "south"}
    figures: dict[str, float] = {}

    def vip_board() -> str | None:
        try:
            return json.loads(net.http(vip, 8080, "/api/v1/status", timeout=0.5))["board"]
        except (OSError, ValueError, KeyError):
            return None

    with VmPairNet() as net:
        cam = CameraSim([StreamSpec("cam1", fps=25, gop=25, width=320, height=240)],
                        port=8554, bind=CAMERA_ADDR, netns=net.ns)  # fmt: skip
        vms = {b: Vm(disk, tmp_path / f"vm-{b}", netns=net.ns, taps=net.taps(b), mac_id=0x60 + i,
                     board=BOARD)
               for i, b in enumerate(("a", "b"))}  # fmt: skip
        a, b = vms["a"], vms["b"]
        try:
            cam.start()
            for vm in vms.values():
                vm.start()
            t0 = a.powered_on
            for side, vm in vms.items():
                other = "b" if side == "a" else "a"
                setup_steps_1_to_3(vm, side, name[side], lan[side], lan[other])
            ask = "show a code, join with one, or skip (code/join/skip)"
            a.answer(ask, "code")  # a's network goes live, then it shows a code
            code = a.expect(r"pairing code: (\d{4}-\d{4})", READY_S).group(1)
            b.answer(ask, "join")
            b.answer("pairing code", code, READY_S)
            fp_a = a.expect(r"paired: pair key fingerprint (\S+) \(", 120).group(1)
            fp_b = b.expect(r"paired: pair key fingerprint (\S+) \(", 120).group(1)
            assert fp_a == fp_b
            for vm in vms.values():
                setup_cameras_and_apply(vm, "cam1")
            figures["power_on_to_set_up_s"] = time.monotonic() - t0

            st_a = _status(a, recording_as("active"), "a active, recording")
            st_b = _status(b, lambda s: s.get("role") == "standby"
                           and (s.get("mirror") or {}).get("fetched_segments", 0) > 0,
                           "b standby and mirroring a's segments")  # fmt: skip
            figures["power_on_to_recording_pair_s"] = time.monotonic() - t0
            assert st_a["board"] == "north" and st_b["board"] == "south"
            assert [c["name"] for c in st_a["cameras"]] == ["cam1"]
            wait_until(lambda: vip_board() == "north", 60, "the VIP answering from a")

            t_cut = time.monotonic()
            a.power_cut()
            wait_until(lambda: vip_board() == "south", 60, "the VIP answering from b")
            figures["vip_moved_after_power_cut_s"] = time.monotonic() - t_cut
            st_b = _status(b, recording_as("active"), "b active, recording")
            assert st_b["board"] == "south"
        finally:
            for vm in vms.values():
                vm.stop()
            cam.close()
            report_path = FIGURES
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report = json.loads(report_path.read_text()) if report_path.exists() else {}
            report |= {f"pair_{k}": round(v, 1) for k, v in figures.items()}
            report_path.write_text(json.dumps(report, indent=2) + "\n")


def _gpt(raw: Path, sector: int = 512) -> dict:
    """Both GPT headers of a raw disk, each checked as UEFI does (signature, header CRC, entry
    array CRC), the partitions (name, first, last LBA) of each, and the raw bytes of the
    primary and backup tables (to compare two boots)."""
    import struct
    import zlib

    last = raw.stat().st_size // sector - 1
    found: dict = {"last_lba": last}
    with open(raw, "rb") as f:
        f.seek(0)
        found["pmbr_sectors"] = struct.unpack_from("<I", f.read(sector), 446 + 12)[0]
        for which, lba in (("primary", 1), ("backup", last)):
            f.seek(lba * sector)
            head = f.read(sector)
            if head[:8] != b"EFI PART":
                found[which] = None
                continue
            size = struct.unpack_from("<I", head, 12)[0]
            crc_ok = (
                zlib.crc32(head[:16] + b"\0\0\0\0" + head[20:size])
                == struct.unpack_from("<I", head, 16)[0]
            )
            my_lba, alt_lba, _, last_usable = struct.unpack_from("<QQQQ", head, 24)
            ent_lba, count, esize, ent_crc = struct.unpack_from("<QIII", head, 72)
            f.seek(ent_lba * sector)
            entries = f.read(count * esize)
            parts = []
            for i in range(count):
                e = entries[i * esize : (i + 1) * esize]
                if e[:16] != bytes(16):
                    first, end = struct.unpack_from("<QQ", e, 32)
                    parts.append((e[56:128].decode("utf-16-le").rstrip("\0"), first, end))
            found[which] = {
                "valid": crc_ok and zlib.crc32(entries) == ent_crc and my_lba == lba,
                "alternate_lba": alt_lba,
                "last_usable_lba": last_usable,
                "partitions": parts,
                "bytes": head[:size] + entries,
            }
    return found


GROW_UNITS = "nvr-data-grow.service systemd-growfs@data.service"


def _grow_journal(vm: Vm) -> tuple[str, dict[str, float]]:
    """This boot's journal of the two grow units and the kernel's resize lines, and how long
    each unit ran (s)."""
    text = _root_shell(
        vm,
        "export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat; "
        f"for u in {GROW_UNITS}; do echo unit $u $(systemctl show -P Result $u) "
        "$(systemctl show -P InactiveExitTimestampMonotonic $u) "
        "$(systemctl show -P ActiveEnterTimestampMonotonic $u); done; "
        "journalctl -b --no-pager -o cat -u nvr-data-grow.service -u systemd-growfs@data.service;"
        " journalctl -b -k --no-pager -o cat | grep -i resiz",
    )
    took: dict[str, float] = {}
    # Not anchored at the line's start: bash may put a terminal escape before the first.
    for unit, result, began, ended in re.findall(r"unit (\S+) (\S+) (\d+) (\d+)$", text, re.M):
        assert result == "success", text
        took[unit] = (int(ended) - int(began)) / 1e6
    assert set(took) == set(GROW_UNITS.split()), text
    return text, took


def _data_fields(system: str) -> dict[str, int | str]:
    """The `system` command's data disk lines as numbers."""
    m = re.search(r"^data partition: (\S+) (\d+) MiB of disk (\S+) (\d+) MiB, (\d+) KiB after it$",
                  system, re.M)  # fmt: skip
    fs = re.search(r"^data filesystem: (\d+) MiB$", system, re.M)
    assert m and fs, system
    return {"partition": m[1], "partition_mib": int(m[2]), "disk": m[3], "disk_mib": int(m[4]),
            "after_kib": int(m[5]), "filesystem_mib": int(fs[1]),
            "gpt": field(system, "gpt backup header")}  # fmt: skip


def _power_off_and_export(vm: Vm, raw: Path) -> dict:
    """`poweroff` on the console, then the board's disk as a raw file, its GPT read."""
    vm.send("poweroff\r")
    wait_until(lambda: vm.proc is not None and vm.proc.poll() is not None, 120,
               "the board powered off")  # fmt: skip
    vm.stop()
    raw.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(vm.overlay), str(raw)], check=True)
    return _gpt(raw)


@SKIP_UNDER_TCG
def test_data_partition_grows_to_a_bigger_disk_once(built, tmp_path):
    """The image flashed onto a disk bigger than itself: at first boot the data partition
    grows to the disk's end (the GPT's backup header moved there) and its filesystem with it;
    the next boot changes nothing. Seen on the console (`system`), in the grow units' journal,
    and on the disk after power-off (both GPT headers valid, e2fsck clean)."""
    import importlib.util

    from firmware.datadisk import ext4_bytes

    spec = importlib.util.spec_from_file_location("image_build", TOP / "image" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)

    out = built["out"]
    disk = out / "disk.img"
    assert built["info"]["data_grows_to_disk"] is True
    size = 4 * 2**30
    assert disk.stat().st_size < size - 2**30  # really bigger than the image
    before = _gpt(disk)
    assert [p[0] for p in before["primary"]["partitions"]] == ["esp", "rootfs-a", "rootfs-b",
                                                               "data"]  # fmt: skip
    data_start = before["primary"]["partitions"][3][1]
    fixed_mib = (data_start * 512) // 2**20  # the ESP, both slots and the 1 MiB GPT area
    assert fixed_mib == 1 + build.ESP_MIB + 2 * build.SLOT_MIB
    vm = Vm(disk, tmp_path / "vm", disk_size="4G", board=BOARD)
    figures: dict[str, float] = {}
    try:
        vm.start()
        t0 = vm.powered_on  # QEMU's start: the rig's own KVM probe is no part of the boot
        vm.expect(r"nvr-pair first-boot setup", BOOT_S)
        figures["grow_boot_to_console_s"] = time.monotonic() - t0
        setup_steps_1_to_3(vm, "a", "north", BOARD_LAN, "192.0.2.12")
        vm.answer("show a code, join with one, or skip (code/join/skip)", "skip")
        setup_cameras_and_apply(vm, None)
        first = _data_fields(vm.command("system"))
        assert first["disk_mib"] == size // 2**20, first
        # Everything after the fixed partitions but the backup GPT (16.5 KiB) and alignment.
        assert first["partition_mib"] == size // 2**20 - fixed_mib - 1, first
        assert 16 <= first["after_kib"] < 1024, first
        assert first["filesystem_mib"] == first["partition_mib"], first
        assert first["gpt"] == "at the disk's end", first
        journal, took = _grow_journal(vm)
        assert "Growing existing partition 3." in journal, journal  # repart counts from 0
        assert re.search(r"resizing filesystem from \d+ to \d+ blocks", journal), journal
        figures |= {f"grow_{u.split('.')[0].replace('@', '_')}_s": t for u, t in took.items()}

        raw1 = _power_off_and_export(vm, tmp_path / "after-first.raw")
        for which in ("primary", "backup"):
            assert raw1[which] and raw1[which]["valid"], which
        assert raw1["primary"]["alternate_lba"] == raw1["last_lba"]
        assert raw1["backup"]["alternate_lba"] == 1
        assert raw1["primary"]["partitions"] == raw1["backup"]["partitions"]
        assert raw1["primary"]["last_usable_lba"] == raw1["last_lba"] - 33
        assert raw1["pmbr_sectors"] == raw1["last_lba"]  # the protective MBR covers the disk
        # Only the data partition's end moved.
        assert raw1["primary"]["partitions"][:3] == before["primary"]["partitions"][:3]
        name, start, end = raw1["primary"]["partitions"][3]
        assert (name, start) == ("data", data_start)
        assert (size - (end + 1) * 512) // 1024 == first["after_kib"]  # as the console said
        part_bytes = (end - start + 1) * 512
        fs_bytes = ext4_bytes(tmp_path / "after-first.raw", start * 512)
        assert fs_bytes is not None and part_bytes - 4096 < fs_bytes <= part_bytes
        fsck = subprocess.run(["e2fsck", "-fn", f"{tmp_path / 'after-first.raw'}?offset="
                               f"{start * 512}"], capture_output=True, text=True)  # fmt: skip
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr

        vm.start()  # the second boot, on the same disk
        t1 = vm.powered_on
        vm.answer("admin password", ADMIN_PW, BOOT_S)  # set up: a login from now on
        vm.expect(re.escape(PROMPT), 60)
        figures["grow_second_boot_to_console_s"] = time.monotonic() - t1
        second = _data_fields(vm.command("system"))
        assert second == first
        journal, took = _grow_journal(vm)
        assert "No changes." in journal and "Growing" not in journal, journal
        # growfs asks again, the kernel finds nothing to add: "from N to N", no "resized".
        asked = re.findall(r"resizing filesystem from (\d+) to (\d+) blocks", journal)
        assert all(a == b for a, b in asked), journal
        assert "resized filesystem to" not in journal, journal
        raw2 = _power_off_and_export(vm, tmp_path / "after-second.raw")
        for which in ("primary", "backup"):
            assert raw2[which]["bytes"] == raw1[which]["bytes"], f"{which} GPT changed"
        assert ext4_bytes(tmp_path / "after-second.raw", start * 512) == fs_bytes
    finally:
        vm.stop()
        report_path = FIGURES
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        report |= {k: round(v, 2) for k, v in figures.items()} | {"grow_kvm": vm.accel == "kvm"}
        report_path.write_text(json.dumps(report, indent=2) + "\n")


@SKIP_UNDER_TCG
def test_power_cut_in_the_partition_table_write_still_boots_and_grows(built, tmp_path):
    """The image on a 4 GiB disk as a power cut during the first boot's table write leaves it
    (libfdisk writes, and syncs, the backup table, the backup header, the primary table, the
    primary header, in that order): cut after the backup header, and cut after the primary
    table too (the primary header then stale, its entry CRC wrong). Each still boots to the
    console, and the disk then has both GPT headers valid and the data partition grown."""
    repart = shutil.which("systemd-repart")
    if repart is None:
        pytest.skip("systemd-repart is not installed here (it makes the torn tables)")
    size, sector = 4 * 2**30, 512
    last = size // sector - 1
    old = tmp_path / "old.raw"
    subprocess.run(["cp", "--sparse=always", str(built["out"] / "disk.img"), str(old)], check=True)
    os.truncate(old, size)
    grown = tmp_path / "grown.raw"
    subprocess.run(["cp", "--sparse=always", str(old), str(grown)], check=True)
    subprocess.run([repart, "--dry-run=no", "--no-pager", "--pretty=no",
                    f"--definitions={TOP / 'rootfs/usr/lib/nvr/repart.d'}", str(grown)],
                   check=True, capture_output=True)  # fmt: skip
    want = _gpt(grown)
    with open(grown, "rb") as f:
        f.seek((last - 32) * sector)
        backup = f.read(33 * sector)  # the backup table and header
        f.seek(2 * sector)
        primary_table = f.read(32 * sector)
    figures: dict[str, float] = {}
    cuts = {
        "after-backup": [(last - 32, backup)],
        "after-primary-table": [(last - 32, backup), (2, primary_table)],
    }
    for name, tables in cuts.items():
        torn = tmp_path / f"{name}.raw"
        subprocess.run(["cp", "--sparse=always", str(old), str(torn)], check=True)
        with open(torn, "r+b") as f:
            for lba, data in tables:
                f.seek(lba * sector)
                f.write(data)
        state = _gpt(torn)
        assert state["backup"]["valid"] and state["backup"]["partitions"] == want["backup"][
            "partitions"]  # fmt: skip
        assert state["primary"]["valid"] is (name == "after-backup"), name
        vm = Vm(torn, tmp_path / f"vm-{name}", board=BOARD)
        try:
            vm.start()
            t0 = vm.powered_on
            vm.expect(r"nvr-pair first-boot setup", BOOT_S)
            vm.expect(r"admin password", 60)  # /data is mounted: the wizard reads it
            figures[f"grow_torn_{name}_boot_to_console_s"] = time.monotonic() - t0
        finally:
            vm.power_cut()
            vm.stop()
        raw = tmp_path / f"{name}-booted.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(vm.overlay), str(raw)], check=True)
        after = _gpt(raw)
        for which in ("primary", "backup"):
            assert after[which] and after[which]["valid"], f"{name}: {which} header invalid"
            assert after[which]["partitions"] == want[which]["partitions"], name
        assert after["primary"]["alternate_lba"] == last
        raw.unlink()
        torn.unlink()
    report_path = FIGURES
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report |= {k: round(v, 1) for k, v in figures.items()}
    report_path.write_text(json.dumps(report, indent=2) + "\n")


@SKIP_UNDER_TCG
def test_two_drives_made_one_raid1_volume_lose_one_keep_recording_and_take_a_new_one(
    built, camera, tmp_path
):
    """Issue 19's drill: a board with two blank recording drives (virtio, each in a PCIe port
    of its own) is set up through the console; the wizard's storage step makes them one btrfs
    raid1 and the camera records onto it. One drive is pulled out of the running board: it
    keeps recording and says raid-degraded. A new drive goes into the spare port, `storage
    replace` on the console takes it into the volume with its progress shown, and the alert
    clears while the recording goes on."""
    drives = tuple(tmp_path / f"drive{i}.raw" for i in (1, 2))
    for d in (*drives, tmp_path / "drive3.raw"):
        with open(d, "wb") as f:
            f.truncate(2 * 2**30)
    vm = Vm(built["out"] / "disk.img", tmp_path / "vm", camera_port=camera.port, drives=drives,
            board=BOARD)  # fmt: skip
    figures: dict[str, float] = {}

    def make_volume(vm: Vm) -> None:
        vm.expect(r"record on: none, all \(raid1\), or a drive's number", 60)
        tail = vm.tail()
        assert "NVR-D1" in tail and "NVR-D2" in tail, tail  # listed with their serials
        vm.send("\x15all\r")
        vm.expect(r"Format these drives for recording\? \[y/N\]", 60)
        vm.send("\x15y\r")
        vm.expect(r"storage: done: volume", 300)

    def segments() -> int:
        st = _json(vm.command("status --json"))
        return sum(c.get("segments", 0) for c in st.get("cameras", []))

    try:
        vm.start()
        t0 = vm.powered_on  # QEMU's start: the rig's own KVM probe is no part of the boot
        setup_steps_1_to_3(vm, "a", "north", BOARD_LAN, "192.0.2.12")
        vm.answer("show a code, join with one, or skip (code/join/skip)", "skip")
        setup_cameras_and_apply(vm, "cam1", drives=make_volume)
        status = wait_console(vm, "storage status", lambda t: "storage: whole" in t, READY_S,
                              "the raid1 volume whole")  # fmt: skip
        assert "raid1" in status, status
        _status(vm, recording_as("unpaired"), "cam1 recording onto the volume")
        figures["power_on_to_recording_on_raid1_s"] = time.monotonic() - t0
        before = segments()

        t_pull = time.monotonic()
        vm.unplug(2)
        st = _status(vm, lambda s: any(a["id"] == "raid-degraded" for a in s.get("alerts", [])),
                     "raid-degraded after the pull", 120)  # fmt: skip
        figures["pull_to_raid_degraded_s"] = time.monotonic() - t_pull
        assert all(c["recording"] for c in st["cameras"]), st["cameras"]
        mark = segments()
        wait_until(lambda: segments() >= mark + 3, 60, "segments still committed, degraded")
        assert mark > before

        vm.plug(tmp_path / "drive3.raw", "NVR-D3")
        vm.send("storage replace\r")
        vm.expect(r"NVR-D3", 60)
        vm.expect(r"Drive\(s\) to use \(number; Enter: none\): ", 30)
        vm.send("1\r")
        vm.expect(r"Go ahead\? \[y/N\]", 60)
        t_replace = time.monotonic()
        vm.send("y\r")
        vm.expect(r"replace: finished 100\.0%|storage: whole", 600)
        vm.expect(re.escape(PROMPT), 120)
        figures["replace_2_gib_volume_s"] = time.monotonic() - t_replace
        wait_console(vm, "storage status", lambda t: "storage: whole" in t, 120,
                     "the volume whole again")  # fmt: skip
        st = _status(vm, lambda s: not any(a["id"] == "raid-degraded" for a in s["alerts"]),
                     "raid-degraded cleared", 120)  # fmt: skip
        assert all(c["recording"] for c in st["cameras"]), st["cameras"]
    finally:
        vm.stop()
        report_path = FIGURES
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        report |= {f"drives_{k}": round(v, 1) for k, v in figures.items()}
        report_path.write_text(json.dumps(report, indent=2) + "\n")
