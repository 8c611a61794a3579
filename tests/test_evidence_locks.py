"""Evidence locks: a locked time range survives retention (age and low space) until released,
the lock and its release are audit events, and the standby gets the lock through the mirror.

Real catalogs and real segment files in tmp_path; only the free space the disk reports is
faked for the low-space path (a real disk cannot be made to cross a watermark on cue)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from conftest import NVR, ROOT
from test_console import board, console  # noqa: F401 (the board fixture)
from test_mirror_parts import KEY, FakeResponse, NullConn

from firmware.alert_ids import AlertId
from firmware.api import ApiContext, make_app
from firmware.catalog import Catalog, Segment, segment_id
from firmware.config import RecorderConfig
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.evidence import locks as lk
from firmware.evidence.locks import EvidenceLock, LockError, LockHold, holds, make_lock, overlaps
from firmware.mirror.auth import sign_response
from firmware.mirror.client import MirrorClient
from firmware.mirror.server import MirrorServer
from firmware.mirror.wire import FEED_PATH, decode_page
from firmware.recorder import retention as ret
from firmware.recorder.retention import Retention
from firmware.recorder.segment_file import relative_path
from firmware.timefmt import iso
from hil.wait import wait_until

S = 1_000_000
DAY = 86400 * S
T0 = 1_780_000_000 * S
"""Footage starts here; retention runs ten days later."""
NOW = T0 + 10 * DAY
SEG = 4 * S


# --- helpers -----------------------------------------------------------------------------------


def record(cat: Catalog, camera: str, n: int, start_us: int = T0, size: int = 1000,
           origin: str = "a") -> list[Segment]:  # fmt: skip
    """n contiguous 4 s segments of `camera` from start_us: files on disk and catalog rows."""
    run = cat.new_run(camera, origin, start_us, start_us)
    out = []
    for i in range(n):
        start = start_us + i * SEG
        sid = segment_id(camera, start, origin)
        rel = relative_path(camera, start, sid)
        data = bytes([i % 256]) * size
        path = cat.data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        seg = Segment(sid, camera, run, rel, start, start + SEG, 0, SEG, 100, size,
                      hashlib.sha256(data).hexdigest(), origin, "h264")  # fmt: skip
        cat.add_segment(seg)
        out.append(seg)
    return out


def on_disk(cat: Catalog, segs: list[Segment]) -> list[str]:
    """Ids of those segments with both their row and their file still there."""
    return [s.id for s in segs if cat.segment(s.id) and (cat.data_dir / s.path).exists()]


def lock_of(cat: Catalog, camera: str | None, start_us: int, end_us: int) -> EvidenceLock:
    return cat.add_lock(make_lock(camera, start_us, end_us, "case 42", NOW))


class Disk:
    """What `disk_usage` reports: free space grows by what retention deletes."""

    def __init__(self, cat: Catalog, free: int, total: int) -> None:
        self.cat, self.free0, self.total = cat, free, total
        self.footage0 = self.footage()

    def footage(self) -> int:
        return sum(b for _, b in self.cat.totals().values())

    def __call__(self, path: Path) -> tuple[int, int]:
        return self.free0 + self.footage0 - self.footage(), self.total


@pytest.fixture
def plenty(monkeypatch) -> None:
    """A disk far above its watermark: only age deletes."""
    monkeypatch.setattr(ret, "disk_usage", lambda path: (10**12, 2 * 10**12))


# --- retention ---------------------------------------------------------------------------------


def test_a_lock_holds_footage_past_retention_until_released(tmp_path, plenty, caplog):
    """Everything is ten days old with one day of retention: the unlocked segments go (rows and
    files), exactly the locked ones stay, and the pass says what the lock held; once released,
    the next pass deletes them."""
    cat = Catalog(tmp_path)
    cam1, cam2 = record(cat, "cam1", 6), record(cat, "cam2", 3)
    lock = lock_of(cat, "cam1", cam1[2].start_us + S, cam1[3].end_us - S)  # inside 2 and 3
    r = Retention(tmp_path, RecorderConfig(retention_days=1), cat)
    with caplog.at_level(logging.INFO, logger=ret.__name__):
        n, freed = r.run(NOW)
    assert on_disk(cat, cam1 + cam2) == [cam1[2].id, cam1[3].id]
    assert (n, freed) == (7, 7000)
    assert r.held == LockHold(1, 2, 2000, 2)
    assert "evidence locks hold 2 segments, 2000 bytes" in caplog.text
    assert r.run(NOW) == (0, 0)  # held, not retried as deleted
    cat.release_lock(lock.id, "case closed", NOW)
    assert r.run(NOW) == (2, 2000)
    assert on_disk(cat, cam1) == [] and r.held == LockHold(0, 0, 0, 0)
    assert cat.locks(active_only=False)[0].release_reason == "case closed"  # kept, released


def test_an_all_cameras_lock_holds_every_cameras_footage_in_its_range(tmp_path, plenty):
    cat = Catalog(tmp_path)
    cam1, cam2 = record(cat, "cam1", 4), record(cat, "cam2", 4)
    lock_of(cat, None, cam1[1].start_us, cam1[2].end_us)
    Retention(tmp_path, RecorderConfig(retention_days=1), cat).run(NOW)
    assert on_disk(cat, cam1 + cam2) == [cam1[1].id, cam1[2].id, cam2[1].id, cam2[2].id]


def test_low_space_skips_locked_segments_and_deletes_the_next_oldest(tmp_path, monkeypatch):
    """Young footage (within retention) on a disk below its watermark: space deletion takes the
    oldest unlocked segments until the target, never a locked one, never the newest."""
    cat = Catalog(tmp_path)
    cam1 = record(cat, "cam1", 12)
    lock_of(cat, "cam1", cam1[0].start_us, cam1[2].end_us)  # the three oldest
    cfg = RecorderConfig(retention_days=30, min_free_percent=10, min_free_mb=0)
    monkeypatch.setattr(ret, "disk_usage", Disk(cat, free=5_000, total=100_000))
    marks = ret.watermarks(100_000, cfg)
    assert (marks.low, marks.target) == (10_000, 12_500)
    r = Retention(tmp_path, cfg, cat, report=lambda a: None)
    assert r.run(NOW) == (8, 8000)  # 5000 + 8000 >= 12500
    assert on_disk(cat, cam1) == [s.id for s in cam1[:3]] + [cam1[11].id]
    assert r.held == LockHold(1, 3, 3000, 0)


def test_when_locks_hold_the_space_the_disk_alert_says_so(tmp_path, monkeypatch):
    """Deleting every unlocked segment cannot reach the watermark because the locks hold the
    footage: nothing is deleted for space and the critical alert says how much the locks hold
    and that releasing them frees it; released, space deletion goes on and the alert clears."""
    cat = Catalog(tmp_path)
    cam1 = record(cat, "cam1", 10)
    lock = lock_of(cat, "cam1", cam1[0].start_us, cam1[8].end_us)
    cfg = RecorderConfig(retention_days=30, min_free_percent=10, min_free_mb=0)
    monkeypatch.setattr(ret, "disk_usage", Disk(cat, free=1_000, total=100_000))
    alerts: list[RaiseAlert | ClearAlert] = []
    r = Retention(tmp_path, cfg, cat, report=alerts.append)
    assert r.run(NOW) == (0, 0)
    assert len(on_disk(cat, cam1)) == 10
    raised = alerts[-1]
    assert isinstance(raised, RaiseAlert) and raised.id == AlertId.DISK_FULL_NOT_FOOTAGE
    assert "evidence locks hold 0.0 MB (9 segments)" in raised.text
    assert "releasing them frees it" in raised.text and "not footage" not in raised.text
    cat.release_lock(lock.id, "exported", NOW)
    assert r.run(NOW)[0] == 9  # all but the newest
    assert isinstance(alerts[-1], ClearAlert)


# --- overlap edge cases, in Python and in the catalog's SQL ------------------------------------

A, B = T0 + 100 * S, T0 + 200 * S


@pytest.mark.parametrize(
    ("camera", "start", "end", "lock_camera", "released", "held"),
    [
        ("cam1", A - SEG, A, "cam1", False, False),  # ends exactly where the lock starts
        ("cam1", B, B + SEG, "cam1", False, False),  # starts exactly where the lock ends
        ("cam1", A - SEG, A + 1, "cam1", False, True),  # one microsecond in
        ("cam1", B - 1, B + SEG, "cam1", False, True),
        ("cam1", A + S, A + 2 * S, "cam1", False, True),  # inside
        ("cam1", A - S, B + S, "cam1", False, True),  # around the whole lock
        ("cam2", A + S, A + 2 * S, "cam1", False, False),  # another camera
        ("cam2", A + S, A + 2 * S, None, False, True),  # every camera
        ("cam1", A + S, A + 2 * S, "cam1", True, False),  # released: holds nothing
    ],
)
def test_what_a_lock_holds(tmp_path, camera, start, end, lock_camera, released, held):
    """Half-open ranges, as segments have them; the catalog's query agrees with `holds`."""
    lock = EvidenceLock("lk-1", lock_camera, A, B, "r", NOW, NOW if released else None,
                        "done" if released else None)  # fmt: skip
    assert holds(lock, camera, start, end) is held
    assert overlaps(lock, camera, start, end) is (held or released)
    cat = Catalog(tmp_path)
    run = cat.new_run(camera, "a", start, start)
    sid = segment_id(camera, start, "a")
    cat.add_segment(Segment(sid, camera, run, f"x/{sid}.mp4", start, end, 0, end - start, 1, 10,
                            "0" * 64, "a", "h264"))  # fmt: skip
    cat.add_lock(lock)
    assert (cat.deletable_segments(10) == []) is held
    assert cat.held_ids([sid]) == ({sid} if held else set())


@pytest.mark.parametrize(
    ("camera", "start", "end", "reason", "why"),
    [
        ("cam1", B, A, "r", "is not after start"),
        ("cam1", A, A, "r", "is not after start"),
        ("nope", A, B, "r", "no camera named 'nope' (cameras: cam1, cam2)"),
        ("cam1", A, B, "  ", "reason: empty"),
        ("cam1", A, B, "x" * (lk.REASON_MAX + 1), f"at most {lk.REASON_MAX}"),
        ("cam1", A, B, "two\nlines", "one line of printable text"),
    ],
)
def test_bad_locks_are_refused_with_the_reason(camera, start, end, reason, why):
    with pytest.raises(LockError, match=why.replace("(", r"\(").replace(")", r"\)")):
        make_lock(camera, start, end, reason, NOW, {"cam1", "cam2"})


def test_console_times_local_or_relative():
    assert lk.parse_local("last 30 minutes", NOW) == NOW - 30 * 60 * S
    assert lk.parse_local("2 h", NOW) == NOW - 2 * 3600 * S
    assert lk.parse_local("now", NOW) == NOW
    assert lk.parse_local("2026-05-28T10:00:00Z", NOW) == 1_779_962_400 * S
    with pytest.raises(LockError, match="not a time"):
        lk.parse_local("yesterday-ish", NOW)


# --- catalog -----------------------------------------------------------------------------------


def test_a_release_is_kept_and_happens_once_and_merges_only_grow(tmp_path):
    cat = Catalog(tmp_path)
    lock = lock_of(cat, "cam1", A, B)
    assert [x.id for x in cat.locks()] == [lock.id]
    released = cat.release_lock(lock.id, "closed", NOW + S)
    assert cat.locks() == [] and cat.locks(active_only=False) == [released]
    assert released.changed > lock.changed
    with pytest.raises(LockError, match="released already"):
        cat.release_lock(lock.id, "again", NOW + 2 * S)
    with pytest.raises(LockError, match="no lock 'lk-none'"):
        cat.release_lock("lk-none", "x", NOW)
    (tmp_path / "peer").mkdir()
    other = Catalog(tmp_path / "peer")
    assert other.merge_lock(released) is True
    assert other.merge_lock(lock) is False  # an older view cannot take the release back
    assert other.lock(lock.id) is not None and not other.lock(lock.id).active


def test_a_catalog_of_older_firmware_opens_with_no_locks(tmp_path):
    """A data dir from before locks (no table, no feed counter) opens and takes locks."""
    cat = Catalog(tmp_path)
    record(cat, "cam1", 2)
    db = cat._db()
    db.execute("DROP TABLE locks")
    db.execute("DELETE FROM feed_seq WHERE name = 'locks'")
    cat.close()
    ro = Catalog(tmp_path, reader=True)  # writable disk: the table is made on open
    assert ro.locks() == [] and ro.lock_hold() == lk.NO_HOLD
    again = Catalog(tmp_path)
    assert again.add_lock(make_lock("cam1", T0, T0 + S, "r", NOW)).changed == 1


# --- CLI ---------------------------------------------------------------------------------------


def nvr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NVR, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cli_lock_locks_unlock_and_the_audit_log(tmp_path):
    data = tmp_path / "data"
    cfg = tmp_path / "nvr.toml"
    cfg.write_text(f'[board]\nname = "north"\ndata_dir = "{data}"\n\n[[camera]]\nname = "cam1"\n'
                   'url = "rtsp://192.0.2.10/stream"\n')  # fmt: skip
    data.mkdir()
    Catalog(data).close()
    c = ["--config", str(cfg)]
    done = nvr("lock", *c, "--camera", "cam1", "--start", "2026-05-28T10:00:00Z",
               "--end", "2026-05-28T10:30:00Z", "--reason", "case 42")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lock_id = done.stdout.strip()
    assert lk.LOCK_ID.fullmatch(lock_id)
    every = nvr("lock", "--data", str(data), "--config", str(tmp_path / "none.toml"),
                "--all-cameras", "--start", "2026-05-28T11:00", "--end", "2026-05-28T11:05",
                "--reason", "fire")  # fmt: skip
    assert every.returncode == 0, every.stderr
    listed = nvr("locks", *c)
    assert listed.returncode == 0 and lock_id in listed.stdout and "(all)" in listed.stdout
    assert "2026-05-28T10:00:00.000Z" in listed.stdout and "case 42" in listed.stdout
    for bad, why in (
        (["--camera", "cam1", "--start", "2026-05-28T10:30", "--end", "2026-05-28T10:00"],
         "is not after start"),
        (["--camera", "cam9", "--start", "2026-05-28T10:00", "--end", "2026-05-28T10:30"],
         "no camera named 'cam9' (cameras: cam1)"),
        (["--camera", "cam1", "--start", "soon", "--end", "2026-05-28T10:30"],
         "--start: not an ISO 8601 time"),
    ):  # fmt: skip
        refused = nvr("lock", *c, *bad, "--reason", "r")
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    empty = nvr("lock", *c, "--camera", "cam1", "--start", "2026-05-28T10:00",
                "--end", "2026-05-28T10:30", "--reason", " ")  # fmt: skip
    assert empty.returncode == 2 and "reason: empty" in empty.stderr
    done = nvr("unlock", lock_id, "--reason", "case closed", *c)
    assert done.returncode == 0 and f"released {lock_id}" in done.stdout, done.stderr
    again = nvr("unlock", lock_id, "--reason", "twice", *c)
    assert again.returncode == 2 and "released already" in again.stderr
    active = nvr("locks", *c, "--json")
    assert [x["camera"] for x in json.loads(active.stdout)["locks"]] == [None]
    assert "case closed" in nvr("locks", *c, "--all").stdout
    events = [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]
    assert [(e["event"], e["source"]) for e in events] == [
        ("evidence-lock", "cli"),
        ("evidence-lock", "cli"),
        ("evidence-unlock", "cli"),
    ]
    assert events[0] | {"time": None} == {
        "time": None, "event": "evidence-lock", "id": lock_id, "camera": "cam1",
        "start": "2026-05-28T10:00:00.000Z", "end": "2026-05-28T10:30:00.000Z",
        "reason": "case 42", "source": "cli"}  # fmt: skip
    assert events[2]["id"] == lock_id and events[2]["reason"] == "case closed"


# --- API ---------------------------------------------------------------------------------------

TOKEN = "s3cret-token"


def test_api_locks_need_the_token_and_are_audited(tmp_path):
    cat = Catalog(tmp_path)
    ctx = ApiContext(
        snapshot=lambda: None,
        catalog=cat,
        data_dir=tmp_path,
        token=TOKEN,
        camera_names=lambda: {"cam1"},
        handover=None,
    )  # type: ignore[arg-type]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"camera": "cam1", "start": "2026-05-28T10:00:00Z", "end": "2026-05-28T10:30:00Z",
            "reason": "case 7"}  # fmt: skip

    async def run() -> dict:
        seen: dict = {}
        async with TestServer(make_app(ctx)) as ts, ClientSession() as s:
            url = str(ts.make_url("/api/v1/locks"))
            for call in (s.get(url), s.post(url, json=body),
                         s.post(url + "/x/release", json={"reason": "r"}),
                         s.get(url, headers={"Authorization": "Bearer wrong"})):  # fmt: skip
                async with call as r:
                    seen.setdefault("unauthorized", []).append(r.status)
            async with s.post(url, json=body, headers=auth) as r:
                seen["made"] = (r.status, await r.json())
            for bad in ({**body, "end": "2026-05-28T09:00:00Z"}, {**body, "camera": "cam9"},
                        {**body, "reason": ""}, {**body, "start": "soon"},
                        {k: v for k, v in body.items() if k != "camera"}):  # fmt: skip
                async with s.post(url, json=bad, headers=auth) as r:
                    seen.setdefault("bad", []).append((r.status, (await r.json())["error"]))
            async with s.post(url, data=b"{", headers=auth) as r:
                seen["not json"] = r.status
            async with s.get(url, headers=auth) as r:
                seen["listed"] = await r.json()
            lock_id = seen["made"][1]["id"]
            async with s.post(f"{url}/{lock_id}/release", json={"reason": "done"},
                              headers=auth) as r:  # fmt: skip
                seen["released"] = (r.status, await r.json())
            async with s.post(f"{url}/lk-none/release", json={"reason": "x"}, headers=auth) as r:
                seen["unknown"] = r.status
            async with s.get(url, headers=auth) as r:
                seen["after"] = await r.json()
        return seen

    seen = asyncio.run(run())
    assert seen["unauthorized"] == [401, 401, 401, 401]
    status, made = seen["made"]
    assert status == 201 and made["camera"] == "cam1" and made["active"]
    assert made["start"] == "2026-05-28T10:00:00.000Z"
    assert [s for s, _ in seen["bad"]] == [400] * 5 and seen["not json"] == 400
    whys = [w for _, w in seen["bad"]]
    assert "is not after start" in whys[0] and "no camera named 'cam9'" in whys[1]
    assert "reason: empty" in whys[2] and "start: not an ISO 8601 time" in whys[3]
    assert "camera: missing" in whys[4]
    assert [x["id"] for x in seen["listed"]["locks"]] == [made["id"]]
    assert seen["released"][0] == 200 and seen["released"][1]["release_reason"] == "done"
    assert seen["unknown"] == 404 and seen["after"] == {"locks": []}
    events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(e["event"], e["id"], e["source"]) for e in events if "id" in e] == [
        ("evidence-lock", made["id"], "api"),
        ("evidence-unlock", made["id"], "api"),
    ]
    # Four refusals from one address within a minute: one audit event, never the token.
    refused = [e for e in events if e["event"] == "api-login-failed"]
    assert len(refused) == 1 and refused[0]["path"] == "/api/v1/locks"
    assert "wrong" not in (tmp_path / "audit.log").read_text()


# --- console -----------------------------------------------------------------------------------


def test_console_adds_lists_and_releases_a_lock(board):  # noqa: F811
    """`locks add` asks camera, start (relative), end and reason; the list shows it; `locks
    release` asks why; both are in the audit log with source console."""
    data = board["data"] / "nvr"
    data.mkdir(parents=True)
    cat = Catalog(data)
    record(cat, "cam1", 1)
    code, out, _ = console(board, "locks add\ncam1\nlast 30 minutes\n\ncase 9\n")
    assert code == 0 and "keeps this footage from retention" in out, out
    (lock,) = cat.locks()
    assert lock.camera == "cam1" and lock.end_us - lock.start_us == 30 * 60 * S
    code, out, _ = console(board, "15\n\n")
    assert lock.id in out and "case 9" in out
    code, out, _ = console(board, f"locks release {lock.id}\nhanded to police\n")
    assert "released" in out and cat.locks() == []
    code, out, _ = console(board, "locks add\ncam7\nlast 5 minutes\n\nx\n")
    assert "no camera named 'cam7'" in out and cat.locks() == []
    events = [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]
    assert [(e["event"], e["source"]) for e in events] == [
        ("evidence-lock", "console"),
        ("evidence-unlock", "console"),
    ]
    assert events[1]["reason"] == "handed to police"


# --- mirror ------------------------------------------------------------------------------------


class ServerPeer:
    """The peer's side of MirrorClient._request, answered by a real MirrorServer's feed reader
    over its catalog (cursors from the query, a long poll that a change ends at once)."""

    def __init__(self, server: MirrorServer) -> None:
        self.server, self.changed, self.feeds = server, threading.Event(), 0

    def __call__(self, path_qs: str, timeout: float, headers: dict | None = None):
        assert path_qs.startswith(FEED_PATH)
        q = {k: int(float(v[0])) for k, v in parse_qs(urlsplit(path_qs).query).items()}
        nonce = f"n{self.feeds}"
        self.feeds += 1
        page = self.server._read(q["seg"], q["run"], q.get("lock", 0))
        if not (page.segments or page.runs or page.locks) and q["wait"]:
            self.changed.wait(0.5)  # the long poll; a change on the peer answers it
            self.changed.clear()
            page = self.server._read(q["seg"], q["run"], q.get("lock", 0))
        body = json.dumps(page.to_json()).encode()
        return FakeResponse(200, body, sign_response(KEY, nonce, body)), NullConn(), nonce


def test_the_standby_gets_the_lock_and_its_release_and_its_retention_keeps_the_footage(
    tmp_path, plenty
):
    """A lock made on the active board reaches the standby through the feed; the standby's own
    retention keeps its copy of the locked footage; the release follows the same way."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    active, standby = Catalog(tmp_path / "a"), Catalog(tmp_path / "b")
    record(active, "cam1", 4, origin="a")
    mirrored = record(standby, "cam1", 4, origin="a")  # the standby's copies of the same
    server = MirrorServer(KEY, "a", active, tmp_path / "a", lambda: {}, lambda: NOW)
    peer = ServerPeer(server)
    client = MirrorClient(board="b", key=KEY, data_dir=tmp_path / "b", catalog=standby,
                          peer={"lan": "192.0.2.12"}, port=1, order="oldest", concurrency=1,
                          path_usable=lambda p: True, now_us=lambda: NOW)  # fmt: skip
    client._request = peer  # type: ignore[method-assign]
    client.start()
    try:
        wait_until(lambda: client.synced, 10, "the first pass over the peer's feed")
        lock = lock_of(active, "cam1", mirrored[1].start_us, mirrored[1].end_us)
        peer.changed.set()
        wait_until(lambda: standby.lock(lock.id) is not None, 10, "the lock on the standby")
        got = standby.lock(lock.id)
        assert (got.camera, got.start_us, got.end_us, got.reason, got.active) == (
            "cam1", lock.start_us, lock.end_us, "case 42", True)  # fmt: skip
        Retention(tmp_path / "b", RecorderConfig(retention_days=1), standby).run(NOW)
        assert on_disk(standby, mirrored) == [mirrored[1].id]
        active.release_lock(lock.id, "closed", NOW)
        peer.changed.set()
        wait_until(lambda: not standby.lock(lock.id).active, 10, "the release on the standby")
    finally:
        client.stop()
    assert standby.lock(lock.id).release_reason == "closed"
    assert client.counters.errors == {}
    Retention(tmp_path / "b", RecorderConfig(retention_days=1), standby).run(NOW)
    assert on_disk(standby, mirrored) == []


def test_lock_rows_from_a_peer_follow_the_local_rules(tmp_path):
    """A lock row that breaks the rules (a path-like id, end before start, a control character
    in the reason) is refused by name and the rest of the answer kept; an older peer's answer
    without locks decodes with none."""
    good = EvidenceLock("lk-ok", None, A, B, "fine", NOW)
    page = {"board": "b", "segments": [], "runs": [], "seg": 0, "run": 0, "more": False,
            "cameras": {}}  # fmt: skip
    older, refused = decode_page(json.dumps(page).encode())
    assert older.locks == () and older.lock == 0 and refused == []
    from firmware.mirror.wire import FeedLock

    row = FeedLock.of(good).to_json()
    bad = [{**row, "id": "../x"}, {**row, "id": "lk-2", "end_us": A},
           {**row, "id": "lk-3", "reason": "a\x1bb"}]  # fmt: skip
    got, refused = decode_page(json.dumps({**page, "locks": [row, *bad], "lock": 5}).encode())
    assert [x.to_lock() for x in got.locks] == [good] and got.lock == 5
    assert [r.split(" refused")[0] for r in refused] == ["lock #1 '../x'", "lock #2 'lk-2'",
                                                         "lock #3 'lk-3'"]  # fmt: skip
    assert iso(got.locks[0].start_us) == iso(A)
