"""The flashable image, end to end: build it, boot it under QEMU, update it with RAUC.

Everything is checked over the serial console, as an installer sees the board: the firmware
service runs and records the camera, /etc/nvr-release is right, the root is read-only, PID 1
holds the watchdog; a bundle signed by another key is refused; the signed bundle goes into
slot B and the board comes back on the new version. Skipped only when the build tools are not
installed (`bash image/test.sh` installs them and runs this test alone).
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

from hil.camera.client import CameraSim
from hil.camera.spec import StreamSpec
from hil.vm import CAMERA_ADDR, LAN_HOST, OVMF_CODE, PROMPT, Vm, make_stick
from hil.wait import WaitTimeout, wait_until

TOP = Path(__file__).resolve().parent.parent
TOOLS = ("mmdebstrap", "genimage", "rauc", "mksquashfs", "grub-mkimage", "mcopy", "mkfs.vfat",
         "qemu-system-x86_64", "qemu-img")  # fmt: skip
MISSING = [t for t in TOOLS if shutil.which(t) is None] + (
    [] if OVMF_CODE.exists() else [str(OVMF_CODE) + " (ovmf)"]
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
FACTORY = f"""
[board]
name = "a"
data_dir = "/var/lib/nvr"

[network]
lan_interface = "eth0"
sync_interface = "eth1"

[pair]
peer_lan_address = "192.0.2.12"
peer_sync_address = "198.51.100.2"
virtual_ip = "192.0.2.100/24"
priority = 150
key_file = "/etc/nvr/pair.key"
gateway = "{LAN_HOST}"  # QEMU's user network answers pings here; the camera does not

[recorder]
segment_seconds = 2

[[camera]]
name = "cam1"
url = "rtsp://{CAMERA_ADDR}:8554/cam1"
"""
BOOT_S, READY_S, INSTALL_S = 300, 300, 600


def _build(*args: str, out: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    cmd = [sys.executable, str(TOP / "image" / "build.py"), "--out", str(out), *args]
    subprocess.run(cmd, check=True, env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("image-out")
    factory = out / "factory.toml"
    factory.write_text(FACTORY)
    started = time.monotonic()
    _build("image", "--version", V1, "--compression", "gzip", "--factory-config", str(factory),
           out=out)  # fmt: skip
    build_s = time.monotonic() - started
    _build("bundle", "--version", V2, out=out)
    _build("keys", str(out / "keys-other"), "--common-name", "another vendor", out=out)
    _build("bundle", "--version", V2, "--keys", str(out / "keys-other"), "--name", "other-key",
           out=out)  # fmt: skip
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


def wait_console(vm: Vm, cmd: str, cond, timeout: float, what: str) -> str:
    """Repeat a console command (every 2 s, it costs the board a little) until its output
    satisfies cond; the last output goes into the failure."""
    last: list[str] = []

    def answered() -> str | None:
        last[:] = [vm.command(cmd)]
        return last[0] if cond(last[0]) else None

    try:
        return wait_until(answered, timeout, what, every=2)
    except WaitTimeout as e:
        raise AssertionError(f"{e}; last `{cmd}`:\n{last[0] if last else ''}") from None


def test_image_boots_records_and_updates_through_signed_bundles(built, camera, tmp_path):
    out, info = built["out"], built["info"]
    disk = out / "disk.img"
    sums = (out / "SHA256SUMS").read_text()
    for name in ("disk.img", f"nvr-pair-{V1}.raucb", f"nvr-pair-{V2}.raucb"):
        assert re.search(rf"^[0-9a-f]{{64}}  {re.escape(name)}$", sums, re.M), sums
    # No password anywhere: every account of the built root is locked or has none at all.
    shadow = (out / "work" / "root" / "etc" / "shadow").read_text().splitlines()
    assert any(line.startswith("root:") for line in shadow)
    open_accounts = [ln.split(":")[0] for ln in shadow if ln.split(":")[1][:1] not in ("!", "*")]
    assert open_accounts == [], f"accounts with a password: {open_accounts}"
    # The firmware's own account (sysusers.d at build time; /etc is read-only on the board).
    passwd = (out / "work" / "root" / "etc" / "passwd").read_text()
    assert re.search(r"^nvr:x:\d+:\d+:NVR pair firmware:/var/lib/nvr:/usr/sbin/nologin$",
                     passwd, re.M), passwd  # fmt: skip
    group = (out / "work" / "root" / "etc" / "group").read_text()
    assert re.search(r"^i2c:x:", group, re.M) and re.search(r"^nvr:x:", group, re.M)
    stick = make_stick(
        tmp_path / "stick.img", [out / f"nvr-pair-{V2}.raucb", out / "other-key.raucb"]
    )
    vm = Vm(disk, tmp_path / "vm", camera_port=camera.port, stick=stick)
    figures: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        vm.start()
        vm.wait_prompt(BOOT_S)
        figures["boot_to_console_s"] = time.monotonic() - t0

        release = vm.command("release")
        assert "NAME=nvr-pair" in release
        assert f"VERSION={V1}" in release
        revision = subprocess.run(["git", "-C", str(TOP), "rev-parse", "--short=12", "HEAD"],
                                  capture_output=True, text=True).stdout.strip()  # fmt: skip
        assert re.search(rf"^GIT_REVISION={revision}(-dirty)?$", release, re.M), release
        assert "BUILD_DATE=2026-09-21T14:13:20Z" in release

        system = wait_console(vm, "system", lambda t: "service: active" in t, READY_S,
                              "the firmware service active")  # fmt: skip
        assert field(system, "root") == "read-only"
        held = r"^watchdog: /dev/watchdog\d? \((watchdog0, )?i6300ESB timer\) held by systemd"
        assert re.search(held, system, re.M), system

        status = wait_console(vm, "status --json", lambda t: '"recording": true' in t, READY_S,
                              "cam1 recording")  # fmt: skip
        figures["boot_to_recording_s"] = time.monotonic() - t0
        st = json.loads(status[status.index("{") : status.rindex("}") + 1])
        assert st["board"] == "a" and st["role"] == "active"
        assert [c["name"] for c in st["cameras"]] == ["cam1"]

        system = wait_console(vm, "system", lambda t: "boot_status=good" in t, READY_S,
                              "slot A marked good")  # fmt: skip
        assert field(system, "slot") == "A"
        assert re.search(rf"^slot rootfs\.0: bootname=A state=booted boot_status=good version={V1}",
                         system, re.M), system  # fmt: skip

        refused = vm.command("update other-key.raucb", timeout=INSTALL_S)
        assert "update failed" in refused, refused
        assert re.search(r"signature|certificate|verify", refused, re.I), refused
        assert field(vm.command("system"), "slot") == "A"

        t_install = time.monotonic()
        done = vm.command(f"update nvr-pair-{V2}.raucb", timeout=INSTALL_S)
        figures["install_s"] = time.monotonic() - t_install
        assert f"update: installed nvr-pair-{V2}.raucb" in done, done
        system = vm.command("system")
        assert re.search(r"^slot rootfs\.1: bootname=B .*version=" + re.escape(V2) + " primary$",
                         system, re.M), system  # fmt: skip

        t_reboot = time.monotonic()
        vm.send("reboot\r")
        vm.expect(r"version: " + re.escape(V2), BOOT_S)
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
        (TOP / "image" / "out").mkdir(exist_ok=True)
        (TOP / "image" / "out" / "test-figures.json").write_text(
            json.dumps(report, indent=2) + "\n"
        )


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
    vm = Vm(out / "disk.img", tmp_path / "vm", camera_port=camera.port, stick=stick)
    try:
        vm.start()
        vm.wait_prompt(BOOT_S)
        wait_console(vm, "system", lambda t: "service: active" in t and "boot_status=good" in t,
                     READY_S, "slot A up and marked good")  # fmt: skip
        done = vm.command("update", timeout=INSTALL_S)
        assert f"update: installed nvr-pair-{BROKEN}.raucb" in done, done
        t_reboot = time.monotonic()
        vm.send("reboot\r")
        vm.expect(r"version: " + re.escape(BROKEN), BOOT_S)  # slot B starts ...
        vm.expect(r"version: " + re.escape(V1), BOOT_S + READY_S)  # ... and A is back
        vm.expect(re.escape(PROMPT), 60)
        system = wait_console(vm, "system", lambda t: "service: active" in t and
                              re.search(r"rootfs\.1: .*boot_status=bad", t), READY_S,
                              "slot A running, slot B marked bad")  # fmt: skip
        assert field(system, "slot") == "A"
        assert re.search(r"^slot rootfs\.0: bootname=A state=booted boot_status=good", system,
                         re.M), system  # fmt: skip
        rollback_s = time.monotonic() - t_reboot
        figures = TOP / "image" / "out" / "test-figures.json"
        report = json.loads(figures.read_text()) if figures.exists() else {}
        report["rollback_reboot_to_a_s"] = round(rollback_s, 1)
        figures.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        vm.stop()
