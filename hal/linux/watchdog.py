"""The kernel watchdog device (linux/watchdog.h ioctls) and systemd's notify socket."""

from __future__ import annotations

import array
import errno
import fcntl
import os
import struct
import threading
from pathlib import Path

import sdnotify

from hal.errors import DeviceIOError, Unavailable
from hal.watchdog import WatchdogState


def _ioc(direction: int, nr: int, size: int) -> int:
    """_IOC() of asm-generic/ioctl.h (x86, ARM, RISC-V): dir:2 size:14 type:8 nr:8."""
    return (direction << 30) | (size << 16) | (ord("W") << 8) | nr


_READ, _READ_WRITE = 2, 3
WATCHDOG_INFO = struct.Struct("=II32s")  # options, firmware_version, identity
WDIOC_GETSUPPORT = _ioc(_READ, 0, WATCHDOG_INFO.size)
WDIOC_KEEPALIVE = _ioc(_READ, 5, 4)
WDIOC_SETTIMEOUT = _ioc(_READ_WRITE, 6, 4)
WDIOC_GETTIMEOUT = _ioc(_READ, 7, 4)

_GONE = (errno.ENOENT, errno.ENODEV, errno.ENXIO)


class LinuxWatchdog:
    def __init__(self, path: str = "/dev/watchdog") -> None:
        self.path = path
        self._fd: int | None = None
        self._timeout: int | None = None
        self._identity: str | None = None
        self._pings = 0

    def open(self, timeout_seconds: int) -> int:
        """Opening arms the timer at the driver's default; the timeout is set right after.
        Calling it again while open changes the timeout."""
        if timeout_seconds < 1:
            raise ValueError("a watchdog timeout is at least 1 s")
        if self._fd is None:
            self._fd = self._open_device()
            self._identity = self._query_identity()
            self._pings = 0
        try:
            self._timeout = self._set_timeout(timeout_seconds)
        except DeviceIOError:
            self.close()  # a timer whose period is unknown cannot be fed safely
            raise
        return self._timeout

    def _open_device(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in _GONE:
                raise Unavailable(f"{self.path}: no watchdog device") from None
            if e.errno == errno.EBUSY:
                raise Unavailable(
                    f"{self.path}: busy, already held by another process (systemd with "
                    "RuntimeWatchdogSec=, or a watchdog daemon)"
                ) from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise Unavailable(f"{self.path}: permission denied") from None
            raise DeviceIOError(f"{self.path}: cannot open: {e.strerror}") from None

    def _query_identity(self) -> str | None:
        buf = bytearray(WATCHDOG_INFO.size)
        try:
            fcntl.ioctl(self._fd, WDIOC_GETSUPPORT, buf, True)
        except OSError:
            return None
        _, _, ident = WATCHDOG_INFO.unpack(buf)
        return ident.split(b"\0", 1)[0].decode("ascii", "replace").strip() or None

    def _set_timeout(self, seconds: int) -> int:
        """The driver may round or refuse (out of its range, or fixed): what it applied is read
        back either way."""
        buf = array.array("i", [seconds])
        try:
            fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, buf, True)
            return buf[0]
        except OSError:
            pass
        try:
            fcntl.ioctl(self._fd, WDIOC_GETTIMEOUT, buf, True)
            return buf[0]
        except OSError as e:
            raise DeviceIOError(f"{self.path}: cannot set or read the timeout: {e}") from None

    def ping(self) -> None:
        if self._fd is None:
            raise Unavailable(f"{self.path}: not open")
        try:
            fcntl.ioctl(self._fd, WDIOC_KEEPALIVE, array.array("i", [0]), True)
        except OSError:
            try:
                os.write(self._fd, b"\0")  # any write is a ping, for drivers without the ioctl
            except OSError as e:
                raise DeviceIOError(f"{self.path}: ping failed: {e.strerror}") from None
        self._pings += 1

    def close(self) -> None:
        """Disarms, unless the driver is built nowayout: then the board resets after the
        timeout whatever is written."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.write(fd, b"V")
        except OSError as e:
            raise DeviceIOError(f"{self.path}: magic close failed, the board may reset: {e}") from e
        finally:
            os.close(fd)

    def state(self) -> WatchdogState:
        armed = self._fd is not None
        timeout = self._timeout if armed else None
        return WatchdogState(self.path, armed, timeout, self._identity, self._pings)


class SdNotifier:
    """sd_notify through the sdnotify package, which connects to NOTIFY_SOCKET (path or
    '@' abstract name). The message is sent as UTF-8 on its socket: sdnotify's own notify()
    encodes Latin-1 and swallows errors, which would hide a missing service manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._addr: str | None = None
        self._conn: sdnotify.SystemdNotifier | None = None

    def notify(self, message: str) -> bool:
        addr = os.environ.get("NOTIFY_SOCKET")
        if not addr:
            return False
        with self._lock:
            for _ in range(2):  # once more on a fresh connection (socket re-created)
                conn = self._connect(addr)
                if conn is None:
                    return False
                try:
                    conn.socket.sendall(message.encode())
                    return True
                except OSError:
                    self._drop()
            return False

    def _connect(self, addr: str) -> sdnotify.SystemdNotifier | None:
        if self._conn is not None and self._addr == addr:
            return self._conn
        self._drop()
        try:
            self._conn = sdnotify.SystemdNotifier(debug=True)
        except OSError:
            return None
        self._addr = addr
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None and self._conn.socket is not None:
            self._conn.socket.close()
        self._conn = self._addr = None

    def watchdog_interval(self) -> float | None:
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if pid and pid != str(os.getpid()):
            return None  # meant for another process (inherited environment)
        if not usec.isdigit() or int(usec) == 0:
            return None
        return int(usec) / 2 / 1e6


def describe_watchdogs(sys_class: str = "/sys/class/watchdog") -> list[dict]:
    """What the kernel says of each watchdog without opening it (opening would arm it)."""
    out = []
    base = Path(sys_class)
    for dev in sorted(base.iterdir()) if base.is_dir() else []:
        info: dict[str, str | None] = {"device": f"/dev/{dev.name}"}
        for key in ("identity", "state", "timeout", "timeleft", "nowayout", "bootstatus"):
            try:
                info[key] = (dev / key).read_text().strip()
            except OSError:
                info[key] = None
        out.append(info)
    return out
