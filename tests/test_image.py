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
from hil.vm import BOARD_LAN, CAMERA_ADDR, LAN_HOST, OVMF_CODE, PROMPT, Vm, make_stick
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


ADMIN_PW = "Install3r-pw"
VIP = "192.0.2.100/24"


def setup_steps_1_to_3(vm: Vm, side: str, name: str, lan: str, peer_lan: str) -> None:
    """The wizard's first three steps as an installer types them on the serial console."""
    vm.answer("admin password", ADMIN_PW, BOOT_S)
    vm.answer("again", ADMIN_PW)
    vm.answer("board A or B", side)
    vm.answer("board name", name)
    vm.answer("LAN by DHCP or static", "static")
    vm.answer("LAN address/prefix", f"{lan}/24")
    vm.answer("gateway (empty: none)", LAN_HOST)
    vm.answer("DNS servers (empty: none)", "")
    vm.answer("sync link address", None)  # the side's default
    vm.answer("peer sync address", None)
    vm.answer("virtual IP/prefix", VIP)
    vm.answer("peer board LAN address", peer_lan)
    vm.answer("NTP servers (empty: image default)", "")


def setup_cameras_and_apply(vm: Vm, camera: str | None) -> None:
    """Step 5 (one camera by URL, probed before it is saved) and 6, then the console's login."""
    if camera is None:
        vm.answer("add a camera (y/n)", "n")
    else:
        vm.answer("add a camera (y/n)", "y")
        vm.answer("by URL or discover on the LAN (url/discover)", "url")
        vm.answer("camera name", camera)
        vm.answer("RTSP URL (no credentials)", f"rtsp://{CAMERA_ADDR}:8554/{camera}")
        vm.answer("username (empty: none)", "")
        vm.expect(rf"camera {camera}: h264 320x240", 60)  # what the probe saw
        vm.answer(f"save camera {camera} (y/n)", "y")
        vm.answer("add a camera (y/n)", "n")
    vm.expect(r"step 6/6: summary", 30)
    vm.answer("apply (y/n)", "y")
    vm.expect(r"setup applied and live", READY_S)
    vm.answer("admin password", ADMIN_PW)
    vm.expect(re.escape(PROMPT), 60)


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
    wants = out / "work" / "root" / "etc" / "systemd" / "system" / "systemd-networkd.service.wants"
    assert (wants / "nvr-network-boot.service").is_symlink()  # the rollback before networkd
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
        vm.expect(r"nvr-pair first-boot setup", BOOT_S)  # forced before anything else
        figures["boot_to_console_s"] = time.monotonic() - t0
        setup_steps_1_to_3(vm, "a", "north", BOARD_LAN, "192.0.2.12")
        vm.answer("show a code, join with one, or skip (code/join/skip)", "skip")
        setup_cameras_and_apply(vm, "cam1")
        figures["boot_to_set_up_s"] = time.monotonic() - t0

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
        assert st["board"] == "north" and st["role"] == "unpaired"  # records alone
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
        vm.answer("admin password", ADMIN_PW, BOOT_S)  # set up once: a login from now on
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
        setup_steps_1_to_3(vm, "a", "north", BOARD_LAN, "192.0.2.12")
        vm.answer("show a code, join with one, or skip (code/join/skip)", "skip")
        setup_cameras_and_apply(vm, None)
        wait_console(vm, "system", lambda t: "service: active" in t and "boot_status=good" in t,
                     READY_S, "slot A up and marked good")  # fmt: skip
        done = vm.command("update", timeout=INSTALL_S)
        assert f"update: installed nvr-pair-{BROKEN}.raucb" in done, done
        t_reboot = time.monotonic()
        vm.send("reboot\r")
        vm.answer("admin password", ADMIN_PW, BOOT_S)
        vm.expect(r"version: " + re.escape(BROKEN), 60)  # slot B starts ...
        vm.answer("admin password", ADMIN_PW, BOOT_S + READY_S)
        vm.expect(r"version: " + re.escape(V1), 60)  # ... and A is back
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


def _status(vm: Vm, cond, what: str, timeout: float = READY_S) -> dict:
    text = wait_console(vm, "status --json", lambda t: "{" in t and cond(_json(t)), timeout, what)
    return _json(text)


def recording_as(role: str):
    return lambda s: s.get("role") == role and all(c["recording"] for c in s["cameras"])


def _json(text: str) -> dict:
    try:
        return json.loads(text[text.index("{") : text.rindex("}") + 1])
    except ValueError:
        return {}


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
        vms = {b: Vm(disk, tmp_path / f"vm-{b}", netns=net.ns, taps=net.taps(b), mac_id=0x60 + i)
               for i, b in enumerate(("a", "b"))}  # fmt: skip
        a, b = vms["a"], vms["b"]
        try:
            cam.start()
            t0 = time.monotonic()
            for vm in vms.values():
                vm.start()
            for side, vm in vms.items():
                other = "b" if side == "a" else "a"
                setup_steps_1_to_3(vm, side, name[side], lan[side], lan[other])
            ask = "show a code, join with one, or skip (code/join/skip)"
            a.answer(ask, "code")  # a's network goes live, then it shows a code
            code = a.expect(r"pairing code: (\d{4}-\d{4})", READY_S).group(1)
            b.answer(ask, "join")
            b.answer("pairing code", code, READY_S)
            fp_a = a.expect(r"paired: pair key fingerprint (\S+)", 120).group(1)
            fp_b = b.expect(r"paired: pair key fingerprint (\S+)", 120).group(1)
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
            report_path = TOP / "image" / "out" / "test-figures.json"
            report_path.parent.mkdir(exist_ok=True)
            report = json.loads(report_path.read_text()) if report_path.exists() else {}
            report |= {f"pair_{k}": round(v, 1) for k, v in figures.items()}
            report_path.write_text(json.dumps(report, indent=2) + "\n")
