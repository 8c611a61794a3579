"""The camera simulator process: GStreamer's RTSP server fed by Python producer threads.

Each stream has one producer thread that owns the camera's frame clock: frame n belongs
to the instant epoch + n/fps, whether or not anybody receives it, so a gap in the frame
numbers of a recording measures the outage. The thread takes encoded access units either
from a live encoder pipeline or from a clip encoded once at start (cheap mode), stamps each
with the frame-number SEI and pushes it into the appsrc of every prepared RTSP media of its
stream. Media are shared, so all clients of one stream receive the very same frames.

The GLib main loop runs in the main thread (RTSP server, signals); the control socket is
served by its own thread and hands anything touching RTSP clients to the main loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Quiet unless the caller asked for GStreamer debug output.
os.environ.setdefault("GST_DEBUG", "1")

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import (  # noqa: E402
    GLib,
    Gst,
    GstApp,
    GstBase,
    GstRtsp,
    GstRtspServer,
    GstVideo,
)

from hil.camera.sei import first_vcl_offset, insert_sei  # noqa: E402
from hil.camera.spec import StreamSpec  # noqa: E402

# A producer this late behind its frame clock (process frozen, machine overloaded) drops the
# frames it missed instead of bursting them out, like a camera whose frames are lost.
MAX_LATENESS_S = 0.5
PULL_TIMEOUT_NS = 2 * Gst.SECOND
MAIN_LOOP_CALL_TIMEOUT_S = 5.0


def _log(msg: str) -> None:
    print(f"camera-sim: {msg}", file=sys.stderr, flush=True)


def _encoder_description(spec: StreamSpec) -> str:
    """Encoder chain producing byte-stream access units with parameter sets at every IDR."""
    if spec.codec == "h264":
        return (
            f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={spec.bitrate} "
            f"key-int-max={spec.gop} bframes=0 byte-stream=true "
            f"vbv-buf-capacity=1000 option-string=scenecut=0 "
            "! h264parse config-interval=-1 "
            "! video/x-h264,stream-format=byte-stream,alignment=au"
        )
    return (
        f"x265enc tune=zerolatency speed-preset=ultrafast bitrate={spec.bitrate} "
        f"key-int-max={spec.gop} log-level=none "
        "option-string=bframes=0:scenecut=0:open-gop=0:repeat-headers=1 "
        "! h265parse config-interval=-1 "
        "! video/x-h265,stream-format=byte-stream,alignment=au"
    )


def _raw_caps(spec: StreamSpec) -> str:
    return f"video/x-raw,format=I420,width={spec.width},height={spec.height},framerate={spec.fps}/1"


def _check_pattern(spec: StreamSpec) -> None:
    src = Gst.ElementFactory.make("videotestsrc", None)
    try:
        Gst.util_set_object_arg(src, "pattern", spec.pattern)
    except Exception as exc:  # GLib reports unknown enum nicks as a warning or TypeError
        raise ValueError(f"stream {spec.name}: unknown pattern {spec.pattern!r}") from exc
    nick = src.get_property("pattern").value_nick
    if nick != spec.pattern and str(int(src.get_property("pattern"))) != spec.pattern:
        raise ValueError(f"stream {spec.name}: unknown pattern {spec.pattern!r}")


class _EncoderPipeline:
    """A test source and an encoder ending in an appsink that Python pulls from.

    Without a live source the pipeline runs on demand: every pull lets one more frame
    through, so a live stream encodes at exactly the producer's pace.
    """

    def __init__(self, description: str, name: str) -> None:
        self.name = name
        self.pipeline = Gst.parse_launch(
            f"{description} ! appsink name=sink sync=false max-buffers=2 drop=false"
        )
        self.sink = self.pipeline.get_by_name("sink")
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError(f"{name}: encoder pipeline failed to start")

    def pull(self) -> tuple[bytes, bool, Gst.Caps] | None:
        """Next encoded buffer, whether it is a keyframe, its caps; None at end of stream."""
        sample = self.sink.try_pull_sample(PULL_TIMEOUT_NS)
        if sample is None:
            msg = self.pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
            if msg is not None:
                err, _debug = msg.parse_error()
                raise RuntimeError(f"{self.name}: encoder error: {err.message}")
            return None
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            raise RuntimeError(f"{self.name}: cannot map an encoded buffer")
        try:
            data = bytes(info.data)
        finally:
            buf.unmap(info)
        return data, not buf.has_flags(Gst.BufferFlags.DELTA_UNIT), sample.get_caps()

    def request_keyframe(self) -> None:
        event = GstVideo.video_event_new_upstream_force_key_unit(Gst.CLOCK_TIME_NONE, True, 0)
        self.sink.get_static_pad("sink").push_event(event)

    def close(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)


def _video_encoder(spec: StreamSpec, num_buffers: int = -1) -> _EncoderPipeline:
    return _EncoderPipeline(
        f"videotestsrc pattern={spec.pattern} num-buffers={num_buffers} "
        f"! {_raw_caps(spec)} ! {_encoder_description(spec)}",
        f"stream {spec.name}",
    )


@dataclass(frozen=True)
class _AccessUnit:
    data: bytes
    keyframe: bool
    sei_offset: int  # where the SEI goes (start code of the first slice)


class _Clip:
    """A few GOPs encoded once at start, looped by cheap streams; starts with an IDR."""

    def __init__(self, spec: StreamSpec) -> None:
        # At least two seconds, and an even number of GOPs: x264 alternates idr_pic_id, so
        # neighbouring keyframes of the loop then always differ in it, as H.264 requires.
        gops = max(2, math.ceil(2 * spec.fps / spec.gop))
        gops += gops % 2
        enc = _video_encoder(spec, num_buffers=gops * spec.gop)
        aus: list[_AccessUnit] = []
        try:
            while (item := enc.pull()) is not None:
                data, key, _caps = item
                aus.append(_AccessUnit(data, key, first_vcl_offset(spec.codec, data)))
        finally:
            enc.close()
        self.aus = aus
        self.keys = [i for i, au in enumerate(aus) if au.keyframe]
        if len(self.keys) < 2 or self.keys[0] != 0:
            raise RuntimeError(f"stream {spec.name}: clip needs an IDR first and another later")


class _AudioClip:
    """About a second of AAC frames, encoded once and looped by every stream with audio.

    The tone's period divides the frame length, so the loop point is inaudible enough.
    """

    RATE = 48000
    SAMPLES_PER_FRAME = 1024
    FRAMES = 47

    def __init__(self) -> None:
        enc = _EncoderPipeline(
            f"audiotestsrc wave=sine freq=375 volume=0.2 "
            f"samplesperbuffer={self.SAMPLES_PER_FRAME} num-buffers={self.FRAMES + 2} "
            f"! audio/x-raw,format=S16LE,rate={self.RATE},channels=1 "
            "! voaacenc bitrate=64000",
            "audio",
        )
        frames: list[bytes] = []
        caps: Gst.Caps | None = None
        try:
            while (item := enc.pull()) is not None:
                frames.append(item[0])
                caps = item[2]
        finally:
            enc.close()
        if caps is None or len(frames) < self.FRAMES:
            raise RuntimeError("audio: the AAC encoder produced too little")
        # Skip the encoder's priming frames at the start.
        self.frames = frames[-self.FRAMES :]
        self.caps = caps.to_string()

    def frame_ns(self, k: int) -> int:
        """Start of audio frame k on the camera's timeline, in ns since the epoch."""
        return k * self.SAMPLES_PER_FRAME * Gst.SECOND // self.RATE


class _LiveSource:
    """Encodes the test picture in step with the frame clock."""

    def __init__(self, spec: StreamSpec) -> None:
        self.encoder = _video_encoder(spec)
        self._codec = spec.codec

    def next(self) -> _AccessUnit:
        item = self.encoder.pull()
        if item is None:
            raise RuntimeError("live encoder stopped")
        data, key, _caps = item
        return _AccessUnit(data, key, first_vcl_offset(self._codec, data))

    def request_keyframe(self) -> None:
        self.encoder.request_keyframe()

    def close(self) -> None:
        self.encoder.close()


class _ClipSource:
    """Loops a clip; a keyframe request continues it at one of its IDRs."""

    def __init__(self, clip: _Clip) -> None:
        self.clip = clip
        self.pos = 0
        self._restart = threading.Event()

    def next(self) -> _AccessUnit:
        if self._restart.is_set():
            self._restart.clear()
            # Not the IDR just sent: two identical IDRs in a row would share idr_pic_id.
            keys = self.clip.keys
            just_sent = (self.pos - 1) % len(self.clip.aus)
            self.pos = keys[(keys.index(just_sent) + 1) % len(keys)] if just_sent in keys else 0
        au = self.clip.aus[self.pos]
        self.pos = (self.pos + 1) % len(self.clip.aus)
        return au

    def request_keyframe(self) -> None:
        self._restart.set()

    def close(self) -> None:
        pass


def _top_pipeline(element: Gst.Element) -> Gst.Element:
    while (parent := element.get_parent()) is not None:
        element = parent
    return element


def _running_time(element: Gst.Element) -> int:
    clock = element.get_clock()
    if clock is None:
        return 0
    return max(0, clock.get_time() - element.get_base_time())


class _Sink:
    """The appsrcs of one prepared media and where its timestamps start."""

    def __init__(
        self, media: GstRtspServer.RTSPMedia, video: GstApp.AppSrc, audio: GstApp.AppSrc | None
    ) -> None:
        self.media = media
        self.video = video
        self.audio = audio
        self.pipeline = _top_pipeline(video)
        self.ready = False  # the video appsrc asked for data: the media runs
        self.need_key = True  # the next picture it gets must be decodable alone
        self.t0_ns: int | None = None  # camera time of its first frame
        self.base_ns = 0  # its running time then
        self.jump0_ns = 0  # jumps before it started do not concern it

    def pts(self, t_ns: int, jump_ns: int) -> int:
        """Timestamp in this media for camera time t_ns (ns since the epoch)."""
        assert self.t0_ns is not None
        return self.base_ns + t_ns - self.t0_ns + jump_ns - self.jump0_ns


def _push(appsrc: GstApp.AppSrc, buf: Gst.Buffer) -> bool:
    # Flushing or stopped appsrcs (media shutting down) refuse the buffer; that is harmless.
    return appsrc.emit("push-buffer", buf) == Gst.FlowReturn.OK


class Stream:
    """One camera stream: its frame clock, producer thread and prepared media."""

    def __init__(
        self, spec: StreamSpec, epoch: float, clip: _Clip | None, audio: _AudioClip | None
    ) -> None:
        self.spec = spec
        self.epoch = epoch
        self.audio_clip = audio
        self.source: _LiveSource | _ClipSource = (
            _ClipSource(clip) if clip is not None else _LiveSource(spec)
        )
        self._lock = threading.Lock()
        self._sinks: list[_Sink] = []
        self._stalled = False
        self._corrupt = False
        self._jump_ns = 0
        self._last_sent: int | None = None
        self._next_audio = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"producer-{spec.name}", daemon=True)
        self.failed: BaseException | None = None

    def frame_ns(self, n: int) -> int:
        """Start of frame n on the camera's timeline, in ns since the epoch."""
        return n * Gst.SECOND // self.spec.fps

    def clock_frame(self, now: float | None = None) -> int:
        """Number of the frame period `now` (UNIX seconds) falls into."""
        t = time.time() if now is None else now
        return math.floor((t - self.epoch) * self.spec.fps)

    # -- media bookkeeping (main loop thread) ---------------------------------------------
    def add_media(self, media: GstRtspServer.RTSPMedia) -> None:
        element = media.get_element()
        sink = _Sink(media, element.get_by_name("src"), element.get_by_name("asrc"))
        handler: list[int] = []

        def on_need_data(src: GstApp.AppSrc, _length: int) -> None:
            # The first request says the media runs; then stop the per-frame signal.
            if not sink.ready:
                sink.ready = True
                self.source.request_keyframe()
            if handler:
                with contextlib.suppress(Exception):
                    src.disconnect(handler.pop())
                src.set_property("emit-signals", False)

        handler.append(sink.video.connect("need-data", on_need_data))
        media.connect("unprepared", self._on_unprepared, sink)
        with self._lock:
            self._sinks.append(sink)

    def _on_unprepared(self, _media: GstRtspServer.RTSPMedia, sink: _Sink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    def medias(self) -> list[GstRtspServer.RTSPMedia]:
        with self._lock:
            return [s.media for s in self._sinks]

    # -- control ----------------------------------------------------------------------------
    def request_keyframe(self) -> None:
        """Make the next picture an IDR."""
        self.source.request_keyframe()

    def set_corrupt(self, on: bool) -> None:
        """Garble the coded picture data (after the frame-number SEI) of every frame sent."""
        with self._lock:
            self._corrupt = on

    def set_stalled(self, on: bool) -> None:
        with self._lock:
            resumed = self._stalled and not on
            self._stalled = on
            if resumed:
                for sink in self._sinks:
                    sink.need_key = True
        if resumed:
            self.source.request_keyframe()

    def jump(self, seconds: float) -> None:
        with self._lock:
            self._jump_ns += round(seconds * Gst.SECOND)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "frame": self._last_sent,
                "clock": self.clock_frame(),
                "stalled": self._stalled,
                "jump": self._jump_ns / Gst.SECOND,
                "media": len(self._sinks),
            }

    # -- producer -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.source.close()

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:
            self.failed = exc
            _log(f"stream {self.spec.name}: producer failed: {exc!r}")
            os.kill(os.getpid(), signal.SIGTERM)

    def _produce(self) -> None:
        fps = self.spec.fps
        # Pace on the monotonic clock, number on the wall clock (the epoch is UNIX time).
        mono_epoch = time.monotonic() - (time.time() - self.epoch)
        n = max(0, math.ceil((time.monotonic() - mono_epoch) * fps))
        while not self._stop.is_set():
            due = mono_epoch + n / fps
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if time.monotonic() - due > MAX_LATENESS_S:
                n = math.floor((time.monotonic() - mono_epoch) * fps)
            au = self.source.next()
            try:
                self._deliver(n, au)
            except Exception as exc:  # one bad push must not end the camera
                _log(f"stream {self.spec.name}: frame {n} not delivered: {exc!r}")
            n += 1

    def _deliver(self, n: int, au: _AccessUnit) -> None:
        audio_frames = self._audio_due(n)
        with self._lock:
            if self._stalled:
                return
            sinks = [s for s in self._sinks if s.ready]
            jump_ns = self._jump_ns
            corrupt = self._corrupt
        if not sinks:
            return
        t_ns = self.frame_ns(n)
        video = [s for s in sinks if au.keyframe or not s.need_key]
        if video:
            data = insert_sei(self.spec.codec, au.data, n, time.time_ns() // 1000, au.sei_offset)
            if corrupt:
                data = _garble(data, len(data) - len(au.data) + (au.sei_offset or 0) + 48)
            proto = Gst.Buffer.new_wrapped(data)
            if not au.keyframe:
                proto.set_flags(Gst.BufferFlags.DELTA_UNIT)
            sent = False
            for sink in video:
                if sink.t0_ns is None:
                    sink.t0_ns = t_ns
                    sink.base_ns = _running_time(sink.pipeline)
                    sink.jump0_ns = jump_ns
                buf = proto.copy() if len(video) > 1 else proto
                buf.pts = buf.dts = max(0, sink.pts(t_ns, jump_ns))
                buf.duration = self.frame_ns(n + 1) - t_ns
                ok = _push(sink.video, buf)
                sink.need_key = not ok
                sent = sent or ok
            if sent:
                with self._lock:
                    self._last_sent = n
        if self.audio_clip is not None:
            self._deliver_audio(sinks, audio_frames, jump_ns)

    def _audio_due(self, n: int) -> range:
        """Audio frames that start before video frame n+1 and were not yet due.

        Advances even while nothing is sent, so audio resumes in step after a stall.
        """
        clip = self.audio_clip
        if clip is None:
            return range(0)
        per_frame = clip.SAMPLES_PER_FRAME * self.spec.fps
        first = max(self._next_audio, n * clip.RATE // per_frame)
        end = -(-(n + 1) * clip.RATE // per_frame)
        self._next_audio = max(self._next_audio, end)
        return range(first, end)

    def _deliver_audio(self, sinks: list[_Sink], frames: range, jump_ns: int) -> None:
        clip = self.audio_clip
        assert clip is not None
        for k in frames:
            t_ns = clip.frame_ns(k)
            data = clip.frames[k % len(clip.frames)]
            for sink in sinks:
                if sink.audio is None or sink.t0_ns is None or t_ns < sink.t0_ns:
                    continue  # audio starts with the media's first picture
                buf = Gst.Buffer.new_wrapped(data)
                buf.pts = buf.dts = sink.pts(t_ns, jump_ns)
                buf.duration = clip.frame_ns(k + 1) - t_ns
                _push(sink.audio, buf)


def _garble(data: bytes, keep: int) -> bytes:
    """Overwrite a few runs of bytes after `keep` with noise, start codes and NAL headers too."""
    out = bytearray(data)
    rnd = random.Random(len(data))
    for _ in range(8):
        if keep >= len(out) - 16:
            break
        at = rnd.randrange(keep, len(out) - 16)
        out[at : at + 16] = rnd.randbytes(16)
    return bytes(out)


def _media_launch(spec: StreamSpec, audio_caps: str | None) -> str:
    enc = "h264" if spec.codec == "h264" else "h265"
    caps = (
        f"video/x-{enc},stream-format=byte-stream,alignment=au,"
        f"width={spec.width},height={spec.height},framerate={spec.fps}/1"
    )
    # Bounded queues: a media blocked before PLAY must not hoard frames forever.
    queue = f"max-bytes=0 max-buffers={4 * spec.fps} leaky-type=downstream"
    launch = (
        f'( appsrc name=src is-live=true format=time {queue} caps="{caps}" '
        f"! rtp{enc}pay name=pay0 pt=96 config-interval=0"
    )
    if audio_caps is not None:
        launch += (
            f' appsrc name=asrc is-live=true format=time {queue} caps="{audio_caps}" '
            "! rtpmp4gpay name=pay1 pt=97"
        )
    return launch + " )"


class CameraServer:
    """The RTSP server and its streams."""

    def __init__(
        self,
        specs: list[StreamSpec],
        bind: str,
        port: int,
        epoch: float,
        raw_mounts: dict[str, str] | None = None,
        auth: str | None = None,
        digest: bool = False,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("stream names must be unique")
        self.bind = bind
        self.port = port
        self.epoch = epoch
        self._raw_names = list(raw_mounts or {})
        clips: dict[tuple[Any, ...], _Clip] = {}
        audio = _AudioClip() if any(spec.audio for spec in specs) else None
        self.streams: dict[str, Stream] = {}
        for spec in specs:
            _check_pattern(spec)
            clip = None
            if spec.cheap:
                key = (
                    spec.codec,
                    spec.width,
                    spec.height,
                    spec.fps,
                    spec.bitrate,
                    spec.gop,
                    spec.pattern,
                )
                if key not in clips:
                    clips[key] = _Clip(spec)
                clip = clips[key]
            self.streams[spec.name] = Stream(spec, epoch, clip, audio if spec.audio else None)

        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(bind)
        self.server.set_service(str(port))
        mounts = self.server.get_mount_points()
        for stream in self.streams.values():
            factory = GstRtspServer.RTSPMediaFactory()
            audio_caps = stream.audio_clip.caps if stream.audio_clip is not None else None
            factory.set_launch(_media_launch(stream.spec, audio_caps))
            factory.set_shared(True)
            factory.connect("media-configure", self._on_media_configure, stream)
            mounts.add_factory(f"/{stream.spec.name}", factory)
        # Odd cameras for bad-input tests (MJPEG, other audio codecs): plain launch lines,
        # no frame numbers.
        for name, launch in (raw_mounts or {}).items():
            factory = GstRtspServer.RTSPMediaFactory()
            factory.set_launch(f"( {launch} )")
            factory.set_shared(True)
            mounts.add_factory(f"/{name}", factory)
        if auth is not None:
            self._require_auth(auth, mounts, digest)
        self._clients: set[GstRtspServer.RTSPClient] = set()
        self.server.connect("client-connected", self._on_client_connected)

    def _require_auth(self, auth: str, mounts: GstRtspServer.RTSPMountPoints, digest: bool) -> None:
        """Every mount asks for credentials: HTTP Basic, as most cameras do, or Digest."""
        user, _, password = auth.partition(":")
        rtsp_auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        if digest:
            rtsp_auth.add_digest(user, password, token)
            rtsp_auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        else:
            rtsp_auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        self.server.set_auth(rtsp_auth)
        names = [s for s in self.streams] + list(self._raw_names)
        for name in names:
            factory = mounts.match(f"/{name}")[0]
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role("viewer", "media.factory.access", True)
            perms.add_permission_for_role("viewer", "media.factory.construct", True)
            factory.set_permissions(perms)

    def attach(self) -> None:
        if self.server.attach(None) == 0:
            raise RuntimeError(f"cannot listen on {self.bind}:{self.port}")
        # Sessions of clients that vanished without TEARDOWN (UDP) expire only when asked.
        GLib.timeout_add_seconds(2, self._cleanup_sessions)
        for stream in self.streams.values():
            stream.start()

    def stop(self) -> None:
        for stream in self.streams.values():
            stream.stop()

    def _cleanup_sessions(self) -> bool:
        self.server.get_session_pool().cleanup()
        return True

    def _on_media_configure(
        self,
        _factory: GstRtspServer.RTSPMediaFactory,
        media: GstRtspServer.RTSPMedia,
        stream: Stream,
    ) -> None:
        stream.add_media(media)

    def _on_client_connected(
        self, _server: GstRtspServer.RTSPServer, client: GstRtspServer.RTSPClient
    ) -> None:
        self._clients.add(client)
        client.connect("closed", self._clients.discard)
        client.connect("play-request", self._on_play_request)

    def _on_play_request(
        self, _client: GstRtspServer.RTSPClient, ctx: GstRtspServer.RTSPContext
    ) -> None:
        media = ctx.sessmedia.get_media() if ctx.sessmedia is not None else None
        for stream in self.streams.values():
            if media in stream.medias():
                _unsync_senders(media)
                # A client joining a running shared media waits for a keyframe: make one.
                # (The first client gets the one the media started with.)
                if len(self.clients_of(stream)) > 1:
                    stream.request_keyframe()

    # -- main loop only ------------------------------------------------------------------
    def clients_of(self, stream: Stream) -> list[GstRtspServer.RTSPClient]:
        medias = stream.medias()
        found = []
        for client in list(self._clients):
            sessions = client.session_filter(None)
            if any(sm.get_media() in medias for sess in sessions for sm in sess.filter(None)):
                found.append(client)
        return found

    def drop(self, stream: Stream) -> int:
        clients = self.clients_of(stream)
        for client in clients:
            client.close()
        return len(clients)


def _unsync_senders(media: GstRtspServer.RTSPMedia) -> None:
    """Let the media's network sinks send as soon as data arrives.

    Pushes are paced by the frame clock already; sinks that sync to the timestamps would
    hold a stream back for as long as a timestamp jump. (Turning the media's rate control
    off would do this too, but also strips the RTP times from RTCP sender reports, which
    breaks clients' audio/video sync.) Every PLAY sets sync again, so this runs after each.
    """
    it = _top_pipeline(media.get_element()).iterate_recurse()
    while True:
        res, element = it.next()
        if res == Gst.IteratorResult.RESYNC:
            it.resync()
            continue
        if res != Gst.IteratorResult.OK:
            return
        if isinstance(element, GstBase.BaseSink):
            element.set_property("sync", False)


def _call_in_main_loop(func: Callable[[], Any]) -> Any:
    """Run func in the GLib main loop thread and wait for its result."""
    done = threading.Event()
    result: dict[str, Any] = {}

    def run() -> bool:
        try:
            result["value"] = func()
        except BaseException as exc:
            result["error"] = exc
        done.set()
        return False

    GLib.idle_add(run)
    if not done.wait(MAIN_LOOP_CALL_TIMEOUT_S):
        raise TimeoutError("main loop did not answer")
    if "error" in result:
        raise result["error"]
    return result.get("value")


class _ControlHandler(socketserver.StreamRequestHandler):
    server: _ControlServer

    def handle(self) -> None:
        for line in self.rfile:
            if not line.strip():
                continue
            try:
                reply = self.server.dispatch(json.loads(line))
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class _ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, camera: CameraServer) -> None:
        self.camera = camera
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        super().__init__(path, _ControlHandler)

    def _stream(self, req: dict[str, Any]) -> Stream:
        name = req.get("stream")
        if name not in self.camera.streams:
            raise KeyError(f"no stream {name!r}")
        return self.camera.streams[name]

    def dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "ping":
            return {
                "ok": True,
                "pid": os.getpid(),
                "epoch": self.camera.epoch,
                "streams": list(self.camera.streams),
            }
        if cmd == "stall":
            self._stream(req).set_stalled(bool(req.get("on", True)))
            return {"ok": True}
        if cmd == "corrupt":
            self._stream(req).set_corrupt(bool(req.get("on", True)))
            return {"ok": True}
        if cmd == "jump":
            seconds = float(req["seconds"])
            if not seconds > 0:
                raise ValueError("jump only goes forward (seconds > 0)")
            self._stream(req).jump(seconds)
            return {"ok": True}
        if cmd == "frame":
            status = self._stream(req).status()
            return {"ok": True, "frame": status["frame"], "clock": status["clock"]}
        if cmd == "status":
            return {"ok": True, **self._stream(req).status()}
        if cmd == "clients":
            stream = self._stream(req)
            n = _call_in_main_loop(lambda: len(self.camera.clients_of(stream)))
            return {"ok": True, "clients": n}
        if cmd == "drop":
            stream = self._stream(req)
            n = _call_in_main_loop(lambda: self.camera.drop(stream))
            return {"ok": True, "dropped": n}
        raise ValueError(f"unknown cmd {cmd!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hil.camera", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--control", help="unix socket path for the JSON-lines control interface")
    p.add_argument(
        "--epoch",
        type=float,
        default=None,
        help="UNIX time of frame 0 (default: now); pass the same to continue a clock",
    )
    p.add_argument(
        "--stream",
        action="append",
        type=StreamSpec.from_arg,
        default=[],
        help="name=cam1,codec=h264,width=640,height=360,fps=25,bitrate=1000,"
        "gop=25,audio=0,cheap=0,pattern=ball (repeatable)",
    )
    p.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="NAME=LAUNCH",
        help="an extra stream from a raw GStreamer launch line ending in pay0 (repeatable)",
    )
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require these credentials")
    p.add_argument("--digest", action="store_true", help="by Digest authentication, not Basic")
    p.add_argument(
        "--wsd",
        action="store_true",
        help="answer ONVIF WS-Discovery probes on 239.255.255.250:3702 (hil.camera.wsd)",
    )
    p.add_argument("--wsd-name", default="camsim", help="the ONVIF name scope it answers with")
    p.add_argument("--wsd-hardware", default="CamSim-1", help="the ONVIF hardware scope")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    epoch = time.time() if args.epoch is None else args.epoch
    try:
        raw = dict(m.split("=", 1) for m in args.mount)
        camera = CameraServer(args.stream, args.bind, args.port, epoch, raw, args.auth, args.digest)
    except (ValueError, RuntimeError, GLib.Error) as exc:
        _log(f"cannot start: {exc}")
        return 2
    try:
        camera.attach()
    except RuntimeError as exc:
        camera.stop()
        _log(f"cannot start: {exc}")
        return 2
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, lambda *_: loop.quit() or False)
    wsd = None
    if args.wsd:
        from hil.camera.wsd import Responder

        try:
            wsd = Responder(args.bind, args.wsd_name, args.wsd_hardware).start()
        except OSError as exc:
            camera.stop()
            _log(f"cannot start the WS-Discovery responder: {exc}")
            return 2
    control: _ControlServer | None = None
    if args.control:
        control = _ControlServer(args.control, camera)
        threading.Thread(target=control.serve_forever, name="control", daemon=True).start()
    _log(f"serving {', '.join(camera.streams)} on rtsp://{args.bind}:{args.port}/ epoch={epoch}")
    try:
        loop.run()
    finally:
        if control is not None:
            control.shutdown()
            control.server_close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.control)
        if wsd is not None:
            wsd.close()
        camera.stop()
    failed = [s.spec.name for s in camera.streams.values() if s.failed is not None]
    return 1 if failed else 0
