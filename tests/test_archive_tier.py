"""The archive tier beyond the upload, against a real SeaweedFS: local retention waits for the
archive (and says so when the disk forces it not to), footage deleted locally is read back
through the API byte for byte and checked as it streams, `nvr verify --archive` finds a damaged
object, the site tool lists and fetches from the bucket alone, and a board killed in the middle
of a multipart upload leaves nothing twice once the other board goes on.

Only the free space the disk reports is faked (a real disk cannot cross a watermark on cue)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import NVR, ROOT
from test_archive_upload import (
    KIB,
    SEG_US,
    T0_US,
    Clock,
    archive_cfg,
    assert_identical,
    creds_file,
    drain,
    make_footage,
    make_uploader,
    mirror_of,
    new_bucket,
)
from test_evidence_locks import Disk
from test_evidence_log import T0
from test_evidence_verify import recorded, verify

from firmware.alert_ids import AlertId
from firmware.alerts import Alerts
from firmware.api import ApiContext, make_app
from firmware.archive.store import load_credentials, row_key, segment_key
from firmware.archive.uploader import Uploader
from firmware.audit import AUDIT_FILE
from firmware.catalog import Catalog, Segment
from firmware.config import ArchiveConfig, RecorderConfig
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.recorder import retention as ret
from firmware.recorder.retention import Retention, Tiering

boto3 = pytest.importorskip("boto3")
aiohttp = pytest.importorskip("aiohttp")
botocore_exceptions = pytest.importorskip("botocore.exceptions")

from aiohttp import ClientPayloadError, ClientSession  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402

from hil.camera.client import free_port  # noqa: E402
from hil.seaweed import SeaweedStore, missing_weed  # noqa: E402

pytestmark = pytest.mark.skipif(missing_weed() is not None, reason=str(missing_weed()))

DAY_US = 86_400 * 1_000_000
NOW = T0_US + 10 * DAY_US
"""Retention runs ten days after the footage: past local_days = 1."""
TOKEN = "tier-token"
MIB = 1024 * KIB


@pytest.fixture(scope="module")
def store() -> Iterator[SeaweedStore]:
    # A bucket per test, each a collection of its own: room for their volumes.
    with SeaweedStore(volumes=2, max_volumes=100) as s:
        yield s


@pytest.fixture
def plenty(monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk far above its watermark: only age deletes."""
    monkeypatch.setattr(ret, "disk_usage", lambda path: (10**12, 2 * 10**12))


def tiered(cat: Catalog, local_days: float = 1.0, **kw: object) -> Retention:
    cfg = RecorderConfig(retention_days=local_days, min_free_percent=10, min_free_mb=0)
    (cat.data_dir / AUDIT_FILE).touch()  # the board makes it; retention's events go in
    return Retention(cat.data_dir, cfg, cat, tiering=Tiering(local_days), **kw)  # type: ignore[arg-type]


def local(cat: Catalog, segs: list[Segment]) -> list[str]:
    """Ids of those segments whose row and file are both still on the board."""
    return [s.id for s in segs if cat.segment(s.id) and (cat.data_dir / s.path).exists()]


def retention_events(data: Path) -> list[dict]:
    lines = (data / AUDIT_FILE).read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == "retention-deleted"]


def unreachable_cfg(tmp: Path, store: SeaweedStore) -> ArchiveConfig:
    """An endpoint nothing listens on (a free loopback port)."""
    return ArchiveConfig(endpoint=f"http://127.0.0.1:{free_port()}", bucket="nowhere",
                         credentials_file=creds_file(tmp, store))  # fmt: skip


# --- tiering --------------------------------------------------------------------------------


def test_local_retention_waits_for_the_archive(
    store: SeaweedStore, tmp_path: Path, plenty: None
) -> None:
    """With the store unreachable, footage past local_days stays on the board; once the
    uploader has caught up, retention deletes it, and it is still listed as archived."""
    cat = make_footage(tmp_path / "data", ("cam1", "cam2"), 4, 8 * KIB)
    segs = cat.segments()
    down, _, _ = make_uploader(unreachable_cfg(tmp_path, store), cat)
    down.step()
    assert down.failures == 1 and cat.not_archived(100) == segs
    assert tiered(cat).run(NOW) == (0, 0)
    assert local(cat, segs) == [s.id for s in segs]

    up, _, failed = make_uploader(archive_cfg(store, tmp_path, new_bucket(store)), cat)
    for _ in range(3):
        up.step()
    archived_first = [s.id for s in segs if cat.archived(s.id) is not None]
    assert len(archived_first) == 3
    n, freed = tiered(cat).run(NOW)
    assert n == 3 and freed == sum(s.bytes for s in segs[:3])
    assert local(cat, segs) == [s.id for s in segs[3:]]  # only what the archive holds went
    drain(up)
    assert tiered(cat).run(NOW)[0] == len(segs) - 3 and local(cat, segs) == [] and not failed
    for cam in ("cam1", "cam2"):
        kept = cat.archived_segments(cam, T0_US, NOW)
        assert [s.id for s in kept] == [s.id for s in segs if s.camera == cam]
    events = retention_events(cat.data_dir)
    assert events and all(e["archived"] is True and e["why"] == "age" for e in events)
    assert sum(len(e["segments"]) for e in events) == len(segs)


def test_the_standby_learns_what_the_active_board_archived(
    store: SeaweedStore, tmp_path: Path, plenty: None
) -> None:
    """The standby (the mirror's copy, its own catalog, not uploading) marks what the store
    holds of its footage, by size and SHA-256, uploading nothing; its retention then deletes
    it as the active board's does. What the store does not hold stays."""
    cat_a = make_footage(tmp_path / "a", ("cam1", "cam2"), 3, 4 * KIB)
    cfg = archive_cfg(store, tmp_path, new_bucket(store))
    up_a, _, _ = make_uploader(cfg, cat_a)
    for _ in range(5):
        up_a.step()
    cat_b = mirror_of(cat_a.data_dir, tmp_path / "b")
    up_b, puts_b, failed = make_uploader(cfg, cat_b, board="b")
    up_b.recording = lambda: False
    up_b.step()
    assert not puts_b.by_key and not failed and up_b.status()["adopted"] == 5
    left = cat_b.not_archived(10)
    assert [s.id for s in left] == [cat_a.not_archived(10)[0].id]
    assert tiered(cat_b).run(NOW)[0] == 5
    assert [s.id for s in cat_b.segments()] == [left[0].id]


def test_local_days_holds_archived_footage(store: SeaweedStore, tmp_path: Path, plenty) -> None:
    """Archived footage younger than local_days stays on the board."""
    cat = make_footage(tmp_path / "data", ("cam1",), 3, 4 * KIB)
    up, _, _ = make_uploader(archive_cfg(store, tmp_path, new_bucket(store)), cat)
    drain(up)
    assert tiered(cat, local_days=30).run(NOW) == (0, 0)
    assert len(local(cat, cat.segments())) == 3


def test_disk_running_out_with_the_archive_behind(
    store: SeaweedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Young footage, the disk below its watermark, two of twelve segments archived: the
    archived ones go first, then unarchived ones until the target, with the critical alert
    naming how many went before the archive had them; the newest segment stays."""
    cat = make_footage(tmp_path / "data", ("cam1",), 12, 1000)
    segs = cat.segments()
    up, _, _ = make_uploader(archive_cfg(store, tmp_path, new_bucket(store)), cat)
    for _ in range(2):
        up.step()
    assert len(cat.not_archived(100)) == 10
    # 100 kB disk, watermark 10 kB, target 12.5 kB; 4 kB free: 8.5 kB must go.
    monkeypatch.setattr(ret, "disk_usage", Disk(cat, free=4_000, total=100_000))
    alerts: list[RaiseAlert | ClearAlert] = []
    r = tiered(cat, local_days=30, report=alerts.append)
    n, freed = r.run(NOW)
    assert freed >= 8_500 and n == len(segs) - len(local(cat, segs))
    assert local(cat, segs)[-1] == segs[-1].id  # the newest is never deleted for space
    raised = [a for a in alerts if isinstance(a, RaiseAlert)]
    assert raised and raised[-1].id == AlertId.ARCHIVE_DELETED_UNARCHIVED
    assert raised[-1].severity == "critical"
    gone_unarchived = n - 2
    assert r.unarchived_deleted[0] == gone_unarchived > 0
    assert f"{gone_unarchived} segments" in raised[-1].text
    events = retention_events(cat.data_dir)
    assert [(e["why"], e["archived"], len(e["segments"])) for e in events] == [
        ("free-space", True, 2),
        ("free-space", False, gone_unarchived),
    ]
    # A day later, with room on the disk, the alert clears.
    monkeypatch.setattr(ret, "disk_usage", lambda path: (10**12, 2 * 10**12))
    r.run(NOW + DAY_US + 1)
    assert alerts[-1] == ClearAlert(AlertId.ARCHIVE_DELETED_UNARCHIVED)


def test_verify_stays_intact_after_tiering(store: SeaweedStore, tmp_path: Path, plenty) -> None:
    """Footage archived and then deleted locally is a recorded deletion: `nvr verify` says
    the evidence log is intact."""
    b = recorded(tmp_path)
    up, _, _ = make_uploader(archive_cfg(store, tmp_path, new_bucket(store)), b.catalog)
    drain(up)
    n, _ = tiered(b.catalog).run(b.catalog.segments()[-1].end_us + 2 * DAY_US)
    assert n == 3 and b.catalog.segments() == []
    b.log.ingest(b.catalog)
    b.log.sign(T0 + 1, 0)
    done = verify(b)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "evidence log: intact" in done.stdout
    assert [e["archived"] for e in retention_events(b.data)] == [True]


# --- reading back ---------------------------------------------------------------------------


def api_context(cat: Catalog, up: Uploader | None, alerts: Alerts) -> ApiContext:
    return ApiContext(
        snapshot=lambda: None,  # type: ignore[arg-type,return-value]
        catalog=cat, data_dir=cat.data_dir, token=TOKEN, camera_names=lambda: {"cam1"},
        handover=None, archive=up.store if up is not None else None, alerts=alerts,
    )  # fmt: skip


def archived_and_gone(store: SeaweedStore, tmp: Path, n: int, size: int):
    """Footage archived, then deleted locally by tiered retention; the original bytes kept."""
    cat = make_footage(tmp / "data", ("cam1",), n, size)
    originals = {s.id: (cat.data_dir / s.path).read_bytes() for s in cat.segments()}
    up, _, _ = make_uploader(archive_cfg(store, tmp, new_bucket(store)), cat)
    drain(up)
    assert tiered(cat).run(NOW)[0] == n
    return cat, up, originals


def test_footage_read_back_through_the_api(
    store: SeaweedStore, tmp_path: Path, plenty: None
) -> None:
    """Deleted locally, the segments are listed (archived, not local) and served from the
    store with the local headers, byte-identical; a Range request gets the whole body (200);
    each download is audited as archived."""
    cat, up, originals = archived_and_gone(store, tmp_path, 3, 1536 * KIB)  # chunks of 1 MiB
    alerts = Alerts()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def run() -> dict:
        seen: dict = {}
        async with TestServer(make_app(api_context(cat, up, alerts))) as ts, ClientSession() as s:
            url = str(ts.make_url("/api/v1/cameras/cam1/recordings"))
            async with s.get(url, headers=auth) as r:
                seen["listing"] = (r.status, await r.json())
            for sid in originals:
                async with s.get(str(ts.make_url(f"/api/v1/segments/{sid}")), headers=auth) as r:
                    seen[sid] = (r.status, r.headers.copy(), await r.read())
            first = next(iter(originals))
            ranged = {**auth, "Range": "bytes=0-99"}
            async with s.get(str(ts.make_url(f"/api/v1/segments/{first}")), headers=ranged) as r:
                seen["range"] = (r.status, len(await r.read()))
        return seen

    seen = asyncio.run(run())
    status, listing = seen["listing"]
    assert status == 200
    assert [(d["id"], d["archived"], d["local"]) for d in listing["segments"]] == [
        (sid, True, False) for sid in originals
    ]
    for sid, body in originals.items():
        status, headers, got = seen[sid]
        sha = hashlib.sha256(body).hexdigest()
        assert status == 200 and got == body
        assert headers["ETag"] == f'"{sha}"' and headers["X-Segment-Sha256"] == sha
        assert headers["Content-Type"] == "video/mp4"
        assert headers["Content-Length"] == str(len(body))
    assert seen["range"] == (200, len(originals[next(iter(originals))]))
    events = [json.loads(x) for x in (cat.data_dir / AUDIT_FILE).read_text().splitlines()]
    downloads = [e for e in events if e["event"] == "footage-download"]
    assert len(downloads) == 4 and all(e["archived"] is True for e in downloads)
    assert downloads[-1]["range"] == "bytes=0-99"
    assert alerts.get(AlertId.ARCHIVE_CORRUPT) is None


def board_config(tmp: Path, store: SeaweedStore, cat: Catalog, bucket: str) -> Path:
    cfg = tmp / "nvr.toml"
    cfg.write_text(
        f'[board]\nname = "a"\ndata_dir = "{cat.data_dir}"\n'
        f'[archive]\nendpoint = "{store.endpoint}"\nbucket = "{bucket}"\n'
        f'credentials_file = "{creds_file(tmp, store)}"\nprefix = "pair-test"\n'
    )
    return cfg


def test_a_corrupted_archived_object(store: SeaweedStore, tmp_path: Path, plenty: None) -> None:
    """An archived object overwritten with other bytes of the same size and the same
    metadata: the API cuts the stream short and raises archive-corrupt; `nvr verify --archive`
    sees nothing by HEAD alone and reports it with --deep (exit 1)."""
    cat, up, _ = archived_and_gone(store, tmp_path, 2, 2 * MIB + 5)
    victim = cat.archived_segments("cam1", T0_US, NOW)[1]
    key = segment_key(up.prefix, victim)
    other = os.urandom(victim.bytes)  # same size, same metadata, other bytes
    meta = {"sha256": victim.sha256}
    up.store.client.put_object(Bucket=up.cfg.bucket, Key=key, Body=other, Metadata=meta)
    alerts = Alerts()

    async def fetch() -> tuple[int, int, str]:
        async with TestServer(make_app(api_context(cat, up, alerts))) as ts, ClientSession() as s:
            url = str(ts.make_url(f"/api/v1/segments/{victim.id}"))
            async with s.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                got = b""
                try:
                    async for chunk in r.content.iter_any():
                        got += chunk
                except ClientPayloadError as e:
                    return r.status, len(got), type(e).__name__
                return r.status, len(got), "complete"

    status, n, how = asyncio.run(fetch())
    assert status == 200 and how == "ClientPayloadError" and n < victim.bytes
    alert = alerts.get(AlertId.ARCHIVE_CORRUPT)
    assert alert is not None and victim.id in alert.text and alert.severity == "critical"

    cfg = board_config(tmp_path, store, cat, up.cfg.bucket)
    shallow = subprocess.run([*NVR, "verify", "--archive", "--config", str(cfg)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shallow.returncode == 0, shallow.stdout + shallow.stderr
    assert "2 archived segments checked" in shallow.stdout
    deep = subprocess.run([*NVR, "verify", "--archive", "--deep", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert deep.returncode == 1, deep.stdout + deep.stderr
    assert f"MISMATCH segment {victim.id}" in deep.stdout and "1 bad" in deep.stdout
    up.store.client.delete_object(Bucket=up.cfg.bucket, Key=key)
    gone = subprocess.run([*NVR, "verify", "--archive", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert gone.returncode == 1 and f"MISSING  segment {victim.id}" in gone.stdout
    assert store.secret_key not in gone.stdout + gone.stderr + deep.stdout + deep.stderr


# --- the site tool --------------------------------------------------------------------------


def pair_uploader(cfg: ArchiveConfig, cat: Catalog, prefix: str, board: str) -> Uploader:
    return Uploader(
        cfg, load_credentials(cfg.credentials_file), prefix, board, cat, cat.data_dir, Alerts(),
        lambda what, e: None, recording=lambda: True, clock=Clock(),
    )  # fmt: skip


def publish(up: Uploader) -> None:
    """Everything up, then the index (written at most once a minute: the clock moved on)."""
    drain(up)
    up.clock.ahead += 120  # type: ignore[attr-defined]
    up.step()


def test_site_tool_lists_pairs_and_gets_a_range(store: SeaweedStore, tmp_path: Path) -> None:
    """Two pairs under two prefixes of one bucket: `nvr archive ls` (a fresh process with the
    credentials file only, no data directory, no config) lists both with their cameras;
    `nvr archive get` writes the range's segments byte-identical with a manifest."""
    bucket = new_bucket(store)
    cfg = archive_cfg(store, tmp_path, bucket)
    cat1 = make_footage(tmp_path / "p1", ("cam1", "cam2"), 5, 20 * KIB)
    cat2 = make_footage(tmp_path / "p2", ("door",), 3, 10 * KIB, t0=T0_US + DAY_US)
    publish(pair_uploader(cfg, cat1, "site/pair-one", "a"))
    publish(pair_uploader(cfg, cat2, "pair-two", "c"))
    where = tmp_path / "elsewhere"
    where.mkdir()
    site = ["--endpoint", store.endpoint, "--bucket", bucket,
            "--credentials", str(cfg.credentials_file)]  # fmt: skip
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}

    def nvr(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "firmware.cli", *args], cwd=where, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    ls = nvr("archive", "ls", *site, "--json")
    assert ls.returncode == 0, ls.stdout + ls.stderr
    got = {p["pair"]: p for p in json.loads(ls.stdout)["pairs"]}
    assert set(got) == {"site/pair-one", "pair-two"}
    assert got["site/pair-one"]["boards"] == ["a"] and got["pair-two"]["boards"] == ["c"]
    assert {c: v["segments"] for c, v in got["site/pair-one"]["cameras"].items()} == {
        "cam1": 5, "cam2": 5,
    }  # fmt: skip
    assert got["pair-two"]["cameras"]["door"]["first_us"] == T0_US + DAY_US
    text = nvr("archive", "ls", *site)
    assert "pair site/pair-one: boards a" in text.stdout and "camera door:" in text.stdout

    want = [s for s in cat1.segments("cam1")][1:4]
    start = dt.datetime.fromtimestamp((want[0].start_us + 1000) / 1e6, dt.UTC).isoformat()
    end = dt.datetime.fromtimestamp((want[-1].end_us - 1000) / 1e6, dt.UTC).isoformat()
    out = tmp_path / "out"
    get = nvr("archive", "get", *site, "--pair", "site/pair-one", "--camera", "cam1",
              "--start", start, "--end", end, "--out", str(out))  # fmt: skip
    assert get.returncode == 0, get.stdout + get.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["id"] for m in manifest["segments"]] == [s.id for s in want]
    assert manifest["problems"] == 0
    for seg in want:
        assert (out / f"{seg.id}.mp4").read_bytes() == (cat1.data_dir / seg.path).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", *(f"{s.id}.mp4" for s in want)]
    )
    assert store.secret_key not in ls.stdout + ls.stderr + get.stdout + get.stderr


# --- a failover during a multipart upload ---------------------------------------------------

BOARD_A = """
import os, signal, sys, threading
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
import firmware.archive.store as store_mod
store_mod.MULTIPART_THRESHOLD = 5 * 1024 * 1024
store_mod.PART_SIZE = 5 * 1024 * 1024
from firmware.catalog import Catalog
from test_archive_upload import archive_cfg, make_uploader
from firmware.config import ArchiveConfig
cfg = ArchiveConfig.model_validate_json({cfg!r})
up, _, _ = make_uploader(cfg, Catalog(Path({data!r})))

def killed(**kw):
    Path({marker!r}).write_text("a part went up")
    os.kill(os.getpid(), signal.SIGKILL)  # the board dies in the middle of the upload

up.store.client.meta.events.register("after-call.s3.UploadPart", killed)
threading.Timer(90, os._exit, [3]).start()  # never left running: exit 3 if nothing happened
up._follow()  # the uploader's own loop (with its retries), until the kill
"""


def test_failover_during_a_multipart_upload(
    store: SeaweedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Board a is killed after the first part of a large segment's multipart upload; board b
    (the mirror's copy of the footage, its own catalog) goes on: every segment ends up in
    the store once, byte-identical. a's upload stays open in the store (its parts kept) until
    it is aborted: b leaves uploads younger than an hour alone, and aborts older ones."""
    import firmware.archive.store as store_mod

    cat_a = make_footage(tmp_path / "a", ("cam1",), 4, 16 * KIB)
    big = make_footage(tmp_path / "a", ("cam9",), 1, 12 * MIB, t0=T0_US + 100 * SEG_US)
    big_seg = big.segments("cam9")[0]
    cfg = archive_cfg(store, tmp_path, new_bucket(store))
    marker = tmp_path / "killed"
    code = BOARD_A.format(root=str(ROOT), tests=str(ROOT / "tests"), cfg=cfg.model_dump_json(),
                          data=str(cat_a.data_dir), marker=str(marker))  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == -9 and marker.exists(), done.stderr
    s3 = store.client()
    open_uploads = s3.list_multipart_uploads(Bucket=cfg.bucket).get("Uploads") or []
    assert [u["Key"] for u in open_uploads] == [segment_key("pair-test", big_seg)]
    assert Catalog(cat_a.data_dir).archived(big_seg.id) is None
    a_archived = {s.id for s in cat_a.segments() if Catalog(cat_a.data_dir).archived(s.id)}
    assert len(a_archived) == 4  # the small ones went up before the large one

    monkeypatch.setattr(store_mod, "MULTIPART_THRESHOLD", 5 * MIB)
    monkeypatch.setattr(store_mod, "PART_SIZE", 5 * MIB)
    cat_b = mirror_of(cat_a.data_dir, tmp_path / "b")
    up_b, puts_b, failed = make_uploader(cfg, cat_b, board="b")
    drain(up_b)
    assert not failed and up_b.stale_aborted == 0
    assert set(puts_b.segments()) == {segment_key("pair-test", big_seg)}
    assert max(puts_b.segments().values()) == 1 and up_b.status()["adopted"] == 4
    assert_identical(up_b, cat_b)
    keys = [k for k, _ in up_b.store.list_keys("pair-test/segments/")]
    assert len(keys) == len(set(keys)) == 5
    still = s3.list_multipart_uploads(Bucket=cfg.bucket).get("Uploads") or []
    assert [u["UploadId"] for u in still] == [open_uploads[0]["UploadId"]]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert up_b.store.abort_stale_uploads(3600, now=later) == 1
    assert not s3.list_multipart_uploads(Bucket=cfg.bucket).get("Uploads")
    assert up_b.store.head(segment_key("pair-test", big_seg)).bytes == big_seg.bytes  # type: ignore[union-attr]


# --- the board's wiring ---------------------------------------------------------------------


def test_board_shares_its_archive_store_and_tiers_retention(
    store: SeaweedStore, tmp_path: Path
) -> None:
    """With [archive] the board hands the API the uploader's own store (one credentials path)
    and the recorder's retention waits for the archive for local_days; without, neither."""
    from test_archive_upload import _board_config

    from firmware.board import Board
    from firmware.config import load_config

    path = _board_config(tmp_path, store, new_bucket(store), creds_file(tmp_path, store))
    with path.open("a") as f:
        f.write("local_days = 3\n")
    b = Board(load_config(path), serve_api=False)
    assert b.archive is not None and b.api_context().archive is b.archive.store
    assert b.recorder.retention.tiering == Tiering(3.0) and b.recorder.tiering == Tiering(3.0)
    plain = tmp_path / "plain"
    plain.mkdir()
    cfg = plain / "nvr.toml"
    cfg.write_text(f'[board]\nname = "a"\ndata_dir = "{plain}"\n')
    p = Board(load_config(cfg), serve_api=False)
    assert p.api_context().archive is None and p.recorder.retention.tiering is None


# --- expiry after archive_days ----------------------------------------------------------------


def test_the_archive_lets_go_past_archive_days_but_not_what_a_lock_or_the_board_holds(
    store: SeaweedStore, tmp_path: Path
) -> None:
    """Archived-only footage past archive_days leaves the store (every version) and the
    listing, audited; footage an evidence lock holds, or still local, stays."""
    from firmware.evidence.locks import make_lock

    cat = make_footage(tmp_path / "a", ("door", "yard"), 3, 4 * KIB)
    (tmp_path / "a" / AUDIT_FILE).touch()
    bucket = new_bucket(store)
    up, _, failed = make_uploader(archive_cfg(store, tmp_path, bucket, archive_days=1.0), cat)
    drain(up)
    yard = [s for s in cat.segments() if s.camera == "yard"]
    door = [s for s in cat.segments() if s.camera == "door"]
    cat.add_lock(make_lock("yard", yard[0].start_us, yard[-1].end_us, "case 9", T0_US,
                           cameras={"door", "yard"}))  # fmt: skip
    local = door[-1]  # still on the board: not the archive's to let go
    cat.delete_segment_rows([s.id for s in door[:-1] + yard])
    up.wall_us = lambda: T0_US + 3 * 86_400_000_000  # two days past archive_days
    assert up.expire() == 2
    s3 = store.client()
    for seg in door[:-1]:
        assert cat.archived(seg.id) is None
        for key in (segment_key(up.prefix, seg), row_key(up.prefix, seg)):
            versions = s3.list_object_versions(Bucket=bucket, Prefix=key)
            assert not versions.get("Versions"), key
    for seg in [*yard, local]:
        assert cat.archived(seg.id) is not None
        assert s3.head_object(Bucket=bucket, Key=segment_key(up.prefix, seg))
    events = [json.loads(x) for x in (tmp_path / "a" / AUDIT_FILE).read_text().splitlines()]
    assert [e["segments"] for e in events if e["event"] == "archive-expired"] == [
        [s.id for s in door[:-1]]
    ]
    assert up.expire() == 0 and not failed


def test_object_lock_refuses_to_let_go_before_its_retention_ends(
    store: SeaweedStore, tmp_path: Path
) -> None:
    """A board whose clock runs ahead cannot delete what the store still locks: the store
    refuses, the row stays listed."""
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1e6)
    cat = make_footage(tmp_path / "a", ("door",), 2, 4 * KIB, t0=now - 10 * SEG_US)
    (tmp_path / "a" / AUDIT_FILE).touch()
    bucket = new_bucket(store, lock=True)
    up, _, _ = make_uploader(archive_cfg(store, tmp_path, bucket, archive_days=1.0), cat)
    drain(up)
    ids = [s.id for s in cat.segments()]
    cat.delete_segment_rows(ids)
    up.wall_us = lambda: now + 3 * 86_400_000_000
    with pytest.raises(botocore_exceptions.ClientError):
        up.expire()
    assert all(cat.archived(i) is not None for i in ids)
