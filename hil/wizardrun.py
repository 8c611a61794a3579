"""The first-boot wizard and the console as an installer types them on a board's serial console
(hil.vm.Vm): shared by the image tests and the QEMU lab rig (hil.lab.qemu), so both set a
board up the same way."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence

from hil.vm import BOARD_LAN, CAMERA_ADDR, LAN_HOST, PROMPT, Vm
from hil.wait import WaitTimeout, wait_until

ADMIN_PW = "Install3r-pw"
VIP = "192.0.2.100/24"
BOOT_S, READY_S = 300, 300
"""Power on to the wizard's first question; apply to a firmware that answers (under TCG)."""


LAB_FACTORY = f"""
[board]
name = "a"
data_dir = "/var/lib/nvr"

[pair]
peer_lan_address = "192.0.2.12"
peer_sync_address = "198.51.100.2"
virtual_ip = "192.0.2.100/24"
priority = 150
key_file = "/etc/nvr/pair.key"
gateway = "{LAN_HOST}"  # QEMU's user network answers pings here; the camera does not

[recorder]
segment_seconds = 2

[disks]
smart_poll_seconds = 10  # RAID and SMART every 10 s (an hour by default): the drives drill

[[camera]]
name = "cam1"
url = "rtsp://{CAMERA_ADDR}:8554/cam1"
"""
"""The factory config of the lab's images (tests/test_image.py, hil/bench_boot.py): board a of
a pair, one camera on the simulator behind QEMU's user network."""


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


def setup_cameras_and_apply(
    vm: Vm,
    camera: str | Sequence[str] | None,
    drives: Callable[[Vm], None] | None = None,
) -> None:
    """Step 5 (each camera by URL, probed before it is saved) and 6, then the console's login;
    `drives(vm)` answers the recording-drives step between them (a board with drives)."""
    names = [] if camera is None else [camera] if isinstance(camera, str) else list(camera)
    for name in names:
        vm.answer("add a camera (y/n)", "y")
        vm.answer("by URL or discover on the LAN (url/discover)", "url")
        vm.answer("camera name", name)
        vm.answer("RTSP URL (no credentials)", f"rtsp://{CAMERA_ADDR}:8554/{name}")
        vm.answer("username (empty: none)", "")
        vm.expect(rf"camera {name}: h264 320x240", 60)  # what the probe saw
        vm.answer(f"save camera {name} (y/n)", "y")
    vm.answer("add a camera (y/n)", "n")
    if drives is not None:
        drives(vm)
    vm.expect(r"step 6/6: summary", 30)
    vm.answer("apply (y/n)", "y")
    vm.expect(r"setup applied and live", READY_S)
    vm.answer("admin password", ADMIN_PW)
    vm.expect(re.escape(PROMPT), 60)


def first_boot_to_recording(vm: Vm, boot_timeout: float) -> tuple[dict[str, float], str]:
    """A started board's first boot set up through its console as board a of a pair, alone
    (pairing skipped), with camera cam1, to the camera recording: seconds from power-on
    (`vm.powered_on`) to the wizard, to set up and to recording, and the last `status --json`."""
    t0 = vm.powered_on
    vm.expect(r"nvr-pair first-boot setup", boot_timeout)  # forced before anything else
    figures = {"boot_to_console_s": time.monotonic() - t0}
    setup_steps_1_to_3(vm, "a", "north", BOARD_LAN, "192.0.2.12")
    vm.answer("show a code, join with one, or skip (code/join/skip)", "skip")
    setup_cameras_and_apply(vm, "cam1")
    figures["boot_to_set_up_s"] = time.monotonic() - t0
    status = wait_console(vm, "status --json", lambda t: '"recording": true' in t, READY_S,
                          "cam1 recording", every=0.5)  # fmt: skip
    figures["boot_to_recording_s"] = time.monotonic() - t0
    return figures, status


def wait_console(vm: Vm, cmd: str, cond: Callable[[str], object], timeout: float, what: str,
                 every: float = 2.0) -> str:  # fmt: skip
    """Repeat a console command (every 2 s: it costs the board a little) until its output
    satisfies cond; the last output goes into the failure."""
    last: list[str] = []

    def answered() -> str | None:
        last[:] = [vm.command(cmd)]
        return last[0] if cond(last[0]) else None

    try:
        return wait_until(answered, timeout, what, every=every)
    except WaitTimeout as e:
        raise AssertionError(f"{e}; last `{cmd}`:\n{last[0] if last else ''}") from None


def parse_json(text: str) -> dict:
    """The JSON object in a console command's output ({} when there is none)."""
    try:
        return json.loads(text[text.index("{") : text.rindex("}") + 1])
    except ValueError:
        return {}


def status_json(
    vm: Vm, cond: Callable[[dict], object], what: str, timeout: float = READY_S
) -> dict:
    """`status --json` on the console, repeated until cond holds for it."""
    text = wait_console(
        vm, "status --json", lambda t: "{" in t and cond(parse_json(t)), timeout, what
    )
    return parse_json(text)


def recording_as(role: str) -> Callable[[dict], bool]:
    return lambda s: s.get("role") == role and all(c["recording"] for c in s["cameras"])


def root_shell(vm: Vm, script: str, timeout: float = 60) -> str:
    """What `script` printed in the console's root shell (the admin password again)."""
    vm.send("shell\r")
    vm.answer("admin password", ADMIN_PW)
    begin = vm.expect(r"root shell: exit.*\n", 30).end()
    vm.send(f"{script}; echo ==END$((6 * 7))==\r")  # the echoed line does not match
    m = vm.expect(r"==END42==", timeout)
    vm.send("exit\r")
    vm.expect(r"root shell ended", 30)
    vm.expect(re.escape(PROMPT), 30)
    return m.string[begin : m.start()]
