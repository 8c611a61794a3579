"""Camera simulator: real RTSP server on loopback, real recordings, frame numbers read back."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil.camera import CameraError, CameraSim, StreamSpec, free_port
from hil.camera.sei import (
    SEI_UUID,
    add_emulation_prevention,
    build_sei_nal,
    find_stamp,
    first_vcl_offset,
    insert_sei,
    iter_annexb_nals,
    iter_length_prefixed_nals,
    parse_sei_nal,
    remove_emulation_prevention,
)
from hil.framecheck import check_contiguous, frame_numbers, frame_records, stamp_from_packet

FRAGMENTED = ["-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof"]


# -- helpers --------------------------------------------------------------------------------


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `cond` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def ffmpeg_cmd(url: str, out: Path, *args: str) -> list[str]:
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-rtsp_transport", "tcp", "-i", url, "-c", "copy", *args, "-y", str(out),
    ]  # fmt: skip


def record(url: str, out: Path, seconds: float = 3, *args: str) -> Path:
    """Record `seconds` of a stream with ffmpeg (stream copy, no decoding)."""
    subprocess.run(
        ffmpeg_cmd(url, out, "-t", str(seconds), *args),
        check=True,
        timeout=seconds + 20,
        capture_output=True,
    )
    return out


def ffprobe(path: Path, *args: str) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return json.loads(out.stdout)


def streams_of(path: Path) -> list[dict]:
    return ffprobe(path, "-show_streams")["streams"]


def video_pts(path: Path) -> list[float]:
    packets = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time",
                      "-show_packets")["packets"]  # fmt: skip
    return [float(p["pts_time"]) for p in packets if p.get("pts_time") not in (None, "N/A")]


class Recorder:
    """A background ffmpeg client; always killed and reaped."""

    def __init__(self, url: str, out: Path, *args: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            ffmpeg_cmd(url, out, *args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait(self, timeout: float) -> int:
        self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def camera() -> Iterator[Callable[..., CameraSim]]:
    """Factory for started cameras; every one is torn down at the end of the test."""
    made: list[CameraSim] = []

    def make(*streams: StreamSpec, **kwargs: object) -> CameraSim:
        cam = CameraSim(list(streams), **kwargs)  # type: ignore[arg-type]
        made.append(cam)
        return cam.start()

    try:
        yield make
    finally:
        for cam in made:
            cam.close()


@pytest.fixture
def recorders() -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(url: str, out: Path, *args: str) -> Recorder:
        rec = Recorder(url, out, *args)
        made.append(rec)
        return rec

    try:
        yield make
    finally:
        for rec in made:
            rec.close()


def assert_contiguous(numbers: list[int], at_least: int) -> None:
    report = check_contiguous(numbers)
    assert report.ok, report.summary()
    assert report.count >= at_least, report.summary()


def assert_stamped_on_time(path: Path, cam: CameraSim, fps: int) -> None:
    """Frame n is sent at epoch + n/fps: the stamps must agree with the frame clock."""
    assert cam.epoch is not None
    for rec in frame_records(path):
        sent = rec.sender_us / 1e6
        assert abs(sent - (cam.epoch + rec.frame / fps)) < 0.5, (rec, cam.epoch)


# -- pure functions -------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["h264", "h265"])
@pytest.mark.parametrize("frame", [0, 1, 3, 255, 256, 2**32, 2**63 + 5])
def test_sei_roundtrip(codec: str, frame: int) -> None:
    nal = build_sei_nal(codec, frame, 1_700_000_000_000_003)
    # Emulation prevention: no start code or 0x000000-0x000003 run inside the NAL unit.
    for bad in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
        assert bad not in nal
    assert parse_sei_nal(codec, nal) == (frame, 1_700_000_000_000_003)


def test_emulation_prevention_roundtrip() -> None:
    raw = bytes([0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 7, 0, 0])
    escaped = add_emulation_prevention(raw)
    assert escaped == bytes([0, 0, 3, 0, 0, 3, 1, 0, 0, 3, 2, 0, 0, 3, 3, 7, 0, 0])
    assert remove_emulation_prevention(escaped) == raw


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_insert_sei_goes_before_first_slice(codec: str) -> None:
    if codec == "h264":
        aud, sps, pps, idr = b"\x09\xf0", b"\x67\x42\x00\x1f", b"\x68\xce\x3c\x80", b"\x65\x88\x84"
    else:
        aud, sps, pps, idr = b"\x46\x01\x10", b"\x42\x01\x01", b"\x44\x01\xc1", b"\x26\x01\xaf"
    au = b"".join(b"\x00\x00\x00\x01" + n for n in (aud, sps, pps)) + b"\x00\x00\x01" + idr
    stamped = insert_sei(codec, au, 42, 7)
    nals = list(iter_annexb_nals(stamped))
    assert nals[:3] == [aud, sps, pps]
    assert parse_sei_nal(codec, nals[3]) == (42, 7)
    assert nals[4] == idr
    assert first_vcl_offset(codec, au) == au.index(b"\x00\x00\x01" + idr)
    # The same access unit as an MP4 sample (4-byte lengths).
    sample = b"".join(len(n).to_bytes(4, "big") + n for n in nals)
    assert find_stamp(codec, iter_length_prefixed_nals(sample)) == (42, 7)
    # A sample cut inside a NAL unit yields the complete units only.
    assert list(iter_length_prefixed_nals(sample[:-1])) == nals[:-1]


def test_foreign_sei_is_ignored() -> None:
    other_uuid = bytes(range(16))
    nal = b"\x06\x05\x20" + other_uuid + bytes(16) + b"\x80"
    assert parse_sei_nal("h264", nal) is None
    assert SEI_UUID not in nal


def test_check_contiguous() -> None:
    assert check_contiguous([5, 6, 7, 8]).ok
    report = check_contiguous([1, 2, 3, 7, 8, 8, 9, 6, 10])
    assert report.gaps == [(4, 5)]
    assert report.missing == 2
    assert report.duplicates == 1 and report.duplicated_numbers == [8]
    assert report.out_of_order == 1 and report.backsteps == [(9, 6)]
    assert not report.ok
    edges = check_contiguous([3, 4], expect_first=0, expect_last=6)
    assert edges.gaps == [(0, 2), (5, 6)] and edges.missing == 5
    assert check_contiguous([]).count == 0


def test_stream_spec_roundtrip() -> None:
    spec = StreamSpec("cam-1", codec="hevc", width=1280, height=720, audio=True, cheap=True)
    assert spec.codec == "h265"
    assert StreamSpec.from_arg(spec.to_arg()) == spec
    assert StreamSpec.from_arg("name=x,audio=1,bitrate=4000").bitrate == 4000
    with pytest.raises(ValueError):
        StreamSpec.from_arg("name=x,colour=red")
    with pytest.raises(ValueError):
        StreamSpec("bad/name")


# -- the server -----------------------------------------------------------------------------


def test_h264_recording(camera: Callable[..., CameraSim], tmp_path: Path) -> None:
    cam = camera(StreamSpec("cam1"))
    out = record(cam.url("cam1"), tmp_path / "h264.mp4")
    (video,) = streams_of(out)
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
    numbers = frame_numbers(out)
    assert_contiguous(numbers, at_least=60)
    assert_stamped_on_time(out, cam, fps=25)
    assert cam.frame("cam1") is not None and cam.frame("cam1") >= numbers[-1]


def test_h265_fragmented_recording(camera: Callable[..., CameraSim], tmp_path: Path) -> None:
    cam = camera(StreamSpec("cam1", codec="h265", width=320, height=240, fps=30, gop=30))
    out = record(cam.url("cam1"), tmp_path / "h265.mp4", 3, *FRAGMENTED)
    (video,) = streams_of(out)
    assert (video["codec_name"], video["width"], video["height"]) == ("hevc", 320, 240)
    numbers = frame_numbers(out)
    assert_contiguous(numbers, at_least=70)
    assert_stamped_on_time(out, cam, fps=30)

    # A recorder killed mid-fragment leaves a torn tail: read what is whole, don't raise.
    data = out.read_bytes()
    last_moof = data.rfind(b"moof")
    torn = tmp_path / "torn.mp4"
    torn.write_bytes(data[: last_moof + (len(data) - last_moof) // 2])
    prefix = frame_numbers(torn)
    assert prefix and prefix == numbers[: len(prefix)]


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_cheap_mode(camera: Callable[..., CameraSim], tmp_path: Path, codec: str) -> None:
    specs = [
        StreamSpec(f"c{i}", codec=codec, width=1280, height=720, bitrate=4000, gop=25,
                   cheap=True, pattern="smpte")
        for i in range(3)
    ]  # fmt: skip
    cam = camera(*specs)
    out = record(cam.url("c1"), tmp_path / "cheap.mp4", 3)
    (video,) = streams_of(out)
    assert (video["width"], video["height"]) == (1280, 720)
    assert video["codec_name"] == {"h264": "h264", "h265": "hevc"}[codec]
    # Looping the clip must not disturb the numbering (the clip is 2 s, the recording 3 s).
    assert_contiguous(frame_numbers(out), at_least=60)
    assert_stamped_on_time(out, cam, fps=25)
    kbits = int(ffprobe(out, "-show_format")["format"]["bit_rate"]) / 1000
    assert 2500 < kbits < 6000


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_pyav_live_ingest_sees_stamps(camera: Callable[..., CameraSim], codec: str) -> None:
    """What the recorder does: demux RTSP/TCP with PyAV; every video packet is stamped."""
    import av

    cam = camera(StreamSpec("cam1", codec=codec, cheap=True, audio=True))
    stamps = []
    with av.open(cam.url("cam1"), options={"rtsp_transport": "tcp"}, timeout=10) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                stamps.append(stamp_from_packet(bytes(packet), codec))
            if len(stamps) == 30:
                break
    assert None not in stamps
    assert_contiguous([s.frame for s in stamps if s is not None], at_least=30)


def test_audio_track(camera: Callable[..., CameraSim], tmp_path: Path) -> None:
    cam = camera(StreamSpec("cam1", audio=True, cheap=True))
    out = record(cam.url("cam1"), tmp_path / "av.mp4", 3)
    kinds = {s["codec_type"]: s for s in streams_of(out)}
    assert kinds["audio"]["codec_name"] == "aac"
    assert int(kinds["audio"]["sample_rate"]) == 48000
    assert kinds["video"]["codec_name"] == "h264"
    assert_contiguous(frame_numbers(out), at_least=70)
    # Audio and video share one timeline (RTCP sender reports included): same span.
    spans = {k: float(v["duration"]) for k, v in kinds.items()}
    assert abs(spans["audio"] - spans["video"]) < 0.3, spans


def wait_flowing(cam: CameraSim, name: str) -> None:
    """One client connected and frames going out to it."""
    wait_until(lambda: cam.clients(name) == 1, 10, "the recorder to connect")
    wait_until(lambda: (cam.frame(name) or 0) > 0, 10, "frames to flow")


def test_stall_skips_numbers(
    camera: Callable[..., CameraSim], recorders: Callable[..., Recorder], tmp_path: Path
) -> None:
    cam = camera(StreamSpec("cam1", cheap=True))
    rec = recorders(cam.url("cam1"), tmp_path / "stall.mp4", "-t", "6")
    wait_flowing(cam, "cam1")
    first_sent = cam.frame("cam1") or 0
    wait_until(lambda: (cam.frame("cam1") or 0) >= first_sent + 25, 10, "a second of frames")
    cam.stall("cam1", True)
    stalled_at = cam.clock("cam1")
    wait_until(lambda: cam.clock("cam1") >= stalled_at + 50, 10, "two seconds of stall")
    sent_during = cam.frame("cam1")
    cam.stall("cam1", False)
    assert cam.status("cam1")["stalled"] is False
    assert rec.wait(timeout=20) == 0
    numbers = frame_numbers(rec.out)
    report = check_contiguous(numbers)
    assert report.duplicates == 0 and report.out_of_order == 0
    assert len(report.gaps) == 1, report.summary()
    start, end = report.gaps[0]
    assert start <= (sent_during or 0) + 1
    assert 48 <= end - start + 1 <= 50 + 25 + 5, report.gaps  # stall + at most one GOP


def test_drop_disconnects_clients(
    camera: Callable[..., CameraSim], recorders: Callable[..., Recorder], tmp_path: Path
) -> None:
    cam = camera(StreamSpec("cam1", cheap=True), StreamSpec("cam2", cheap=True))
    rec = recorders(cam.url("cam1"), tmp_path / "dropped.mp4", "-t", "60", *FRAGMENTED)
    other = recorders(cam.url("cam2"), tmp_path / "other.mp4", "-t", "60", *FRAGMENTED)
    wait_until(lambda: cam.clients("cam1") == 1 and cam.clients("cam2") == 1, 10, "clients")
    wait_until(lambda: (cam.frame("cam1") or 0) > 0, 10, "frames to flow")
    assert cam.drop("cam1") == 1
    rec.wait(timeout=15)  # ffmpeg ends when the server closes the connection
    wait_until(lambda: cam.clients("cam1") == 0, 10, "the dropped client to be gone")
    assert cam.clients("cam2") == 1 and other.proc.poll() is None  # other streams unharmed
    assert_contiguous(frame_numbers(rec.out), at_least=1)
    # The camera takes new connections after a drop.
    again = record(cam.url("cam1"), tmp_path / "again.mp4", 2)
    assert_contiguous(frame_numbers(again), at_least=40)


def test_two_clients_get_identical_frames(
    camera: Callable[..., CameraSim], recorders: Callable[..., Recorder], tmp_path: Path
) -> None:
    cam = camera(StreamSpec("cam1"))
    a = recorders(cam.url("cam1"), tmp_path / "a.mp4", "-t", "4", *FRAGMENTED)
    wait_until(lambda: cam.clients("cam1") == 1, 10, "the first client")
    b = recorders(cam.url("cam1"), tmp_path / "b.mp4", "-t", "4", *FRAGMENTED)
    wait_until(lambda: cam.clients("cam1") == 2, 10, "the second client")
    assert a.wait(timeout=20) == 0 and b.wait(timeout=20) == 0
    ra, rb = frame_records(a.out), frame_records(b.out)
    assert_contiguous([r.frame for r in ra], at_least=70)
    assert_contiguous([r.frame for r in rb], at_least=70)
    common = {r.frame for r in ra} & {r.frame for r in rb}
    assert len(common) >= 40
    # Same frames, not merely same numbers: one shared media feeds both clients.
    assert [r for r in ra if r.frame in common] == [r for r in rb if r.frame in common]


def test_jump_moves_timestamps(
    camera: Callable[..., CameraSim], recorders: Callable[..., Recorder], tmp_path: Path
) -> None:
    cam = camera(StreamSpec("cam1", cheap=True))
    rec = recorders(cam.url("cam1"), tmp_path / "jump.mp4", "-frames:v", "100")
    wait_flowing(cam, "cam1")
    first = cam.frame("cam1") or 0
    wait_until(lambda: (cam.frame("cam1") or 0) >= first + 25, 10, "a second of frames")
    cam.jump("cam1", 3600)
    assert cam.status("cam1")["jump"] == 3600
    assert rec.wait(timeout=20) == 0
    pts = video_pts(rec.out)
    steps = [b - a for a, b in itertools.pairwise(pts)]
    big = [s for s in steps if s > 1]
    assert len(big) == 1 and 3599 < big[0] < 3601.5, big
    # The frames themselves go on without a gap.
    assert_contiguous(frame_numbers(rec.out), at_least=90)
    with pytest.raises(CameraError):
        cam.jump("cam1", -5)


def test_restart_continues_frame_clock(camera: Callable[..., CameraSim], tmp_path: Path) -> None:
    cam = camera(StreamSpec("cam1", cheap=True))
    epoch = cam.epoch
    before = frame_numbers(record(cam.url("cam1"), tmp_path / "before.mp4", 2))
    old_pid = cam.pid
    cam.restart(down_seconds=1)
    assert cam.pid != old_pid and cam.epoch == epoch
    after_path = record(cam.url("cam1"), tmp_path / "after.mp4", 2)
    after = frame_numbers(after_path)
    assert_contiguous(after, at_least=40)
    # The outage consumed numbers (at least the second of downtime); nothing restarted at 0.
    assert after[0] >= before[-1] + 25
    assert_stamped_on_time(after_path, cam, fps=25)


def test_control_errors_and_clock(camera: Callable[..., CameraSim]) -> None:
    cam = camera(StreamSpec("cam1", cheap=True, width=320, height=240))
    assert cam.ping()["streams"] == ["cam1"]
    assert cam.clients("cam1") == 0
    assert cam.frame("cam1") is None  # nobody connected, nothing sent
    start = cam.clock("cam1")
    wait_until(lambda: cam.clock("cam1") >= start + 5, 5, "the frame clock to advance")
    with pytest.raises(CameraError):
        cam.stall("nope", True)
    with pytest.raises(CameraError):
        cam.request({"cmd": "bogus"})
    assert cam.url("cam1") == f"rtsp://127.0.0.1:{cam.port}/cam1"


def test_start_failure_reports_stderr() -> None:
    cam = CameraSim([StreamSpec("cam1", pattern="no-such-pattern")], start_timeout=30)
    try:
        with pytest.raises(CameraError, match="no-such-pattern"):
            cam.start()
        assert not cam.running
    finally:
        cam.close()


def test_port_in_use_fails_fast() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        cam = CameraSim([StreamSpec("cam1", width=320, height=240)], port=port, start_timeout=30)
        try:
            with pytest.raises(CameraError):
                cam.start()
        finally:
            cam.close()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_netns(tmp_path: Path) -> None:
    """The camera runs inside a network namespace; control still works from outside."""
    ns = f"camsim-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)  # needs root, as the rig does
    cam = CameraSim([StreamSpec("cam1", cheap=True)], netns=ns)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        cam.start()
        assert cam.ping()["streams"] == ["cam1"]
        out = tmp_path / "ns.mp4"
        subprocess.run(
            ["ip", "netns", "exec", ns, *ffmpeg_cmd(cam.url("cam1"), out, "-t", "2")],
            check=True, timeout=30, capture_output=True,
        )  # fmt: skip
        assert_contiguous(frame_numbers(out), at_least=40)
    finally:
        cam.close()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
