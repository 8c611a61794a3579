"""Resources and drivers for a pair wired in a real lab (hil/env/lab-example.yaml).

Each class is a thin translation of one protocol of hil/lab/protocols.py onto lab equipment:
a managed switch (cable pulls), a network PDU (power), SSH to the boards (API, clock, hang),
a USB serial adapter (UPS emulator), the lab PC on the LAN (client) and a camera PC running
the camera simulator. What a drill does with them is the drill suite's business.

labgrid's `imports:` executes this file by path under a module name of its own for every
environment it loads; `_registered` makes the second load reuse the classes of the first, so
one class name means one class in the whole process (the same rule as hil/lab/netns.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import attr
import serial
from labgrid.binding import BindingState
from labgrid.driver.common import Driver
from labgrid.driver.exception import ExecutionError
from labgrid.driver.sshdriver import SSHDriver
from labgrid.factory import target_factory
from labgrid.protocol import PowerProtocol
from labgrid.resource.common import Resource
from labgrid.util.helper import processwrapper

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # labgrid loads this file by path, maybe outside pytest
    sys.path.insert(0, str(_ROOT))

from hal.sim.ups_emulator import MegatecEmulator  # noqa: E402
from hil.lab.protocols import (  # noqa: E402
    BoardProtocol,
    CableProtocol,
    CameraProtocol,
    ClientProtocol,
    ClockProtocol,
    HangProtocol,
    Link,
    UpsProtocol,
)
from hil.lab.registry import registered  # noqa: E402
from hil.wait import wait_until  # noqa: E402

IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"
"""IF-MIB ifAdminStatus; the row is the port's ifIndex."""
ADMIN_UP, ADMIN_DOWN = 1, 2

_float = attr.validators.instance_of(float)
_int = attr.validators.instance_of(int)
_str = attr.validators.instance_of(str)
_bool = attr.validators.instance_of(bool)


def _registered(register: Callable[[type], type]) -> Callable[[type], type]:
    return registered(register, __file__)


def _sh(argv: list[str], sudo: bool = False) -> str:
    """One shell command line for SSHDriver.run (which splits on single spaces and lets the
    remote shell join them again, so quoted arguments survive)."""
    return shlex.join(["sudo", "-n", *argv] if sudo else argv)


@attr.s(eq=False)
class _SshHost(Driver):
    """Base of the drivers that run commands on a host over labgrid's SSHDriver.

    They bind the host's NetworkService, not its SSHDriver: labgrid activates a driver's
    suppliers with it, and an SSHDriver connects when activated, so a board that is off could
    not even be powered on through LabPowerDriver, nor be reported as not answering. Here the
    SSHDriver of the same NetworkService is activated on first use, and again after the host
    rebooted (its control master and keepalive die with the host; labgrid does not reconnect
    by itself). Every failure to reach the host is an OSError.
    """

    bindings: ClassVar[dict[str, Any]] = {"networkservice": "NetworkService"}
    sudo = attr.ib(default=False, validator=_bool)
    """Prefix commands with `sudo -n` (SSH as a user other than root)."""

    def ssh(self) -> SSHDriver:
        """The host's SSHDriver, active (connected now if it was not)."""
        ssh = self.target.get_driver(SSHDriver, resource=self.networkservice, activate=False)
        if ssh.state is not BindingState.active:
            try:
                self.target.activate(ssh)
            except Exception as e:  # labgrid raises a bare Exception on its connect timeout
                raise OSError(f"ssh to {self.networkservice.address}: {e}") from e
        return ssh

    def connection_died(self, timeout: float = 5.0) -> bool:
        """True (and the SSHDriver deactivated, so the next use connects again) when its
        connection is gone, as after the host rebooted; False when it is not connected or the
        host does not answer within timeout (a host just powered off, before the connection
        notices)."""
        ssh = self.target.get_driver(SSHDriver, resource=self.networkservice, activate=False)
        if ssh.state is not BindingState.active:
            return False
        try:
            ssh.run("true", timeout=timeout)
            return False
        except subprocess.TimeoutExpired:
            return False  # connected but the host does not answer: not a reboot (yet)
        except ExecutionError:  # "Keepalive no longer running"
            with contextlib.suppress(Exception):
                self.target.deactivate(ssh)
            return True

    def run(self, argv: list[str], timeout: float = 20.0, check: bool = True) -> list[str]:
        """stdout lines of argv on the host (through its shell: argv is quoted); OSError when
        the host cannot be reached, the command times out or (check) exits non-zero."""
        cmd = _sh(argv, self.sudo)
        for attempt in range(2):
            try:
                out, err, rc = self.ssh().run(cmd, timeout=timeout)
                break
            except ExecutionError as e:
                if attempt or not self.connection_died(min(timeout, 5.0)):
                    raise OSError(f"{cmd!r} on {self.networkservice.address}: {e}") from e
            except subprocess.TimeoutExpired as e:
                raise OSError(f"{cmd!r} on {self.networkservice.address}: {e}") from e
        if check and rc != 0:
            raise OSError(f"{cmd!r} on {self.networkservice.address}: exit {rc}: {err}")
        return out


# -- switch ports and cable pulls -------------------------------------------------------------


@_registered(target_factory.reg_resource)
@attr.s(eq=False)
class SwitchPort(Resource):
    """One port of a managed switch, writable over SNMP, and the board cable it carries.

    Args:
        switch: the switch's management address
        if_index: the port's IF-MIB ifIndex (not always its front-panel number)
        board: the board whose cable this port carries ("a", "b")
        link: "lan" or "sync"
        community: SNMPv2c write community
        snmp_port: the switch's SNMP UDP port
    """

    switch = attr.ib(validator=_str)
    if_index = attr.ib(converter=int, validator=_int)
    board = attr.ib(validator=_str)
    link = attr.ib(converter=Link, validator=attr.validators.instance_of(Link))
    community = attr.ib(default="private", validator=_str)
    snmp_port = attr.ib(default=161, converter=int, validator=_int)

    def admin_status(self, connected: bool) -> tuple[str, int]:
        """The OID and the ifAdminStatus value that connect or disconnect this port."""
        return f"{IF_ADMIN_STATUS}.{self.if_index}", ADMIN_UP if connected else ADMIN_DOWN


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class SnmpCableDriver(Driver, CableProtocol):
    """Pulls a board's cables by setting its switch ports administratively down.

    Net-SNMP's `snmpset` (Debian package `snmp`) does the write: labgrid's own SNMP helper
    needs pysnmp<6 (unmaintained) and ignores the answer of a set, and the maintained pysnmp 7
    would break labgrid's SNMP power backends in the same venv. snmpset exits non-zero when
    the switch refuses the write, so a pull that did not happen fails the drill.

    The sync link runs through two ports of the switch in a VLAN of their own (a direct cable
    cannot be pulled remotely): `sync` is this board's port, `sync_peer` the other board's,
    and both go down together so both ends lose carrier as with a pulled cable. The LAN port's
    far end is the switch itself, so one port is enough there.
    """

    bindings: ClassVar[dict[str, Any]] = {
        "lan": "SwitchPort",
        "sync": "SwitchPort",
        "sync_peer": {"SwitchPort", None},
    }
    timeout = attr.ib(default=2.0, converter=float, validator=_float)
    retries = attr.ib(default=2, converter=int, validator=_int)

    def __attrs_post_init__(self) -> None:
        """Refuse a wiring that would pull the wrong cable, when the environment is loaded
        (labgrid has bound the ports by now; the driver is left bound, never active)."""
        super().__attrs_post_init__()
        roles = [("lan", self.lan, self.name, Link.LAN), ("sync", self.sync, self.name, Link.SYNC)]
        if self.sync_peer is not None:
            roles.append(("sync_peer", self.sync_peer, None, Link.SYNC))
        for role, port, board, link in roles:
            if port.link is not link or (board is not None and port.board != board):
                raise ValueError(
                    f"{type(self).__name__} {self.name}: {role} port {port.name} carries "
                    f"{port.board}/{port.link.value}, expected {board or 'the peer'}/{link.value}"
                )
        if self.sync_peer is not None and self.sync_peer.board == self.name:
            raise ValueError(f"{type(self).__name__} {self.name}: sync_peer is its own port")

    def ports(self, link: Link) -> list[SwitchPort]:
        if link is Link.LAN:
            return [self.lan]
        return [p for p in (self.sync, self.sync_peer) if p is not None]

    def commands(self, link: Link, connected: bool) -> list[list[str]]:
        """The snmpset command lines that pull or plug link (sent by cable())."""
        tool = self.target.env.config.get_tool("snmpset") if self.target.env else "snmpset"
        out = []
        for port in self.ports(link):
            oid, value = port.admin_status(connected)
            out.append(
                [tool, "-v2c", "-c", port.community, "-t", f"{self.timeout:g}",
                 "-r", str(self.retries), "-OQ", f"udp:{port.switch}:{port.snmp_port}",
                 oid, "i", str(value)]
            )  # fmt: skip
        return out

    @Driver.check_active
    def cable(self, link: Link, connected: bool) -> None:
        for cmd in self.commands(link, connected):
            processwrapper.check_output(cmd)


# -- power -----------------------------------------------------------------------------------


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class LabPowerDriver(Driver, PowerProtocol):
    """PowerProtocol as the drills read it: on() returns once the board's firmware answers
    on its API (WaitTimeout after boot_timeout), not when the PDU outlet closed.

    The PDU's own driver (NetworkPowerDriver, named "pdu-a"...) does the switching; drills
    time takeovers and recoveries from on() returning, and a PDU driver returns seconds
    before the board even runs its bootloader.
    """

    bindings: ClassVar[dict[str, Any]] = {"pdu": "PowerProtocol", "board": "BoardProtocol"}
    boot_timeout = attr.ib(default=180.0, converter=float, validator=_float)
    off_seconds = attr.ib(default=5.0, converter=float, validator=_float)
    """How long cycle() leaves the board without power (capacitors drain)."""

    @Driver.check_active
    def on(self) -> None:
        self.pdu.on()
        wait_until(
            lambda: self.board.api("/api/v1/status", timeout=2.0),
            self.boot_timeout,
            f"board {self.name}'s firmware answering after power on",
            every=1.0,
        )

    @Driver.check_active
    def off(self) -> None:
        self.pdu.off()

    @Driver.check_active
    def cycle(self) -> None:
        self.pdu.off()
        time.sleep(self.off_seconds)  # a power-off hold, not a wait for a condition
        self.on()

    @Driver.check_active
    def get(self) -> bool:
        return bool(self.pdu.get())


# -- the board over SSH -------------------------------------------------------------------------


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class LabBoardDriver(_SshHost, BoardProtocol):
    """The board's API through an SSH port forward to its loopback (so it answers with the
    LAN and sync cables pulled, as long as the board's management path is up), with the
    token from `nvr token` run once over SSH (again after a 401: the token was rotated).

    Nothing is connected when the driver is activated; the first request connects, and the
    first request after the board rebooted connects again. The audit log is read with `cat`.
    """

    api_port = attr.ib(default=8080, converter=int, validator=_int)
    audit_path = attr.ib(default="/var/lib/nvr/audit.log", validator=_str)
    """[board] data_dir of the board's nvr.toml + firmware.audit.AUDIT_FILE."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._forward: contextlib.ExitStack | None = None
        self._local_port = 0
        self._forward_master = ""
        self._token: str | None = None

    def on_deactivate(self) -> None:
        self._close_forward()
        self._token = None

    def _forwarded_port(self) -> int:
        """The local end of the forward, on the SSH connection of now (a forward made on an
        earlier connection died with it)."""
        ssh = self.ssh()
        if self._forward is not None and self._forward_master != ssh.control:
            self._close_forward()
        if self._forward is None:
            stack = contextlib.ExitStack()
            try:
                self._local_port = stack.enter_context(ssh.forward_local_port(self.api_port))
            except (ExecutionError, subprocess.CalledProcessError) as e:
                raise OSError(f"port forward to {self.networkservice.address}: {e}") from e
            self._forward, self._forward_master = stack, ssh.control
        return self._local_port

    def _close_forward(self) -> None:
        if self._forward is not None:
            with contextlib.suppress(Exception):  # the master died with the board
                self._forward.close()
        self._forward = None

    def _request(self, path: str, method: str, timeout: float) -> bytes:
        port = self._forwarded_port()
        if self._token is None:
            self._token = "".join(self.run(["nvr", "token"], timeout=max(timeout, 10.0)))
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            method=method,
            headers={"Authorization": f"Bearer {self._token}"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    @Driver.check_active
    def api(self, path: str, method: str = "GET", timeout: float = 2.0) -> bytes:
        try:
            return self._request(path, method, timeout)
        except urllib.error.HTTPError as e:
            if e.code != 401:
                raise
            self._token = None  # rotated: fetch it again, once
        except OSError:
            if not self.connection_died(max(timeout, 1.0)):
                raise  # the board's answer, or a board that is not there
            self._close_forward()  # it rebooted: connect and forward again, once
        return self._request(path, method, timeout)

    @Driver.check_active
    def audit_log(self) -> list[dict]:
        path = shlex.quote(self.audit_path)
        lines = self.run(["sh", "-c", f"test -e {path} || exit 0; exec cat {path}"])
        return [json.loads(line) for line in lines if line.strip()]


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class SshClockDriver(_SshHost, ClockProtocol):
    """Steps the board's wall clock with `date -s` (root). chrony on the board steps it back
    at its next poll; a drill that needs the wrong time to last blocks NTP itself."""

    @staticmethod
    def command(seconds: float) -> list[str]:
        """The board computes the new time itself, so SSH latency does not add to the step."""
        script = "date -s @$(python3 -c 'import sys,time; print(time.time()+float(sys.argv[1]))' "
        return ["sh", "-c", f"{script}{shlex.quote(repr(float(seconds)))})"]

    @Driver.check_active
    def step(self, seconds: float) -> None:
        self.run(self.command(seconds))


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class SshHangDriver(_SshHost, HangProtocol):
    """Freezes the firmware's main process with SIGSTOP. nvr.service has WatchdogSec=20:
    systemd sends the watchdog signal (with SIGCONT) about 20 s later and restarts the unit
    RestartSec=2 after; five restarts in ten minutes reboot the board (StartLimitAction)."""

    unit = attr.ib(default="nvr.service", validator=_str)

    def command(self) -> list[str]:
        script = (
            f"pid=$(systemctl show -p MainPID --value {shlex.quote(self.unit)}) && "
            '[ "$pid" -gt 0 ] && kill -STOP "$pid"'
        )
        return ["sh", "-c", script]

    @Driver.check_active
    def hang(self) -> None:
        self.run(self.command())


# -- the client on the LAN ------------------------------------------------------------------------


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class LabClientDriver(Driver, ClientProtocol):
    """The lab PC itself as a VMS workstation: plain HTTP to the floating IP."""

    bindings: ClassVar[dict[str, Any]] = {}
    vip_address = attr.ib(validator=_str)
    """The pair's virtual_ip without its prefix length."""
    port = attr.ib(default=8080, converter=int, validator=_int)

    def url(self, path: str) -> str:
        host = f"[{self.vip_address}]" if ":" in self.vip_address else self.vip_address
        return f"http://{host}:{self.port}{path}"

    @Driver.check_active
    def vip(self, path: str, timeout: float = 0.5) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
            return r.read()


# -- cameras --------------------------------------------------------------------------------------

_CONTROL_SCRIPT = (
    "import json,socket,sys\n"
    "s=socket.socket(socket.AF_UNIX)\n"
    "s.settimeout(10)\n"
    "s.connect(sys.argv[1])\n"
    "s.sendall(sys.argv[2].encode()+b'\\n')\n"
    "print(s.makefile().readline().strip())\n"
)


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class LabCameraDriver(_SshHost, CameraProtocol):
    """The camera simulator (`python -m hil.camera`) on a camera PC on the LAN, run by a
    systemd unit whose command line has a fixed --epoch (so a restart continues the frame
    numbers) and a --control socket; reached over SSH.

    cut_off() drops one board's LAN address on the camera PC with an nftables table of its
    own (`hil_cut_<board>`), so the other board and the clients still reach the cameras.
    """

    control = attr.ib(default="/run/camsim/control.sock", validator=_str)
    unit = attr.ib(default="camsim.service", validator=_str)
    boards = attr.ib(factory=dict, validator=attr.validators.instance_of(dict))
    """Board name -> its own LAN address (IPv4), for cut_off()."""
    python = attr.ib(default="python3", validator=_str)

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        out = self.run([self.python, "-c", _CONTROL_SCRIPT, self.control, json.dumps(request)])
        reply = json.loads(out[-1]) if out else {"ok": False, "error": "no answer"}
        if not reply.get("ok"):
            raise OSError(f"camera simulator: {request['cmd']}: {reply.get('error')}")
        return reply

    @Driver.check_active
    def cameras(self) -> list[str]:
        return list(self._control({"cmd": "ping"})["streams"])

    @Driver.check_active
    def frame_clock(self, camera: str) -> int:
        return int(self._control({"cmd": "frame", "stream": camera})["clock"])

    @Driver.check_active
    def reboot(self, down_seconds: float) -> None:
        unit = shlex.quote(self.unit)
        script = f"systemctl stop {unit} && sleep {float(down_seconds)!r} && systemctl start {unit}"
        self.run(["sh", "-c", script], timeout=down_seconds + 60.0)

    @Driver.check_active
    def jump(self, camera: str, seconds: float) -> None:
        self._control({"cmd": "jump", "stream": camera, "seconds": seconds})

    def cut_commands(self, board: str, cut: bool) -> str:
        """The nft script (one shell line) that cuts or restores one board."""
        address = self.boards[board]
        table = f"hil_cut_{board}"
        script = f"nft delete table inet {table} 2>/dev/null; true"
        if cut:
            script += (
                f" && nft add table inet {table}"
                f" && nft add chain inet {table} i '{{ type filter hook input priority -10; }}'"
                f" && nft add chain inet {table} o '{{ type filter hook output priority -10; }}'"
                f" && nft add rule inet {table} i ip saddr {address} drop"
                f" && nft add rule inet {table} o ip daddr {address} drop"
            )
        return script

    @Driver.check_active
    def cut_off(self, board: str, cut: bool) -> None:
        self.run(["sh", "-c", self.cut_commands(board, cut)])


# -- the UPS emulator on a serial adapter ------------------------------------------------------


@_registered(target_factory.reg_driver)
@attr.s(eq=False)
class UpsEmulatorDriver(Driver, UpsProtocol):
    """A Megatec/Q1 UPS served from the lab PC on a serial adapter wired (null modem) to the
    board's UPS port, which the board's nvr.toml names in [ups] (backend serial, megatec).

    hal.sim.ups_emulator.MegatecEmulator serves on a pty of its own; two threads relay bytes
    between that pty and the serial port, so the emulator the rig tests use is the one here.
    The port resource's speed is the line's: 2400 for the board's Megatec driver (nvr.toml
    [ups]).
    """

    bindings: ClassVar[dict[str, Any]] = {"port": "SerialPort"}

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.emulator: MegatecEmulator | None = None
        self._serial: serial.Serial | None = None
        self._pty: int | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def on_activate(self) -> None:
        self._serial = serial.Serial(self.port.port, self.port.speed, timeout=0.05)
        self.emulator = MegatecEmulator().start()
        self._pty = os.open(self.emulator.port, os.O_RDWR | os.O_NOCTTY)
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._to_emulator, name=f"ups-{self.name}-in", daemon=True),
            threading.Thread(target=self._to_board, name=f"ups-{self.name}-out", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def on_deactivate(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._threads = []
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        if self._pty is not None:
            os.close(self._pty)
            self._pty = None
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def _to_emulator(self) -> None:
        assert self._serial is not None and self._pty is not None
        while not self._stop.is_set():
            data = self._serial.read(self._serial.in_waiting or 1)
            if data:
                os.write(self._pty, data)

    def _to_board(self) -> None:
        assert self._serial is not None and self._pty is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._pty], [], [], 0.05)
            if ready:
                self._serial.write(os.read(self._pty, 1024))

    @Driver.check_active
    def mains(self, on: bool) -> None:
        assert self.emulator is not None
        if on:
            self.emulator.mains_back()
        else:
            self.emulator.mains_fail()

    @Driver.check_active
    def battery_low(self, low: bool) -> None:
        assert self.emulator is not None
        self.emulator.low_battery(low)
