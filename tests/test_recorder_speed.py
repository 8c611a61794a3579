"""The recorder's cheap paths keep its guarantees.

Reads run without PyAV's per-poll read timeout (its callback takes the GIL on every socket poll);
a camera that goes silent, or that keeps the socket busy with RTCP but sends no frame, must still
end its session as a stall in bounded time. Segments are written by FFmpeg itself (pipe:FD) and
hashed after the muxer closes: the bytes and the hash must be those of the Python-file writer
they replace. The standby's ring trims in constant time: it must keep exactly what it kept.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import random
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest
from conftest import wait_until

from firmware.catalog import Catalog
from firmware.config import RecorderConfig
from firmware.recorder import read_guard
from firmware.recorder.events import SessionChanged, WorkerEvent
from firmware.recorder.ingest import STALL, CameraIngest
from firmware.recorder.policy import Clocks
from firmware.recorder.ring import Held, StandbyRing
from firmware.recorder.salvage import complete_prefix
from firmware.recorder.segment_file import FMP4_OPTIONS, SegmentWriter
from hil.camera import CameraSim, StreamSpec

STALL_S = 2.0
OPEN_S = 10.0
"""Longer than the stall: FFmpeg's socket timeout (the larger of the two) cannot be what ends
a session that goes quiet, only the read guard."""
DETECT_BOUND_S = STALL_S + 1.0
"""A stalled read ends at its start plus the stall time (the read began before the cut); the
rest is committing the open segment."""
FALLBACK_BOUND_S = 2 * STALL_S + 1.0
"""PyAV's own read timeout: FFmpeg's RTSP demuxer hands out its parser's last frame when the
first timed-out read ends, and the next read waits the stall time again."""


class Mode(enum.Enum):
    PASS = "pass"
    SILENT = "silent"
    """The connection stays open and nothing more comes, either way."""
    RTCP_ONLY = "rtcp-only"
    """The camera's RTCP still comes (and is repeated twice a second), its media does not: the
    socket never goes quiet, so no socket timeout can fire."""
    NO_MEDIA = "no-media"
    """The RTSP answers come, the media does not (a keyframe still far off)."""


class FreezeProxy:
    """A TCP relay in front of the camera simulator that can stop relaying mid-stream.

    The camera-to-recorder direction is cut at RTSP-over-TCP frame boundaries ('$', channel,
    length; odd channels are RTCP) so RTCP can be passed alone."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = Mode.PASS
        self.rtcp_seen = 0
        self.frames_seen = 0
        """Interleaved frames from the camera, passed on or not."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closed = threading.Event()
        self._socks: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True, name="proxy")]
        self._threads[0].start()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def url(self, camera_url: str) -> str:
        return camera_url.replace(f":{self.upstream_port}/", f":{self.port}/")

    def close(self) -> None:
        self._closed.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(5)
        assert not any(t.is_alive() for t in self._threads), "the proxy's threads did not end"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            server.settimeout(None)
            self._socks += [client, server]
            for target, args in ((self._up, (client, server)), (self._down, (server, client))):
                t = threading.Thread(target=target, args=args, daemon=True, name="proxy-relay")
                self._threads.append(t)
                t.start()

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        """Recorder to camera: requests, relayed unless silent."""
        while not self._closed.is_set():
            try:
                data = client.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.mode in (Mode.PASS, Mode.NO_MEDIA):
                try:
                    server.sendall(data)
                except OSError:
                    return

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        """Camera to recorder, frame by frame."""
        buf = bytearray()
        last_rtcp = b""
        sel = selectors.DefaultSelector()
        sel.register(server, selectors.EVENT_READ)
        next_repeat = 0.0
        while not self._closed.is_set():
            if sel.select(0.1):
                try:
                    data = server.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
            out = bytearray()
            while True:
                frame = _take_frame(buf)
                if frame is None:
                    break
                rtcp = frame[:1] == b"$" and frame[1] % 2 == 1
                if rtcp:
                    self.rtcp_seen += 1
                    last_rtcp = frame
                media = frame[:1] == b"$"
                self.frames_seen += media
                if (
                    self.mode is Mode.PASS
                    or (self.mode is Mode.RTCP_ONLY and rtcp)
                    or (self.mode is Mode.NO_MEDIA and not media)
                ):
                    out += frame
            now = time.monotonic()
            if self.mode is Mode.RTCP_ONLY and last_rtcp and now >= next_repeat:
                out += last_rtcp
                next_repeat = now + 0.5
            if out:
                try:
                    client.sendall(out)
                except OSError:
                    return


def _take_frame(buf: bytearray) -> bytes | None:
    """The next whole interleaved frame or RTSP message at the start of buf, removed from it."""
    if not buf:
        return None
    if buf[0] == ord("$"):
        if len(buf) < 4:
            return None
        end = 4 + struct.unpack(">H", buf[2:4])[0]
    else:
        head = buf.find(b"\r\n\r\n")
        if head < 0:
            return None
        end = head + 4
        for line in bytes(buf[:head]).split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                end += int(value)
    if len(buf) < end:
        return None
    frame = bytes(buf[:end])
    del buf[:end]
    return frame


@pytest.fixture
def proxy() -> Iterator[Callable[[int], FreezeProxy]]:
    """Relays closed when the test ends, whatever its outcome."""
    made: list[FreezeProxy] = []

    def make(port: int) -> FreezeProxy:
        made.append(FreezeProxy(port))
        return made[-1]

    yield make
    for p in made:
        p.close()


class Session:
    """One camera session of the recorder's own ingest, on a thread of the test."""

    def __init__(
        self, url: str, data: Path, reader: str = "ffmpeg", open_s: float = OPEN_S
    ) -> None:
        self.events: list[WorkerEvent] = []
        self.stop = threading.Event()
        self.ingest = CameraIngest(
            name="cam1",
            url=url,
            data_dir=data,
            origin="a",
            cfg=RecorderConfig(
                open_timeout_seconds=open_s,
                stall_seconds=STALL_S,
                segment_seconds=1,
                rtsp_reader=reader,
            ),
            catalog=Catalog(data),
            report=self.events.append,
            stop=self.stop,
        )
        self.result: tuple[str, str | None] | None = None
        self.ended_at = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True, name="session")
        self._thread.start()

    def _run(self) -> None:
        self.result = self.ingest.session()
        self.ended_at = time.monotonic()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(OPEN_S + STALL_S + 5)
        assert not self._thread.is_alive(), "the session did not end"


def _recording(session: Session) -> Callable[[], bool]:
    return lambda: session.ingest.last_frame_wall_us is not None and session.ingest.seg is not None


def test_this_pyav_is_guarded_without_its_read_timeout() -> None:
    """Production takes the cheap path only if the read guard knows this PyAV's containers."""
    assert read_guard.supported()


@pytest.mark.parametrize("reader", ["ffmpeg", "builtin"])
@pytest.mark.parametrize("mode", [Mode.SILENT, Mode.RTCP_ONLY], ids=lambda m: m.value)
def test_a_camera_that_goes_quiet_mid_stream_is_a_stall_in_bounded_time(
    camera: Callable[..., CameraSim],
    proxy: Callable[[int], FreezeProxy],
    tmp_path: Path,
    mode: Mode,
    reader: str,
) -> None:
    """Accepted, streaming, then nothing (or RTCP alone): the session ends as a stall, not
    before the stall time and not long after it, and what was recorded is committed. FFmpeg's
    reads are guarded by the read guard; the built-in client's never block for long."""
    cam = camera(StreamSpec("cam1", gop=10))
    relay = proxy(cam.port)
    session = Session(relay.url(cam.url("cam1")), tmp_path, reader)
    try:
        wait_until(_recording(session), 30, "recording through the relay")
        if mode is Mode.RTCP_ONLY:
            wait_until(lambda: relay.rtcp_seen, 20, "the camera's first RTCP")
        guard = session.ingest._guard
        assert (guard is not None) == (reader == "ffmpeg"), "PyAV's read timeout is not used"
        fired, since = guard.fired if guard else 0, session.ingest.last_frame_wall_us or 0
        wait_until(lambda: (session.ingest.last_frame_wall_us or 0) - since >= 1_500_000, 20,
                   "1.5 s more of frames")  # fmt: skip
        if guard is not None:
            assert guard.fired - fired <= 1, "reads at 25 fps do not need the guard's callback"
        relay.mode = mode
        cut = time.monotonic()
        wait_until(lambda: session.result is not None, STALL_S + 15, "the session to end")
        took = session.ended_at - cut
        assert session.result is not None and session.result[0] == STALL, session.result
        assert STALL_S - 0.5 <= took <= DETECT_BOUND_S, took
    finally:
        session.close()
    runs = Catalog(tmp_path).runs("cam1")
    assert [r.end_reason for r in runs] == [STALL]
    assert Catalog(tmp_path).segments("cam1"), "the footage before the stall is committed"


def test_the_built_in_reader_waits_for_a_keyframe_beyond_the_open_timeout(
    camera: Callable[..., CameraSim], proxy: Callable[[int], FreezeProxy], tmp_path: Path
) -> None:
    """Cameras with "smart" codecs send a keyframe every 10 s or more: the open timeout bounds
    the set-up, not the wait for the first keyframe (while frames, or nothing for less than the
    stall time, come). Here the first keyframe reaches the client over a second after PLAY."""
    cam = camera(StreamSpec("cam1", gop=100))  # a keyframe every 4 s
    relay = proxy(cam.port)
    relay.mode = Mode.NO_MEDIA
    session = Session(relay.url(cam.url("cam1")), tmp_path, "builtin", open_s=1.0)
    try:
        wait_until(lambda: relay.frames_seen, 10, "the session playing")
        played = time.monotonic()
        wait_until(lambda: time.monotonic() - played > STALL_S * 0.75, 5, "media held back")
        relay.mode = Mode.PASS
        wait_until(_recording(session), 15, "recording from the first keyframe")
    finally:
        session.close()
    assert session.result is not None and session.result[0] == "recorder-stopped", session.result
    assert not any(isinstance(e, SessionChanged) and e.error for e in session.events)


def test_the_fallback_read_timeout_also_ends_a_quiet_camera(
    camera: Callable[..., CameraSim],
    proxy: Callable[[int], FreezeProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the guard does not know PyAV's layout, PyAV's own read timeout is used (as before
    the guard): the same stall, a stall time later."""
    monkeypatch.setattr(read_guard, "supported", lambda: False)
    cam = camera(StreamSpec("cam1", gop=10))
    relay = proxy(cam.port)
    session = Session(relay.url(cam.url("cam1")), tmp_path)
    try:
        wait_until(_recording(session), 30, "recording through the relay")
        assert session.ingest._guard is None
        relay.mode = Mode.SILENT
        cut = time.monotonic()
        wait_until(lambda: session.result is not None, STALL_S + 15, "the session to end")
        assert session.result is not None and session.result[0] == STALL, session.result
        assert STALL_S - 0.5 <= session.ended_at - cut <= FALLBACK_BOUND_S
    finally:
        session.close()


def _fixture_clip(path: Path) -> Path:
    """Four seconds of H.264 and AAC, keyframe every second."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        v.options = {"g": "25", "preset": "ultrafast"}
        a = out.add_stream("aac", rate=8000)
        for i in range(100):
            frame = av.VideoFrame(160, 120, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 7) % 256]) * plane.buffer_size)
            frame.pts = i
            out.mux(v.encode(frame))
        for i in range(40):
            af = av.AudioFrame(format="fltp", layout="mono", samples=800)
            af.planes[0].update(bytes(af.planes[0].buffer_size))
            af.sample_rate, af.pts = 8000, i * 800
            out.mux(a.encode(af))
        out.mux(v.encode(None))
        out.mux(a.encode(None))
    return path


def _remux(out: av.container.OutputContainer, src: Path, stop_after: int | None = None) -> None:
    with av.open(str(src)) as inp:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for i, pkt in enumerate(p for p in inp.demux() if p.dts is not None):
            if stop_after is not None and i == stop_after:
                return
            pkt.stream = streams[pkt.stream_index]
            out.mux(pkt)


class _PythonFile:
    """The writer SegmentWriter replaced: FFmpeg writing through a non-seekable Python file."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def flush(self) -> None:
        pass


def test_segment_bytes_and_hash_are_those_of_the_python_file_writer(tmp_path: Path) -> None:
    """Same fMP4 layout (no seek back, fragment per keyframe), hash of the stored bytes, and
    the fd left to no one."""
    src = _fixture_clip(tmp_path / "src.mp4")
    old = _PythonFile(tmp_path / "old.mp4")
    with av.open(old, "w", format="mp4", options=FMP4_OPTIONS) as out:
        _remux(out, src)
    os.close(old.fd)
    fds = set(os.listdir("/proc/self/fd"))
    w = SegmentWriter(tmp_path / "new.mp4.partial")
    _remux(w.out, src)
    sha = w.finish()
    new = (tmp_path / "new.mp4.partial").read_bytes()
    assert new == (tmp_path / "old.mp4").read_bytes()
    assert sha == hashlib.sha256(new).hexdigest() and w.bytes == len(new)
    assert set(os.listdir("/proc/self/fd")) == fds, "no fd of the writer left open"
    with pytest.raises(FileExistsError):  # O_EXCL: a partial is never shared
        SegmentWriter(tmp_path / "new.mp4.partial")


def test_a_segment_cut_off_mid_way_keeps_its_complete_fragments(tmp_path: Path) -> None:
    """Every packet reaches the file as it is muxed: what is on disk when the writer dies is a
    playable prefix of whole fragments that salvage can keep."""
    src = _fixture_clip(tmp_path / "src.mp4")
    w = SegmentWriter(tmp_path / "cut.mp4.partial")
    _remux(w.out, src, stop_after=150)  # past two keyframes, mid-fragment
    on_disk = (tmp_path / "cut.mp4.partial").read_bytes()  # as a crash would leave it
    w.abandon()
    (tmp_path / "prefix.mp4").write_bytes(on_disk)
    good = complete_prefix(tmp_path / "prefix.mp4")
    assert good > 0
    (tmp_path / "kept.mp4").write_bytes(on_disk[:good])
    with av.open(str(tmp_path / "kept.mp4")) as c:
        frames = sum(1 for p in c.demux(video=0) if p.size)
    assert frames >= 50, frames


def _reference_push(held: deque[Held], h: Held, span_us: int) -> None:
    """The ring's trimming as it was, scanning for the second keyframe on every push."""
    if not held and not (h.video and h.keyframe):
        return
    held.append(h)

    def second() -> int | None:
        seen = False
        for x in held:
            if x.video and x.keyframe:
                if seen:
                    return x.clocks.mono_us
                seen = True
        return None

    while (s := second()) is not None and h.clocks.mono_us - s >= span_us:
        held.popleft()
        while held and not (held[0].video and held[0].keyframe):
            held.popleft()


@pytest.mark.parametrize("seed", range(20))
def test_ring_trims_exactly_as_before(seed: int) -> None:
    """Random GOPs, audio between frames, clears: the same packets held after every push."""
    rnd = random.Random(seed)
    span = rnd.choice([200_000, 1_000_000, 3_000_000])
    ring, ref = StandbyRing(span), deque[Held]()
    t = 0
    for n in range(600):
        if rnd.random() < 0.01:
            ring.clear()
            ref.clear()
        t += rnd.choice([0, 10_000, 40_000, 400_000])
        video = rnd.random() < 0.8
        h = Held(n, video, (video and rnd.random() < 0.1) or not video, "", Clocks(t, t))
        ring.push(h)
        _reference_push(ref, h, span)
        assert list(ring._held) == list(ref), n


def test_a_failing_check_does_not_end_the_read_guard_s_watchdog():
    """One camera's failing check is logged; the watchdog goes on checking the others."""

    class Failing:
        def check(self, now: float) -> None:
            raise RuntimeError("boom")

    class Counting:
        def __init__(self) -> None:
            self.checks = 0

        def check(self, now: float) -> None:
            self.checks += 1

    dog = read_guard._Watchdog()
    reported: list[tuple[str, Exception]] = []
    dog.on_failure = lambda what, e: reported.append((what, e))
    bad, good = Failing(), Counting()
    dog.add(bad)  # type: ignore[arg-type]
    dog.add(good)  # type: ignore[arg-type]
    wait_until(lambda: good.checks >= 3, 10, "three rounds past the failing check")
    assert dog._thread is not None and dog._thread.is_alive()
    assert reported and all(str(e) == "boom" for _, e in reported), "the failure was not reported"
    dog.forget(bad)  # type: ignore[arg-type]
    dog.forget(good)  # type: ignore[arg-type]
