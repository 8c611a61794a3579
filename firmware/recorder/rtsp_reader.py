"""A camera read by the built-in RTSP client: the socket around the sans-IO session
(firmware/rtsp/session.py) and depacketizers (firmware/rtsp/rtp.py), PyAV packets out.

Why not FFmpeg's RTSP demuxer: it reads an interleaved stream in three small reads per RTP
packet, each a poll and a recv, the largest single cost of recording (docs/BENCHMARKS.md,
"Reading a camera"). Here each recv takes whatever has arrived in a poll period and the RTP
packets in it are taken apart in Python, inside the session's parser once playing (`route`):
most packets are middle fragments of a frame, added to it as views of the received bytes.
A read never blocks for longer than a poll period, so a camera that goes quiet (or sends only
RTCP) is a stall after `stall_seconds` without any watchdog, and a stop is seen within the
poll period.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from urllib.parse import unquote, urlsplit, urlunsplit

import av

from firmware.recorder.stream_templates import Templates, make_templates
from firmware.rtsp.rtp import (
    AccessUnit,
    ChannelUnit,
    Depacketizer,
    UnsupportedStream,
    aac_config,
    annexb,
    depacketizer_for,
    h264_parameter_sets,
    h265_parameter_sets,
)
from firmware.rtsp.sdp import MediaKind
from firmware.rtsp.session import Failed, FailureKind, Interleaved, Playing, RtspClient, Send, Track

log = logging.getLogger(__name__)

POLL_S = 0.25
"""The longest a read blocks while recording: how soon a stop or a stall is seen."""
BATCH_BYTES = 256 << 10
"""Once the session records, a read waits for this much (SO_RCVLOWAT) or for POLL_S
(SO_RCVTIMEO), then takes what has come: up to 8 Mbit/s, one read every POLL_S instead of
one per burst, and as many fewer wake-ups of the camera's thread. One system call each: the
kernel does the waiting, without a poll before the read."""
HOLD_POLL_S = 1.0
HOLD_BATCH_BYTES = 512 << 10
"""The same while the session only fills the standby's ring: a quarter of the wake-ups (they
cost a standby more than taking the frames apart does). The frames wait in the socket's
buffer meanwhile and none is lost. A stop is seen within HOLD_POLL_S; a takeover at once
(`wake`), and it writes the frames that waited."""
RECV_BYTES = 1 << 20
"""Each read goes into one buffer of the session's, then is copied out at its size: a fresh
buffer this large for every read would be mapped and faulted in by the allocator each time.
The buffer is an anonymous mapping: only the pages a read reaches are ever resident."""
KEYFRAME_WAIT_S = 60.0
"""How long frames without a keyframe are waited through at the start of a session: cameras
with a long keyframe interval ("smart" codecs) send one every 10 s or more. The open timeout
bounds the set-up alone."""
AUDIO_WAIT_S = 2.0
"""After the first keyframe, how long the first audio frame is waited for before the session
records video alone (the audio track is then not stored until the next session)."""
REASON = {
    FailureKind.AUTH: "camera-auth-failed",
    FailureKind.NOT_FOUND: "camera-not-found",
    FailureKind.REFUSED: "camera-refused",
    FailureKind.UNAVAILABLE: "camera-unavailable",
    FailureKind.PROTOCOL: "stream-error",
    FailureKind.NO_VIDEO: "unsupported-codec",
    FailureKind.ENDED: "stream-ended",
}
"""The ingest's run-end reasons for what the session core reports."""
CODEC = {"H264": "h264", "H265": "hevc", "MPEG4-GENERIC": "aac"}


class ReaderError(Exception):
    """The session failed: `reason` is the ingest's run-end reason, the text names no secret."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


@dataclass
class _Track:
    index: int  # the template stream's index, set once the templates exist
    video: bool
    depay: Depacketizer
    rtptime: int | None
    clock: int
    time_base: Fraction = field(init=False)
    origin: int | None = None
    """The unwrapped timestamp that is pts 0: the PLAY answer's RTP-Info, else the first
    packet's timestamp."""

    def __post_init__(self) -> None:
        self.time_base = Fraction(1, self.clock)

    def pts(self, au: AccessUnit) -> int:
        if self.origin is None:
            self.origin = au.timestamp
            if self.rtptime is not None:  # the same instant on every track (RFC 2326 12.33)
                self.origin -= ((au.timestamp - self.rtptime + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        return au.timestamp - self.origin


def _without_userinfo(url: str) -> tuple[str, str | None, str | None, str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return clean, user, password, host, parts.port or 554


class BuiltinReader:
    """One session with one camera: `open`, then `packets` until it ends, then `close`."""

    def __init__(self, url: str, open_timeout_s: float, stall_s: float,
                 stop: threading.Event) -> None:  # fmt: skip
        self.url, self.open_timeout_s, self.stall_s, self.stop = url, open_timeout_s, stall_s, stop
        self.sock: socket.socket | None = None
        self.client: RtspClient | None = None
        self.templates: Templates | None = None
        self.codec = ""
        self.stalled = False
        """The session ended because no media came for `stall_s`."""
        self._tracks: dict[int, _Track] = {}
        self._held: list[tuple[_Track, AccessUnit]] = []
        self._pending: tuple[_Track, AccessUnit] | None = None
        self._holding = False
        self._buffer = mmap.mmap(-1, RECV_BYTES)
        self._view = memoryview(self._buffer)
        self._wake_lock = threading.Lock()
        self._wake_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        """Written by `wake`; made with the reader, so a wake before the first batched read
        is not lost (the poll then returns at once)."""
        self._poll: select.poll | None = None
        self._woken = False
        self._last_media = 0.0

    # --- opening ----------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, set the session up and read up to the first keyframe. Raises ReaderError."""
        clean, user, password, host, port = _without_userinfo(self.url)
        deadline = time.monotonic() + self.open_timeout_s
        try:
            self.sock = socket.create_connection((host, port), timeout=self.open_timeout_s)
        except ConnectionRefusedError:
            raise ReaderError("camera-unreachable", "connection refused") from None
        except TimeoutError:
            raise ReaderError("camera-unreachable", "no answer before the timeout") from None
        except OSError as e:
            raise ReaderError("camera-unreachable", e.strerror or type(e).__name__) from None
        self.sock.settimeout(POLL_S)
        self.client = RtspClient(clean, user, password, cnonce=lambda: secrets.token_hex(8))
        try:
            self._handshake(deadline)
        except EOFError:
            raise ReaderError("stream-error", "the camera closed the connection") from None
        except OSError as e:
            raise ReaderError("stream-error", f"stream error: {e.strerror or e}") from None

    def _handshake(self, deadline: float) -> None:
        assert self.client is not None
        self._send(self.client.start(time.monotonic()))
        playing: Playing | None = None
        early: list[Interleaved] = []
        while playing is None:
            for ev in self._read(deadline):
                if isinstance(ev, Playing):
                    playing = ev
                elif isinstance(ev, Interleaved):
                    early.append(ev)  # media before the PLAY answer: some cameras do that
        self._set_up(playing.tracks)
        self._last_media = time.monotonic()
        give_up = self._last_media + KEYFRAME_WAIT_S
        for ev in early:
            self._media(ev)
        for channel, track in self._tracks.items():
            self.client.route(channel, track.depay)
        keyframe_at: float | None = None
        while True:
            have_video = any(t.video for t, _ in self._held)
            if have_video and keyframe_at is None:
                keyframe_at = time.monotonic()
            audio = [t for t in self._tracks.values() if not t.video]
            have_audio = not audio or any(not t.video for t, _ in self._held)
            now = time.monotonic()
            if keyframe_at is not None and (have_audio or now - keyframe_at >= AUDIO_WAIT_S):
                break
            if self.stop.is_set():
                raise ReaderError("recorder-stopped", "stopped before the first keyframe")
            if now - self._last_media >= self.stall_s:
                raise ReaderError("stall", f"no frame for {self.stall_s:g} s")
            if now >= give_up:
                raise ReaderError("stream-error", f"no keyframe in {KEYFRAME_WAIT_S:g} s")
            for ev in self._read(None):
                if type(ev) is ChannelUnit:
                    self._opening(self._tracks.get(ev.channel), ev.unit)
                elif type(ev) is Interleaved:
                    self._media(ev)
        self._make_templates(playing.tracks)

    def _set_up(self, tracks: tuple[Track, ...]) -> None:
        for t in tracks:
            m = t.media
            video = m.kind == MediaKind.VIDEO
            try:
                depay = depacketizer_for(m.encoding, m.fmtp, m.clock_rate)
            except UnsupportedStream as e:
                if video:
                    raise ReaderError("unsupported-codec", f"the camera's video: {e}") from None
                log.warning("camera audio not stored: %s", e)
                continue
            if depay is None:
                continue
            if t.seq is not None:
                depay.expect_seq(t.seq)
            if video:
                self.codec = CODEC[m.encoding]
            self._tracks[t.rtp_channel] = _Track(-1, video, depay, t.rtptime, m.clock_rate)

    def _make_templates(self, tracks: tuple[Track, ...]) -> None:
        video_track = next(t for t in self._tracks.values() if t.video)
        first = next(au for t, au in self._held if t.video)
        media = {t.rtp_channel: t.media for t in tracks}
        vmedia = next(m for ch, m in media.items() if self._tracks.get(ch) is video_track)
        params = (h264_parameter_sets(vmedia.fmtp) if self.codec == "h264"
                  else h265_parameter_sets(vmedia.fmtp))  # fmt: skip
        audio = None
        for ch, t in self._tracks.items():
            if not t.video:
                au = next((a for tr, a in self._held if tr is t), None)
                try:
                    config = aac_config(media[ch].fmtp)
                except ValueError as e:
                    log.warning("camera audio not stored: %s", e)
                    config = None
                if au is not None and config is not None:
                    audio = (config, au.data, t.clock)
                else:
                    self._drop_track(ch)
                break
        try:
            self.templates = make_templates(self.codec, annexb(params) + first.data,
                                            video_track.clock, audio)  # fmt: skip
        except (ValueError, av.error.FFmpegError) as e:
            raise ReaderError("stream-error", f"the camera's first keyframe: {e}") from None
        video_track.index = self.templates.video.index
        for ch, t in list(self._tracks.items()):
            if not t.video:
                if self.templates.audio is None:
                    self._drop_track(ch)
                else:
                    t.index = self.templates.audio.index
                break
        self._held = [(t, au) for t, au in self._held if t.index >= 0]

    # --- reading ----------------------------------------------------------------------------

    def _send(self, actions: list[Send]) -> None:
        assert self.sock is not None
        for a in actions:
            self.sock.sendall(a.data)

    def _read(self, deadline: float | None) -> list:
        """One recv's worth of session events; raises ReaderError on failure or timeout."""
        assert self.sock is not None and self.client is not None
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise ReaderError("camera-unreachable", "no answer before the timeout")
        due = self.client.next_deadline()
        if due is not None and now >= due:
            self._send(self.client.poll(now))
        try:
            if self._poll is not None and self._holding:
                self._woken = self._wait_holding()
                got = self.sock.recv_into(self._buffer, 0, socket.MSG_DONTWAIT)
            else:
                got = self.sock.recv_into(self._buffer)
        except (TimeoutError, BlockingIOError):
            return []  # nothing in the period
        except OSError as e:
            raise ReaderError("stream-error", f"stream error: {e.strerror or e}") from None
        if not got:
            raise EOFError
        data = self._view[:got].tobytes()  # the parser and the units keep views of it
        events = self.client.receive(data, time.monotonic())
        if all(type(ev) is ChannelUnit or type(ev) is Interleaved for ev in events):
            return events  # nearly always, while playing
        out = []
        for ev in events:
            if isinstance(ev, Send):
                self._send([ev])
            elif isinstance(ev, Failed):
                raise ReaderError(REASON[ev.kind], ev.text)
            else:
                out.append(ev)
        return out

    def pace(self, holding: bool) -> None:
        """Read for the standby's ring (seldom, in large batches) or for recording. From the
        thread that reads."""
        self._holding = holding
        if self._poll is not None:  # reading in batches already
            self._set_pace()

    def wake(self) -> None:
        """From another thread: end a standby's wait now (a takeover is pending), rather than
        when a batch or HOLD_POLL_S comes."""
        with self._wake_lock:
            if self._wake_fd is not None:
                os.eventfd_write(self._wake_fd, 1)

    def _batch(self) -> None:
        """A blocking socket whose reads the kernel ends after the period with what has come
        (none: EAGAIN); its writes (keep-alives) are bounded the same way. A standby waits in
        a poll of the socket (which keeps the low-water mark) and of an eventfd that `wake`
        writes, then takes what has come."""
        assert self.sock is not None
        self.sock.settimeout(None)
        assert self._wake_fd is not None
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN)
        self._poll.register(self._wake_fd, select.POLLIN)
        self._set_pace()

    def _wait_holding(self) -> bool:
        """Whether `wake` ended the wait."""
        assert self._poll is not None and self._wake_fd is not None
        woken = False
        for fd, _ in self._poll.poll(HOLD_POLL_S * 1000):
            if fd == self._wake_fd:
                woken = True
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(fd)
        return woken

    def _set_pace(self) -> None:
        sock = self.sock
        assert sock is not None
        seconds, batch = (HOLD_POLL_S, HOLD_BATCH_BYTES) if self._holding else (POLL_S, BATCH_BYTES)
        period = struct.pack("ll", int(seconds), round(seconds % 1 * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, period)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, period)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, batch)

    def _drop_track(self, channel: int) -> None:
        del self._tracks[channel]
        assert self.client is not None
        self.client.route(channel, None)

    def _media(self, ev: Interleaved) -> None:
        """While opening, a frame that came before the track's channel was routed."""
        track = self._tracks.get(ev.channel)
        if track is None:
            return  # RTCP, or a track not stored
        for au in track.depay.push_rtp(ev.data):
            self._opening(track, au)

    def _opening(self, track: _Track | None, au: AccessUnit) -> None:
        """While opening: hold what comes from the first keyframe on."""
        if track is None:
            return
        self._last_media = time.monotonic()
        started = any(t.video for t, _ in self._held)
        if started or (track.video and au.keyframe):
            self._held.append((track, au))

    def _packet(self, track: _Track, au: AccessUnit) -> av.Packet:
        assert self.templates is not None
        stream = self.templates.video if track.video else self.templates.audio
        pkt = av.Packet(au.data)
        pkt.stream = stream
        pkt.time_base = track.time_base
        pkt.pts = pkt.dts = track.pts(au)
        pkt.is_keyframe = au.keyframe
        return pkt

    def _frames(self, track: _Track, au: AccessUnit) -> Iterator[av.Packet]:
        """Video waits for the next frame: a camera that marks the end of every slice, not of
        the picture, sends one picture as several units with one timestamp (joined here, as
        the muxer takes one sample per timestamp)."""
        if not track.video:
            yield self._packet(track, au)
            return
        pending = self._pending
        if pending is not None and pending[1].timestamp == au.timestamp:
            p = pending[1]
            self._pending = (track, AccessUnit(p.data + au.data, p.timestamp,
                                               p.keyframe or au.keyframe))  # fmt: skip
            return
        if pending is not None:
            yield self._packet(*pending)
        self._pending = (track, au)

    def packets(self) -> Iterator[av.Packet | None]:
        """The session's packets in arrival order, starting at the first keyframe. Ends when
        the camera ends the stream, on a stall (then `stalled` is set) or on a stop; the frame
        held back is handed out last. A `wake` that brought no frame gives None, so the caller
        acts on what woke it now, not with the next frame (a batch away)."""
        held, self._held = self._held, []
        for track, au in held:
            yield from self._frames(track, au)
        self._batch()
        stop, stall_s, tracks = self.stop, self.stall_s, self._tracks
        while not stop.is_set():
            try:
                events = self._read(None)
            except EOFError:
                break
            media = False
            for ev in events:  # access units of the routed tracks; RTCP as Interleaved
                if type(ev) is ChannelUnit and (track := tracks.get(ev.channel)) is not None:
                    media = True  # frames, not packets: RTP that never makes one is a stall
                    yield from self._frames(track, ev.unit)
            if self._woken:
                self._woken = False
                if not media:
                    yield None
            now = time.monotonic()
            if media:
                self._last_media = now
            elif now - self._last_media >= stall_s:
                self.stalled = True
                break
        if self._pending is not None:
            pending, self._pending = self._pending, None
            yield self._packet(*pending)

    def close(self) -> None:
        with self._wake_lock:
            if self._wake_fd is not None:
                os.close(self._wake_fd)
                self._wake_fd = None
        sock, self.sock = self.sock, None
        if sock is None:
            return
        try:
            if self.client is not None:
                sock.settimeout(0.5)
                self._send_quietly(sock, self.client.teardown())
        finally:
            sock.close()
        if self.templates is not None:
            self.templates.container.close()

    @staticmethod
    def _send_quietly(sock: socket.socket, actions: list[Send]) -> None:
        for a in actions:
            try:
                sock.sendall(a.data)
            except OSError:
                return
