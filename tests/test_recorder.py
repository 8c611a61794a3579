"""The recorder end to end: a real RTSP camera, real `nvr record` processes, real files."""

from __future__ import annotations

import itertools
import os
import time

import pytest
from conftest import catalog, ffprobe, mounted_tmpfs, nvr, wait_until

from firmware.timefmt import parse_iso
from hil.camera import StreamSpec
from hil.framecheck import frame_numbers


def run_frames(data, cat, camera="cam1"):
    """Frame numbers per run, in segment order."""
    runs: dict[int, list[int]] = {}
    for s in cat["segments"]:
        if s["camera"] == camera:
            runs.setdefault(s["run"], []).extend(frame_numbers(data / s["path"]))
    return [runs[k] for k in sorted(runs)]


def assert_contiguous(numbers):
    steps = {b - a for a, b in itertools.pairwise(numbers)}
    assert steps == {1}, f"frame numbers not contiguous: steps seen {sorted(steps)[:10]}"


@pytest.mark.parametrize(
    ("spec", "reader"),
    [
        (StreamSpec("cam1", codec="h264", gop=25), "builtin"),
        (StreamSpec("cam1", codec="h265", gop=25), "builtin"),
        (StreamSpec("cam1", codec="h264", gop=15, audio=True), "builtin"),
        (StreamSpec("cam1", codec="h265", gop=15, audio=True), "ffmpeg"),  # the other reader
    ],
    ids=["h264", "h265", "h264-aac", "ffmpeg-h265-aac"],
)
def test_segments_playable_and_frames_contiguous(camera, recorder, tmp_path, spec, reader):
    cam = camera(spec)
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=2, extra=["--rtsp-reader", reader])
    wait_until(lambda: rec.segments() >= 3, 40, "three committed segments")
    rec.stop()
    data = rec.data
    cat = catalog(data)
    segs = cat["segments"]
    assert len(segs) >= 4  # three plus the one committed at stop
    want = {"h264": "h264", "h265": "hevc"}[spec.codec]
    for s in segs:
        probe = ffprobe(data / s["path"])
        kinds = {st["codec_type"]: st for st in probe["streams"]}
        assert kinds["video"]["codec_name"] == want
        assert (kinds["video"]["width"], kinds["video"]["height"]) == (spec.width, spec.height)
        assert ("audio" in kinds) == spec.audio
        if spec.audio:
            audio = kinds["audio"]
            got = (audio["codec_name"], audio["sample_rate"], audio["channels"])
            assert got == ("aac", "48000", 1)
            assert audio["time_base"] == "1/48000"
        assert len(frame_numbers(data / s["path"])) == s["frames"]
        assert s["origin"] == "single" and s["path"].startswith("segments/cam1/")
    for a, b in itertools.pairwise(segs):
        assert a["end"] == b["start"], "segments of one run must tile the timeline"
    [frames] = run_frames(data, cat)
    assert_contiguous(frames)  # across every segment boundary
    for s in segs[:-1]:  # cut at the first keyframe at or after 2 s
        length = (parse_iso(s["end"]) - parse_iso(s["start"])) / 1e6
        assert 2.0 - 0.02 <= length <= 2.0 + spec.gop / spec.fps + 0.02
    assert cat["gaps"][-1]["reason"] == "recorder-stopped"
    assert nvr("verify", "--data", str(data)).returncode == 0


def test_sigkill_mid_segment_loses_only_unwritten_fragments(camera, recorder, tmp_path):
    gop = 5  # 0.2 s fragments at 25 fps
    cam = camera(StreamSpec("cam1", gop=gop))
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=4)
    wait_until(lambda: rec.segments() >= 1, 30, "a committed segment")
    data = rec.data
    # Cut the power 1.5 s into a segment: several complete fragments are on disk.
    first_end = parse_iso(catalog(data)["segments"][-1]["end"]) / 1e6
    wait_until(lambda: time.time() > first_end + 1.5, 10, "1.5 s into the next segment")
    partials = list(data.rglob("*.partial"))
    sent_before_kill = cam.frame("cam1")
    rec.kill()
    assert len(partials) == 1
    assert partials[0].stat().st_size > 0
    # Power back: recovery runs before recording starts again.
    rec2 = recorder({"cam1": cam.url("cam1")}, data=data, segment_seconds=4)
    rec2.stop()
    assert "1 partial segments salvaged" in rec2.output()
    assert not list(data.rglob("*.partial"))
    cat = catalog(data)
    salvaged = [s for s in cat["segments"] if s["salvaged"]]
    assert len(salvaged) == 1
    runs = run_frames(data, cat)
    assert_contiguous(runs[0])  # the crashed run: committed segment + salvaged fragments
    lost = sent_before_kill - runs[0][-1]
    # At most the fragment being written (one GOP) plus frames still in flight to the recorder.
    assert 0 <= lost <= gop + 12, f"{lost} frames lost at the crash"
    assert cat["runs"][0]["end_reason"] == "recorder-crash"
    assert nvr("verify", "--data", str(data)).returncode == 0


def test_camera_restart_leaves_one_gap_of_the_right_length(camera, recorder):
    cam = camera(StreamSpec("cam1", gop=10))
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=2)
    wait_until(lambda: rec.segments() >= 1, 30, "a committed segment")
    cam.restart(down_seconds=3)
    wait_until(
        lambda: len(catalog(rec.data)["runs"]) >= 2 and rec.status()["cameras"][0]["recording"],
        40,
        "recording again after the camera restart",
    )
    wait_until(lambda: rec.segments() >= 3, 30, "a segment of the second run")
    rec.stop()
    cat = catalog(rec.data)
    gaps = [g for g in cat["gaps"] if g["end"] is not None]
    assert len(gaps) == 1, gaps
    gap = gaps[0]
    assert gap["reason"] in ("stream-ended", "stall", "stream-error")
    before, after = run_frames(rec.data, cat)[:2]
    assert_contiguous(before)
    assert_contiguous(after)
    missing_s = (after[0] - before[-1] - 1) / 25  # the camera's own clock says this much is gone
    gap_s = (parse_iso(gap["end"]) - parse_iso(gap["start"])) / 1e6
    assert missing_s >= 3 - 0.2
    assert abs(gap_s - missing_s) < 0.5, f"gap {gap_s:.2f} s but {missing_s:.2f} s of frames lost"


def test_verify_catches_a_flipped_byte(camera, recorder):
    cam = camera(StreamSpec("cam1"))
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=1)
    wait_until(lambda: rec.segments() >= 2, 30, "two segments")
    rec.stop()
    clean = nvr("verify", "--data", str(rec.data))
    assert clean.returncode == 0 and "evidence log: intact" in clean.stdout, clean.stdout
    seg = catalog(rec.data)["segments"][1]
    path = rec.data / seg["path"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    res = nvr("verify", "--data", str(rec.data), check=False)
    assert res.returncode == 1
    assert f"MISMATCH {seg['path']}" in res.stdout
    assert res.stdout.count("MISMATCH") == 1
    # The evidence log says what it means: the file changed after it was recorded.
    assert f"segment-changed: segment {seg['id']}" in res.stdout


def test_full_disk_keeps_recording_and_deletes_oldest(camera, recorder, tmp_path):
    spec = StreamSpec(
        "cam1", width=1280, height=720, bitrate=8000, gop=25, cheap=True, pattern="snow"
    )
    cam = camera(spec)
    with mounted_tmpfs(tmp_path / "small", "16m") as disk:
        rec = recorder(
            {"cam1": cam.url("cam1")},
            data=disk / "data",
            segment_seconds=1,
            extra=["--min-free-mb", "5"],
        )
        first = wait_until(lambda: catalog(rec.data)["segments"], 30, "a segment")[0]
        written = lambda: sum(  # noqa: E731
            c["bytes_written"] for c in rec.get("/api/v1/cameras", token=True)["cameras"]
        )
        wait_until(lambda: written() > 24e6, 90, "1.5 x the disk written")
        alerts = {a["id"] for a in rec.status()["alerts"]}
        metrics = rec.get("/metrics").decode()
        rec.stop()
        cat = catalog(rec.data)
        ids = [s["id"] for s in cat["segments"]]
        assert first["id"] not in ids, "the oldest footage must go first"
        assert "disk-full" in alerts
        assert 'nvr_retention_deleted_segments_total{reason="free-space"}' in metrics
        assert [r["end_reason"] for r in cat["runs"]] == ["recorder-stopped"], cat["runs"]
        assert_contiguous(run_frames(rec.data, cat)[-1])  # recording never stopped
        st = os.statvfs(rec.data)
        assert st.f_bavail * st.f_frsize > 1e6  # the 5 MB kept free, less the open segment
        assert nvr("verify", "--data", str(rec.data)).returncode == 0


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "1m", readonly=True) as ro:
        res = nvr(
            "record", "--data", str(ro / "data"), "--camera", "c=rtsp://127.0.0.1:1/x", check=False
        )
    assert res.returncode == 2
    assert f"data directory {ro / 'data'}" in res.stderr and "Read-only" in res.stderr
