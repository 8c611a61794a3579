"""The wizard's go-live step: which services it touches for which files, and that it waits
until the restarted firmware answers (a real HTTP server on loopback stands in for it): a
running firmware restarts in its process, and the old board's answers do not count."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from firmware.golive import DATA_OWNER, GoLive
from firmware.provision import Result
from firmware.setupfiles import Layout


class Status(http.server.BaseHTTPRequestHandler):
    uptimes: ClassVar[list[float]] = []
    """The firmware's uptime in each answer, first to last (the last repeats); none: 0."""
    asked = 0

    def do_GET(self) -> None:
        cls = type(self)
        up = cls.uptimes[min(cls.asked, len(cls.uptimes) - 1)] if cls.uptimes else 0.0
        cls.asked += 1
        body = json.dumps({"role": "single", "uptime_seconds": up}).encode()
        self.send_response(200 if self.path == "/api/v1/status" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def firmware_port() -> Iterator[int]:
    Status.uptimes, Status.asked = [], 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Status)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


class Runner:
    def __init__(self, fail: str | None = None, states: Sequence[str] = ("active",)) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail
        self.states = list(states)
        """What `systemctl is-active` says, one after the other (the last repeats)."""

    def __call__(self, argv: Sequence[str], on_line=None) -> Result:
        self.calls.append(list(argv))
        if argv[:2] == ["systemctl", "is-active"]:
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return Result(0 if state == "active" else 3, state + "\n")
        if self.fail and self.fail in argv:
            return Result(1, "Failed to reload network settings: Access denied\n")
        return Result(0, "")


def _layout(tmp_path: Path, port: int) -> tuple[Layout, Path]:
    layout = Layout(tmp_path / "data")
    layout.config.parent.mkdir(parents=True)
    layout.config.write_text(
        f'[board]\nname = "a"\ndata_dir = "{tmp_path}/rec"\n\n[network]\n'
        f'lan_interface = "lan0"\nsync_interface = "sync0"\n\n[api]\nlisten_port = {port}\n'
    )
    return layout, layout.config


def test_network_files_reload_networkd_then_the_firmware_restarts_and_answers(
    tmp_path: Path, firmware_port: int
) -> None:
    layout, config = _layout(tmp_path, firmware_port)
    run = Runner()
    changed = [layout.network_dir / "20-sync.network", config]
    assert GoLive(layout, config, runner=run)(changed) is None
    assert run.calls == [
        ["networkctl", "reload"],
        ["networkctl", "reconfigure", "lan0"],
        ["networkctl", "reconfigure", "sync0"],
        *RESTART_IN_PROCESS,
    ]


RESTART_IN_PROCESS = [
    ["systemctl", "is-active", "nvr.service"],
    [str(DATA_OWNER)],
    ["systemctl", "kill", "--kill-who=main", "--signal=SIGUSR1", "nvr.service"],
]


def test_the_old_board_s_answers_do_not_count_until_the_restart(
    tmp_path: Path, firmware_port: int
) -> None:
    """Signalled, the old board answers on until its restart has stopped it: only an answer
    from a board younger than the signal is the restarted firmware."""
    layout, config = _layout(tmp_path, firmware_port)
    clock = [100.0]
    Status.uptimes = [3600.0, 3600.5, 3601.0, 0.2]
    live = GoLive(layout, config, runner=Runner(), clock=lambda: clock[0],
                  sleep=lambda s: clock.__setitem__(0, clock[0] + s))  # fmt: skip
    assert live([config]) is None
    assert Status.asked == 4


def test_a_firmware_that_is_not_running_is_started_by_systemd(
    tmp_path: Path, firmware_port: int
) -> None:
    layout, config = _layout(tmp_path, firmware_port)
    run = Runner(states=["failed"])
    assert GoLive(layout, config, runner=run)([config]) is None
    assert run.calls == [["systemctl", "is-active", "nvr.service"],
                         ["systemctl", "restart", "nvr.service"]]  # fmt: skip


def test_a_firmware_still_starting_is_waited_for_and_restarted_in_its_process(
    tmp_path: Path, firmware_port: int
) -> None:
    """At first boot the firmware starts beside the console's wizard (firmware/firstcpu.py): the
    setup waits for it to be up rather than start it over."""
    layout, config = _layout(tmp_path, firmware_port)
    run = Runner(states=["activating", "activating", "active"])
    clock = [0.0]
    live = GoLive(layout, config, runner=run, clock=lambda: clock[0],
                  sleep=lambda s: clock.__setitem__(0, clock[0] + s))  # fmt: skip
    assert live([config]) is None
    assert run.calls == [["systemctl", "is-active", "nvr.service"]] * 2 + RESTART_IN_PROCESS


def test_chrony_files_reload_chrony_and_nothing_touches_networkd(
    tmp_path: Path, firmware_port: int
) -> None:
    layout, config = _layout(tmp_path, firmware_port)
    run = Runner()
    assert GoLive(layout, config, runner=run)([layout.chrony_dir / "sources.d/nvr.sources"]) is None
    assert ["systemctl", "try-reload-or-restart", "chrony.service"] in run.calls
    assert not any(c[0] == "networkctl" for c in run.calls)


def test_a_failing_step_is_named_and_the_firmware_is_not_restarted(tmp_path: Path) -> None:
    layout, config = _layout(tmp_path, 1)
    run = Runner(fail="reload")
    why = GoLive(layout, config, runner=run)([layout.network_dir / "10-lan.network"])
    assert why is not None and why.startswith("networkctl reload: ") and "Access denied" in why
    assert not any(c[0] == "systemctl" for c in run.calls)


def test_a_firmware_that_never_answers_is_reported_after_the_deadline(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    layout, config = _layout(tmp_path, port)
    clock = [0.0]
    live = GoLive(layout, config, runner=Runner(), answer_s=5.0, clock=lambda: clock[0],
                  sleep=lambda s: clock.__setitem__(0, clock[0] + s))  # fmt: skip
    why = live([config])
    assert why is not None and "did not answer within 5 s" in why
    assert clock[0] >= 5.0
