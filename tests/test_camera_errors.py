"""What a camera says when it will not stream, as the recorder reports it.

A loopback RTSP responder answers with a chosen status line; the session goes through the
recorder's own av.open, so the test follows what PyAV really raises for each code.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av.error
import av.logging
import pytest

from firmware.catalog import Catalog
from firmware.config import RecorderConfig
from firmware.recorder.events import SessionChanged
from firmware.recorder.ingest import CameraIngest, describe_open_error

USER, PASSWORD = "admin", "s3cret-pw"
STOP_TIMEOUT_S = 5.0


@dataclass
class Responder:
    """RTSP on 127.0.0.1: every request gets 200 until `fail_on`, which gets `status`."""

    status: str
    fail_on: str = "OPTIONS"
    methods: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "stop")
        self._buffers: dict[socket.socket, bytes] = {}
        self._thread = threading.Thread(target=self._serve, name="rtsp-responder", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def url(self) -> str:
        return f"rtsp://{USER}:{PASSWORD}@127.0.0.1:{self.port}/stream"

    def close(self) -> None:
        """Wake the loop, wait for it (bounded), release every socket."""
        self._wake_w.send(b"x")
        self._thread.join(STOP_TIMEOUT_S)
        alive = self._thread.is_alive()
        for s in (*self._buffers, self._listener, self._wake_r, self._wake_w):
            s.close()
        self._sel.close()
        assert not alive, "the RTSP responder did not stop"

    def _serve(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data == "stop":
                    return
                if key.data == "accept":
                    conn, _ = self._listener.accept()
                    conn.setblocking(False)
                    self._buffers[conn] = b""
                    self._sel.register(conn, selectors.EVENT_READ, "conn")
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._sel.unregister(conn)
            del self._buffers[conn]
            conn.close()
            return
        buf = self._buffers[conn] + data
        while b"\r\n\r\n" in buf:
            head, buf = buf.split(b"\r\n\r\n", 1)
            conn.sendall(self._answer(head.decode("latin-1").split("\r\n")))
        self._buffers[conn] = buf

    def _answer(self, lines: list[str]) -> bytes:
        method = lines[0].split(" ", 1)[0]
        self.methods.append(method)
        cseq = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("cseq:")), "0"
        )
        status, extra = ("200 OK", "Public: OPTIONS, DESCRIBE\r\n")
        if self.fail_on in self.methods:  # and every request after it
            status, extra = self.status, ""
        return f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{extra}\r\n".encode()


@pytest.fixture
def responder() -> Iterator[Callable[..., Responder]]:
    """Responders that close themselves when the test ends, whatever its outcome."""
    started: list[Responder] = []

    def start(status: str, fail_on: str = "OPTIONS") -> Responder:
        r = Responder(status, fail_on)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


@pytest.fixture
def ffmpeg_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """FFmpeg's log level for the test (workers run with it off), restored afterwards."""
    before = av.logging.get_level()
    av.logging.set_level(request.param)
    yield
    av.logging.set_level(before)


def open_session(url: str, tmp_path: Path) -> tuple[str, str | None]:
    """One recorder session against `url`: the same av.open and options as in production."""
    ingest = CameraIngest(
        name="cam1",
        url=url,
        data_dir=tmp_path,
        origin="a",
        cfg=RecorderConfig(open_timeout_seconds=5, stall_seconds=5, rtsp_reader="ffmpeg"),
        catalog=Catalog(tmp_path),
        report=lambda event: None,
        stop=threading.Event(),
    )
    return ingest.session()


@pytest.mark.parametrize("ffmpeg_log", [None], indirect=True)
@pytest.mark.parametrize("fail_on", ["OPTIONS", "DESCRIBE"])
@pytest.mark.parametrize(
    ("status", "reason", "text"),
    [
        ("401 Unauthorized", "camera-auth-failed", "camera refused the credentials (401)"),
        ("403 Forbidden", "camera-auth-failed", "camera refused the credentials (403)"),
        ("404 Not Found", "camera-not-found", "camera has no stream at that path (404)"),
        ("400 Bad Request", "camera-refused", "camera refused the request (400)"),
        ("453 Not Enough Bandwidth", "camera-refused", "camera refused the request (4xx)"),
        ("454 Session Not Found", "camera-refused", "camera refused the request (4xx)"),
        ("500 Internal Server Error", "camera-unavailable", "camera answered a server error (5xx)"),
        ("503 Service Unavailable", "camera-unavailable", "camera answered a server error (5xx)"),
    ],
)
def test_camera_status_is_reported_as_said(
    responder, ffmpeg_log, tmp_path, status, reason, text, fail_on
) -> None:
    cam = responder(status, fail_on)
    got_reason, got_text = open_session(cam.url(), tmp_path)
    assert fail_on in cam.methods, "the camera was never asked"
    assert got_reason == reason
    assert got_text == f"rtsp://***@127.0.0.1:{cam.port}/stream: {text}"


@pytest.mark.parametrize("ffmpeg_log", [av.logging.ERROR], indirect=True)
@pytest.mark.parametrize(
    ("status", "reason", "text"),
    [
        (
            "453 Not Enough Bandwidth",
            "camera-refused",
            "camera refused the request (453 Not Enough Bandwidth)",
        ),
        (
            "503 Service Unavailable",
            "camera-unavailable",
            "camera answered 503 Service Unavailable",
        ),
    ],
)
def test_exact_code_named_while_ffmpeg_logs(
    responder, ffmpeg_log, tmp_path, status, reason, text
) -> None:
    """PyAV names other 4xx and 5xx codes only in FFmpeg's error log it attaches."""
    cam = responder(status)
    got_reason, got_text = open_session(cam.url(), tmp_path)
    assert (got_reason, got_text) == (reason, f"rtsp://***@127.0.0.1:{cam.port}/stream: {text}")


def test_unknown_open_error_does_not_quote_credentials() -> None:
    """FFmpeg errors quote the URL they failed on; the message must not carry its userinfo."""
    url = f"rtsp://{USER}:{PASSWORD}@127.0.0.1:554/stream"
    bare = OSError(f"cannot open {url}")
    bare.filename = url
    for e in (
        av.error.FFmpegError(-5, "Input/output error", url),
        OSError(5, "Input/output error", url),
        bare,
    ):
        reason, text = describe_open_error(e)
        assert reason == "camera-unreachable"
        assert PASSWORD not in text and USER not in text, text


def test_no_session_text_leaves_the_recorder_with_the_password(tmp_path, caplog) -> None:
    """Whatever a session ends with (a camera's answer, FFmpeg quoting the URL, an error of
    the recorder's own), the text reported and logged has neither the URL's password nor
    the URL unredacted."""
    url = "rtsp://installer:Pa55-word@192.0.2.31:8554/cam1"
    reports: list = []
    stop = threading.Event()
    ingest = CameraIngest(
        name="cam1", url=url, data_dir=tmp_path, origin="a",
        cfg=RecorderConfig(reconnect_min_seconds=0.01, reconnect_max_seconds=0.01),
        catalog=Catalog(tmp_path), report=reports.append, stop=stop,
    )  # fmt: skip
    endings = iter([
        ("stream-error", f"stream error: Invalid data found when processing input: '{url}'"),
        ("camera-auth-failed", "the camera said: Digest realm, password Pa55-word rejected"),
        RuntimeError(f"could not parse {url}"),
    ])  # fmt: skip

    def session() -> tuple[str, str | None]:
        ending = next(endings, None)
        if ending is None:
            stop.set()
            return "recorder-stopped", None
        if isinstance(ending, Exception):
            raise ending
        return ending

    ingest.session = session  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG):
        ingest.run_forever()
    texts = [r.error for r in reports if isinstance(r, SessionChanged) and r.error]
    assert len(texts) == 3
    assert all("Pa55-word" not in t and "installer" not in t for t in texts), texts
    assert "rtsp://***@192.0.2.31:8554/cam1" in texts[0]
    assert "RuntimeError" in texts[2]
    assert "Pa55-word" not in caplog.text and "installer:" not in caplog.text
