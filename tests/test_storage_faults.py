"""Storage faults on real files: a disk filled by foreign data, a corrupt catalog, segment files
deleted or truncated behind the firmware's back. Nothing recorded is lost or misreported."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import catalog, mounted_ext4, mounted_tmpfs, nvr, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.api import ApiContext, make_app
from firmware.catalog import CATALOG_FILE, Catalog
from firmware.recorder.recovery import recover
from hil.camera import StreamSpec


def recorded(camera, recorder, n: int = 4) -> Path:
    """A data directory with n+ committed segments of cam1 (the recorder stopped)."""
    cam = camera(StreamSpec("cam1", gop=10))
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=1)
    wait_until(lambda: rec.segments() >= n, 40, f"{n} segments")
    rec.stop()
    return rec.data


def deleted_ids(data: Path) -> set[str]:
    db = sqlite3.connect(data / CATALOG_FILE)
    try:
        return {r[0] for r in db.execute("SELECT id FROM deleted")}
    finally:
        db.close()


def test_lost_file_is_a_loss_not_a_deletion(camera, recorder):
    data = recorded(camera, recorder)
    seg = catalog(data)["segments"][1]
    (data / seg["path"]).unlink()
    rep = recover(data, Catalog(data), "single")
    assert rep.missing_files == [seg["path"]]
    assert seg["id"] not in {s["id"] for s in catalog(data)["segments"]}
    # The mirror must fetch the peer's copy back: nothing says this board deleted it.
    assert seg["id"] not in deleted_ids(data)
    assert "files lost" in rep.summary()  # the recovery alert's text
    # So the mirror's first full pass after the start pulls the peer's copy.
    from firmware.mirror.plan import Summary, reconcile

    theirs = Summary(seg["id"], "cam1", 0, seg["bytes"], seg["sha256"])
    plan = reconcile([], [theirs], deleted=Catalog(data).deleted([seg["id"]]))
    assert [(t.id, t.direction) for t in plan.transfers] == [(seg["id"], "pull")]


def test_truncated_segment_is_not_served_as_whole(camera, recorder):
    data = recorded(camera, recorder, 2)
    seg = catalog(data)["segments"][0]
    path = data / seg["path"]
    whole = path.read_bytes()
    ctx = ApiContext(snapshot=lambda: None, catalog=Catalog(data), data_dir=data, token="t" * 32,
                     camera_names=lambda: {"cam1"}, handover=None)  # fmt: skip
    auth = {"Authorization": "Bearer " + "t" * 32}

    async def get() -> tuple[int, bytes, str | None]:
        async with TestClient(TestServer(make_app(ctx))) as client:
            r = await client.get(f"/api/v1/segments/{seg['id']}", headers=auth)
            return r.status, await r.read(), r.headers.get("X-Segment-Sha256")

    status, body, sha = asyncio.run(get())
    assert status == 200 and body == whole and sha == seg["sha256"]
    path.write_bytes(whole[: len(whole) // 2])
    status, body, sha = asyncio.run(get())
    assert status == 409 and sha is None  # never half a file under the whole one's hash
    assert b"does not match the catalog" in body


def test_corrupt_catalog_is_set_aside_and_rebuilt_from_the_files(camera, recorder):
    cam = camera(StreamSpec("cam1", gop=10))
    rec = recorder({"cam1": cam.url("cam1")}, segment_seconds=1)
    wait_until(lambda: rec.segments() >= 4, 40, "four segments")
    rec.stop()
    data = rec.data
    before = {s["id"]: s for s in catalog(data)["segments"]}
    with open(data / CATALOG_FILE, "r+b") as f:  # garbage over the header
        f.write(b"\xde\xad\xbe\xef garbage " * 8)
    for cmd in ("catalog", "verify"):
        res = nvr(cmd, "--data", str(data), check=False)
        assert res.returncode == 2, res
        assert "Traceback" not in res.stderr and "the catalog is corrupt" in res.stderr

    rec2 = recorder({"cam1": cam.url("cam1")}, data=data, segment_seconds=1)
    alerts = {a["id"]: a["text"] for a in rec2.status()["alerts"]}
    assert (
        "catalog-rebuilt" in alerts
        and "kept as catalog.sqlite.corrupt-" in alerts["catalog-rebuilt"]
    )
    wait_until(lambda: rec2.segments() >= len(before) + 2, 40, "recording on the new catalog")
    rec2.stop()
    from firmware.catalog import set_aside_copies

    [aside] = set_aside_copies(data)
    assert aside.read_bytes().startswith(b"\xde\xad\xbe\xef")  # kept for analysis
    after = {s["id"]: s for s in catalog(data)["segments"]}
    for sid, s in before.items():  # nothing recorded dropped out of the index
        assert sid in after, sid
        assert (after[sid]["sha256"], after[sid]["bytes"], after[sid]["start"]) == (
            s["sha256"], s["bytes"], s["start"])  # fmt: skip
        assert after[sid]["frames"] == s["frames"]
    assert nvr("verify", "--data", str(data)).returncode == 0
    reasons = [r["end_reason"] for r in catalog(data)["runs"]]
    assert reasons[0] == "catalog-rebuilt" and reasons[-1] == "recorder-stopped"
    # The mirror feed numbers rows above what the old catalog handed out: a peer whose cursor
    # had passed them misses none of the rebuilt rows.
    db = sqlite3.connect(data / CATALOG_FILE)
    try:
        assert min(r[0] for r in db.execute("SELECT rowid FROM segments")) > 10**15
    finally:
        db.close()


def test_malformed_page_is_corruption_too(camera, recorder):
    data = recorded(camera, recorder, 2)
    n = len(catalog(data)["segments"])
    with open(data / CATALOG_FILE, "r+b") as f:  # page 2 onwards: tables, not the header
        f.seek(4096)
        f.write(b"\xff" * 8192)
    res = nvr("catalog", "--data", str(data), check=False)
    assert "Traceback" not in res.stderr
    from firmware.catalog import set_aside_if_corrupt

    assert set_aside_if_corrupt(data) is not None
    rep = recover(data, Catalog(data), "single")
    assert len(rep.from_names) == n == len(catalog(data)["segments"])


@pytest.mark.parametrize(
    ("rel", "want"),
    [
        ("segments/cam1/2026-11-30/cam1.1764500000123.a.mp4", ("cam1", 1764500000123000, "a")),
        ("segments/cam1/2026-11-30/cam2.1764500000123.a.mp4", None),
        ("segments/cam1/2026-11-30/cam1.x.a.mp4", None),
        ("segments/cam1/cam1.1.a.mp4", None),
        ("other/cam1/2026-11-30/cam1.1.a.mp4", None),
    ],
)
def test_segment_names_carry_camera_start_and_origin(rel, want):
    from firmware.recorder.recovery import parse_name

    assert parse_name(rel) == want


@settings(max_examples=300, deadline=None)
@given(
    camera=st.text(st.characters(codec="ascii", exclude_characters="/\0"), min_size=1),
    start_ms=st.integers(0, 10**13),
    origin=st.text(st.characters(codec="ascii", exclude_characters="/.\0"), min_size=1),
    junk=st.text(max_size=40),
)
def test_segment_names_round_trip_and_junk_is_refused(camera, start_ms, origin, junk):
    from firmware.catalog import segment_id
    from firmware.recorder.recovery import parse_name
    from firmware.recorder.segment_file import relative_path

    sid = segment_id(camera, start_ms * 1000, origin)
    assert parse_name(relative_path(camera, start_ms * 1000, sid)) == (
        camera, start_ms * 1000, origin)  # fmt: skip
    parse_name(junk)  # never raises
    parse_name(f"segments/{junk}/2026-11-30/{junk}.mp4")


def test_space_deletion_never_takes_a_camera_s_newest_segment():
    from firmware.catalog import Segment
    from firmware.recorder.retention import Watermarks, plan

    def seg(sid: str, start: int) -> Segment:
        return Segment(sid, "c", 1, sid, start, start + 1, 0, 1, 1, 100, "", "a", "h264")

    segs = [seg("old", 1), seg("new", 2)]
    _, by_space = plan(segs, 0, Watermarks(1000, 2000), 10, 10**9, keep=frozenset({"new"}))
    assert [s.id for s in by_space] == ["old"]


def fill(disk: Path) -> Path:
    """Foreign data until the filesystem refuses more."""
    junk = disk / "foreign.bin"
    with open(junk, "wb", buffering=0) as f:
        block = b"\0" * (1 << 20)
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return junk


def test_disk_filled_by_foreign_data_holds_then_resumes_by_itself(camera, recorder, tmp_path):
    cam = camera(StreamSpec("cam1", gop=10))
    with mounted_tmpfs(tmp_path / "small" / "data", "24m") as disk:  # its log outside
        rec = recorder({"cam1": cam.url("cam1")}, data=disk, segment_seconds=1,
                       extra=["--min-free-mb", "4"])  # fmt: skip
        wait_until(lambda: rec.segments() >= 2, 30, "two segments")
        first = catalog(rec.data)["segments"][0]
        junk = fill(disk)

        def alerts() -> dict[str, dict]:
            return {a["id"]: a for a in rec.status()["alerts"]}

        held = wait_until(
            lambda: {"disk-full", "disk-full-not-footage"} <= set(alerts()) and alerts(),
            30, "the disk-full alerts",
        )  # fmt: skip
        assert held["disk-full"]["severity"] == "critical"
        wait_until(lambda: not rec.status()["cameras"][0]["recording"], 20, "writes held")
        err = rec.get("/api/v1/cameras", token=True)["cameras"][0]["error"]
        assert "holding" in err and "memory" in err
        assert rec.proc.poll() is None

        junk.unlink()  # space comes back: nobody restarts anything
        wait_until(lambda: rec.status()["cameras"][0]["recording"], 30, "recording again")
        wait_until(lambda: not {"disk-full", "disk-full-not-footage"} & set(alerts()), 30,
                   "the alerts cleared")  # fmt: skip
        n = rec.segments()
        wait_until(lambda: rec.segments() >= n + 2, 30, "segments after the disk was freed")
        rec.stop()
        cat = catalog(rec.data)
        assert first["id"] in {s["id"] for s in cat["segments"]}, "footage deleted for foreign data"
        reasons = [r["end_reason"] for r in cat["runs"]]
        assert reasons[0] == "disk-full" and reasons[-1] == "recorder-stopped", reasons
        closed = [g["reason"] for g in cat["gaps"] if g["end"] is not None]
        assert "disk-full" in closed, json.dumps([cat["runs"], cat["gaps"]])
        assert not deleted_ids(rec.data)
        assert nvr("verify", "--data", str(rec.data)).returncode == 0


def test_a_write_refused_not_for_space_is_a_critical_fault_that_clears_itself(
    camera, recorder, tmp_path
):
    """The filesystem refuses new files for another reason than space (an immutable directory
    refuses root too, as a disk returning I/O errors would): the camera is held in memory,
    the critical disk-write-failed alert (the board core hands over on it) is raised, and
    once writes work again recording resumes by itself and the alert clears."""
    cam = camera(StreamSpec("cam1", gop=10))
    with mounted_ext4(tmp_path / "ext4" / "data") as disk:
        rec = recorder({"cam1": cam.url("cam1")}, data=disk, segment_seconds=1)
        wait_until(lambda: rec.segments() >= 2, 30, "two segments")
        day = (disk / catalog(disk)["segments"][-1]["path"]).parent

        def alerts() -> dict[str, dict]:
            return {a["id"]: a for a in rec.status()["alerts"]}

        subprocess.run(["chattr", "+i", str(day)], check=True)
        try:
            failed = wait_until(lambda: alerts().get("disk-write-failed"), 20,
                                "the disk-write-failed alert")  # fmt: skip
            assert failed["severity"] == "critical" and "cam1" in failed["text"]
            assert "disk-full" not in alerts()  # not taken for a full disk
            wait_until(lambda: not rec.status()["cameras"][0]["recording"], 20, "writes held")
            assert rec.proc.poll() is None
        finally:
            subprocess.run(["chattr", "-i", str(day)], check=True)
        wait_until(lambda: rec.status()["cameras"][0]["recording"], 30, "recording again")
        wait_until(lambda: "disk-write-failed" not in alerts(), 10, "the alert cleared")
        n = rec.segments()
        wait_until(lambda: rec.segments() >= n + 2, 30, "segments after writes work again")
        rec.stop()
        reasons = [r["end_reason"] for r in catalog(disk)["runs"]]
        assert "disk-error" in reasons, reasons  # the gap says why
        assert nvr("verify", "--data", str(disk)).returncode == 0


def test_recorder_starts_on_a_full_disk_and_records_once_it_is_freed(camera, recorder, tmp_path):
    cam = camera(StreamSpec("cam1", gop=10))
    with mounted_tmpfs(tmp_path / "small" / "data", "24m") as disk:  # its log outside
        data = disk
        rec = recorder({"cam1": cam.url("cam1")}, data=data, segment_seconds=1,
                       extra=["--min-free-mb", "4"])  # fmt: skip
        wait_until(lambda: rec.segments() >= 2, 30, "two segments")
        rec.kill()  # power cut: a run left open, a partial segment
        before = {s["id"] for s in catalog(data)["segments"]}
        junk = fill(disk)
        rec2 = recorder({"cam1": cam.url("cam1")}, data=data, segment_seconds=1,
                        extra=["--min-free-mb", "4"])  # fmt: skip
        wait_until(lambda: "disk-full" in {a["id"] for a in rec2.status()["alerts"]}, 30,
                   "the disk-full alert")  # fmt: skip
        assert not rec2.status()["cameras"][0]["recording"]
        junk.unlink()
        wait_until(lambda: rec2.status()["cameras"][0]["recording"], 30, "recording")
        wait_until(lambda: rec2.segments() >= len(before) + 2, 30, "new segments")
        # The crashed run is closed once the disk takes writes, not left open.
        wait_until(lambda: catalog(data)["runs"][0]["end_reason"] == "recorder-crash", 20,
                   "the crashed run closed")  # fmt: skip
        rec2.stop()
        cat = catalog(data)
        assert before <= {s["id"] for s in cat["segments"]}
        assert [r["end_reason"] for r in cat["runs"]][-1] == "recorder-stopped"
        assert nvr("verify", "--data", str(data)).returncode == 0
