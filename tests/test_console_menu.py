"""The console's numbered menu through a pty as an installer types it, asserted on the rendered
80x24 screen (pyte, the Term of tests/test_wizard.py): after the admin password, against a
running single-board firmware on loopback (no [pair]), and for the network change inside a
network namespace the test makes (documentation addresses only)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pyte
import pytest
from conftest import NVR, ROOT
from test_console import FakeRunner, answers, board, console  # noqa: F401 - board is a fixture
from test_netconfirm_rig import NetnsNetworkd, addresses, network_file
from test_wizard import Term

from firmware import adminpw
from firmware.config import load_config
from firmware.consolemenu import MENU_HINT, menu_lines
from firmware.paths import done_path
from firmware.provision import Result
from hil.camera import free_port
from hil.proctree import comm, descendants
from hil.wait import holds, wait_until

PASSWORD = "Install3r"


class MenuTerm(Term):
    """Term on any console command line (Term itself runs the wizard's)."""

    def __init__(self, argv: list[str]) -> None:
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        env = {**os.environ, "TERM": "vt220"}
        self.child = pexpect.spawn(argv[0], argv[1:], cwd=ROOT, env=env, dimensions=(24, 80))

    def until(self, cond, what: str, timeout: float = 20) -> str:
        """Until cond(screen text) holds, reading what the console sends meanwhile."""
        deadline = time.monotonic() + timeout
        while not cond(self.text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not on the screen: {what}\n{self.text()}")
            with contextlib.suppress(pexpect.TIMEOUT):
                self.stream.feed(self.child.read_nonblocking(4096, timeout=0.2))
        return self.text()

    def last(self) -> str:
        """The last line with text on it: the question asked now."""
        return next((r for r in reversed(self.rows()) if r), "")

    def add_camera(self, name: str) -> None:
        """The wizard's camera questions up to the name, by URL (if it offers discovery)."""
        self.answer("add a camera (y/n) [y]:", "")
        self.until(lambda _: self.last().endswith(("camera name:", "[url]:")), "a camera question")
        if self.last().endswith("[url]:"):
            self.type("")  # by URL, the default
        self.answer("camera name:", name)

    def answer(self, prompt: str, text: str) -> None:
        """`text` once `prompt` is the question asked now (the last line), not an earlier one."""
        self.until(lambda _: prompt in self.last(), f"the question {prompt!r}")
        self.type(text)

    def type(self, line: str) -> None:
        self.child.send(line + "\r")

    def rows(self) -> list[str]:
        return [r.rstrip() for r in self.screen.display]

    def login(self) -> str:
        self.answer("admin password:", PASSWORD)
        return self.wait(MENU_HINT)


def set_up_board(tmp: Path, port: int, extra: str = "") -> dict[str, Path]:
    """A data root the wizard has completed, a single-board config on loopback."""
    data = tmp / "data"
    adminpw.save(data, PASSWORD)
    done_path(data).write_bytes(b"")
    (data / "nvr").mkdir()  # the firmware's data directory (it has made it on a board)
    config = data / "etc" / "nvr" / "nvr.toml"
    config.write_text(
        f'# the installer\'s note stays\n[board]\nname = "north"\ndata_dir = "{data / "nvr"}"\n\n'
        f'[api]\nlisten_port = {port}\nlisten_address = "127.0.0.1"\n{extra}'
    )
    release = tmp / "release"
    release.write_text('NAME="nvr-pair"\nVERSION="0.1.0"\nGIT_REVISION=\'3f2c1ab\'\n')
    return {"data": data, "config": config, "release": release, "run": tmp / "run"}


def nvr_console(paths: dict[str, Path]) -> MenuTerm:
    """`nvr console` as systemd runs it on ttyS0."""
    return MenuTerm([*NVR, "console", "--config", str(paths["config"]), "--release",
                     str(paths["release"]), "--data-root", str(paths["data"])])  # fmt: skip


def host_console(paths: dict[str, Path], *extra: str) -> MenuTerm:
    """The same console with its /run, window, runner or shell set (tests/consolehost.py)."""
    return MenuTerm([sys.executable, str(ROOT / "tests" / "consolehost.py"), "--config",
                     str(paths["config"]), "--release", str(paths["release"]), "--data-root",
                     str(paths["data"]), "--run", str(paths["run"]), *extra])  # fmt: skip


@pytest.fixture(scope="module")
def firmware(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """One running single-board firmware (no [pair], loopback only) for the module."""
    import urllib.request

    tmp = tmp_path_factory.mktemp("menu")
    port = free_port()
    paths = set_up_board(tmp, port)
    log = tmp / "nvr.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([*NVR, "run", "--config", str(paths["config"])], cwd=ROOT,
                                stdout=logf, stderr=subprocess.STDOUT)  # fmt: skip

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(answers, 30, "the firmware answers")
        yield {**paths, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def api_status(paths: dict[str, Path]) -> dict:
    import urllib.request

    port = load_config(paths["config"]).api.listen_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=2) as r:
        return json.load(r)


@pytest.fixture
def term(firmware) -> Iterator[MenuTerm]:
    t = nvr_console(firmware)
    yield t
    t.close()


# --- the menu -------------------------------------------------------------------------------


def test_the_menu_after_login_fits_80x24_and_takes_numbers_and_words(term, firmware):
    screen = term.login()
    assert screen.isascii()
    rows = term.rows()
    for line in menu_lines():  # every entry on the one screen, none cut
        assert line in rows, f"{line!r} not on the screen:\n{screen}"
    assert "nvr-pair console" in screen and "version: 0.1.0" in screen
    term.type("42")
    term.wait("no entry 42: the entries are 0 to 15")
    term.type("frobnicate")
    term.wait("unknown command: frobnicate (a menu number, or type help)")
    term.type("")  # Enter on an empty line: the screen anew, the menu on it
    term.until(lambda t: MENU_HINT in t and "frobnicate" not in t, "the menu on a cleared screen")
    assert term.rows()[0] == "nvr-pair console"
    term.type("1")  # status, from the running firmware
    screen = term.wait("data disk:")
    assert "board north single  version" in screen
    term.type("help")
    screen = term.wait("14  shell")
    assert " 1  status [--json]" in screen and "release" in screen
    term.type("0")
    term.child.expect(pexpect.EOF, timeout=10)
    term.child.close()
    assert term.child.exitstatus == 0


def test_cameras_add_refuses_a_bad_one_by_its_key_and_remove_edits_the_config(term, firmware):
    term.login()
    term.type("2")
    term.answer("a) add  r) remove  Enter) back:", "a")
    term.add_camera("door")
    term.answer("RTSP URL (no credentials):", "http://192.0.2.31/door")
    term.wait("camera.url: must be an rtsp://")  # refused by its key, asked again
    url = f"rtsp://127.0.0.1:{free_port()}/door"  # nothing listens: probed, not seen
    term.type(url)
    term.answer("username (empty: none):", "viewer")
    term.answer("camera password:", "s3cret-cam")
    term.answer("save camera door (y/n) [n]:", "y")
    term.answer("add a camera (y/n) [n]:", "")
    screen = term.wait("cameras: added door")
    assert "s3cret-cam" not in screen  # typed, never shown
    cfg = load_config(firmware["config"])
    assert [(c.name, c.url) for c in cfg.camera] == [
        ("door", url.replace("rtsp://", "rtsp://viewer:s3cret-cam@"))
    ]
    text = firmware["config"].read_text()
    assert text.startswith("# the installer's note stays\n")  # edited, not rewritten
    assert oct(firmware["config"].stat().st_mode & 0o777) == "0o600"

    # The firmware takes the edit up by itself; the list shows the camera's state from it.
    wait_until(lambda: "door" in [c["name"] for c in api_status(firmware)["cameras"]], 20,
               "the firmware took the edited config up")  # fmt: skip
    term.type("cameras")
    term.until(lambda t: "door: NOT recording  rtsp://***@127.0.0.1" in t, "door and its state")
    term.type("")
    term.type("cameras add")  # the same name again: refused with its key, nothing written
    term.add_camera("door")
    term.answer("RTSP URL (no credentials):", url)
    term.answer("username (empty: none):", "")
    term.answer("save camera door (y/n) [n]:", "y")
    term.answer("add a camera (y/n) [n]:", "")
    term.wait("camera.name: 'door' is configured already; nothing added")
    assert len(load_config(firmware["config"]).camera) == 1
    term.type("cameras remove door")
    term.answer("remove camera door from the config? (y/n)", "y")
    term.wait("cameras: removed door")
    assert not load_config(firmware["config"]).camera
    events = [json.loads(ln)["event"] for ln in (firmware["data"] / "nvr" / "audit.log")
              .read_text().splitlines()]  # fmt: skip
    assert "camera-added" in events and "camera-removed" in events


def test_the_api_token_is_shown_only_on_request_and_cleared_after(term, firmware):
    secret = (firmware["data"] / "nvr" / "api.token").read_text().strip()
    term.login()
    term.type("8")
    screen = term.wait("s) show it  r) rotate it  Enter) back:")
    assert "this board's token file" in screen and secret not in screen
    term.type("s")
    screen = term.wait("Enter clears the screen")
    assert f"API token: {secret}" in screen
    term.type("")
    term.until(lambda t: secret not in t and "nvr> " in t, "the token off the screen")
    term.type("7")  # the audit log says it was shown, never what
    screen = term.wait("api-token-shown")
    assert secret not in screen


# --- root shell (its back-off under the test's own /run) ------------------------------------


def test_the_root_shell_needs_the_admin_password_again(tmp_path):
    paths = set_up_board(tmp_path, free_port())
    t = host_console(paths)
    try:
        t.login()
        t.type("14")
        t.answer("admin password:", "wrong-Passw0rd")
        screen = t.wait("no shell")
        assert "wrong password" in screen
        assert "wrong-Passw0rd" not in screen  # no echo
        assert (paths["run"] / "nvr-console-login").read_text().split()[0] == "1"
        t.type("shell")
        t.answer("admin password:", PASSWORD)
        t.wait("root shell: exit (or Ctrl-D) comes back to the console")
        t.type("echo marker-$((6*7))")
        t.wait("marker-42")  # the shell computed it: it runs
        t.type("sleep 30")
        # Ctrl-C once the sleep runs (sent while bash forks it, it races bash's job control)
        wait_until(lambda: "sleep" in [comm(p) for p in descendants(t.child.pid)], 10,
                   "the sleep running")  # fmt: skip
        t.child.sendcontrol("c")  # Ctrl-C is the shell's: it stops the sleep, not the shell
        wait_until(lambda: "sleep" not in [comm(p) for p in descendants(t.child.pid)], 10,
                   "the sleep stopped")  # fmt: skip
        t.type("echo after-$((2*3))")
        t.wait("after-6")
        t.type("exit")
        t.wait("root shell ended (status 0)")
        t.type("release")
        t.wait('NAME="nvr-pair"')  # the console goes on
        assert not (paths["run"] / "nvr-console-login").exists()  # a success clears it
    finally:
        t.close()
    audit = (paths["data"] / "nvr" / "audit.log").read_text().splitlines()
    events = [json.loads(ln)["event"] for ln in audit]
    assert events == ["console-shell-refused", "console-shell"]


# --- network: commit confirmed, in a namespace ----------------------------------------------


def test_a_network_change_not_confirmed_rolls_back_and_a_confirmed_one_stays(lan_ns, tmp_path):
    paths = set_up_board(tmp_path, free_port())
    lan = paths["data"] / "etc" / "systemd" / "network" / "10-lan.network"
    lan.parent.mkdir(parents=True)
    lan.write_bytes(network_file("192.0.2.11/24"))
    NetnsNetworkd(lan_ns, lan.parent)(["networkctl", "reconfigure", "eth0"])
    assert addresses(lan_ns) == {"192.0.2.11/24"}
    t = host_console(paths, "--netns", lan_ns, "--window", "2")

    def change_to(address: str) -> None:
        t.answer("c) change  y) confirm the pending change  Enter) back:", "c")
        t.answer("LAN by DHCP or static (empty: back):", "static")
        t.answer("LAN address/prefix:", address)

    try:
        t.login()
        t.type("3")
        screen = t.wait("no change pending")
        assert "LAN eth0: Address=192.0.2.11/24" in screen
        change_to("192.0.2.300/24")
        t.wait("lan.address:")  # refused by its key, asked again
        t.type("192.0.2.99/24")
        t.answer("gateway (empty: none):", "")
        t.answer("DNS servers (empty: none):", "")
        t.answer("it rolls back in 2 s unless confirmed (y/n)", "y")
        t.wait("network: confirm within 2 s")
        assert addresses(lan_ns) == {"192.0.2.99/24"}
        t.wait("network: not confirmed in time: the previous settings are back", 15)
        assert addresses(lan_ns) == {"192.0.2.11/24"}
        assert lan.read_bytes() == network_file("192.0.2.11/24")
        t.type("3")
        t.wait("was not confirmed and was rolled back")
        change_to("192.0.2.98/24")
        t.answer("gateway (empty: none):", "192.0.2.1")
        t.answer("DNS servers (empty: none):", "")
        t.answer("it rolls back in 2 s unless confirmed (y/n)", "y")
        t.wait("network: confirm within 2 s")
        t.type("network confirm")
        t.wait("network: change confirmed")
        holds(lambda: addresses(lan_ns) == {"192.0.2.98/24"}, 3, "the confirmed address stays")
        assert b"Gateway=192.0.2.1" in lan.read_bytes()
    finally:
        t.close()


# --- in-process: logs, audit, diagnostics, status extras ------------------------------------


def test_logs_are_the_journal_of_the_service_paged_to_the_screen(board):  # noqa: F811
    journal = "".join(f"2026-01-01T00:00:{i:02d} nvr[1]: line {i} \x1b[31mred\n" for i in range(30))
    runner = FakeRunner({"journalctl": Result(0, journal)})
    code, out, runner = console(board, "logs 30\n\nlogs 30\nq\nlogs x\n", runner)
    assert code == 0
    assert runner.calls[0] == ["journalctl", "-u", "nvr.service", "-n", "30", "--no-pager", "-o",
                               "short-iso"]  # fmt: skip
    whole, stopped, usage, _ = answers(out)
    assert "line 0 ?[31mred" in whole  # plain ASCII: the escape is not sent to the terminal
    assert whole.count("-- more: Enter, q stops --") == 1 and "line 29 " in whole
    assert "line 21 " in stopped and "line 22 " not in stopped  # a screenful, then q
    assert usage.startswith("usage: logs [LINES]")


def test_the_audit_log_is_shown_one_event_a_line(board):  # noqa: F811
    log = board["data"] / "nvr" / "audit.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        '{"event": "alert-raised", "id": "disk-full", "time": "2026-01-01T00:00:00.000Z"}\n'
        "not json\n"
    )
    code, out, _ = console(board, "7\naudit 1\n")
    assert code == 0
    both, last, _ = answers(out)
    assert both.splitlines() == ["2026-01-01T00:00:00.000Z alert-raised id=disk-full", "not json"]
    assert last == "not json\n"


def test_status_adds_mirror_lag_and_the_ups(board):  # noqa: F811
    from firmware.consolemenu import more_status_lines

    st = {"mirror_lag_seconds": 0.42, "hardware": {"ups": {"reading": {
        "on_battery": True, "low_battery": False, "battery_charge_percent": 87.0}}}}  # fmt: skip
    assert more_status_lines(st) == ["mirror lag: 0.4 s", "UPS: ON BATTERY, charge 87 %"]
    st = {"hardware": {"ups": {"reading": None, "error": "no answer on /dev/ttyUSB0"}}}
    assert more_status_lines(st) == ["UPS: no reading (no answer on /dev/ttyUSB0)"]
    assert more_status_lines({"hardware": {"ups": None}}) == []


def test_diagnostics_is_nvr_hw_and_a_wrong_device_is_named(board):  # noqa: F811
    code, out, _ = console(board, "hw watchdog\nhw toaster\n9\n4\n")
    assert code == 0
    wd, wrong, picked, _ = answers(out)
    cli = subprocess.run([*NVR, "hw", "watchdog", "--config", str(board["config"])], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert wd == cli.stdout + cli.stderr and wd  # the reading `nvr hw watchdog` gives
    assert wrong == "usage: hw DEVICE  (one of ups, disks, nics, watchdog, panel)\n"
    pick = "1) ups  2) disks  3) nics  4) watchdog  5) panel  Enter) back: "
    assert picked == pick + wd


def test_the_numbers_run_the_board_commands(board):  # noqa: F811
    runner = FakeRunner({"systemctl": Result(0, "")})
    code, out, runner = console(board, "12\n13\n10\n11\nmaybe\n5\n4\n0\nhelp\n", runner)
    assert code == 0
    reboot, poweroff, update, reset, handover, pair, after_exit = answers(out)
    assert (reboot, poweroff) == ("rebooting\n", "powering off\n")
    assert runner.calls == [["systemctl", "reboot"], ["systemctl", "poweroff"]]
    assert update.startswith("update failed: no USB stick labelled NVR-UPDATE")
    assert reset == "keep footage? [yes/no] factory-reset: cancelled (answer yes or no)\n"
    assert handover == "handover: no [pair] in the config: nothing to hand over\n"
    assert pair.startswith("pair: no [pair] in the config (a single board)")
    assert after_exit == ""  # 0 left the console: `help` was never read


def test_the_token_rotates_where_it_is_a_file_and_never_shows_unasked(board):  # noqa: F811
    token_file = board["data"] / "nvr" / "api.token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("old-token-" + "x" * 40 + "\n")
    runner = FakeRunner({("systemctl", "restart"): Result(0, "")})
    code, out, runner = console(board, "token\n\ntoken rotate\nyes\ntoken show\n\n", runner)
    assert code == 0
    asked, rotated, shown, _ = answers(out)
    where = f"API token: this board's token file {token_file}\n"
    assert asked == where + "s) show it  r) rotate it  Enter) back: "
    new = token_file.read_text().strip()
    assert new != "old-token-" + "x" * 40 and len(new) >= 43
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert runner.calls == [["systemctl", "restart", "nvr.service"]]  # it reads it at start
    assert new not in asked + rotated and new in shown
    events = [json.loads(ln)["event"] for ln in (board["data"] / "nvr" / "audit.log").read_text()
              .splitlines()]  # fmt: skip
    assert events == ["api-token-rotated", "api-token-shown"]


def test_a_pairs_derived_token_is_not_rotated_here(board, tmp_path):  # noqa: F811
    key = tmp_path / "pair.key"
    key.write_text("k" * 64 + "\n")
    board["config"].write_text(
        board["config"].read_text()
        + f'\n[pair]\npeer_lan_address = "192.0.2.12"\npeer_sync_address = "198.51.100.2"\n'
        f'virtual_ip = "192.0.2.100/24"\nkey_file = "{key}"\n'
    )
    _, out, runner = console(board, "token rotate\n")
    assert "derived from the pair key: pair anew" in answers(out)[0]
    assert runner.calls == []
