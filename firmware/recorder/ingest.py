"""One camera's ingest: RTSP/TCP in (the built-in client, or FFmpeg's demuxer through PyAV),
crash-safe fMP4 segments out. Remux only.

The adapter around SegmentPolicy: it reads packets and the clocks, asks the policy what to do,
and carries out the actions (open segment, mux, commit + catalog row, end run). Every way a
session can end becomes a run end with a reason, so every gap is explicit in the catalog.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import av
import av.error

from firmware.alert_ids import AlertId, Severity
from firmware.catalog import Catalog, Segment, segment_id
from firmware.config import RecorderConfig
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.recorder import policy as P
from firmware.recorder import read_guard
from firmware.recorder.access_units import AccessUnitJoiner
from firmware.recorder.backoff import Backoff
from firmware.recorder.events import (
    Reconnecting,
    Report,
    RunEnded,
    SegmentCommitted,
    SessionChanged,
    no_space,
    redact,
)
from firmware.recorder.recovery import salvage_camera
from firmware.recorder.ring import Held, Point, StandbyRing, fingerprint
from firmware.recorder.rtsp_reader import BuiltinReader, ReaderError
from firmware.recorder.salvage import salvage_partial
from firmware.recorder.segment_file import (
    PARTIAL,
    SegmentMeta,
    SegmentWriter,
    commit,
    drop_meta,
    relative_path,
    write_meta,
)
from firmware.recorder.stream_templates import apply_overrides
from firmware.roles import RecorderMode

log = logging.getLogger(__name__)

VIDEO_CODECS = {"h264", "hevc"}
AUDIO_CODECS = {"aac"}

# Run end reasons (besides the policy's timestamp-jump and clock-step).
STALL = "stall"
STREAM_ENDED = "stream-ended"
STREAM_ERROR = "stream-error"
DISK_ERROR = "disk-error"
DISK_FULL = "disk-full"
"""A write failed for lack of space: frames are held in memory until the disk takes them."""
DISK_RETRY_US = 1_000_000
"""While writes are held, how often the disk is tried again."""
STOPPED = "recorder-stopped"
HANDED_OVER = "handed-over"
"""This board went standby: the peer records on from the next frame."""

TAKEOVER_GAP = "takeover-gap"
"""A takeover could not continue frame for frame from the newest segment this board held."""

RECORD = RecorderMode.RECORD
RING = RecorderMode.RING


def scrub(text: str, url: str) -> str:
    """Any text about a camera on its way out of the recorder: the URL redacted, and its
    password gone wherever else an error may quote it."""
    text = text.replace(url, redact(url))
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


class CameraError(Exception):
    """A session could not start or went wrong in a way that names the camera's fault."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


class StallError(Exception):
    pass


class DiskError(Exception):
    """A write to the data disk (a segment file or the catalog) failed."""

    def __init__(self, text: str, full: bool = False) -> None:
        super().__init__(text)
        self.full = full
        """For lack of space."""


_STATUS_LOG = re.compile(r"failed: (\d{3})(?: \(([^)\n]{1,60})\))?")
"""FFmpeg's RTSP error log line, e.g. `method DESCRIBE failed: 503 (Service Unavailable)`."""

_OTHER_4XX = frozenset(range(400, 500)) - {400, 401, 403, 404}
"""The 4xx codes FFmpeg has no class of its own for."""


def _logged_status(e: Exception, codes: Container[int]) -> str | None:
    """The camera's exact status line, when the exception carries FFmpeg's error log.

    PyAV folds every other 4xx, and every 5xx, into one class each; only the log names the
    code, and only while FFmpeg logging is on (workers turn it off). The log is process-wide,
    so a code the exception's class cannot stand for belongs to another camera: not used.
    """
    log = getattr(e, "log", None)
    if not log or len(log) < 3 or not isinstance(log[2], str):
        return None
    m = _STATUS_LOG.search(log[2])
    if m is None or int(m[1]) not in codes:
        return None
    return f"{m[1]} {m[2].strip()}" if m[2] and m[2].strip() else m[1]


def _own_words(e: Exception) -> str:
    """The error's message without the URL: FFmpeg errors quote it, credentials and all."""
    strerror = getattr(e, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    text = str(e)
    filename = getattr(e, "filename", None)
    if isinstance(filename, str) and filename:
        text = text.replace(filename, redact(filename))
    return text


def describe_open_error(e: Exception) -> tuple[str, str]:
    """(run-end reason, human text) for a failed av.open: what the camera said, no more.

    FFmpeg maps RTSP status codes like HTTP ones: 400, 401, 403 and 404 have classes of their
    own; the rest are "some other 4xx" or "some 5xx" unless the error log names the code.
    """
    if isinstance(e, av.error.HTTPUnauthorizedError):
        return "camera-auth-failed", "camera refused the credentials (401)"
    if isinstance(e, av.error.HTTPForbiddenError):
        return "camera-auth-failed", "camera refused the credentials (403)"
    if isinstance(e, av.error.HTTPNotFoundError):
        return "camera-not-found", "camera has no stream at that path (404)"
    if isinstance(e, av.error.HTTPBadRequestError):
        return "camera-refused", "camera refused the request (400)"
    if isinstance(e, av.error.HTTPClientError):
        return (
            "camera-refused",
            f"camera refused the request ({_logged_status(e, _OTHER_4XX) or '4xx'})",
        )
    if isinstance(e, av.error.HTTPServerError):
        status = _logged_status(e, range(500, 600))
        if status:
            return "camera-unavailable", f"camera answered {status}"
        return "camera-unavailable", "camera answered a server error (5xx)"
    if isinstance(e, av.error.ConnectionRefusedError | ConnectionRefusedError):
        return "camera-unreachable", "connection refused"
    if isinstance(e, av.error.ExitError | av.error.TimeoutError | TimeoutError):
        return "camera-unreachable", "no answer before the timeout"
    if isinstance(e, av.error.InvalidDataError):
        return STREAM_ERROR, "the camera's answer is not a valid stream"
    return "camera-unreachable", _own_words(e)


@dataclass
class _Open:
    """The segment being written."""

    sid: str
    rel: str
    final: Path
    file: SegmentWriter
    out: av.container.OutputContainer
    streams: dict[int, av.stream.Stream]
    offsets: dict[int, int]
    start_us: int
    media_start_us: int
    frames: int = 0
    last_video: av.Packet | None = None
    """The newest video frame written: its fingerprint is the segment's `last_frame`."""
    last_dts: dict[int, int] = field(default_factory=dict)
    """Per output stream: the muxer takes only increasing timestamps."""


@dataclass
class CameraIngest:
    name: str
    url: str
    data_dir: Path
    origin: str
    cfg: RecorderConfig
    catalog: Catalog
    report: Report
    stop: threading.Event
    make_room: Callable[[], None] = lambda: None
    """Called before each segment opens: frees space if the disk is below its watermark."""
    room: Callable[[], bool] = lambda: True
    """The disk has room again (above its watermark): writes held for a disk fault resume."""
    mode: str = RECORD
    """record: write segments; ring: hold the stream in memory only (a hot standby)."""
    ring_seconds: float = 10.0
    policy: P.SegmentPolicy = field(init=False)
    run_id: int | None = field(default=None, init=False)
    seg: _Open | None = field(default=None, init=False)
    codec: str = field(default="", init=False)
    last_frame_wall_us: int | None = field(default=None, init=False)
    """Wall time the newest recorded frame stands for."""
    last_frame_seen_us: int | None = field(default=None, init=False)
    """Wall time it arrived: the difference is the ingest lag."""
    ring: StandbyRing = field(init=False)
    _pending: tuple[str, list[dict] | None] | None = field(default=None, init=False)
    _continues: str | None = field(default=None, init=False)
    _disk_fault: str | None = field(default=None, init=False)
    """Set while a failed write holds this camera's frames in the ring (recording mode)."""
    _retry_at_us: int = field(default=0, init=False)
    _held_since_us: int = field(default=0, init=False)
    _unclosed: list[tuple[int, str]] = field(default_factory=list, init=False)
    """Runs whose end the catalog could not take: closed once the disk takes writes."""
    _held_clock: P.RunClock | None = field(default=None, init=False)
    """The clock of the run a disk fault ended: the run that resumes in the same session is
    timed on it, so the gap between them is exactly the frames not written."""

    def __post_init__(self) -> None:
        self.policy = P.SegmentPolicy(
            segment_us=round(self.cfg.segment_seconds * 1e6),
            max_drift_us=round(self.cfg.max_drift_seconds * 1e6),
        )
        self.ring = StandbyRing(round(self.ring_seconds * 1e6))
        self._connected = False
        self._guard: read_guard.ReadGuard | None = None
        self._last_packet_mono_us = 0
        self._overrides: dict[int, tuple[bytes, int]] = {}
        """What each output stream gets on top of its template (the built-in client's AAC)."""
        self.reader: BuiltinReader | None = None
        """The built-in client's session while it runs: its pace follows the mode."""
        self._committing = False
        """A segment is being committed (see `recording`)."""

    def request_mode(self, mode: str, cont: list[dict] | None = None) -> None:
        """From another thread: switch at the next packet. `cont` lists the newest segments
        of this camera this board holds, newest first ({"id", "last_frame", "end_us"}):
        where recording may go on (see StandbyRing.takeover)."""
        self._pending = (mode, cont)
        reader = self.reader
        if reader is not None:
            reader.wake()  # a standby's read waits up to a second for its batch

    @property
    def holding(self) -> bool:
        """A hot standby's session is up and its ring is filling."""
        return self.mode == RING and self._connected and len(self.ring) > 0

    # --- the loop ---------------------------------------------------------------------------

    def run_forever(self) -> None:
        backoff = Backoff(self.cfg.reconnect_min_seconds, self.cfg.reconnect_max_seconds)
        first = True
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                reason, text = self.session()
            except Exception as e:
                # Whatever went wrong, this camera's thread must not end: say so and reconnect.
                reason, text = STREAM_ERROR, f"recorder error: {type(e).__name__}: {e}"
                # Where, without the message (it may quote the URL): the text follows, scrubbed.
                where = "".join(traceback.format_tb(e.__traceback__))
                log.error("camera %s: %s in\n%s", self.name, type(e).__name__, where)
            if text:
                text = scrub(text, self.url)  # the one way out for a session's text
            self.report(SessionChanged(self.name, recording=False, error=text))
            if self.stop.is_set():
                break
            if not first or reason != STOPPED:
                self.report(Reconnecting(self.name, reason))
            first = False
            backoff.session_lasted(time.monotonic() - began)
            delay = backoff.next_delay()
            if text:
                log.warning("camera %s: %s; retrying in %.1f s", self.name, text, delay)
            self.stop.wait(delay)

    def session(self) -> tuple[str, str | None]:
        """Connect, record until the stream ends, return why it ended."""
        try:
            container = self._open()
        except CameraError as e:
            return e.reason, f"{redact(self.url)}: {e}"
        reason, text = STREAM_ENDED, "camera ended the stream"
        self._connected = True
        try:
            reason, text = self._record(container)
        except (CameraError, ReaderError) as e:
            reason, text = e.reason, f"{redact(self.url)}: {e}"
        except StallError as e:
            reason, text = STALL, str(e)
        except DiskError as e:
            reason, text = DISK_ERROR, str(e)
        except av.error.ExitError:
            reason, text = STALL, f"no data for {self.cfg.stall_seconds:g} s"
        except (av.error.FFmpegError, OSError) as e:
            reason, text = STREAM_ERROR, f"stream error: {e}"
            if self._guard is not None and self._guard.overdue(time.monotonic()):
                # The read timed out mid-message (FFmpeg says EIO, not that it timed out).
                reason, text = STALL, f"no data for {self.cfg.stall_seconds:g} s"
        finally:
            self._connected = False
            self._end_run(reason)
            if self._guard is not None:
                self._guard.close()
                self._guard = None
            container.close()
        return reason, text

    def _open(self) -> av.container.InputContainer | BuiltinReader:
        """Open the session. The built-in client's reads never block for long (rtsp_reader.py).
        FFmpeg's are guarded against never returning: by its socket timeout and the read
        guard's watchdog (see read_guard.py), or, where the guard does not know this PyAV, by
        PyAV's read timeout (its callback takes the GIL on every poll)."""
        if self.cfg.rtsp_reader == "builtin" and self.url.startswith("rtsp://"):
            reader = BuiltinReader(
                self.url, self.cfg.open_timeout_seconds, self.cfg.stall_seconds, self.stop
            )
            try:
                reader.open()
            except ReaderError as e:
                reader.close()
                raise CameraError(e.reason, str(e)) from None
            except BaseException:
                reader.close()
                raise
            self.codec = reader.codec
            return reader
        socket_s = max(self.cfg.open_timeout_seconds, self.cfg.stall_seconds)
        options = {"timeout": str(round(socket_s * 1e6))}
        if self.url.startswith("rtsp"):
            options["rtsp_transport"] = "tcp"
        guarded = read_guard.supported()
        read_timeout = None if guarded else self.cfg.stall_seconds
        try:
            opened_from = time.monotonic()
            container = av.open(
                self.url, options=options, timeout=(self.cfg.open_timeout_seconds, read_timeout)
            )
            opened_by = time.monotonic()
            if guarded:
                self._guard = read_guard.watch(
                    container, self.cfg.stall_seconds, opened_from, opened_by
                )
                if self._guard is None:  # not as the probe found PyAV: its own read timeout
                    container.close()
                    container = av.open(
                        self.url,
                        options=options,
                        timeout=(self.cfg.open_timeout_seconds, self.cfg.stall_seconds),
                    )
        except Exception as e:  # PyAV maps FFmpeg errors onto many classes
            reason, text = describe_open_error(e)
            raise CameraError(reason, text) from None
        video = container.streams.video
        if not video:
            self._close_container(container)
            raise CameraError(STREAM_ERROR, "the stream has no video track")
        codec = video[0].codec_context.name
        if codec not in VIDEO_CODECS:
            self._close_container(container)
            raise CameraError(
                "unsupported-codec", f"video codec {codec!r} cannot be stored (H.264 or H.265)"
            )
        self.codec = codec
        return container

    def _close_container(self, container: av.container.InputContainer) -> None:
        if self._guard is not None:
            self._guard.close()
            self._guard = None
        container.close()

    def _record(
        self, container: av.container.InputContainer | BuiltinReader
    ) -> tuple[str, str | None]:
        if isinstance(container, BuiltinReader):
            return self._record_from(container)
        vstream = container.streams.video[0]
        streams = [vstream]
        for a in container.streams.audio[:1]:
            if a.codec_context.name in AUDIO_CODECS:
                streams.append(a)
            else:
                log.warning(
                    "camera %s: audio codec %r is not stored (AAC only); recording video only",
                    self.name,
                    a.codec_context.name,
                )
        self._overrides = {}
        self._begin(streams)
        rate = vstream.guessed_rate or vstream.average_rate
        ticks = round(1 / (rate * vstream.time_base)) if rate else None
        joiner = AccessUnitJoiner(self.codec, ticks)
        vindex, stall_us = self._video_index, self._stall_us
        guard, stop = self._guard, self.stop
        stalled = False
        for pkt in container.demux(streams):
            if stalled:
                break
            if guard is not None and guard.armed and guard.read_returned(time.monotonic()):
                stalled = True  # the packet FFmpeg still held: written, then the session ends
            if stop.is_set():
                self._step(joiner.flush())
                return STOPPED, None
            if pkt.size == 0:
                continue
            if pkt.stream_index == vindex:
                pkt = joiner.push(pkt)
            elif pkt.pts is None:
                continue
            self._step(pkt)
            if stalled:
                break
        self._step(joiner.flush())
        quiet_us = time.monotonic_ns() // 1000 - self._last_packet_mono_us
        if stalled or quiet_us >= stall_us * 9 // 10:
            # FFmpeg's RTSP demuxer ends a session whose read timed out (the guard's timeout, or
            # its socket timeout) as if the camera had ended it.
            return STALL, f"no data for {self.cfg.stall_seconds:g} s"
        return STREAM_ENDED, "camera ended the stream"

    def _begin(self, streams: list[av.stream.Stream]) -> None:
        """A session's streams are known: say so, and start its timeline afresh."""
        self.templates = streams
        recording = self.mode == RECORD and self._disk_fault is None
        log.info("camera %s: %s, session up (%s)", self.name,
                 "recording" if recording else "holding", self.codec)  # fmt: skip
        self.report(
            SessionChanged(
                self.name,
                recording=recording,
                error=self._disk_fault,
                codec=self.codec,
                up=True,
            )
        )
        # pts to µs in integers: Fraction arithmetic per packet is measurably slow.
        self._us_per_tick = {
            s.index: (s.time_base.numerator * 1_000_000, s.time_base.denominator) for s in streams
        }
        self.ring.clear()  # a new session: its timestamps do not follow the last one's
        self._held_clock = None
        self._video_index = streams[0].index
        self._stall_us = round(self.cfg.stall_seconds * 1e6)
        self._last_packet_mono_us = time.monotonic_ns() // 1000

    def _record_from(self, reader: BuiltinReader) -> tuple[str, str | None]:
        """The built-in client's session: whole frames, timed, from the first keyframe on; it
        ends its packets itself on a stall or a stop (see rtsp_reader.py)."""
        t = reader.templates
        assert t is not None
        self._overrides = t.overrides
        self._begin([t.video] if t.audio is None else [t.video, t.audio])
        step, stop = self._step, self.stop
        reader.pace(holding=self.mode == RING)
        self.reader = reader
        try:
            for pkt in reader.packets():  # they end on a stop too; None: woken, no frame
                step(pkt)
        finally:
            self.reader = None
        if stop.is_set():
            self._step(None)
            return STOPPED, None
        if reader.stalled:
            return STALL, f"no data for {self.cfg.stall_seconds:g} s"
        return STREAM_ENDED, "camera ended the stream"

    def _step(self, pkt: av.Packet | None) -> None:
        """One packet from the camera: into the ring or into segments, per mode. A failed
        write does not end the session: the frames go to the ring until the disk takes them."""
        try:
            self._step_on(pkt)
        except DiskError as e:
            self._hold_for_disk(e)

    def _step_on(self, pkt: av.Packet | None) -> None:
        if self._pending is not None:
            mode, cont = self._pending
            self._pending = None
            self._switch(mode, cont)
        if pkt is None:
            return
        video = pkt.stream_index == self._video_index
        now = P.Clocks(time.monotonic_ns() // 1000, time.time_ns() // 1000)
        self._last_packet_mono_us = now.mono_us
        if self.mode == RING or self._disk_fault is not None:
            # The fingerprint is taken at takeover, from the packet's bytes, if ever needed.
            self.ring.push(Held(pkt, video, bool(pkt.is_keyframe), "", now))
            self.last_frame_seen_us = now.wall_us
            if self.mode == RECORD and now.mono_us >= self._retry_at_us:
                self._try_resume(now.mono_us)
        else:
            self._handle(pkt, video, bool(pkt.is_keyframe), now)

    def _hold_for_disk(self, e: DiskError) -> None:
        """End the run (its gap says why), keep the camera's frames in the ring, and say so:
        the camera's error, and the disk-full alert the board core hands over on."""
        reason = DISK_FULL if e.full else DISK_ERROR
        text = scrub(f"not recording: {e}; holding the last {self.ring_seconds:g} s in memory",
                     self.url)  # fmt: skip
        log.error("camera %s: %s", self.name, text)
        self._held_clock = self.policy.run
        self._end_run(reason)
        self._disk_fault = text
        self._held_since_us = time.monotonic_ns() // 1000
        self._retry_at_us = self._held_since_us + DISK_RETRY_US
        self.ring.clear()
        self.report(SessionChanged(self.name, recording=False, error=text, up=True))
        if not e.full:
            # Space has its own alert (disk-full); any other failed write is a disk the board
            # cannot record on, and the board core hands over on this one.
            self.report(RaiseAlert(AlertId.DISK_WRITE_FAILED, Severity.CRITICAL,
                                   f"camera {self.name}: {text}"))  # fmt: skip

    def _try_resume(self, now_mono_us: int) -> None:
        """Writes held for a disk fault: once the disk has room, close what the catalog could
        not take, catalog the files it missed, and record on from the ring's oldest keyframe."""
        self._retry_at_us = now_mono_us + DISK_RETRY_US
        try:
            self.make_room()
            if not self.room():
                return
            while self._unclosed:
                self.catalog.end_run(*self._unclosed[0])
                self._unclosed.pop(0)
            salvage_camera(self.data_dir, self.catalog, self.name)
        except (OSError, sqlite3.Error) as e:
            if self._retry_at_us - self._held_since_us < 2 * DISK_RETRY_US:  # said once
                log.warning("camera %s: the data disk still fails: %s", self.name, e)
            return
        take = self.ring.takeover([])
        self.ring.clear()
        self._disk_fault = None
        log.warning("camera %s: the data disk takes writes again; recording on with %d packets "
                    "held in memory", self.name, len(take.packets))  # fmt: skip
        self.report(SessionChanged(self.name, recording=True, error=None, up=True))
        self.report(ClearAlert(AlertId.DISK_WRITE_FAILED))
        for h in take.packets:
            self._handle(h.packet, h.video, h.keyframe, h.clocks)

    def _switch(self, mode: str, cont: list[dict] | None) -> None:
        if mode == self.mode:
            return
        self.mode = mode
        if self.reader is not None:
            self.reader.pace(holding=mode == RING)
        self._disk_fault = self._held_clock = None  # a standby does not write
        if mode == RING:
            self._end_run(HANDED_OVER)
            log.info("camera %s: standby, holding %.0f s in memory", self.name, self.ring_seconds)
            return
        take = self.ring.takeover([Point(**p) for p in cont or []])
        self.ring.clear()
        if take.after is not None:
            self.policy.continue_at(take.after.end_us)
            self._continues = take.after.id
        elif cont:
            # Not frame for frame (the ring does not reach back, or the camera allows one
            # session and this board connected only now): the footage between the newest
            # segment held and what we write is a gap, and says why.
            newest = self.catalog.segment(cont[0]["id"])
            if newest is not None:
                self.catalog.end_run(newest.run_id, TAKEOVER_GAP)
        log.info(
            "camera %s: recording, %d held packets first: %s", self.name, len(take.packets),
            take.note,
        )  # fmt: skip
        for h in take.packets:
            self._handle(h.packet, h.video, h.keyframe, h.clocks)

    def _handle(self, pkt: av.Packet, video: bool, keyframe: bool, now: P.Clocks) -> None:
        num, den = self._us_per_tick[pkt.stream_index]
        pts_us = pkt.pts * num // den
        if self._held_clock is not None and self.policy.run is None and video and keyframe:
            # Resuming after a disk fault, on the clock of the run it ended, unless the
            # camera's time jumped meanwhile.
            wall = self._held_clock.wall(pts_us)
            if abs(wall - now.wall_us) <= self.policy.max_drift_us:
                self.policy.continue_at(wall)
            self._held_clock = None
        shift_us = 0
        actions = self.policy.packet(P.PacketInfo(video, keyframe, pts_us), now)
        if len(actions) == 1 and actions[0] is P.WRITE:
            self._write(pkt)  # nearly every packet
        else:
            for action in actions:
                if isinstance(action, P.Write):
                    shift_us = action.shift_us
                self._apply(action, pkt)
        if video and self.seg is not None:
            self.seg.last_video = pkt
        if video and self.seg is not None and self.policy.run is not None:
            # Read by the worker's status loop; per-frame events would flood the queue.
            self.last_frame_wall_us = self.policy.run.wall(pts_us + shift_us)
            self.last_frame_seen_us = now.wall_us
        deadline = self.policy.deadline_us(self._stall_us)
        if deadline is not None and now.mono_us > deadline:
            raise StallError(f"no video for {self.cfg.stall_seconds:g} s")

    # --- actions ----------------------------------------------------------------------------

    def _apply(self, action: P.Action, pkt: av.Packet) -> None:
        if isinstance(action, P.Write):
            self._write(pkt, action.shift_us)
        elif isinstance(action, P.StartSegment):
            self._start(action)
        elif isinstance(action, P.FinishSegment):
            self._finish(action.end_us, action.media_end_us)
        elif isinstance(action, P.EndRun):
            self._close_run(action.reason)
        elif isinstance(action, P.Drop):
            pass

    def _start(self, a: P.StartSegment) -> None:
        f: SegmentWriter | None = None
        try:
            self.make_room()
            if a.new_run or self.run_id is None:
                self.run_id = self.catalog.new_run(
                    self.name, self.origin, a.start_us, a.start_us, continues=self._continues
                )
                self._continues = None
            sid = segment_id(self.name, a.start_us, self.origin)
            rel = relative_path(self.name, a.start_us, sid)
            final = self.data_dir / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            meta = SegmentMeta(
                sid, self.name, self.run_id, self.origin, self.codec, a.start_us, a.media_start_us
            )
            write_meta(final, meta)
            f = SegmentWriter(Path(str(final) + PARTIAL))
            out = f.out
            ostreams = {}
            offsets = {}
            for s in self.templates:
                o = out.add_stream_from_template(s)
                apply_overrides(s, o, self._overrides)
                ostreams[s.index] = o
                offsets[s.index] = round(a.media_start_us / 1e6 / s.time_base)
        except (OSError, sqlite3.Error) as e:
            if f is not None:  # nothing of it was written: no partial, no meta left behind
                f.abandon()
                f.path.unlink(missing_ok=True)
                drop_meta(final)
            self._alert_if_full(e, f"a segment of {self.name}")
            raise DiskError(f"cannot start a segment: {e}", no_space(e)) from e
        self.seg = _Open(sid, rel, final, f, out, ostreams, offsets, a.start_us, a.media_start_us)

    def _write(self, pkt: av.Packet, shift_us: int = 0) -> None:
        """Mux one packet into the open segment; shift_us moves it on the run's timeline (the
        frames after a camera timestamp jump, up to the next keyframe)."""
        seg = self.seg
        if seg is None:
            return
        idx = pkt.stream_index
        off = seg.offsets[idx]
        if shift_us:
            num, den = self._us_per_tick[idx]  # µs per tick is num / den
            off -= round(shift_us * den / num)
        pts, pkt_dts = pkt.pts, pkt.dts
        if pts - off < 0:
            return  # audio stamped before this segment's first keyframe
        dts = pts if pkt_dts is None else pkt_dts
        last = seg.last_dts.get(idx)
        if last is not None and dts - off <= last:
            # Stamped at or before what the segment holds (audio on the camera's clock from
            # before a jump): the muxer would refuse it and fail the segment.
            log.warning("camera %s: packet of stream %d out of order, dropped", self.name, idx)
            return
        seg.last_dts[idx] = dts - off
        pkt.pts = pts - off
        if pkt_dts is not None:
            pkt.dts = pkt_dts - off
        pkt.stream = seg.streams[idx]
        try:
            seg.out.mux(pkt)
        except OSError as e:
            self._alert_if_full(e, seg.rel)
            raise DiskError(f"writing {seg.rel}: {e.strerror or e}", no_space(e)) from e
        if idx == self._video_index:
            seg.frames += 1

    @property
    def recording(self) -> bool:
        """A segment is open, or the last one is being committed (at a cut, the next opens
        right after): what the worker's status reports, read from its own thread."""
        return self.seg is not None or self._committing

    def _finish(self, end_us: int, media_end_us: int) -> None:
        seg, self.seg = self.seg, None
        if seg is None:
            return
        self._committing = True  # the fsyncs below let the status thread run
        try:
            self._commit(seg, end_us, media_end_us)
        finally:
            self._committing = False

    def _commit(self, seg: _Open, end_us: int, media_end_us: int) -> None:
        partial = seg.file.path
        try:
            sha = seg.file.finish()  # trailer, fsync, SHA-256 of the bytes as stored
            commit(partial, seg.final)
        except (OSError, av.error.FFmpegError) as e:
            seg.file.abandon()
            self._salvage_after_error(seg, e)
            why = getattr(e, "strerror", None) or e
            raise DiskError(f"committing {seg.rel}: {why}", no_space(e)) from e
        row = Segment(
            id=seg.sid,
            camera=self.name,
            run_id=self.run_id or 0,
            path=seg.rel,
            start_us=seg.start_us,
            end_us=end_us,
            media_start_us=seg.media_start_us,
            media_end_us=media_end_us,
            frames=seg.frames,
            bytes=seg.file.bytes,
            sha256=sha,
            origin=self.origin,
            codec=self.codec,
            last_frame=fingerprint(seg.last_video) if seg.last_video is not None else "",
        )
        try:
            self.catalog.add_segment(row)
        except sqlite3.Error as e:
            # The catalog shares the data disk: the file stays, with its .meta.json, and is
            # cataloged when the disk takes writes again (or by recovery).
            self._alert_if_full(e, seg.rel)
            raise DiskError(f"cataloging {seg.rel}: {e}", no_space(e)) from e
        drop_meta(seg.final)
        self.report(SegmentCommitted(self.name, row.id, row.bytes, row.frames))

    def _salvage_after_error(self, seg: _Open, e: Exception) -> None:
        """A write failed mid-segment: keep the complete fragments that reached the disk."""
        try:
            result = salvage_partial(self.data_dir, seg.final, self.catalog)
            log.error("camera %s: %s while writing %s; %s", self.name, e, seg.rel, result)
        except Exception:
            log.exception("camera %s: salvage of %s failed", self.name, seg.rel)
        self._alert_if_full(e, seg.rel)

    def _alert_if_full(self, e: Exception, rel: str) -> None:
        """A write that failed for lack of space is critical (the board core hands over);
        retention at its watermark is only a warning."""
        if no_space(e):
            self.report(
                RaiseAlert(
                    AlertId.DISK_FULL, Severity.CRITICAL, f"data disk full while writing {rel}"
                )
            )

    def _close_run(self, reason: str) -> None:
        if self.run_id is not None:
            try:
                self.catalog.end_run(self.run_id, reason)
            except sqlite3.Error as e:
                # Left open in the catalog; recovery closes it at the next start.
                log.error("camera %s: cannot end run %s in the catalog: %s", self.name,
                          self.run_id, e)  # fmt: skip
                self._unclosed.append((self.run_id, reason))
            self.report(RunEnded(self.name, reason))
        self.run_id = None

    def _end_run(self, reason: str) -> None:
        """The session is over, or this board went standby: commit the open segment (if it
        can be) and close the run."""
        actions = self.policy.end(reason)
        try:
            for action in actions:
                if isinstance(action, P.FinishSegment):
                    self._finish(action.end_us, action.media_end_us)
                elif isinstance(action, P.EndRun):
                    self._close_run(action.reason)
        except DiskError as e:
            log.error("camera %s: %s", self.name, e)
            self._close_run(DISK_FULL if e.full else DISK_ERROR)
        self._continues = None
        if self.seg is not None:  # opened but policy had nothing to finish
            self.seg.file.abandon()
            self.seg.file.path.unlink(missing_ok=True)
            drop_meta(self.seg.final)
            self.seg = None
        self._close_run(reason)
