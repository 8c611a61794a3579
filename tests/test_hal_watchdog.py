"""Watchdogs: the kernel's semantics in the simulation, the Linux device where there is one,
and sd_notify against a real datagram socket standing in for systemd."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import hal.linux.watchdog as linux_watchdog
from hal.errors import DeviceIOError, Unavailable
from hal.linux.watchdog import LinuxWatchdog, SdNotifier
from hal.sim.watchdog import SimNotifier, SimWatchdog

NO_DEVICE = "no /dev/watchdog here (QEMU's i6300esb covers it in the image test)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the contract, on every backend that is here -------------------------------------------


@pytest.fixture(params=["sim", "linux"])
def dog(request) -> Iterator[SimWatchdog | LinuxWatchdog]:
    if request.param == "sim":
        yield SimWatchdog(Clock())
        return
    if not os.path.exists("/dev/watchdog"):
        pytest.skip(NO_DEVICE)
    wd = LinuxWatchdog("/dev/watchdog")
    try:
        yield wd
    finally:
        wd.close()  # 'V' first: a test must never reset the machine it runs on


def test_open_arms_with_the_applied_timeout(dog):
    try:
        applied = dog.open(60)
    except Unavailable as e:
        pytest.skip(f"/dev/watchdog is held by another process (systemd RuntimeWatchdogSec?): {e}")
    assert 1 <= applied <= 600
    st = dog.state()
    assert st.armed and st.timeout_seconds == applied
    assert st.identity  # the driver names itself (i6300esb, ...)
    assert dog.open(applied) == applied  # asking again while open only sets the timeout


def test_ping_and_close(dog):
    try:
        dog.open(60)
    except Unavailable as e:
        pytest.skip(f"/dev/watchdog is held by another process (systemd RuntimeWatchdogSec?): {e}")
    dog.ping()
    dog.ping()
    assert dog.state().pings == 2
    dog.close()
    st = dog.state()
    assert not st.armed and st.timeout_seconds is None
    dog.close()  # twice is harmless
    with pytest.raises(Unavailable):
        dog.ping()


# --- the simulation's kernel semantics ------------------------------------------------------


def test_sim_clamps_the_timeout_to_the_driver_range():
    dog = SimWatchdog(Clock(), min_timeout=2, max_timeout=300)
    assert dog.open(1) == 2
    assert dog.open(10_000) == 300
    assert dog.state().timeout_seconds == 300
    with pytest.raises(ValueError):
        dog.open(0)


def test_sim_ping_restarts_the_countdown_and_silence_resets_the_board():
    clock = Clock()
    dog = SimWatchdog(clock)
    dog.open(30)
    clock.advance(29)
    assert not dog.expired()
    dog.ping()
    clock.advance(29)
    assert not dog.expired()  # 58 s since open, but only 29 since the ping
    clock.advance(1)
    assert dog.expired()
    assert dog.resets == 1
    dog.ping()  # too late to matter
    assert dog.expired() and dog.resets == 1
    dog.reboot()
    assert not dog.expired() and not dog.state().armed and dog.resets == 1


def test_sim_magic_close_disarms_but_a_crash_does_not():
    clock = Clock()
    dog = SimWatchdog(clock)
    dog.open(10)
    dog.close()
    clock.advance(1000)
    assert not dog.expired() and dog.resets == 0

    dog.open(10)
    dog.crash()  # died without writing 'V'
    assert dog.state().armed
    clock.advance(9)
    assert not dog.expired()
    clock.advance(1)
    assert dog.expired() and dog.resets == 1


def test_sim_nowayout_ignores_the_magic_close():
    clock = Clock()
    dog = SimWatchdog(clock, nowayout=True)
    dog.open(10)
    dog.close()
    clock.advance(10)
    assert dog.expired()


def test_sim_busy_device_is_unavailable_with_the_reason():
    dog = SimWatchdog(Clock(), held_by="systemd")
    with pytest.raises(Unavailable, match=r"busy.*systemd"):
        dog.open(30)
    assert not dog.state().armed


# --- Linux without a device ------------------------------------------------------------------


def test_linux_missing_device_is_unavailable(tmp_path):
    dog = LinuxWatchdog(str(tmp_path / "watchdog"))
    with pytest.raises(Unavailable, match="no watchdog device"):
        dog.open(30)
    assert not dog.state().armed
    dog.close()  # nothing to close, nothing raised


def test_linux_busy_device_is_unavailable_with_the_reason(monkeypatch, tmp_path):
    def busy(path, flags, mode=0o777):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)

    monkeypatch.setattr(linux_watchdog.os, "open", busy)
    with pytest.raises(Unavailable, match="busy, already held"):
        LinuxWatchdog(str(tmp_path / "watchdog")).open(30)


def test_linux_not_a_watchdog_is_closed_with_the_magic_and_refused(tmp_path):
    """A file that takes writes but no watchdog ioctls: the timeout cannot be learnt, so the
    device is let go (with 'V') rather than fed blindly."""
    fake = tmp_path / "watchdog"
    fake.write_bytes(b"")
    dog = LinuxWatchdog(str(fake))
    with pytest.raises(DeviceIOError, match="timeout"):
        dog.open(30)
    assert fake.read_bytes() == b"V"
    assert not dog.state().armed


def test_ioctl_numbers_match_linux_watchdog_h():
    """Values of the header's macros on x86-64 and ARM (fixture values, from linux/watchdog.h)."""
    assert linux_watchdog.WDIOC_GETSUPPORT == 0x80285700
    assert linux_watchdog.WDIOC_KEEPALIVE == 0x80045705
    assert linux_watchdog.WDIOC_SETTIMEOUT == 0xC0045706
    assert linux_watchdog.WDIOC_GETTIMEOUT == 0x80045707


# --- sd_notify -------------------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer."""
    d = tempfile.mkdtemp(prefix="nfy", dir="/tmp")
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def manager(request, monkeypatch, short_dir) -> Iterator[socket.socket]:
    """A datagram socket where systemd's would be, NOTIFY_SOCKET pointing at it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        addr = str(short_dir / "notify")
        s.bind(addr)
        monkeypatch.setenv("NOTIFY_SOCKET", addr)
    else:
        name = f"nvr-test-{uuid.uuid4().hex}"
        s.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    s.settimeout(3)
    try:
        yield s
    finally:
        s.close()


def test_notify_reaches_the_service_manager(manager):
    n = SdNotifier()
    assert n.notify("READY=1") is True
    assert n.notify("WATCHDOG=1") is True
    assert n.notify("STATUS=Aufnahme läuft, 5 €") is True
    assert manager.recv(4096) == b"READY=1"
    assert manager.recv(4096) == b"WATCHDOG=1"
    assert manager.recv(4096) == "STATUS=Aufnahme läuft, 5 €".encode()


def test_notify_without_a_service_manager_is_false(monkeypatch, short_dir):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert SdNotifier().notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "nobody"))
    assert SdNotifier().notify("READY=1") is False


def test_notify_after_the_manager_went_away_is_false(monkeypatch, short_dir):
    addr = str(short_dir / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    n = SdNotifier()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(addr)
        assert n.notify("READY=1") is True
        assert s.recv(64) == b"READY=1"
    assert n.notify("WATCHDOG=1") is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert SdNotifier().watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert SdNotifier().watchdog_interval() == pytest.approx(10.0)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert SdNotifier().watchdog_interval() == pytest.approx(10.0)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert SdNotifier().watchdog_interval() is None  # meant for another process


def test_sim_notifier_records_what_was_said():
    n = SimNotifier(watchdog_usec=3_000_000)
    assert n.notify("READY=1") and n.notify("WATCHDOG=1")
    assert n.messages == ["READY=1", "WATCHDOG=1"]
    assert n.watchdog_interval() == pytest.approx(1.5)
    quiet = SimNotifier(listening=False)
    assert quiet.notify("READY=1") is False and quiet.messages == []
    assert quiet.watchdog_interval() is None
