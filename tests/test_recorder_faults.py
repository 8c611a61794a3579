"""Cameras and processes misbehaving: every gap explicit, other cameras untouched."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import av
import pytest
from conftest import catalog, ffprobe, nvr, wait_until
from test_recorder import assert_contiguous, run_frames

from firmware.timefmt import parse_iso
from hil.camera import StreamSpec
from hil.framecheck import frame_numbers
from hil.proctree import comm, forkserver, recorder_workers

VP8 = (  # a camera of a codec MP4 segments here do not take
    "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=10/1 ! "
    "vp8enc deadline=1 ! rtpvp8pay name=pay0 pt=96"
)


def runs_of(data, camera):
    return [r for r in catalog(data)["runs"] if r["camera"] == camera]


def test_stall_ends_run_with_reason_and_recording_resumes(camera, recorder):
    cam = camera(StreamSpec("cam1", gop=10))
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=1, extra=["--stall-seconds", "2"])
    wait_until(lambda: rec.segments() >= 2, 30, "two segments")
    cam.stall("cam1", True)
    wait_until(lambda: runs_of(rec.data, "cam1")[0]["end_reason"], 20, "the stalled run to end")
    cam.stall("cam1", False)
    wait_until(lambda: len(runs_of(rec.data, "cam1")) >= 2, 30, "a new run after the stall")
    wait_until(lambda: rec.status()["cameras"][0]["recording"], 20, "recording again")
    rec.stop()
    assert runs_of(rec.data, "cam1")[0]["end_reason"] == "stall"
    for frames in run_frames(rec.data, catalog(rec.data)):
        assert_contiguous(frames)


@pytest.mark.parametrize("audio", [False, True], ids=["video", "video-aac"])
def test_timestamp_jump_starts_a_new_run_and_loses_no_frame(camera, recorder, audio: bool) -> None:
    """The camera's clock jumps an hour ahead (the simulator jumps only forward): a new run
    at the next keyframe, no segment claiming the hour, and the frames between the jump and
    that keyframe kept in the old run."""
    cam = camera(StreamSpec("cam1", gop=25, audio=audio))
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=1)
    wait_until(lambda: rec.segments() >= 2, 30, "two segments")
    cam.jump("cam1", 3600)
    wait_until(lambda: len(runs_of(rec.data, "cam1")) >= 2, 30, "a run after the jump")
    wait_until(lambda: rec.segments() >= 5, 30, "segments after the jump")
    rec.stop()
    cat = catalog(rec.data)
    assert cat["runs"][0]["end_reason"] == "timestamp-jump"
    last = cat["segments"][-1]
    for s in cat["segments"]:
        assert parse_iso(s["end"]) - parse_iso(s["start"]) < 3_000_000, s
        path = rec.data / s["path"]
        assert decoded_frames(path) == len(frame_numbers(path)) == s["frames"], s
        assert ("audio" in {st["codec_type"] for st in ffprobe(path)["streams"]}) == audio
        if audio:  # no audio lost at the jump either (a segment's first packet stands apart)
            steps = [b - a for a, b in itertools.pairwise(audio_times(path)[1:])]
            # The last one, cut short by the stop, may hold only a packet or two.
            assert steps or s is last, s
            assert not steps or max(steps) < 0.05, s
    runs = run_frames(rec.data, cat)
    assert len(runs) >= 2
    assert_contiguous([n for frames in runs for n in frames])  # none lost around the jump


def audio_times(path: Path) -> list[float]:
    """Presentation times (s) of a segment's audio packets, in file order."""
    with av.open(str(path)) as container:
        return [float(p.pts * p.time_base) for p in container.demux(audio=0) if p.pts is not None]


def decoded_frames(path: Path) -> int:
    """Pictures decoded from a segment; PyAV raises on a stream it cannot decode."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_dead_worker_is_restarted_and_other_cameras_keep_recording(camera, recorder):
    cam = camera(StreamSpec("cam1", gop=10), StreamSpec("cam2", gop=10))
    rec = recorder(
        {"cam1": cam.url("cam1"), "cam2": cam.url("cam2")},
        segment_seconds=1,
        extra=["--workers", "2"],
    )
    wait_until(lambda: rec.segments() >= 4, 30, "segments of both cameras")
    workers = [p for p in recorder_workers(rec.proc.pid) if "cam1" in comm(p)]
    assert workers, "no worker process found for cam1"
    os.kill(workers[0], signal.SIGKILL)
    wait_until(lambda: len(runs_of(rec.data, "cam1")) >= 2, 30, "cam1 recording again")
    wait_until(lambda: rec.status()["cameras"][0]["recording"], 20, "cam1 recording")
    rec.stop()
    cat = catalog(rec.data)
    assert runs_of(rec.data, "cam1")[0]["end_reason"] == "recorder-crash"
    [cam2] = run_frames(rec.data, cat, "cam2")  # one run: cam2 never noticed
    assert_contiguous(cam2)
    assert nvr("verify", "--data", str(rec.data)).returncode == 0


def test_a_dead_forkserver_leaves_its_workers_recording_and_is_not_taken_for_their_end(
    camera, recorder
):
    """The forkserver the workers fork from is killed (the OOM killer, a stray kill): the
    workers go on recording, one run and no frame lost, nobody salvages their open files or
    starts a second worker on their cameras; a worker killed afterwards is still seen dead
    and restarted (from a new forkserver)."""
    cam = camera(StreamSpec("cam1", gop=10))
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=1)
    wait_until(lambda: rec.segments() >= 2, 30, "segments")
    server = forkserver(rec.proc.pid)
    assert server is not None, "no forkserver under nvr record"
    [worker] = recorder_workers(rec.proc.pid)
    os.kill(server, signal.SIGKILL)
    n = rec.segments()
    wait_until(lambda: rec.segments() >= n + 3, 30, "segments after the forkserver's end")
    assert recorder_workers(rec.proc.pid) == []  # no second worker started for cam1
    assert comm(worker) == "nvr-cam1"  # the one worker records on, an orphan now
    assert len(runs_of(rec.data, "cam1")) == 1 and rec.status()["cameras"][0]["recording"]
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: len(runs_of(rec.data, "cam1")) >= 2, 30, "cam1 recording again")
    wait_until(lambda: rec.status()["cameras"][0]["recording"], 20, "cam1 recording")
    rec.stop()
    [first, *_] = runs_of(rec.data, "cam1")
    assert first["end_reason"] == "recorder-crash"
    for frames in run_frames(rec.data, catalog(rec.data), "cam1"):
        assert_contiguous(frames)


def test_bad_cameras_get_clear_errors_and_the_good_one_records(camera, recorder):
    cam = camera(StreamSpec("good", gop=10))
    bad = {
        "refused": "rtsp://127.0.0.1:9/x",
        "nopath": cam.url("good").rsplit("/", 1)[0] + "/no-such-stream",
    }
    rec = recorder({"good": cam.url("good"), **bad}, segment_seconds=1)
    wait_until(lambda: rec.segments() >= 4, 30, "segments of the good camera")

    errs = wait_until(
        lambda: len(rec.camera_errors()) == 2 and rec.camera_errors(),
        20,
        "errors for both bad cameras",
    )
    assert "connection refused" in errs["refused"]
    assert "404" in errs["nopath"] or "no stream" in errs["nopath"]
    alerts = {a["id"]: a["text"] for a in rec.status()["alerts"]}
    assert "camera refused" in str(alerts) or "camera-refused" in alerts
    rec.stop()
    [good] = run_frames(rec.data, catalog(rec.data), "good")
    assert_contiguous(good)


def test_malformed_config_names_file_and_key(tmp_path):
    cfg = tmp_path / "nvr.toml"
    cfg.write_text('[board]\nname = "a"\n[recorder]\nsegment_secs = 4\n')
    res = nvr("run", "--config", str(cfg), check=False)
    assert res.returncode == 2
    assert f"{cfg}: recorder.segment_secs: unknown key" in res.stderr


def test_sighup_with_a_bad_config_keeps_recording_on_the_last_good_one(camera, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    from hil.camera import free_port

    cam = camera(StreamSpec("cam1", gop=10), StreamSpec("cam2", gop=10))
    port = free_port()
    data = tmp_path / "data"
    cfg = tmp_path / "nvr.toml"
    base = (
        f'[board]\nname = "a"\ndata_dir = "{data}"\n[recorder]\nsegment_seconds = 1\n'
        f'[api]\nlisten_port = {port}\nlisten_address = "127.0.0.1"\n'
        f'[[camera]]\nname = "cam1"\nurl = "{cam.url("cam1")}"\n'
    )
    cfg.write_text(base)
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware.cli", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        import json
        import urllib.request

        def status():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=2) as r:
                return json.load(r)

        wait_until(lambda: status()["cameras"][0]["recording"], 30, "cam1 recording")
        cfg.write_text(base.replace("segment_seconds = 1", "segment_seconds = 'one'"))
        proc.send_signal(signal.SIGHUP)
        alert = wait_until(
            lambda: [a for a in status()["alerts"] if a["id"] == "config-invalid"],
            20,
            "the config-invalid alert",
        )[0]
        assert "recorder.segment_seconds" in alert["text"] and str(cfg) in alert["text"]
        assert status()["cameras"][0]["recording"]
        # A good config with a second camera is applied, and the alert clears.
        cfg.write_text(base + f'[[camera]]\nname = "cam2"\nurl = "{cam.url("cam2")}"\n')
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: [c["recording"] for c in status()["cameras"]] == [True, True],
            40,
            "both cameras recording after the reload",
        )
        assert not [a for a in status()["alerts"] if a["id"] == "config-invalid"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert {s["camera"] for s in catalog(data)["segments"]} == {"cam1", "cam2"}


@pytest.mark.parametrize("digest", [False, True], ids=["basic", "digest"])
def test_wrong_credentials_and_unsupported_codec_are_named(recorder, digest):
    from hil.camera import CameraSim, free_port

    cam = CameraSim([StreamSpec("good", gop=10, audio=digest)], port=free_port(),
                    raw_mounts={"vp8": VP8}, auth="admin:s3cret", digest=digest)  # fmt: skip
    cam.start()
    try:
        rec = recorder(
            {
                "good": cam.url("good"),
                "badpass": cam.url("good", credentials="admin:Wr0ng-pw"),
                "vp8": cam.url("vp8"),
            },
            segment_seconds=1,
        )
        wait_until(lambda: rec.segments() >= 3, 30, "segments of the good camera")

        errs = wait_until(
            lambda: len(rec.camera_errors()) == 2 and rec.camera_errors(), 30, "both errors"
        )
        assert "credentials (401)" in errs["badpass"], errs
        assert "VP8" in errs["vp8"].upper() and "H.264" in errs["vp8"], errs
        assert "Wr0ng-pw" not in str(errs) and "s3cret" not in str(errs)  # no secrets shown
        rec.stop()
    finally:
        cam.stop()
    assert "s3cret" not in rec.output() and "Wr0ng-pw" not in rec.output()
    [good] = run_frames(rec.data, catalog(rec.data), "good")
    assert_contiguous(good)


def test_corrupt_stream_is_recorded_without_harm_to_others(camera, recorder):
    cam = camera(StreamSpec("bad", gop=10), StreamSpec("good", gop=10))
    rec = recorder({"bad": cam.url("bad"), "good": cam.url("good")}, segment_seconds=1)
    wait_until(lambda: rec.segments() >= 4, 30, "segments of both cameras")
    cam.corrupt("bad", True)
    n = rec.segments()
    wait_until(lambda: rec.segments() >= n + 6, 30, "segments while the stream is corrupt")
    cam.corrupt("bad", False)
    n = rec.segments()
    wait_until(lambda: rec.segments() >= n + 4, 30, "segments after the corruption")
    assert rec.proc.poll() is None
    rec.stop()
    cat = catalog(rec.data)
    [good] = run_frames(rec.data, cat, "good")
    assert_contiguous(good)
    bad = [s for s in cat["segments"] if s["camera"] == "bad"]
    assert bad and bad[-1]["frames"] > 0
    assert nvr("verify", "--data", str(rec.data)).returncode == 0


def test_dropped_connection_reconnects_with_one_gap(camera, recorder):
    cam = camera(StreamSpec("cam1", gop=10))
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=1)
    wait_until(lambda: rec.segments() >= 2, 30, "two segments")
    assert cam.drop("cam1") == 1
    wait_until(lambda: len(runs_of(rec.data, "cam1")) >= 2, 30, "a new run after the drop")
    wait_until(lambda: rec.status()["cameras"][0]["recording"], 20, "recording again")
    rec.stop()
    cat = catalog(rec.data)
    closed = [g for g in cat["gaps"] if g["end"] is not None]
    assert len(closed) == 1 and closed[0]["reason"] in ("stream-ended", "stream-error", "stall")
    for frames in run_frames(rec.data, cat):
        assert_contiguous(frames)


def test_retention_by_age_deletes_old_footage_and_keeps_recording(camera, recorder):
    cam = camera(StreamSpec("cam1", gop=10))
    max_age_s = 6.0
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=1,
                   extra=["--retention-days", str(max_age_s / 86400)])  # fmt: skip
    first = wait_until(lambda: catalog(rec.data)["segments"], 30, "a segment")[0]
    wait_until(lambda: first["id"] not in [s["id"] for s in catalog(rec.data)["segments"]], 40,
               "the first segment to age out")  # fmt: skip
    rec.stop()
    from firmware.timefmt import parse_iso

    cat = catalog(rec.data)
    newest = max(parse_iso(s["end"]) for s in cat["segments"])
    oldest = min(parse_iso(s["end"]) for s in cat["segments"])
    assert newest - oldest <= (max_age_s + 10 + 2) * 1e6  # one retention period of slack
    assert len(cat["runs"]) == 1  # deleting old footage never interrupted recording
    assert not (rec.data / first["path"]).exists()
    assert nvr("verify", "--data", str(rec.data)).returncode == 0
