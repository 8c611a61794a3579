"""The pair on one machine, as labgrid resources and drivers: network namespaces for the boards,
the switch, the camera simulator and a client (hil/twin.py, hil/rig.py), a socat pty pair as the
serial cross-link, one Megatec UPS emulator per board and optional loop-mounted data disks.

`NetnsRigDriver` owns everything the rig is made of: activating it brings all of it up (both
boards powered off), deactivating it (or labgrid's target cleanup, also at interpreter exit)
tears all of it down. Every other driver binds to it and only calls into it, the rig or the
twin boards; drill policy lives in the drills.

No ClockProtocol, HangProtocol or UpdateProtocol here: every namespace shares one kernel clock,
no service manager watches a board and there are no A/B slots.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import attr
from labgrid.driver import Driver
from labgrid.factory import target_factory
from labgrid.protocol import PowerProtocol
from labgrid.resource import Resource
from labgrid.step import step

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # labgrid loads this file by path, maybe outside pytest
    sys.path.insert(0, str(_ROOT))

from firmware.pairkey import load_pair_key, pair_api_token  # noqa: E402
from hal.sim.ups_emulator import MegatecEmulator  # noqa: E402
from hil.camera import CameraSim  # noqa: E402
from hil.diskfill import fill  # noqa: E402
from hil.lab.protocols import (  # noqa: E402
    BoardProtocol,
    CableProtocol,
    CameraProtocol,
    ClientProtocol,
    DiskFaultProtocol,
    HeartbeatProtocol,
    Link,
    PartitionProtocol,
    UpsProtocol,
)
from hil.lab.registry import registered  # noqa: E402
from hil.rig import VIRTUAL_IP  # noqa: E402
from hil.twin import ADVERT_PORT, API_PORT, BOARDS, ROOT, TwinBoards  # noqa: E402
from hil.wait import wait_until  # noqa: E402

FILLER = ".netns-filler"
"""The file NetnsDiskDriver.fill writes next to the board's data (on the same filesystem)."""


def _registered(register: Callable[[type], type]) -> Callable[[type], type]:
    return registered(register, __file__)


def _sh(*cmd: str) -> str:
    return subprocess.run(
        cmd, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


class RigError(RuntimeError):
    """The rig could not do what a driver asked (a board that does not boot, no disk)."""


# --- the resource -------------------------------------------------------------------------------


@_registered(target_factory.reg_resource)
@attr.s(eq=False)
class NetnsPair(Resource):
    """What the namespace rig is made of (data only; NetnsRigDriver builds it)."""

    cameras = attr.ib(default=1, validator=attr.validators.instance_of(int))
    segment_seconds = attr.ib(default=2.0, converter=float)
    advert_interval_ms = attr.ib(default=100, validator=attr.validators.instance_of(int))
    firmware_root = attr.ib(default=str(ROOT), validator=attr.validators.instance_of(str))
    """The tree the boards run `python -m firmware.cli run` from (a patched copy, say)."""
    serial_crosslink = attr.ib(default=True, validator=attr.validators.instance_of(bool))
    ups = attr.ib(default=True, validator=attr.validators.instance_of(bool))
    data_disk_mb = attr.ib(default=0, validator=attr.validators.instance_of(int))
    """0: the data directory is a plain directory; >0: an ext4 loop disk of that size."""
    workdir = attr.ib(default="", validator=attr.validators.instance_of(str))
    """Configs, logs and data; "": a temporary directory removed at teardown."""


# --- the rig ------------------------------------------------------------------------------------


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsRigDriver(Driver):
    """Brings the whole rig up on activation and takes all of it down on deactivation."""

    bindings: ClassVar[dict[str, Any]] = {"pair": "NetnsPair"}

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.twin: TwinBoards | None = None
        self.token = ""
        self.ups: dict[str, MegatecEmulator] = {}
        self.disks: dict[str, str] = {}
        """board -> loop device holding its data directory."""
        self.serial_ports: dict[str, Path] = {}
        self._socat: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.workdir: Path | None = None
        """Configs, logs, data and disk images of the running rig."""

    # --- lifecycle ---------------------------------------------------------------------------

    def on_activate(self) -> None:
        try:
            self._up()
        except BaseException:
            try:
                self._down()
            except Exception:
                self.logger.exception("tearing down the half-built rig")
            raise

    def on_deactivate(self) -> None:
        self._down()

    def _up(self) -> None:
        pair: NetnsPair = self.pair  # type: ignore[attr-defined]
        if pair.workdir:
            workdir = Path(pair.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = workdir = Path(tempfile.mkdtemp(prefix="netns-rig-"))
        self.workdir = workdir
        self.twin = TwinBoards(
            workdir / "twin",
            segment_seconds=pair.segment_seconds,
            advert_interval_ms=pair.advert_interval_ms,
            cameras=pair.cameras,
        ).__enter__()
        self.token = pair_api_token(load_pair_key(self.twin.key_file))
        if pair.serial_crosslink:
            self.serial_ports = {h: workdir / f"tty{h.upper()}" for h in BOARDS}
            self.serial(True)
        if pair.ups:
            for h in BOARDS:
                self.ups[h] = MegatecEmulator().start()
        if pair.data_disk_mb > 0:
            for h in BOARDS:
                self._make_disk(h, workdir / f"disk-{h}.img", pair.data_disk_mb)
        for h in BOARDS:  # nothing runs yet: the boards start unpowered, their links dark
            self.twin.power_cut(h)

    def _make_disk(self, host: str, img: Path, mb: int) -> None:
        """An ext4 loop disk as tests/test_fault_rig_hw.py's small_disk: no blocks kept back
        for root (the firmware runs as root) and read-only after an error."""
        assert self.twin is not None
        with open(img, "wb") as f:
            f.truncate(mb * 1024 * 1024)
        dev = _sh("losetup", "--find", "--show", str(img))
        self.disks[host] = dev
        _sh("mkfs.ext4", "-q", "-m", "0", "-e", "remount-ro", dev)
        data = self.twin.data_dir(host)
        data.mkdir(parents=True, exist_ok=True)
        _sh("mount", dev, str(data))

    def _down(self) -> None:
        """Everything, in an order that lets each step succeed: boards, disks, namespaces and
        camera, serial pair, UPS emulators, the temporary directory. Every step runs even when
        one before it failed; the first failure is raised at the end."""
        errors: list[BaseException] = []

        def attempt(fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as e:
                errors.append(e)

        tb = self.twin
        if tb is not None:
            for h in BOARDS:
                attempt(lambda h=h: tb.rig.kill(h))
        for h, dev in list(self.disks.items()):
            if tb is not None:
                data = str(tb.data_dir(h))
                if subprocess.run(["umount", data], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", data], capture_output=True)
            attempt(lambda dev=dev: _sh("losetup", "-d", dev))
        self.disks.clear()
        if tb is not None:
            attempt(tb.close)
            self.twin = None
        attempt(lambda: self.serial(False))
        for emu in self.ups.values():
            attempt(emu.stop)
        self.ups.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if errors:
            raise errors[0]

    # --- what the other drivers call ---------------------------------------------------------

    @property
    def tb(self) -> TwinBoards:
        if self.twin is None:
            raise RigError("the namespace rig is not up (NetnsRigDriver not active)")
        return self.twin

    @property
    def resource(self) -> NetnsPair:
        return self.pair  # type: ignore[attr-defined]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def serial(self, connected: bool) -> None:
        """The serial cable between the boards: a socat pty pair; unplugged, socat is gone
        and the boards' ports with it (the firmware opens its port again once it is back)."""
        if not connected:
            if self._socat is not None:
                self._socat.terminate()
                try:
                    self._socat.wait(10)
                except subprocess.TimeoutExpired:
                    self._socat.kill()
                    self._socat.wait(10)
                self._socat = None
            return
        if not self.serial_ports or (self._socat is not None and self._socat.poll() is None):
            return
        ends = [f"pty,raw,echo=0,link={p}" for p in self.serial_ports.values()]
        self._socat = subprocess.Popen(["socat", *ends], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
        wait_until(lambda: all(p.exists() for p in self.serial_ports.values()), 10,
                   "socat's serial pair")  # fmt: skip

    def start_board(self, host: str, priority: int) -> None:
        """The firmware as TwinBoards.start runs it, from the resource's firmware_root, with
        the serial port and the UPS of this rig in its config."""
        tb = self.tb
        sections = {}
        if host in self.ups:
            sections["ups"] = {"backend": "serial", "port": self.ups[host].port,
                               "protocol": "megatec", "poll_seconds": 0.5,
                               "handover_after_seconds": 1.0}  # fmt: skip
        pair = {"serial_port": str(self.serial_ports[host])} if self.serial_ports else {}
        cfg = tb.config(host, priority, sections, **pair)
        log = tb.workdir / host / "nvr.log"
        tb.logs[host] = log
        with open(log, "ab") as out:
            tb.rig.start(host, [sys.executable, "-m", "firmware.cli", "run", "--config", str(cfg)],
                         cwd=self.resource.firmware_root, stdout=out,
                         stderr=subprocess.STDOUT)  # fmt: skip

    def api(self, host: str, path: str, method: str = "GET", timeout: float = 2.0) -> bytes:
        return self.tb.rig.http(host, "127.0.0.1", API_PORT, path, timeout, method=method,
                                headers=self.auth())  # fmt: skip

    def power_on(self, host: str, priority: int, timeout: float) -> None:
        """Power back and boot; returns once the board answers on its API. A board that runs
        already is only waited for."""
        tb = self.tb
        if tb.pid(host) is None:
            tb.power_back(host)
            self.start_board(host, priority)

        def up_or_dead() -> bool:
            if tb.pid(host) is None:
                return True
            self.api(host, "/api/v1/status", timeout=0.5)
            return True

        wait_until(up_or_dead, timeout, f"board {host} answering on its API after power on")
        if tb.pid(host) is None:
            raise RigError(f"board {host}'s firmware exited while booting:\n{tb.log(host)[-3000:]}")

    def power_off(self, host: str) -> None:
        self.tb.power_cut(host)


@attr.s(eq=False)
class _OnRig(Driver):
    """A driver that only calls into the rig."""

    bindings: ClassVar[dict[str, Any]] = {"rig": "NetnsRigDriver"}

    @property
    def _rig(self) -> NetnsRigDriver:
        return self.rig  # type: ignore[attr-defined]


@attr.s(eq=False)
class _BoardDriver(_OnRig):
    """A driver for one board: `board` is "a" or "b" (also its name in the yaml)."""

    board = attr.ib(default=None, validator=attr.validators.in_(BOARDS))


# --- per board ----------------------------------------------------------------------------------


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsPowerDriver(_BoardDriver, PowerProtocol):
    """off: a power cut (everything on the board dies, links dark, RAM gone); on: links back,
    firmware started, returns once it answers on its own API."""

    priority = attr.ib(default=None, validator=attr.validators.optional(
        attr.validators.instance_of(int)))  # fmt: skip
    """The [pair] priority the board boots with; None: 150 for a, 100 for b."""
    boot_timeout = attr.ib(default=30.0, converter=float)

    @Driver.check_active
    @step()
    def on(self) -> None:
        prio = self.priority if self.priority is not None else {"a": 150, "b": 100}[self.board]
        self._rig.power_on(self.board, prio, self.boot_timeout)

    @Driver.check_active
    @step()
    def off(self) -> None:
        self._rig.power_off(self.board)

    @Driver.check_active
    @step()
    def cycle(self) -> None:
        self.off()
        self.on()


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsBoardDriver(_BoardDriver, BoardProtocol):
    """The board's API over loopback in its namespace, with the pair's token."""

    @Driver.check_active
    def api(self, path: str, method: str = "GET", timeout: float = 2.0) -> bytes:
        return self._rig.api(self.board, path, method, timeout)

    @Driver.check_active
    def audit_log(self) -> list[dict]:
        path = self._rig.tb.data_dir(self.board) / "audit.log"
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except ValueError:
                if i != len(lines) - 1:  # only the last line may be torn by a power cut
                    raise
        return records


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsCableDriver(_BoardDriver, CableProtocol):
    @Driver.check_active
    @step(args=["link", "connected"])
    def cable(self, link: Link, connected: bool) -> None:
        self._rig.tb.rig.cable(self.board, Link(link).value, connected)


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsHeartbeatDriver(_BoardDriver, HeartbeatProtocol):
    """Drops the advert port on one of the board's links (nftables in its namespace)."""

    @Driver.check_active
    @step(args=["link", "blocked"])
    def block_adverts(self, link: Link, blocked: bool) -> None:
        self._rig.tb.rig.block(self.board, Link(link).value, ADVERT_PORT, blocked)

    @Driver.check_active
    def has_serial_crosslink(self) -> bool:
        return self._rig.resource.serial_crosslink


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsDiskDriver(_BoardDriver, DiskFaultProtocol):
    """The board's loop disk (NetnsPair data_disk_mb > 0). pull: the disk is unmounted (lazily,
    files stay open) inside the board's own mount namespace; fill: a file outside the board
    takes every free block; heal: the file goes, the disk is mounted back in that namespace."""

    def on_activate(self) -> None:
        if self.board not in self._rig.disks:
            raise RigError(f"board {self.board} has no loop disk: set NetnsPair data_disk_mb > 0")
        self._pulled_from: int | None = None

    def _board_pid(self, what: str) -> int:
        pid = self._rig.tb.pid(self.board)
        if pid is None:
            raise RigError(f"board {self.board} is off: no disk mounted to {what}")
        return pid

    @Driver.check_active
    @step()
    def pull(self) -> None:
        pid = self._board_pid("pull")
        _sh("nsenter", "-t", str(pid), "-m", "umount", "-l", str(self._rig.tb.data_dir(self.board)))
        self._pulled_from = pid

    @Driver.check_active
    @step()
    def fill(self) -> None:
        fill(self._rig.tb.data_dir(self.board) / FILLER)

    @Driver.check_active
    @step()
    def heal(self) -> None:
        data = self._rig.tb.data_dir(self.board)
        (data / FILLER).unlink(missing_ok=True)
        pid, self._pulled_from = self._pulled_from, None
        if pid is not None and pid == self._rig.tb.pid(self.board):
            # A board booted since has the disk already (its namespace copies the host's).
            _sh("nsenter", "-t", str(pid), "-m", "mount", self._rig.disks[self.board], str(data))


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsUpsDriver(_BoardDriver, UpsProtocol):
    """The board's Megatec emulator (NetnsPair ups: true)."""

    def on_activate(self) -> None:
        if self.board not in self._rig.ups:
            raise RigError(f"board {self.board} has no UPS: set NetnsPair ups: true")

    @property
    def _emu(self) -> MegatecEmulator:
        return self._rig.ups[self.board]

    @Driver.check_active
    @step(args=["on"])
    def mains(self, on: bool) -> None:
        if on:
            self._emu.mains_back()
        else:
            self._emu.mains_fail()

    @Driver.check_active
    @step(args=["low"])
    def battery_low(self, low: bool) -> None:
        self._emu.low_battery(low)


# --- the pair as a whole ------------------------------------------------------------------------


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsClientDriver(_OnRig, ClientProtocol):
    """A workstation in the client namespace on the LAN; it sends the pair's token, as a VMS
    configured for the pair does."""

    @Driver.check_active
    def vip(self, path: str, timeout: float = 0.5) -> bytes:
        return self._rig.tb.rig.http("cli", VIRTUAL_IP, API_PORT, path, timeout,
                                     headers=self._rig.auth())  # fmt: skip


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsCameraDriver(_OnRig, CameraProtocol):
    """The camera simulator. cut_off drops its RTSP port (TCP) on one board's LAN, as
    tests/test_fault_rig_hw.py does: every camera of the simulator goes for that board."""

    @property
    def _cam(self) -> CameraSim:
        cam = self._rig.tb.camera
        if cam is None:
            raise RigError("the rig has no camera simulator")
        return cam

    @Driver.check_active
    def cameras(self) -> list[str]:
        return list(self._rig.tb.cameras)

    @Driver.check_active
    def frame_clock(self, camera: str) -> int:
        return self._cam.clock(camera)

    @Driver.check_active
    @step(args=["down_seconds"])
    def reboot(self, down_seconds: float) -> None:
        self._cam.restart(down_seconds)

    @Driver.check_active
    @step(args=["camera", "seconds"])
    def jump(self, camera: str, seconds: float) -> None:
        self._cam.jump(camera, seconds)

    @Driver.check_active
    @step(args=["board", "cut"])
    def cut_off(self, board: str, cut: bool) -> None:
        if board not in BOARDS:
            raise ValueError(f"no board {board!r}: {BOARDS}")
        self._rig.tb.rig.block(board, "lan", self._cam.port, cut, proto="tcp")


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class NetnsPartitionDriver(_OnRig, PartitionProtocol):
    """As tests/test_failover_rig.py's test_healed_dual_active_leaves_exactly_one: a's sync
    cable out and adverts dropped on both LANs, plus the serial cross-link cut when there is
    one. Healing plugs all of it back."""

    @Driver.check_active
    @step(args=["split"])
    def partition(self, split: bool) -> None:
        rig = self._rig
        if split:
            rig.serial(False)
        rig.tb.rig.cable("a", "sync", not split)
        for host in BOARDS:
            rig.tb.rig.block(host, "lan", ADVERT_PORT, split)
        if not split:
            rig.serial(True)


__all__ = [
    "NetnsBoardDriver",
    "NetnsCableDriver",
    "NetnsCameraDriver",
    "NetnsClientDriver",
    "NetnsDiskDriver",
    "NetnsHeartbeatDriver",
    "NetnsPair",
    "NetnsPartitionDriver",
    "NetnsPowerDriver",
    "NetnsRigDriver",
    "NetnsUpsDriver",
    "RigError",
]
