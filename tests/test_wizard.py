"""The first-boot wizard through a pty as an installer types it, asserted on the rendered 80x24
screen (pyte); the files it writes read back with the firmware's own loaders."""

from __future__ import annotations

import io
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pyte
import pytest
from conftest import wait_until

from firmware import adminpw
from firmware.config import load_config
from firmware.paths import done_path, password_path

ROOT = Path(__file__).resolve().parent.parent
FACTORY = ROOT / "rootfs" / "etc" / "nvr" / "nvr.toml"


class Term:
    """The console under a 80x24 VT100, its screen as the installer sees it."""

    def __init__(self, tmp: Path, config: Path | None = None, netns: str | None = None) -> None:
        """`config`: the config the console's commands use (default: the one setup writes);
        `netns`: the console runs inside that network namespace (a rig's board)."""
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        config = config or tmp / "data/etc/nvr/nvr.toml"
        argv = [sys.executable, "-m", "firmware.cli", "console", "--config", str(config),
                "--release", str(tmp / "release"), "--data-root", str(tmp / "data"),
                "--factory", str(FACTORY)]  # fmt: skip
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        env = {**os.environ, "TERM": "vt100"}
        self.child = pexpect.spawn(argv[0], argv[1:], cwd=ROOT, env=env, dimensions=(24, 80))

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait(self, what: str, timeout: float = 20) -> str:
        """Until `what` is on the screen (a deadline, not a sleep)."""
        deadline = time.monotonic() + timeout
        while what not in self.text():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what!r} not on the screen:\n{self.text()}")
            try:
                self.stream.feed(self.child.read_nonblocking(4096, timeout=0.2))
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                if what not in self.text():
                    raise AssertionError(f"ended before {what!r}:\n{self.text()}") from None
        return self.text()

    def answer(self, prompt: str, text: str) -> None:
        self.wait(prompt)
        self.child.send(text + "\r")

    def close(self) -> None:
        """pexpect gives a killed child 0.1 s to be reaped; on a loaded machine it takes longer."""
        try:
            self.child.close(force=True)
        except pexpect.ExceptionPexpect:
            wait_until(lambda: not self.child.isalive(), 10, "the console process to exit")


@pytest.fixture
def term(tmp_path: Path) -> Iterator[Term]:
    t = Term(tmp_path)
    yield t
    t.close()


def through_network(t: Term) -> None:
    t.answer("admin password:", "Install3r")
    t.answer("again:", "Install3r")
    t.answer("board A or B:", "a")
    t.answer("board name:", "\x15north")  # ^U clears the default first
    t.answer("LAN by DHCP or static:", "")
    t.answer("LAN address/prefix:", "192.0.2.11/24")
    t.answer("gateway (empty: none):", "192.0.2.1")
    t.answer("DNS servers (empty: none):", "192.0.2.53")
    t.answer("sync link address:", "")
    t.answer("peer sync address:", "")
    t.answer("virtual IP/prefix:", "192.0.2.10/24")
    t.answer("peer board LAN address:", "192.0.2.12")
    t.answer("NTP servers (empty: image default):", "192.0.2.123 ntp.example.net")


def test_complete_setup_as_typed(term: Term, tmp_path: Path) -> None:
    from hil.camera import CameraSim, StreamSpec

    cam = CameraSim([StreamSpec("cam1", width=640, height=360, fps=25)]).start()
    try:
        through_network(term)
        term.answer("code, join with one, or skip", "")
        term.wait("pairing skipped")
        term.answer("add a camera (y/n):", "")
        term.answer("(url/discover):", "")
        term.answer("camera name:", "door")
        term.answer("RTSP URL (no credentials):", cam.url("cam1"))
        term.answer("username (empty: none):", "viewer")
        term.answer("camera password:", "s3cret-cam")
        screen = term.wait("save camera door (y/n):", 40)
        assert "camera door: h264 640x360 25 fps" in screen and "kbit/s" in screen
        term.child.send("\r")
        term.answer("add a camera (y/n):", "")
        screen = term.wait("apply (y/n):")
        assert "virtual IP 192.0.2.10/24, peer LAN 192.0.2.12" in screen
        assert screen.isascii()  # a plain VT100 shows all of it
        assert "s3cret-cam" not in screen and "viewer:" not in screen  # typed, never shown
        term.child.send("\r")
        term.wait("setup applied")
        term.child.send("Install3r\r")  # the console's login, with the password just set
        term.wait("nvr> ")
    finally:
        cam.close()
    data = tmp_path / "data"
    cfg = load_config(data / "etc/nvr/nvr.toml")
    assert cfg.board.name == "north" and cfg.pair.priority == 150
    assert str(cfg.pair.virtual_ip) == "192.0.2.10/24"
    assert [c.name for c in cfg.camera] == ["door"]
    assert cfg.camera[0].url == cam.url("cam1").replace("rtsp://", "rtsp://viewer:s3cret-cam@")
    assert stat.S_IMODE((data / "etc/nvr/nvr.toml").stat().st_mode) == 0o600
    lan = (data / "etc/systemd/network/10-lan.network").read_text()
    assert "Address=192.0.2.11/24" in lan and "Gateway=192.0.2.1" in lan
    chrony = [f.read_text() for f in (data / "etc/chrony").rglob("*") if f.is_file()]
    assert any("192.0.2.123" in text and "ntp.example.net" in text for text in chrony)
    pw = password_path(data)
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600 and "Install3r" not in pw.read_text()
    assert adminpw.verify(pw.read_text(), "Install3r")


def test_weak_password_refused(term: Term) -> None:
    term.answer("admin password:", "password")
    screen = term.wait("password: at least two kinds")
    assert "again:" not in screen
    term.child.send("\x15Passw0rd\r")
    term.wait("again:")


def test_bad_address_refused_with_the_key(term: Term) -> None:
    term.answer("admin password:", "Install3r")
    term.answer("again:", "Install3r")
    term.answer("board A or B:", "b")
    term.answer("board name:", "")
    term.answer("LAN by DHCP or static:", "\x15static")
    term.answer("LAN address/prefix:", "192.0.2.300/24")
    screen = term.wait("lan.address:")
    assert "peer board LAN address" not in screen


def test_abandoned_wizard_is_forced_again(tmp_path: Path) -> None:
    first = Term(tmp_path)
    first.answer("admin password:", "Install3r")
    first.answer("again:", "Install3r")
    first.answer("board A or B:", "a")
    first.wait("board name:")
    first.child.send("\x15\x04")  # ^U clears the default, ^D on an empty line leaves
    first.wait("it starts again")
    first.child.expect(pexpect.EOF, timeout=10)
    first.close()
    assert first.child.exitstatus == 1
    assert not done_path(tmp_path / "data").exists()
    assert not password_path(tmp_path / "data").exists()
    again = Term(tmp_path)
    try:
        again.wait("step 1/6: admin password")
    finally:
        again.close()


def test_login_after_setup_backs_off_and_never_echoes(tmp_path: Path) -> None:
    from firmware.wizard import login

    data = tmp_path / "data"
    adminpw.save(data, "Install3r")
    now, slept = [0.0], []
    out = io.StringIO()
    inp = io.StringIO("wrong1\nwrong2\nwrong3\nwrong4\nInstall3r\n")

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    events: list[str] = []
    assert login(data, inp, out, lambda: now[0], sleep, audit=events.append)
    assert events == ["console-login-failed"] * 4 + ["console-login"]  # evidence log leaves
    assert slept == [1.0, 2.0]  # free tries, then doubling
    assert out.getvalue().count("wrong password") == 4 and "wrong1" not in out.getvalue()
    assert not login(data, io.StringIO(""), io.StringIO())  # EOF: no console


def test_probe_of_a_dead_camera_is_an_error_without_the_credentials() -> None:
    from firmware.camprobe import ProbeError, probe
    from hil.camera import free_port

    url = f"rtsp://viewer:s3cret-cam@127.0.0.1:{free_port()}/cam1"
    with pytest.raises(ProbeError) as e:
        probe(url, timeout=3)
    assert "s3cret" not in str(e.value) and "viewer" not in str(e.value)


def test_login_backoff_survives_a_console_restart(tmp_path: Path) -> None:
    from firmware.wizard import login

    data, state = tmp_path / "data", tmp_path / "run" / "login"
    state.parent.mkdir()
    adminpw.save(data, "Install3r")
    slept: list[float] = []
    three = io.StringIO("w1\nw2\nw3\n")
    assert not login(data, three, io.StringIO(), lambda: 50.0, slept.append, state)  # then EOF
    again = io.StringIO("w4\nInstall3r\n")
    assert login(data, again, io.StringIO(), lambda: 50.0, slept.append, state)
    # (the clock stands still) the 3rd failure's wait, again after the restart, then the 4th's
    # doubled: the restart gave no fresh free tries
    assert slept == [1.0, 1.0, 2.0]
    assert not state.exists()  # a success clears it


@pytest.mark.parametrize("paired", [True, False])
def test_a_paired_board_keeps_the_pair_s_cameras_an_unpaired_one_replaces_them(
    tmp_path: Path, paired: bool
) -> None:
    """Once paired, the board's config may hold the pair's cameras (from the other board):
    the wizard keeps them, shown without credentials, and adds the answered ones. Unpaired,
    the cameras there are the factory's (first boot copied its config into place): replaced,
    as `nvr setup` does."""
    from firmware.pairkey import make_pair_key

    data = tmp_path / "data"
    own = data / "etc/nvr/nvr.toml"
    own.parent.mkdir(parents=True)
    key = tmp_path / "pair.key"
    if paired:
        make_pair_key(key)
    text = FACTORY.read_text().replace('"/etc/nvr/pair.key"', f'"{key}"')
    assert 'name = "cam1"' in text and "[[camera]]" in text
    own.write_text(
        text.replace('url = "rtsp://192.0.2.31', 'url = "rtsp://op:peer-s3cret@192.0.2.31')
    )
    t = Term(tmp_path)
    try:
        through_network(t)
        t.answer("code, join with one, or skip", "")
        screen = t.wait("add a camera (y/n):")
        assert "peer-s3cret" not in screen
        assert ("kept: cam1 rtsp://***@192.0.2.31" in screen) == paired
        t.child.send("\x15n\r")
        t.answer("apply (y/n):", "")
        t.wait("setup applied")
    finally:
        t.close()
    cfg = load_config(own)
    assert cfg.board.name == "north"
    if paired:
        assert [c.name for c in cfg.camera] == [c.name for c in load_config(FACTORY).camera]
        assert cfg.camera[0].url.startswith("rtsp://op:peer-s3cret@192.0.2.31")
    else:
        assert cfg.camera == []
