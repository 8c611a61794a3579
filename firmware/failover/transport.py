"""The advert paths: UDP on the LAN and on the sync link, and an optional serial crosslink.

Each path only moves bytes; decoding and the election happen in the daemon. A path that
cannot be opened or fails to send is counted and reported, never fatal: the other paths carry
the adverts, which is why there are several.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import serial

from firmware.failover.advert import MAGIC, WIRE_SIZE
from firmware.supervise import Failure, keep_running

log = logging.getLogger(__name__)

Deliver = Callable[[bytes, str], None]
"""deliver(datagram, path name), called on the event loop."""

DSCP_CS6 = 0xC0
"""Network control class, as VRRP uses, so a busy LAN queues adverts ahead of video."""

TC_PRIO_INTERACTIVE = 6
"""The socket priority the board's own default queue (pfifo_fast) sends first; setting
IP_TOS alone maps CS6 to best effort there, so adverts would wait behind the mirror's bulk
transfer on a busy sync link. 6 is the highest an unprivileged socket may set."""


@dataclass
class PathStats:
    tx: int = 0
    tx_errors: int = 0
    rx: int = 0
    last_error: str | None = None

    def to_json(self, is_open: bool) -> dict:
        return {
            "open": is_open,
            "tx": self.tx,
            "tx_errors": self.tx_errors,
            "rx": self.rx,
            "last_error": self.last_error,
        }


class UdpPath(asyncio.DatagramProtocol):
    """Unicast adverts to the peer on one interface; the socket is bound to that interface
    so the path a datagram came in on is known, and a pulled cable silences only this path."""

    def __init__(self, name: str, ifname: str, peer: str, port: int, deliver: Deliver) -> None:
        self.name, self.ifname, self.peer, self.port = name, ifname, peer, port
        self.deliver = deliver
        self.stats = PathStats()
        self.transport: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(self.peer).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_CS6)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, DSCP_CS6)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, TC_PRIO_INTERACTIVE)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.stats.rx += 1
        self.deliver(data, self.name)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from an earlier send: the peer or its cable is gone on this path.
        self.stats.tx_errors += 1
        self.stats.last_error = str(exc)

    def send(self, data: bytes) -> None:
        if self.transport is None:
            return
        try:
            self.transport.sendto(data, (self.peer, self.port))
            self.stats.tx += 1
        except OSError as e:
            self.stats.tx_errors += 1
            self.stats.last_error = str(e)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def split_frames(buf: bytes, valid: Callable[[bytes], bool]) -> tuple[list[bytes], bytes, int]:
    """Cut a serial byte stream into adverts: fixed size, starting with MAGIC. A candidate
    that fails `valid` (garbled, or a MAGIC inside noise) costs one byte, so a real frame
    right after noise is still found. Returns (frames, the unconsumed tail, bytes skipped)."""
    frames: list[bytes] = []
    skipped = 0
    i = 0
    while True:
        j = buf.find(MAGIC, i)
        if j < 0:
            # Keep a possible MAGIC prefix at the very end for the next read.
            keep = max(i, len(buf) - (len(MAGIC) - 1))
            skipped += keep - i
            return frames, buf[keep:], skipped
        skipped += j - i
        if len(buf) - j < WIRE_SIZE:
            return frames, buf[j:], skipped
        candidate = buf[j : j + WIRE_SIZE]
        if valid(candidate):
            frames.append(candidate)
            i = j + WIRE_SIZE
        else:
            skipped += 1
            i = j + 1


class SerialPath:
    """The crosslink: a null-modem cable between the boards' spare UARTs (pyserial)."""

    name = "serial"

    def __init__(
        self, port: str, baud: int, deliver: Deliver, valid: Callable[[bytes], bool],
        failed: Failure = lambda what, e: None,
    ) -> None:  # fmt: skip
        """failed(what, error): the crosslink broke (unplugged USB adapter, UART error); it
        is opened again a second later."""
        self.port, self.baud = port, baud
        self.deliver, self.valid, self.failed = deliver, valid, failed
        self.stats = PathStats()
        self.skipped_bytes = 0
        self._serial: serial.Serial | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._serial = self._open_port()
        args = (f"serial crosslink {self.port}", self._read, self._stop, self.failed)
        self._thread = threading.Thread(target=keep_running, args=args, name="nvr-serial",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _open_port(self) -> serial.Serial:
        # write_timeout: a stuck UART must not stall the election's event loop.
        return serial.serial_for_url(self.port, baudrate=self.baud, timeout=0.05,
                                     write_timeout=0.05)  # fmt: skip

    @property
    def is_open(self) -> bool:
        return self._serial is not None and not self._stop.is_set()

    def _read(self) -> None:
        """Frames to the loop until stopped; a port error closes the port and raises, and
        keep_running reports it and comes back here, which opens the port again."""
        assert self._loop is not None
        if self._serial is None:
            self._serial = self._open_port()
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = self._serial.read(WIRE_SIZE)
            except (serial.SerialException, OSError) as e:
                self.stats.last_error = str(e)
                port, self._serial = self._serial, None
                with contextlib.suppress(serial.SerialException, OSError):
                    port.close()
                raise
            if not chunk:
                continue
            frames, buf, skipped = split_frames(buf + chunk, self.valid)
            self.skipped_bytes += skipped
            for frame in frames:
                self.stats.rx += 1
                self._loop.call_soon_threadsafe(self.deliver, frame, self.name)

    def send(self, data: bytes) -> None:
        port = self._serial
        if port is None:
            return
        try:
            port.write(data)
            self.stats.tx += 1
        except (serial.SerialException, OSError) as e:
            self.stats.tx_errors += 1
            self.stats.last_error = str(e)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._serial.close()
