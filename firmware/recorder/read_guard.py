"""A camera read that never returns, caught without taking the GIL on every socket poll.

PyAV's read timeout (`av.open(..., timeout=(open, read))`) is checked by an interrupt callback
that FFmpeg calls on every poll of the socket, and that callback takes the GIL each time:
thousands of times a second per camera, and the cameras of one process contend for it. With no
read timeout PyAV's callback returns at once, without the GIL. Reads are then guarded by:

- FFmpeg's own socket I/O timeout (the RTSP demuxer's `timeout` option, µs; FFmpeg 5 and later):
  a camera that goes silent ends the read inside FFmpeg. The demux then ends as if the stream
  ended; the ingest tells a stall from an end by the time since its last packet.
- This module's watchdog, one thread per process, a few times a second: a read pending longer
  than it should (a camera that keeps the socket busy with RTCP or keep-alives but sends no
  media never lets the socket time out, and FFmpeg's av_read_frame never returns) gets PyAV's
  own read timeout armed for it. PyAV then ends that read at its start plus the stall time,
  exactly as a read timeout given to av.open would, and the ingest disarms it again at the next
  packet. Only a camera whose reads are slow pays for the callback's GIL. FFmpeg's RTSP
  demuxer reports an interrupted read as the end of the stream, after handing out the frame its
  parser still held; the ingest counts either as a stall by the read's duration (`overdue`).

Arming writes the timeout field of the container's interrupt-callback record (PyAV's
`timeout_info`, two doubles right after `open_timeout` and `read_timeout` in the container
object). Its place is found once per process on a container opened from memory and checked
again on every container against what PyAV exposes (the `open_timeout` and `read_timeout`
objects, the timeout PyAV set after the open, the open's start time). Where a PyAV build does
not match, `supported()` is False and the ingest falls back to PyAV's read timeout.
"""

from __future__ import annotations

import ctypes
import io
import logging
import threading
import time
import wave
import weakref

import av

from firmware.supervise import Failure, keep_running

log = logging.getLogger(__name__)

PERIOD_S = 0.25
"""How often the watchdog looks at the pending reads."""

_WORD = ctypes.sizeof(ctypes.c_void_p)
_UNSET = -1.0
"""PyAV's `timeout_info.timeout` for "no timeout": its callback then returns without the GIL."""

_offset: int | None = None
"""Where `open_timeout` sits in an InputContainer (bytes from the object's start)."""
_probed = False
_probe_lock = threading.Lock()


def _word(addr: int) -> int:
    return ctypes.c_size_t.from_address(addr).value


def _double(addr: int) -> ctypes.c_double:
    return ctypes.c_double.from_address(addr)


def _find(container: av.container.InputContainer, opened_from: float, opened_by: float) -> int:
    """The offset of `open_timeout` in this container, checked; -1 if none fits."""
    base = id(container)
    size = type(container).__basicsize__
    want = id(container.open_timeout)
    for off in range(2 * _WORD, size - 4 * _WORD + 1, _WORD):
        if _word(base + off) == want and _fits(container, off, opened_from, opened_by):
            return off
    return -1


def _fits(container: object, off: int, opened_from: float, opened_by: float) -> bool:
    base = id(container)
    read_timeout = getattr(container, "read_timeout", _fits)
    if _word(base + off) != id(getattr(container, "open_timeout", None)):
        return False
    if read_timeout is not None or _word(base + off + _WORD) != id(None):
        return False
    start = _double(base + off + 2 * _WORD).value
    timeout = _double(base + off + 3 * _WORD).value
    return timeout == _UNSET and opened_from <= start <= opened_by


def _probe() -> int | None:
    """Open a tiny input from memory the way the ingest opens a camera, and find the record."""
    data = io.BytesIO()
    with wave.open(data, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(160))
    data.seek(0)
    opened_from = time.monotonic()
    # A float object of its own: its address names the field.
    container = av.open(data, timeout=(float("30.5"), None))
    opened_by = time.monotonic()
    try:
        off = _find(container, opened_from, opened_by)
    finally:
        container.close()
    return off if off >= 0 else None


def supported() -> bool:
    """This PyAV's container layout is the one the watchdog knows (found once per process)."""
    global _offset, _probed
    with _probe_lock:
        if not _probed:
            try:
                _offset = _probe()
            except Exception as e:  # no offset: the ingest uses PyAV's read timeout
                log.warning("read guard: cannot check PyAV's container layout: %s", e)
                _offset = None
            _probed = True
            if _offset is None:
                log.warning("read guard: PyAV's container layout is not the known one; reads "
                            "fall back to PyAV's read timeout")  # fmt: skip
        return _offset is not None


class ReadGuard:
    """One camera session's container, watched: `armed` while PyAV's read timeout is on."""

    def __init__(self, container: av.container.InputContainer, stall_s: float) -> None:
        assert _offset is not None
        self._container = container  # holds the object (and its record) alive while watched
        base = id(container) + _offset
        self._start = _double(base + 2 * _WORD)
        self._timeout = _double(base + 3 * _WORD)
        self.stall_s = float(stall_s)
        self.arm_after_s = max(PERIOD_S, min(1.0, self.stall_s / 2))
        """A read pending this long gets the read timeout (it still ends at start + stall)."""
        self.armed = False
        self.fired = 0
        """Times this guard armed PyAV's timeout (a test's and a log's figure)."""

    def overdue(self, now: float) -> bool:
        """The pending read has run for the stall time: PyAV's timeout ended it (or will at
        its next poll)."""
        return self.armed and now - self._start.value >= self.stall_s

    def read_returned(self, now: float) -> bool:
        """A packet came, with the guard armed. Quick: the callback goes back to not taking the
        GIL; False. Overdue (True): the timeout ended the read and the packet is one FFmpeg
        still held (its parser's last frame); the timeout stays on at zero, so PyAV ends the
        next read at its first poll: the session ends now, not a stall time later."""
        if self.overdue(now):
            self._timeout.value = 0.0
            return True
        self.armed = False
        self._timeout.value = _UNSET
        return False

    def check(self, now: float) -> None:
        """From the watchdog thread: arm the timeout of a read pending too long."""
        if self.armed:
            return
        started = self._start.value
        if now - started >= self.arm_after_s:
            self.armed = True
            self.fired += 1
            self._timeout.value = self.stall_s

    def close(self) -> None:
        _watchdog.forget(self)


def watch(container: av.container.InputContainer, stall_s: float, opened_from: float,
          opened_by: float) -> ReadGuard | None:  # fmt: skip
    """Guard this container's reads (opened with no PyAV read timeout between opened_from and
    opened_by, monotonic); None if it does not look as PyAV's containers did at the probe."""
    if _offset is None or not _fits(container, _offset, opened_from, opened_by):
        return None
    guard = ReadGuard(container, stall_s)
    _watchdog.add(guard)
    return guard


class _Watchdog:
    """One thread per process, under keep_running: started with the first guard, so a
    session run outside a worker (a probe, a test) is guarded the same way."""

    def __init__(self) -> None:
        self._guards: weakref.WeakSet[ReadGuard] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.on_failure: Failure = lambda what, e: None  # keep_running has logged it

    def add(self, guard: ReadGuard) -> None:
        with self._lock:
            self._guards.add(guard)
            if self._thread is None or not self._thread.is_alive():
                args = ("the read guard's watchdog", self._run, threading.Event(), self._failed)
                self._thread = threading.Thread(
                    target=keep_running, args=args, name="read-guard", daemon=True
                )
                self._thread.start()

    def forget(self, guard: ReadGuard) -> None:
        with self._lock:
            self._guards.discard(guard)

    def _failed(self, what: str, e: Exception) -> None:
        self.on_failure(what, e)

    def _run(self) -> None:
        """Never returns: a guard whose check fails is reported and looked at again next
        round (a dead watchdog would leave every overdue read of this process unguarded)."""
        while True:
            time.sleep(PERIOD_S)
            with self._lock:
                guards = list(self._guards)
            now = time.monotonic()
            for g in guards:
                try:
                    g.check(now)
                except Exception as e:
                    log.exception("read guard: checking a camera's read failed")
                    self._failed("the read guard's check of a camera", e)


def report_failures(on_failure: Failure) -> None:
    """Where this process's watchdog reports a failure (the worker's task-failed alert)."""
    _watchdog.on_failure = on_failure


_watchdog = _Watchdog()
