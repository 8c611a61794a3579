"""The built-in RTSP client ([recorder] rtsp_reader = "builtin", the default) where it differs
from FFmpeg's reader, against real servers: the simulated camera (GStreamer's RTSP server, with
Digest authentication) and a loopback responder for the status lines cameras answer with. The
recorder's other tests run on it; tests/test_recorder.py also records through FFmpeg's reader."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until
from test_camera_errors import PASSWORD, USER, responder  # noqa: F401  (a fixture)

from firmware.catalog import Catalog
from firmware.config import RecorderConfig
from firmware.recorder import rtsp_reader
from firmware.recorder.events import SegmentCommitted, SessionChanged
from firmware.recorder.ingest import RECORD, RING, STOPPED, CameraIngest
from firmware.recorder.rtsp_reader import BATCH_BYTES, HOLD_BATCH_BYTES, HOLD_POLL_S, POLL_S
from hil.camera import StreamSpec


def _ingest(url: str, tmp_path: Path, stop: threading.Event, reports: list, mode=RECORD,
            **cfg) -> CameraIngest:  # fmt: skip
    return CameraIngest(
        name="cam1", url=url, data_dir=tmp_path, origin="a",
        cfg=RecorderConfig(rtsp_reader="builtin", segment_seconds=1, **cfg),
        catalog=Catalog(tmp_path), report=reports.append, stop=stop, mode=mode,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "reason", "text"),
    [
        ("401 Unauthorized", "camera-auth-failed", "(401)"),  # with no challenge to answer
        ("403 Forbidden", "camera-auth-failed", "camera refused access (403 Forbidden)"),
        ("404 Not Found", "camera-not-found", "camera has no stream at that path (404)"),
        ("453 Not Enough Bandwidth", "camera-refused", "453 Not Enough Bandwidth"),
        ("503 Service Unavailable", "camera-unavailable", "503 Service Unavailable"),
    ],
)
@pytest.mark.parametrize("fail_on", ["OPTIONS", "DESCRIBE"])
def test_the_camera_status_is_named_exactly(responder, tmp_path, status, reason, text, fail_on):  # noqa: F811
    """Unlike FFmpeg's demuxer (whose error classes fold other 4xx and every 5xx together),
    the built-in client knows the code and the camera's phrase."""
    cam = responder(status, fail_on)
    ingest = _ingest(cam.url(), tmp_path, threading.Event(), [], open_timeout_seconds=5)
    got_reason, got_text = ingest.session()
    assert fail_on in cam.methods
    assert got_reason == reason
    assert got_text is not None and got_text.startswith(f"rtsp://***@127.0.0.1:{cam.port}/")
    assert text in got_text and PASSWORD not in got_text and USER not in got_text


def test_a_stop_ends_a_quiet_session_without_waiting_for_the_stall(camera, tmp_path):
    cam = camera(StreamSpec("cam1", gop=10))
    stop, reports = threading.Event(), []
    ingest = _ingest(cam.url("cam1"), tmp_path, stop, reports, stall_seconds=60)
    result: list = []
    t = threading.Thread(target=lambda: result.append(ingest.session()), daemon=True)
    t.start()
    try:
        wait_until(lambda: any(isinstance(r, SessionChanged) and r.up for r in reports), 20,
                   "the session up")  # fmt: skip
        wait_until(lambda: ingest.last_frame_seen_us, 10, "frames")
        cam.stall("cam1", True)
        quiet_from = time.monotonic()
        wait_until(lambda: time.monotonic() - quiet_from > 1, 5, "a second of quiet")
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive(), "the session did not end on the stop"
    assert result and result[0][0] == STOPPED


def _pace(ingest: CameraIngest) -> tuple[int, float] | None:
    """The low-water mark and receive timeout (to 10 ms: the kernel keeps it in ticks) of the
    session's socket, None between sessions."""
    reader = ingest.reader
    sock = reader.sock if reader is not None else None
    if sock is None:
        return None
    lowat = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)
    sec, usec = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    return lowat, round(sec + usec / 1e6, 2)


@contextlib.contextmanager
def _session(ingest: CameraIngest, stop: threading.Event, join_s: float = 10):
    """The camera's session on its own thread, stopped and joined on the way out."""
    t = threading.Thread(target=ingest.session, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(join_s)
    assert not t.is_alive(), "the session did not end on the stop"


def _take_over(ingest: CameraIngest, reports: list) -> None:
    ingest.request_mode(RECORD)
    wait_until(lambda: _pace(ingest) == (BATCH_BYTES, POLL_S), 10, "the recording pace")
    wait_until(lambda: any(isinstance(r, SegmentCommitted) for r in reports), 15,
               "a segment written after the takeover")  # fmt: skip


def test_a_standby_reads_in_large_batches_and_a_takeover_at_the_recording_pace(camera, tmp_path):
    """A standby's session wakes its thread a quarter as often (its largest cost); the takeover
    puts the socket back to the recording pace, and writes what waited."""
    cam = camera(StreamSpec("cam1", gop=10))
    stop, reports = threading.Event(), []
    ingest = _ingest(cam.url("cam1"), tmp_path, stop, reports, mode=RING)
    with _session(ingest, stop):
        wait_until(lambda: ingest.holding, 20, "the ring filling")
        assert _pace(ingest) == (HOLD_BATCH_BYTES, HOLD_POLL_S)
        assert not any(isinstance(r, SegmentCommitted) for r in reports)
        _take_over(ingest, reports)


def test_a_takeover_does_not_wait_for_the_standbys_batch(camera, tmp_path, monkeypatch):
    """A standby waiting for a batch a minute away still takes over at once: the takeover
    wakes its read."""
    monkeypatch.setattr(rtsp_reader, "HOLD_POLL_S", 60.0)
    monkeypatch.setattr(rtsp_reader, "HOLD_BATCH_BYTES", 32 << 20)
    cam = camera(StreamSpec("cam1", gop=10, bitrate=300))
    stop, reports = threading.Event(), []
    ingest = _ingest(cam.url("cam1"), tmp_path, stop, reports, mode=RING, stall_seconds=120)
    with _session(ingest, stop, join_s=70):
        wait_until(lambda: ingest.holding and _pace(ingest) is not None, 20, "the standby")
        assert len(ingest.ring) >= 1
        _take_over(ingest, reports)
