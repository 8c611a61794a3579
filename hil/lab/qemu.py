"""The pair as two QEMU boards booted from the built image, for labgrid (hil/env/qemu.yaml).

`QemuRigDriver` brings the whole rig up when it is activated and tears all of it down when it
is deactivated: one network namespace (hil.vmnet: a LAN bridge with the camera simulator and
the client, a sync bridge, a tap per board and cable), the camera simulator in it, and two VMs
on copy-on-write overlays of the image, each set up only through its serial console with the
first-boot wizard as an installer types it (hil.wizardrun; b joins a with the code a shows).
Every other driver binds to the rig and is named after its board ("a", "b") when it is one
board's.

How each fault is made:

- power (labgrid PowerProtocol): `off` kills QEMU (a power cut); `on` boots the same overlay,
  logs in on the console and returns once the firmware answers on its API.
- the board's API (BoardProtocol) goes over a third NIC that only the rig uses: a QEMU
  user-mode network (`restrict=on`) whose one forward is the board's port 8080 on a loopback
  port inside the rig's namespace. It is on no bridge, so pulled cables, blocked adverts and
  partitions never touch it; it is fast (the console is 115200 baud and one line at a time) and
  it leaves the console free for what needs root. The board's side is one systemd-networkd
  file (matched by the NIC's MAC, kept on /data, so it comes back after a power cut) written
  in the root shell after the wizard. The audit log has no API: it is read in the root shell.
- cables (CableProtocol): the board's NIC loses its carrier (QMP `set_link`) and its tap goes
  down in the namespace, so both ends see the cable gone.
- adverts (HeartbeatProtocol), partition, a camera cut off from one board: nftables rules of
  the bridge family in the namespace, on the board's tap ports. There is no serial cross-link
  between the VMs (has_serial_crosslink() is False).
- clock, hang: the root shell on the board's console (`clock_settime`; SIGSTOP of nvr.service's
  main process, whose WatchdogSec=20 makes systemd restart it).
- update (UpdateProtocol): the rollback image test's broken bundle (its firmware never starts),
  on an update stick hot-plugged over QMP, installed with the console's `update`, booted; the
  bootloader falls back to the other slot.

There is no UPS and no disk-fault driver: the board records on its system disk, which cannot be
pulled without taking the whole board down.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attr
import pexpect

# labgrid's `imports:` runs this file as a module named "qemu" (its file name) and puts it in
# sys.modules, over QEMU's own package: hil.vm imports qemu.qmp.legacy when it first talks
# QMP, which then finds this file instead. Imported here first, it is found by its full name.
import qemu.qmp.legacy  # noqa: F401
from labgrid.driver.common import Driver
from labgrid.driver.consoleexpectmixin import ConsoleExpectMixin
from labgrid.factory import target_factory
from labgrid.protocol import ConsoleProtocol, PowerProtocol
from labgrid.resource.common import Resource

TOP = Path(__file__).resolve().parents[2]
if str(TOP) not in sys.path:  # labgrid loads this file by path, maybe outside pytest
    sys.path.insert(0, str(TOP))

from hil.camera.client import CameraSim  # noqa: E402
from hil.camera.spec import StreamSpec  # noqa: E402
from hil.lab.protocols import (  # noqa: E402
    BoardProtocol,
    CableProtocol,
    CameraProtocol,
    ClientProtocol,
    ClockProtocol,
    HangProtocol,
    HeartbeatProtocol,
    Link,
    PartitionProtocol,
    UpdateProtocol,
)
from hil.lab.registry import registered  # noqa: E402
from hil.rig import ns_http  # noqa: E402
from hil.vm import BOARD_LAN, CAMERA_ADDR, PROMPT, Vm, emulated_board, make_stick  # noqa: E402
from hil.vmnet import BOARDS, VmPairNet  # noqa: E402
from hil.wait import wait_until  # noqa: E402
from hil.wizardrun import (  # noqa: E402
    ADMIN_PW,
    BOOT_S,
    READY_S,
    VIP,
    root_shell,
    setup_cameras_and_apply,
    setup_steps_1_to_3,
    wait_console,
)

LAN = {"a": BOARD_LAN, "b": "192.0.2.12"}
VIP_ADDR = VIP.split("/")[0]
API_PORT = 8080
ADVERT_PORT = 5405
MGMT_NET = "203.0.113.0/24"
"""Each board's own QEMU user network for its management NIC (restrict=on: nothing leaves
it); a documentation range, as every address of the rig."""
MGMT_GUEST = "203.0.113.15"
"""The board's address on it (QEMU's user network gives the guest .15)."""
MGMT_PORT = {"a": 18080, "b": 18081}
"""The loopback port in the rig's namespace that reaches each board's API."""
MGMT_NETWORK = "90-rig-mgmt.network"
AUDIT_LOG = "/var/lib/nvr/audit.log"
INSTALL_S = 600
UPDATE_DEV = "/dev/disk/by-label/NVR-UPDATE"
BROKEN = "1.0.0-rig.broken"
"""The version of the bundle whose firmware never starts (the update drill's)."""


def _registered(register: Callable[[type], type]) -> Callable[[type], type]:
    return registered(register, __file__)


def _path(value: str) -> Path:
    """A path of the environment file: relative ones are taken from the repository's top."""
    p = Path(value)
    return p if p.is_absolute() else TOP / p


def _skip_console(vm: Vm) -> None:
    """Forget what the console printed so far: the next expect only sees new output (after a
    power cut, nothing left over from the last boot can answer for this one)."""
    with vm._seen:
        vm._cursor = len(vm.output)


class RigVm(Vm):
    """A board VM with the rig's own management NIC, a QMP socket and a spare PCIe port for an
    update stick."""

    def __init__(self, *args: object, mgmt_port: int, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.mgmt_port = mgmt_port
        self.mgmt_mac = f"52:54:00:4e:{self.mac_id:02x}:03"

    def command_line(self) -> list[str]:
        # Vm boots the system disk first whatever else is plugged in: with a stick hot-plugged
        # UEFI made its boot entries anew on the next reboot and tried the NICs (iPXE) first.
        cmd = super().command_line()
        mgmt = (
            f"user,id=mgmt,net={MGMT_NET},restrict=on,"
            f"hostfwd=tcp:127.0.0.1:{self.mgmt_port}-{MGMT_GUEST}:{API_PORT}"
        )
        cmd += ["-netdev", mgmt, "-device", f"virtio-net-pci,netdev=mgmt,mac={self.mgmt_mac}",
                "-device", "pcie-root-port,id=rpstick,chassis=30,slot=30"]  # fmt: skip
        if not self.drives:  # Vm adds QMP only for boards with drives
            cmd += ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        return cmd


@attr.s(auto_attribs=True, eq=False)
class RigBoard:
    """One board of the rig: its VM, and the lock every use of its console takes (attrs, not
    dataclasses: labgrid runs this file without a module of its own in sys.modules)."""

    name: str
    vm: RigVm
    lock: threading.RLock = attr.Factory(threading.RLock)
    token: str = ""
    connected: dict[Link, bool] = attr.Factory(lambda: dict.fromkeys(Link, True))
    stick: bool = False
    """The update stick is plugged into the running VM."""


class QemuRig:
    """The rig itself, without labgrid (QemuRigDriver holds one): `up()` and `down()`."""

    def __init__(
        self,
        image: Path,
        workdir: Path | None,
        memory_mib: int,
        cameras: list[str],
        keys: Path,
        bundle: Path,
        board: str = "qemu-x86_64",
    ) -> None:
        self.board_profile = emulated_board(board)
        """The board both VMs emulate (image/boards/BOARD.toml), the image's own."""
        self.image = image
        self.keys = keys
        self.bundle = bundle
        self.memory_mib = memory_mib
        self.camera_names = list(cameras)
        self._own_workdir = workdir is None
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="nvrq-"))
        self.net = VmPairNet()
        self.camera: CameraSim | None = None
        self.boards: dict[str, RigBoard] = {}
        self.figures: dict[str, float] = {}
        """Seconds each phase of `up()` took (power on to set up, to both APIs answering)."""
        self._tables: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> QemuRig:
        if not self.image.exists():
            raise FileNotFoundError(f"{self.image}: build the image first (bash image/build.sh)")
        try:
            self.net.up()
            specs = [StreamSpec(c, fps=25, gop=25, width=320, height=240)
                     for c in self.camera_names]  # fmt: skip
            self.camera = CameraSim(specs, port=8554, bind=CAMERA_ADDR, netns=self.net.ns)
            self.camera.start()
            for i, name in enumerate(BOARDS):
                vm = RigVm(self.image, self.workdir / f"vm-{name}", memory_mib=self.memory_mib,
                           netns=self.net.ns, taps=self.net.taps(name), mac_id=0x60 + i,
                           mgmt_port=MGMT_PORT[name], board=self.board_profile)  # fmt: skip
                self.boards[name] = RigBoard(name, vm)
            t0 = time.monotonic()
            for board in self.boards.values():
                board.vm.start()
            self._set_up()
            self.figures["power_on_to_set_up_s"] = round(time.monotonic() - t0, 1)
            for board in self.boards.values():
                self._mgmt(board)
            for name in BOARDS:
                self.wait_api(name, READY_S)
            self.figures["power_on_to_apis_answering_s"] = round(time.monotonic() - t0, 1)
        except BaseException:
            self.down()
            raise
        return self

    def _set_up(self) -> None:
        """The wizard on both consoles, as tests/test_image.py's pair test types it: a shows a
        pairing code, b joins with it, each adds the cameras and applies."""
        a, b = self.boards["a"].vm, self.boards["b"].vm
        for name, board in self.boards.items():
            other = "b" if name == "a" else "a"
            setup_steps_1_to_3(board.vm, name, name, LAN[name], LAN[other])
        ask = "show a code, join with one, or skip (code/join/skip)"
        a.answer(ask, "code")  # a's network goes live, then it shows a code
        code = a.expect(r"pairing code: (\d{4}-\d{4})|(pairing not done)", READY_S).group(1)
        if code is None:  # an image whose wizard cannot pair yet (older than the rig)
            raise RuntimeError(f"board a showed no pairing code:\n{a.tail()}")
        b.answer(ask, "join")
        b.answer("pairing code", code, READY_S)
        # The whole fingerprint (XXXX-XXXX-XXXX): \S+ would match a line still arriving.
        fingerprint = r"paired: pair key fingerprint ([0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4})"
        fp_a = a.expect(fingerprint, 120).group(1)
        fp_b = b.expect(fingerprint, 120).group(1)
        if fp_a != fp_b:
            raise RuntimeError(f"the boards paired with different keys: {fp_a} / {fp_b}")
        for board in self.boards.values():
            setup_cameras_and_apply(board.vm, self.camera_names)

    def _mgmt(self, board: RigBoard) -> None:
        """The board's side of the management NIC (kept on /data: it survives power cuts) and
        the pair's API token."""
        unit = (
            f"[Match]\\nMACAddress={board.vm.mgmt_mac}\\n[Network]\\nAddress={MGMT_GUEST}/24\\n"
            "LinkLocalAddressing=no\\nIPv6AcceptRA=no\\n"
        )
        out = self.root(
            board.name,
            f"printf '{unit}' > /etc/systemd/network/{MGMT_NETWORK} && networkctl reload"
            " && nvr token",
        )
        tokens = re.findall(r"^([A-Za-z0-9_\-]{16,})$", out, re.M)
        if not tokens:
            raise RuntimeError(f"board {board.name}: no API token from `nvr token`:\n{out}")
        board.token = tokens[-1]

    def down(self) -> None:
        """Everything off and away, whatever state `up()` got to."""
        for board in self.boards.values():
            with contextlib.suppress(Exception):
                board.vm.stop()
        if self.camera is not None:
            with contextlib.suppress(Exception):
                self.camera.close()
            self.camera = None
        self.net.down()
        self._tables.clear()
        for board in self.boards.values():
            for f in (board.vm.overlay, board.vm.vars, board.vm.qmp_path):
                f.unlink(missing_ok=True)
        self.boards.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what the drivers use ----------------------------------------------------------------
    def board(self, name: str) -> RigBoard:
        try:
            return self.boards[name]
        except KeyError:
            raise ValueError(f"no board {name!r} in the rig (boards: {list(BOARDS)})") from None

    def api(self, name: str, path: str, method: str = "GET", timeout: float = 2.0) -> bytes:
        board = self.board(name)
        headers = {"Authorization": f"Bearer {board.token}"} if board.token else {}
        return ns_http(self.net.ns, "127.0.0.1", MGMT_PORT[name], path, timeout, method=method,
                       headers=headers)  # fmt: skip

    def wait_api(self, name: str, timeout: float) -> dict:
        """The board's status once its firmware answers on the management NIC."""
        return wait_until(
            lambda: json.loads(self.api(name, "/api/v1/status", timeout=2.0)),
            timeout,
            f"board {name}'s API answering on its management NIC",
            every=1,
        )

    def root(self, name: str, script: str, timeout: float = 60) -> str:
        """What `script` printed in the board's root shell (its console, at the prompt)."""
        board = self.board(name)
        with board.lock:
            _skip_console(board.vm)  # a prompt someone else's typing left is not ours
            text = root_shell(board.vm, f"echo ==OUT$((6 * 7))==; {script}", timeout)
        return text.split("==OUT42==\n", 1)[-1]

    def running(self, name: str) -> bool:
        proc = self.board(name).vm.proc
        return proc is not None and proc.poll() is None

    def power_off(self, name: str) -> None:
        board = self.board(name)
        with board.lock:
            board.vm.power_cut()

    def power_on(self, name: str) -> None:
        """Boot the same overlay (unless it runs), log in on the console, wait for the API."""
        board = self.board(name)
        with board.lock:
            if not self.running(name):
                _skip_console(board.vm)
                board.stick = False
                board.vm.start()
                wait_until(lambda: board.vm.qmp("query-status"), 30, f"{name}'s QMP socket")
                for link, connected in board.connected.items():
                    if not connected:  # a pulled cable stays pulled across a power cycle
                        board.vm.qmp("set_link", name=link.value, up=False)
                board.vm.answer("admin password", ADMIN_PW, BOOT_S)
                board.vm.expect(re.escape(PROMPT), 60)
        self.wait_api(name, READY_S)

    def cable(self, name: str, link: Link, connected: bool) -> None:
        board = self.board(name)
        lan, sync = self.net.taps(name)
        tap = lan if link is Link.LAN else sync
        board.connected[link] = connected
        state = "up" if connected else "down"
        subprocess.run(["ip", "-n", self.net.ns, "link", "set", tap, state], check=True,
                       capture_output=True)  # fmt: skip
        if self.running(name):
            board.vm.qmp("set_link", name=link.value, up=connected)

    def nft(self, table: str, chains: str | None) -> None:
        """Put a bridge-family nftables table in the rig's namespace (None: remove it)."""
        if chains is None:
            if table in self._tables:
                subprocess.run(["ip", "netns", "exec", self.net.ns, "nft", "delete", "table",
                                "bridge", table], check=True, capture_output=True)  # fmt: skip
                self._tables.discard(table)
            return
        if table in self._tables:
            self.nft(table, None)
        rules = f"table bridge {table} {{\n{chains}}}\n"
        subprocess.run(["ip", "netns", "exec", self.net.ns, "nft", "-f", "-"], input=rules,
                       text=True, check=True, capture_output=True)  # fmt: skip
        self._tables.add(table)


def _chain(name: str, hook: str, rules: list[str]) -> str:
    body = "; ".join(rules)
    return f" chain {name} {{ type filter hook {hook} priority 0; {body}; }}\n"


# -- labgrid: resource and drivers -----------------------------------------------------------
@_registered(target_factory.reg_resource)
@attr.s(eq=False)
class QemuPair(Resource):
    """Two boards from one built image. Paths relative to the repository's top; workdir ""
    is a temporary directory removed with the rig."""

    board = attr.ib(default="qemu-x86_64", validator=attr.validators.instance_of(str))
    """The board profile (image/boards/BOARD.toml) the image was built for."""
    image = attr.ib(
        default="image/out/qemu-x86_64/disk.img", validator=attr.validators.instance_of(str)
    )
    keys = attr.ib(default="image/out/keys-dev", validator=attr.validators.instance_of(str))
    """Signs the update drill's broken bundle (the boards' development keys)."""
    bundle = attr.ib(
        default="image/out/qemu-x86_64/nvr-pair-0.1.0-dev.raucb",
        validator=attr.validators.instance_of(str),
    )
    """The image's own signed bundle (for drills that update to it; no driver uses it yet)."""
    workdir = attr.ib(default="", validator=attr.validators.instance_of(str))
    memory = attr.ib(default=1024, converter=int)
    """MiB per board."""
    cameras = attr.ib(default=attr.Factory(lambda: ["cam1"]), converter=list)


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuRigDriver(Driver):
    """Activation brings the rig up (minutes under TCG), deactivation takes it all down."""

    bindings = {"pair": QemuPair}  # noqa: RUF012 (labgrid's binding table)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.rig: QemuRig | None = None

    def on_activate(self) -> None:
        p = self.pair
        self.rig = QemuRig(_path(p.image), _path(p.workdir) if p.workdir else None,
                           p.memory, p.cameras, _path(p.keys), _path(p.bundle),
                           board=p.board)  # fmt: skip
        self.rig.up()

    def on_deactivate(self) -> None:
        if self.rig is not None:
            self.rig.down()
            self.rig = None

    @property
    def live(self) -> QemuRig:
        if self.rig is None:
            raise RuntimeError("the QEMU rig is not up (activate QemuRigDriver)")
        return self.rig


@attr.s(eq=False)
class _BoardDriver(Driver):
    """A driver of one board: its name in the environment is the board's."""

    bindings = {"rigdriver": QemuRigDriver}  # noqa: RUF012

    @property
    def rig(self) -> QemuRig:
        return self.rigdriver.live

    @property
    def board(self) -> str:
        if self.name not in BOARDS:
            raise ValueError(f"{type(self).__name__} must be named after a board, not {self.name}")
        return self.name


@attr.s(eq=False)
class _RigDriver(Driver):
    bindings = {"rigdriver": QemuRigDriver}  # noqa: RUF012

    @property
    def rig(self) -> QemuRig:
        return self.rigdriver.live


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuConsoleDriver(ConsoleExpectMixin, _BoardDriver, ConsoleProtocol):
    """The board's serial console as a labgrid console (reads see what the board prints from
    activation on; what the rig itself types there shows too)."""

    txdelay = attr.ib(default=0.0, converter=float)
    txchunk = attr.ib(default=1, converter=int)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._pos = 0

    def on_activate(self) -> None:
        vm = self.rig.board(self.board).vm
        with vm._seen:
            self._pos = len(vm.output)

    def _read(self, size: int = 1, timeout: float = 0.0, max_size: int | None = None) -> bytes:
        vm = self.rig.board(self.board).vm
        deadline = time.monotonic() + timeout
        with vm._seen:
            while len(vm.output) <= self._pos:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise pexpect.TIMEOUT(f"Timeout of {timeout:.2f} seconds exceeded")
                vm._seen.wait(left)
            limit = max(4096, size) if max_size is None else max_size
            text = vm.output[self._pos : self._pos + limit]
            self._pos += len(text)
        return text.encode()

    def _write(self, data: bytes) -> int:
        self.rig.board(self.board).vm.send(data.decode("utf-8", "replace"))
        return len(data)

    def resolve_conflicts(self, client: object) -> None:
        """Every user of the console is welcome (the rig serialises its own use)."""


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuPowerDriver(_BoardDriver, PowerProtocol):
    """off: QEMU killed (a power cut); on: the same disk boots and the API answers."""

    @Driver.check_active
    def on(self) -> None:
        self.rig.power_on(self.board)

    @Driver.check_active
    def off(self) -> None:
        self.rig.power_off(self.board)

    @Driver.check_active
    def cycle(self) -> None:
        self.off()
        self.on()


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuBoardDriver(_BoardDriver, BoardProtocol):
    """The board's API over the rig's management NIC; the audit log from its root shell."""

    @Driver.check_active
    def api(self, path: str, method: str = "GET", timeout: float = 2.0) -> bytes:
        return self.rig.api(self.board, path, method, timeout)

    @Driver.check_active
    def audit_log(self) -> list[dict]:
        out = self.rig.root(self.board, f"cat {AUDIT_LOG} 2>/dev/null || true", timeout=120)
        records = []
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("{") and line.endswith("}"):
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
        return records


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuCableDriver(_BoardDriver, CableProtocol):
    @Driver.check_active
    def cable(self, link: Link, connected: bool) -> None:
        self.rig.cable(self.board, Link(link), connected)


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuHeartbeatDriver(_BoardDriver, HeartbeatProtocol):
    """The pair's adverts (UDP 5405) dropped at the board's port of the LAN or sync bridge,
    both directions; everything else on that cable still flows."""

    @Driver.check_active
    def block_adverts(self, link: Link, blocked: bool) -> None:
        link = Link(link)
        lan, sync = self.rig.net.taps(self.board)
        tap = lan if link is Link.LAN else sync
        table = f"adverts_{self.board}_{link.value}"
        if not blocked:
            self.rig.nft(table, None)
            return
        udp = f"udp dport {ADVERT_PORT} drop"
        rules = [f'iifname "{tap}" {udp}', f'oifname "{tap}" {udp}']
        self.rig.nft(table, _chain("c_forward", "forward", rules))

    def has_serial_crosslink(self) -> bool:
        return False


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuClockDriver(_BoardDriver, ClockProtocol):
    """The board's wall clock stepped as root (CLOCK_REALTIME; nothing on the rig corrects
    it: the boards have no NTP server to reach)."""

    @Driver.check_active
    def step(self, seconds: float) -> None:
        py = f"import time; time.clock_settime(time.CLOCK_REALTIME, time.time() + {seconds!r})"
        self.rig.root(self.board, f'python3 -c "{py}" && date -u +%s')


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuHangDriver(_BoardDriver, HangProtocol):
    """SIGSTOP to the firmware's main process: it neither exits nor pings systemd's watchdog
    (nvr.service: WatchdogSec=20, Restart=always), so systemd kills and restarts it."""

    @Driver.check_active
    def hang(self) -> None:
        out = self.rig.root(
            self.board,
            "p=$(systemctl show -p MainPID --value nvr.service); "
            '[ "$p" -gt 0 ] && kill -STOP "$p" && echo stopped=$p',
        )
        if "stopped=" not in out:
            raise RuntimeError(f"board {self.board}: the firmware has no main process:\n{out}")


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuUpdateDriver(_BoardDriver, UpdateProtocol):
    """As tests/test_image.py's rollback test: a bundle whose firmware never starts (built
    once from the image's work tree into the image's output directory), installed from an
    update stick, booted; nvr.service's start limit reboots the board and the bootloader
    falls back to the slot that was good."""

    def _broken_bundle(self) -> Path:
        """Built once per rig in its work directory from a copy of the image's root (the
        image's own output directory, which others use, is only read)."""
        out = self.rig.workdir / "update-build"
        bundle = out / f"nvr-pair-{BROKEN}.raucb"
        if bundle.exists():
            return bundle
        work = self.rig.image.parent / "work"
        shutil.rmtree(out, ignore_errors=True)
        (out / "work").mkdir(parents=True)
        try:
            subprocess.run(["cp", "-a", str(work / "root"), str(out / "work" / "root")],
                           check=True)  # fmt: skip
            shutil.copyfile(work / "compression", out / "work" / "compression")
            dropin = out / "work" / "root" / "etc" / "systemd" / "system" / "nvr.service.d"
            dropin.mkdir(parents=True, exist_ok=True)
            (dropin / "broken.conf").write_text("[Service]\nExecStart=\nExecStart=/bin/false\n")
            subprocess.run(["/usr/bin/python3", str(TOP / "image" / "build.py"), "--out",
                            str(out), "bundle", "--board", self.rig.board_profile.board.name,
                            "--version", BROKEN, "--keys", str(self.rig.keys)],
                           check=True)  # fmt: skip
        finally:
            shutil.rmtree(out / "work", ignore_errors=True)
        return bundle

    @Driver.check_active
    def update_and_fail(self) -> str:
        rig, name = self.rig, self.board
        board = rig.board(name)
        vm = board.vm
        stick = make_stick(rig.workdir / f"stick-{name}.img", [self._broken_bundle()])
        with board.lock:
            if not board.stick:  # stays plugged in until the next power cut
                vm.qmp("blockdev-add", driver="raw", **{"node-name": "stick", "read-only": True},
                       file={"driver": "file", "filename": str(stick)})  # fmt: skip
                vm.qmp("device_add", driver="virtio-blk-pci", drive="stick", id="vdstick",
                       bus="rpstick")  # fmt: skip
                board.stick = True
            wait_until(lambda: "present" in rig.root(name, f"test -e {UPDATE_DEV} && echo present"),
                       60, f"{UPDATE_DEV} on board {name}", every=2)  # fmt: skip
            _skip_console(vm)
            done = vm.command("update", timeout=INSTALL_S)
            if f"installed nvr-pair-{BROKEN}.raucb" not in done:
                raise RuntimeError(f"board {name}: the update was not installed:\n{done}")
            vm.send("reboot\r")
            vm.answer("admin password", ADMIN_PW, BOOT_S)
            vm.expect(r"version: " + re.escape(BROKEN), 60)  # the new slot starts ...
            vm.answer("admin password", ADMIN_PW, BOOT_S + READY_S)  # ... and is left
            vm.expect(re.escape(PROMPT), 60)
            system = wait_console(vm, "system", lambda t: "service: active" in t, READY_S,
                                  "the firmware running again after the rollback")  # fmt: skip
        rig.wait_api(name, READY_S)
        m = re.search(r"^slot: (\S+)", system, re.M)
        if m is None:
            raise RuntimeError(f"board {name}: no slot in `system`:\n{system}")
        return m.group(1)


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuClientDriver(_RigDriver, ClientProtocol):
    """A VMS workstation on the LAN bridge (the rig's namespace), asking the floating IP."""

    @Driver.check_active
    def vip(self, path: str, timeout: float = 0.5) -> bytes:
        return ns_http(self.rig.net.ns, VIP_ADDR, API_PORT, path, timeout)


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuCameraDriver(_RigDriver, CameraProtocol):
    """The camera simulator at 192.0.2.31 on the LAN bridge."""

    def _sim(self) -> CameraSim:
        if self.rig.camera is None:
            raise RuntimeError("the camera simulator is not running")
        return self.rig.camera

    @Driver.check_active
    def cameras(self) -> list[str]:
        return list(self.rig.camera_names)

    @Driver.check_active
    def frame_clock(self, camera: str) -> int:
        return self._sim().clock(camera)

    @Driver.check_active
    def reboot(self, down_seconds: float) -> None:
        self._sim().restart(down_seconds)

    @Driver.check_active
    def jump(self, camera: str, seconds: float) -> None:
        self._sim().jump(camera, seconds)

    @Driver.check_active
    def cut_off(self, board: str, cut: bool) -> None:
        """The camera's address dropped at the board's LAN port (frames to the bridge's own
        addresses and back); the other board and the client still reach it."""
        rig = self.rig
        rig.board(board)
        table = f"camera_cut_{board}"
        if not cut:
            rig.nft(table, None)
            return
        tap = rig.net.taps(board)[0]
        rig.nft(
            table,
            _chain("c_input", "input", [f'iifname "{tap}" ip daddr {CAMERA_ADDR} drop'])
            + _chain("c_output", "output", [f'oifname "{tap}" ip saddr {CAMERA_ADDR} drop']),
        )


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class QemuPartitionDriver(_RigDriver, PartitionProtocol):
    """No frame between the boards' LAN ports, and none over the sync bridge; both still reach
    the camera and the client (the bridge's own addresses)."""

    @Driver.check_active
    def partition(self, split: bool) -> None:
        if not split:
            self.rig.nft("partition", None)
            return
        (lan_a, sync_a), (lan_b, sync_b) = (self.rig.net.taps(b) for b in BOARDS)
        rules = [
            f'iifname "{lan_a}" oifname "{lan_b}" drop',
            f'iifname "{lan_b}" oifname "{lan_a}" drop',
            f'iifname "{sync_a}" drop',
            f'iifname "{sync_b}" drop',
        ]
        self.rig.nft("partition", _chain("c_forward", "forward", rules))
