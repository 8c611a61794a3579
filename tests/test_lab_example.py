"""The lab environment (hil/env/lab-example.yaml) loads and binds on a machine without any of
its equipment, and the parts of its drivers that need no equipment do what the lab relies on.

Nothing here activates a driver that would touch a device or the network: drivers are looked
up with activate=False, the SNMP driver's commands are recorded instead of sent, and the UPS
driver serves on a pty pair of the test's own.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import tempfile
import time
import tty
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import labgrid
import pytest
import yaml
from labgrid.binding import BindingState
from labgrid.driver.sshdriver import SSHDriver
from labgrid.factory import target_factory
from labgrid.protocol import PowerProtocol
from labgrid.resource.networkservice import NetworkService
from labgrid.resource.serialport import RawSerialPort
from labgrid.target import Target
from labgrid.util.helper import processwrapper

from hil.lab import lab
from hil.lab.protocols import (
    BoardProtocol,
    CableProtocol,
    CameraProtocol,
    ClientProtocol,
    ClockProtocol,
    HangProtocol,
    Link,
    UpsProtocol,
)

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / "hil" / "env" / "lab-example.yaml"
TARGET = "pair"
BOARD_PROTOCOLS = (
    PowerProtocol,
    BoardProtocol,
    CableProtocol,
    UpsProtocol,
    ClockProtocol,
    HangProtocol,
)
"""Every per-board protocol the lab file gives both boards."""


def declared(config: dict[str, Any]) -> Iterator[tuple[str, str, str | None, dict[str, Any]]]:
    """(kind, class name, name, arguments) of every resource and driver the target declares,
    in either of labgrid's spellings (a mapping, or a list of one-entry mappings)."""
    section = config["targets"][TARGET]
    for kind in ("resources", "drivers"):
        entries = section.get(kind) or []
        pairs = entries.items() if isinstance(entries, dict) else [
            next(iter(e.items())) for e in entries
        ]  # fmt: skip
        for cls, args in pairs:
            yield kind, cls, (args or {}).get("name"), args or {}


@pytest.fixture
def env() -> Iterator[labgrid.Environment]:
    environment = labgrid.Environment(str(ENV_FILE))
    try:
        yield environment
    finally:
        environment.cleanup()


@pytest.fixture
def target(env: labgrid.Environment) -> Target:
    t = env.get_target(TARGET)
    assert t is not None, f"{ENV_FILE} has no target {TARGET!r}"
    return t


def test_every_declaration_is_created_bound_and_not_active(target: Target) -> None:
    """A typo in a class name, a name or a binding makes labgrid skip or misbind a driver
    only when a drill first asks for it; here it fails on a machine without the lab."""
    config = yaml.safe_load(ENV_FILE.read_text())
    decls = list(declared(config))
    assert decls, "the environment declares nothing"
    found: list[object] = []
    for kind, cls_name, name, args in decls:
        cls = target_factory.class_from_string(cls_name)
        if kind == "resources":
            obj = target.get_resource(cls, name=name, wait_avail=False)
        else:
            obj = target.get_driver(cls, name=name, activate=False)
            assert obj.state is BindingState.bound, f"{cls_name} {name}: {obj.state}"
            for role, supplier in (args.get("bindings") or {}).items():
                assert getattr(obj, role).name == supplier, f"{cls_name} {name}.{role}"
        assert type(obj).__name__ == cls_name and obj.name == name
        found.append(obj)
    # Nothing created twice and nothing beyond the file.
    assert len({id(o) for o in found}) == len(found)
    assert sorted(map(id, found)) == sorted(map(id, [*target.resources, *target.drivers]))


def test_each_board_protocol_exists_for_both_boards(target: Target) -> None:
    """Drills ask for a protocol by board name; PowerProtocol a must be the waiting
    LabPowerDriver, not the PDU driver underneath it."""
    for protocol in BOARD_PROTOCOLS:
        for board in ("a", "b"):
            drv = target.get_driver(protocol, name=board, activate=False)
            assert isinstance(drv, protocol) and drv.name == board
            assert drv.state is BindingState.bound
    for board in ("a", "b"):
        power = target.get_driver(PowerProtocol, name=board, activate=False)
        assert isinstance(power, lab.LabPowerDriver)
        assert power.pdu.name == f"pdu-{board}" and power.board.name == board
    assert isinstance(target.get_driver(ClientProtocol, activate=False), lab.LabClientDriver)
    assert isinstance(target.get_driver(CameraProtocol, activate=False), lab.LabCameraDriver)


def test_strategy_binds_the_boards_by_name(target: Target) -> None:
    strategy = target.get_strategy()
    assert type(strategy).__name__ == "PairStrategy"
    for board in ("a", "b"):
        assert getattr(strategy, f"power_{board}") is target.get_driver(
            PowerProtocol, name=board, activate=False
        )
        assert getattr(strategy, f"board_{board}") is target.get_driver(
            BoardProtocol, name=board, activate=False
        )


def test_cable_pull_and_plug_set_if_admin_status(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LAN: the board's one port; sync: both ports of the sync VLAN, so both ends go dark.
    The commands are recorded instead of sent."""
    sent: list[list[str]] = []
    monkeypatch.setattr(processwrapper, "check_output", lambda cmd, **_: sent.append(cmd))
    cable = target.get_driver(CableProtocol, name="a")  # activates nothing but itself
    assert isinstance(cable, lab.SnmpCableDriver)

    cable.cable(Link.LAN, connected=False)
    cable.cable(Link.SYNC, connected=False)
    cable.cable(Link.SYNC, connected=True)
    cable.cable(Link.LAN, connected=True)

    oid = "1.3.6.1.2.1.2.2.1.7"
    assert [c[-3:] for c in sent] == [
        [f"{oid}.1001", "i", "2"],
        [f"{oid}.1011", "i", "2"],
        [f"{oid}.1012", "i", "2"],
        [f"{oid}.1011", "i", "1"],
        [f"{oid}.1012", "i", "1"],
        [f"{oid}.1001", "i", "1"],
    ]
    for cmd in sent:
        assert os.path.basename(cmd[0]) == "snmpset"
        assert cmd[1:5] == ["-v2c", "-c", "private", "-t"]
        assert cmd[-4] == "udp:203.0.113.2:161"


def test_a_miswired_cable_driver_is_refused_at_load(tmp_path: Path) -> None:
    """A cable driver bound to the other board's LAN port would pull the wrong board."""
    text = ENV_FILE.read_text()
    text = text.replace("../lab/", f"{ENV_FILE.parent.parent}/lab/")
    text = text.replace("{lan: a-lan, sync: a-sync,", "{lan: b-lan, sync: a-sync,")
    assert "{lan: b-lan, sync: a-sync," in text
    path = tmp_path / "miswired.yaml"
    path.write_text(text)
    environment = labgrid.Environment(str(path))
    try:
        with pytest.raises(ValueError, match="lan port b-lan carries b/lan, expected a/lan"):
            environment.get_target(TARGET)
    finally:
        environment.cleanup()


def test_clock_step_runs_date_with_the_board_time_plus_the_step(tmp_path: Path) -> None:
    """The command computes the new time on the board; a stand-in `date` shows the value."""
    fake = tmp_path / "date"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    before = time.time()
    out = subprocess.run(
        lab.SshClockDriver.command(-3600.5), env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "-s" and out[1].startswith("@")
    assert before - 3600.5 <= float(out[1][1:]) <= time.time() - 3600.5


def test_hang_and_camera_cut_scripts_are_valid_shell(target: Target) -> None:
    hang = target.get_driver(HangProtocol, name="a", activate=False)
    argv = hang.command()
    assert "nvr.service" in argv[2] and "kill -STOP" in argv[2]
    camera = target.get_driver(CameraProtocol, activate=False)
    scripts = [argv[2], camera.cut_commands("a", True), camera.cut_commands("b", False)]
    assert "ip saddr 192.0.2.11 drop" in scripts[1]
    assert "add" not in scripts[2]
    for script in scripts:
        subprocess.run(["sh", "-n", "-c", script], check=True)


def test_client_reads_the_vip_over_plain_http() -> None:
    """Against a server on loopback standing in for the VIP."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"path={self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    t = Target("client-test")
    try:
        client = lab.LabClientDriver(t, None, vip_address="127.0.0.1", port=server.server_port)
        t.activate(client)
        assert client.vip("/api/v1/status", timeout=2.0) == b"path=/api/v1/status"
        server.shutdown()
        server.server_close()
        with pytest.raises(OSError):
            client.vip("/api/v1/status", timeout=0.5)
    finally:
        t.cleanup()
        server.shutdown()
        thread.join(5)


# -- the UPS emulator over a pty pair ------------------------------------------------------------


class BoardEnd:
    """The board's side of the UPS line: the master of a pty whose slave the driver opens."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.pending = b""

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)

    def read_until(self, end: bytes, timeout: float = 3.0) -> bytes:
        """Bytes up to and including the first `end`, as the board's driver reads them."""
        deadline = time.monotonic() + timeout
        while end not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {end!r} from the UPS line; got {self.pending!r}")
            if select.select([self.master], [], [], left)[0]:
                self.pending += os.read(self.master, 1024)
        head, _, self.pending = self.pending.partition(end)
        return head + end

    def q1_flags(self) -> str:
        os.write(self.master, b"Q1\r")
        answer = self.read_until(b"\r").decode()
        assert answer.startswith("(") and answer.endswith("\r"), answer
        return answer.split()[-1]


@pytest.fixture
def ups_line() -> Iterator[tuple[BoardEnd, lab.UpsEmulatorDriver]]:
    board = BoardEnd()
    t = Target("ups-test")
    try:
        RawSerialPort(t, "ups-a", port=board.path, speed=2400)
        drv = lab.UpsEmulatorDriver(t, "a")
        t.activate(drv)
        yield board, drv
    finally:
        t.cleanup()
        board.close()


def test_ups_emulator_serves_megatec_on_the_serial_line(
    ups_line: tuple[BoardEnd, lab.UpsEmulatorDriver],
) -> None:
    """What the board reads on its UPS port follows mains() and battery_low() (a Megatec
    unit sends nothing unasked: the board polls Q1)."""
    board, drv = ups_line
    assert isinstance(drv, UpsProtocol)
    assert board.q1_flags()[:2] == "00"  # utility on, battery fine

    drv.mains(False)
    assert board.q1_flags()[:2] == "10"
    drv.battery_low(True)
    assert board.q1_flags()[:2] == "11"
    drv.battery_low(False)
    drv.mains(True)
    assert board.q1_flags()[:2] == "00"

    os.write(board.master, b"I\r")
    assert board.read_until(b"\r").startswith(b"#EMU")
    assert drv.emulator is not None and drv.emulator.commands == ["Q1"] * 4 + ["I"]


def test_ups_driver_stops_its_relay_when_deactivated(
    ups_line: tuple[BoardEnd, lab.UpsEmulatorDriver],
) -> None:
    board, drv = ups_line
    threads = list(drv._threads)
    assert threads and all(t.is_alive() for t in threads)
    drv.target.deactivate(drv)
    assert not any(t.is_alive() for t in threads)
    assert drv.emulator is None
    os.write(board.master, b"Q1\r")
    assert not select.select([board.master], [], [], 0.3)[0], "answered after deactivation"


def test_board_driver_activates_without_the_board_and_reports_it_missing_as_oserror() -> None:
    """A board that is off must not stop its power driver from being activated (the board
    driver is its supplier), and must read as OSError (what PairStrategy catches), not as
    labgrid's bare connect-timeout Exception. SSH goes to a closed port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # closed again when the block ends
    leftovers = set(Path(tempfile.gettempdir()).glob("lg-ssh-*"))
    t = Target("board-test")
    try:
        service = NetworkService(t, "a", address="127.0.0.1", username="root", port=closed_port)
        ssh = SSHDriver(t, "a", connection_timeout=1.0)
        board = lab.LabBoardDriver(t, "a")
        t.activate(board)
        assert ssh.state is BindingState.bound, "activating the board driver connected SSH"
        assert board.networkservice is service
        with pytest.raises(OSError, match=r"ssh to 127\.0\.0\.1"):
            board.api("/api/v1/status", timeout=1.0)
        with pytest.raises(OSError, match=r"ssh to 127\.0\.0\.1"):
            board.audit_log()
        assert ssh.state is BindingState.bound
    finally:
        t.cleanup()
        # labgrid leaves an empty directory behind for every connection attempt that failed.
        for d in set(Path(tempfile.gettempdir()).glob("lg-ssh-*")) - leftovers:
            with contextlib.suppress(OSError):
                d.rmdir()
