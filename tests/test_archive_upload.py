"""The archive tier's uploader against a real SeaweedFS: every committed segment reaches the
store once, oldest first, byte-identical, through an outage, a lost volume server and a
failover; under the bandwidth cap; with Object Lock retention; never showing its secret."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.alert_ids import AlertId
from firmware.alerts import Alerts
from firmware.archive.plan import ArchivePlan, PlanSettings
from firmware.archive.store import (
    Credentials,
    Throttle,
    index_key,
    load_credentials,
    row_key,
    segment_key,
)
from firmware.archive.uploader import Uploader
from firmware.catalog import Catalog, Segment, segment_id
from firmware.config import ArchiveConfig
from firmware.configfile import ConfigError
from firmware.core.actions import ClearAlert, RaiseAlert

boto3 = pytest.importorskip("boto3")
botocore_exceptions = pytest.importorskip("botocore.exceptions")

from hil.seaweed import SeaweedStore, missing_weed  # noqa: E402
from hil.wait import wait_until  # noqa: E402

needs_weed = pytest.mark.skipif(missing_weed() is not None, reason=str(missing_weed()))

T0_US = 1_780_000_000_000_000  # 2026-05-28
SEG_US = 4_000_000
KIB = 1024


# --- helpers --------------------------------------------------------------------------------


def make_footage(
    data: Path, cameras: tuple[str, ...], per_camera: int, size: int, t0: int = T0_US
) -> Catalog:
    """A catalog with real files: per camera one run of `per_camera` segments of random bytes."""
    data.mkdir(parents=True, exist_ok=True)
    cat = Catalog(data)
    for ci, cam in enumerate(cameras):
        run = cat.new_run(cam, "a", t0 + ci * 1000, t0 + ci * 1000)
        for i in range(per_camera):
            start = t0 + ci * 1000 + i * SEG_US
            body = os.urandom(size + i)
            rel = f"{cam}/{start}.mp4"
            (data / cam).mkdir(exist_ok=True)
            (data / rel).write_bytes(body)
            cat.add_segment(Segment(
                id=segment_id(cam, start, "a"), camera=cam, run_id=run, path=rel,
                start_us=start, end_us=start + SEG_US, media_start_us=0, media_end_us=SEG_US,
                frames=100, bytes=len(body), sha256=hashlib.sha256(body).hexdigest(),
                origin="a", codec="h264",
            ))  # fmt: skip
    return cat


def mirror_of(src: Path, dst: Path) -> Catalog:
    """The standby's copy: the same files and rows (what the mirror gives it)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("catalog.sqlite*"))
    old = Catalog(src)
    cat = Catalog(dst)
    for run in old.runs():
        rid = cat.merge_run(run)
        for seg in old.run_segments(run.id):
            cat.add_segment(Segment(**{**seg.__dict__, "run_id": rid}))
    return cat


def creds_file(tmp: Path, store: SeaweedStore) -> Path:
    path = tmp / "archive.cred"
    path.write_text(f'access_key = "{store.access_key}"\nsecret_key = "{store.secret_key}"\n')
    path.chmod(0o600)
    return path


def archive_cfg(store: SeaweedStore, tmp: Path, bucket: str, **kw: object) -> ArchiveConfig:
    return ArchiveConfig(
        endpoint=store.endpoint, bucket=bucket, credentials_file=creds_file(tmp, store), **kw
    )


class Puts:
    """Successful PUT-like requests by key, counted by a botocore event hook on the client."""

    OPS = ("PutObject", "CreateMultipartUpload")

    def __init__(self, client: object) -> None:
        self.by_key: Counter[str] = Counter()
        for op in self.OPS:
            client.meta.events.register(f"after-call.s3.{op}", self._seen)  # type: ignore[attr-defined]

    def _seen(self, http_response: object, parsed: dict, model: object, **kw: object) -> None:
        if parsed.get("ResponseMetadata", {}).get("HTTPStatusCode") == 200:
            self.by_key[kw["context"].get("key", "?")] += 1  # type: ignore[union-attr]

    def segments(self) -> Counter[str]:
        return Counter({k: n for k, n in self.by_key.items() if k.endswith(".mp4")})


class KeyOfCall:
    """Puts the call's Key into the request context, where the after-call hook reads it."""

    def __init__(self, client: object) -> None:
        for op in Puts.OPS:
            client.meta.events.register(f"before-parameter-build.s3.{op}", self._key)  # type: ignore[attr-defined]

    @staticmethod
    def _key(params: dict, context: dict, **kw: object) -> None:
        context["key"] = params.get("Key")


class Clock:
    """The monotonic clock, which a test may move ahead (a minute passing for the index)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead


def make_uploader(
    cfg: ArchiveConfig, cat: Catalog, alerts: Alerts | None = None, board: str = "a"
) -> tuple[Uploader, Puts, list[Exception]]:
    failed: list[Exception] = []
    up = Uploader(
        cfg, load_credentials(cfg.credentials_file), "pair-test", board, cat, cat.data_dir,
        alerts or Alerts(), lambda what, e: failed.append(e), recording=lambda: True,
        clock=Clock(),
    )  # fmt: skip
    KeyOfCall(up.store.client)
    return up, Puts(up.store.client), failed


def drain(up: Uploader, limit: int = 500) -> None:
    """Step until nothing is left to archive (a bounded number of steps, no waiting)."""
    for _ in range(limit):
        if not up.catalog.not_archived(1):
            return
        up.step()
    raise AssertionError(f"still not archived after {limit} steps: {up.status()}")


def assert_identical(up: Uploader, cat: Catalog) -> None:
    """Every local segment is on the store, byte for byte, with its row."""
    s3 = up.store.client
    for seg in cat.segments():
        key = segment_key(up.prefix, seg)
        body = s3.get_object(Bucket=up.cfg.bucket, Key=key)["Body"].read()
        assert body == (cat.data_dir / seg.path).read_bytes(), key
        row = up.store.get_json(row_key(up.prefix, seg))
        assert row["id"] == seg.id and row["sha256"] == seg.sha256
        assert row["fields"]["start_us"] == seg.start_us and row["run_info"]["camera"] == seg.camera


@pytest.fixture(scope="module")
def store() -> Iterator[SeaweedStore]:
    if missing_weed() is not None:
        pytest.skip(str(missing_weed()))
    with SeaweedStore(volumes=3) as s:
        yield s


_bucket_no = iter(range(1000))


def new_bucket(store: SeaweedStore, lock: bool = False) -> str:
    name = f"arch-{next(_bucket_no)}-{os.urandom(3).hex()}"
    store.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    return name


# --- the plan core --------------------------------------------------------------------------


def _seg(start_us: int) -> Segment:
    return Segment("c.1.a", "c", 1, "c/1.mp4", start_us, start_us + SEG_US, 0, SEG_US, 1, 10,
                   "0" * 64, "a", "h264")  # fmt: skip


def test_plan_lag_and_behind_alert_raise_and_clear() -> None:
    """Lag is the age of the oldest segment not archived; the alert follows the threshold."""
    plan = ArchivePlan(PlanSettings(lag_alert_s=60.0))
    now_us = T0_US + 30_000_000
    step = plan.step(0.0, now_us, _seg(T0_US), allowed=True)
    assert step.lag_s == pytest.approx(30.0) and step.upload is not None and not step.actions
    step = plan.step(1.0, T0_US + 90_000_000, _seg(T0_US), allowed=True)
    assert step.lag_s == pytest.approx(90.0)
    assert [type(a) for a in step.actions] == [RaiseAlert]
    assert step.actions[0].id == AlertId.ARCHIVE_BEHIND  # type: ignore[union-attr]
    step = plan.step(2.0, T0_US + 90_000_000, None, allowed=True)
    assert step.lag_s == 0.0 and step.upload is None
    assert step.actions == (ClearAlert(AlertId.ARCHIVE_BEHIND),)
    assert plan.step(3.0, T0_US, None, allowed=True).actions == ()


def test_plan_standby_uploads_nothing_and_clears() -> None:
    """Only the recording board uploads; a board that stops recording drops its alerts."""
    plan = ArchivePlan(PlanSettings(lag_alert_s=1.0, unreachable_after=1))
    plan.step(0.0, T0_US + 10_000_000, _seg(T0_US), allowed=True)
    plan.failed(0.0, "EndpointConnectionError")
    step = plan.step(0.5, T0_US + 10_000_000, _seg(T0_US), allowed=False)
    assert step.upload is None and step.lag_s is None
    assert set(step.actions) == {ClearAlert(AlertId.ARCHIVE_BEHIND),
                                 ClearAlert(AlertId.ARCHIVE_UNREACHABLE)}  # fmt: skip


def test_plan_unreachable_after_n_failures_with_class_only() -> None:
    """The alert comes after N failures in a row, names the error class, clears on success."""
    plan = ArchivePlan(PlanSettings(lag_alert_s=3600.0, unreachable_after=3))
    assert plan.failed(0.0, "EndpointConnectionError") == []
    assert plan.failed(1.0, "EndpointConnectionError") == []
    raised = plan.failed(3.0, "EndpointConnectionError")
    assert len(raised) == 1 and isinstance(raised[0], RaiseAlert)
    assert (
        raised[0].id == AlertId.ARCHIVE_UNREACHABLE and "EndpointConnectionError" in raised[0].text
    )
    assert "http" not in raised[0].text
    step = plan.step(3.5, T0_US, _seg(T0_US), allowed=True)
    assert step.upload is None and step.deadline == plan.retry_at  # backing off
    assert plan.succeeded() == [ClearAlert(AlertId.ARCHIVE_UNREACHABLE)]
    assert plan.step(3.6, T0_US, _seg(T0_US), allowed=True).upload is not None


@given(st.integers(min_value=1, max_value=200))
def test_plan_backoff_bounded(failures: int) -> None:
    """Backoff grows from the minimum and never passes the maximum."""
    plan = ArchivePlan(PlanSettings(lag_alert_s=1.0, backoff_min_s=1.0, backoff_max_s=60.0))
    b = plan.backoff_s(failures)
    assert 1.0 <= b <= 60.0
    assert plan.backoff_s(failures + 1) >= b


# --- the bandwidth cap, alone ---------------------------------------------------------------


@settings(max_examples=200)
@given(
    rate=st.floats(min_value=1e3, max_value=1e8),
    chunks=st.lists(st.integers(min_value=1, max_value=10_000_000), min_size=1, max_size=50),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=50, max_size=50),
)
def test_throttle_never_exceeds_its_rate(rate: float, chunks: list[int], gaps: list[float]) -> None:
    """With a virtual clock: a reader that sleeps what take() says, idling at will between
    reads, has moved N bytes only after at least N / rate seconds."""
    cap = Throttle(rate)
    now = 0.0
    for n, gap in zip(chunks, gaps, strict=False):
        now += gap
        now += cap.take(n, now)
    assert now >= sum(chunks) / rate * (1 - 1e-9)


def test_throttle_examples() -> None:
    """Empty at start; refills at the rate, up to the burst."""
    cap = Throttle(1000.0, burst=500.0)
    assert cap.take(1000, 0.0) == pytest.approx(1.0)
    assert cap.take(0, 1.0) == 0.0
    assert cap.take(500, 100.0) == 0.0  # a long idle fills only the burst
    assert cap.take(500, 100.0) == pytest.approx(0.5)
    assert Throttle.mbit(0) is None and Throttle.mbit(8).rate == pytest.approx(1e6)  # type: ignore[union-attr]


# --- credentials ----------------------------------------------------------------------------


def test_credentials_file_must_be_private_and_well_formed(tmp_path: Path) -> None:
    """0644, another owner or junk is refused, with the path and never the contents."""
    path = tmp_path / "cred"
    path.write_text('access_key = "AKX"\nsecret_key = "s3cr3t-VALUE"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="0600 or 0400"):
        load_credentials(path)
    path.chmod(0o400)
    assert load_credentials(path) == Credentials("AKX", "s3cr3t-VALUE")
    assert "s3cr3t" not in repr(load_credentials(path))
    with pytest.raises(ConfigError, match="owned by root or uid"):
        load_credentials(path, uid=os.getuid() + 4242) if os.getuid() != 0 else _not_root_owned(
            path
        )
    path.chmod(0o600)
    path.write_text('secret_key = "s3cr3t-VALUE\n')
    with pytest.raises(ConfigError) as err:
        load_credentials(path)
    assert "s3cr3t" not in str(err.value)


def _not_root_owned(path: Path) -> None:
    """As root (owner 0 always passes): a file owned by nobody else is refused."""
    os.chown(path, 4242, 4242)
    load_credentials(path, uid=0)


# --- against the store ----------------------------------------------------------------------


@needs_weed
def test_uploads_all_oldest_first_identical_and_idempotent(
    store: SeaweedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every segment up, oldest first, byte-identical with its row and the index; a large one
    in parts; a second uploader over the same catalog and store PUTs nothing."""
    import firmware.archive.store as store_mod

    monkeypatch.setattr(store_mod, "MULTIPART_THRESHOLD", 5 * 1024 * KIB)
    monkeypatch.setattr(store_mod, "PART_SIZE", 5 * 1024 * KIB)
    cat = make_footage(tmp_path / "data", ("cam1", "cam2"), 4, 64 * KIB)
    big = make_footage(tmp_path / "data", ("cam3",), 1, 6 * 1024 * KIB)  # multipart
    assert big.path == cat.path
    up, puts, failed = make_uploader(archive_cfg(store, tmp_path, new_bucket(store)), cat)
    order: list[str] = []
    real_put = up.store.put_segment
    up.store.put_segment = lambda seg, *a: (order.append(seg.id), real_put(seg, *a))[1]  # type: ignore[method-assign]
    drain(up)
    segs = cat.segments()
    assert order == [s.id for s in sorted(segs, key=lambda s: (s.start_us, s.camera))]
    assert puts.segments() == Counter({segment_key(up.prefix, s): 1 for s in segs})
    assert_identical(up, cat)
    assert up.store.head(segment_key(up.prefix, segs[-1])).sha256 == segs[-1].sha256  # type: ignore[union-attr]
    mp4 = up.store.client.head_object(Bucket=up.cfg.bucket, Key=segment_key(up.prefix, segs[0]))
    assert mp4["ContentType"] == "video/mp4"
    up.clock.ahead += 60  # type: ignore[attr-defined]
    up.step()  # a minute later: the index goes up
    index = up.store.get_json(index_key(up.prefix))
    assert set(index["cameras"]) == {"cam1", "cam2", "cam3"}
    assert index["cameras"]["cam1"]["segments"] == 4 and index["boards"] == ["a"]
    st_ = up.status()
    assert st_["uploaded"] == len(segs) and st_["lag_seconds"] == 0.0 and not failed
    assert st_["bytes"] == sum(s.bytes for s in segs)
    assert {s.id for s in segs} == cat.archived_ids([s.id for s in segs])

    with cat._tx() as db:  # the marks lost (a catalog rebuilt): the store still holds it all
        db.execute("DELETE FROM archived")
    again, puts2, _ = make_uploader(up.cfg, cat)
    drain(again)
    assert puts2.by_key == Counter()
    assert again.status()["adopted"] + again.status()["already_there"] == len(segs)
    assert again.status()["adopted"] == len(segs)  # by LIST + HEAD, before any upload


@needs_weed
def test_endpoint_unreachable_then_back(store: SeaweedStore, tmp_path: Path) -> None:
    """With the S3 gateway gone the running uploader raises archive-unreachable (the error
    class, no URL, no secret); once back it resumes: everything up, each segment PUT once."""
    cat = make_footage(tmp_path / "data", ("cam1",), 3, 32 * KIB)
    alerts = Alerts()
    up, puts, failed = make_uploader(archive_cfg(store, tmp_path, new_bucket(store)), cat, alerts)
    drain(up)
    make_more(cat, 4)
    store.stop_s3()
    try:
        up.start()
        wait_until(lambda: alerts.get(AlertId.ARCHIVE_UNREACHABLE), 60, "archive-unreachable")
        text = alerts.get(AlertId.ARCHIVE_UNREACHABLE).text  # type: ignore[union-attr]
        assert "EndpointConnectionError" in text and "127.0.0.1" not in text
        assert store.secret_key not in text and up.status()["failures"] >= 3
    finally:
        store.start_s3()
    up.wake()
    wait_until(lambda: not cat.not_archived(1), 120, "the backlog archived after the outage")
    wait_until(lambda: alerts.get(AlertId.ARCHIVE_UNREACHABLE) is None, 30, "alert cleared")
    up.stop()
    assert max(puts.segments().values()) == 1 and len(puts.segments()) == 7
    assert_identical(up, cat)
    assert not failed


def make_more(cat: Catalog, n: int) -> None:
    """n more segments of cam1 after the last one."""
    last = cat.latest_segments("cam1")[0]
    for i in range(n):
        start = last.end_us + i * SEG_US
        body = os.urandom(40 * KIB + i)
        rel = f"cam1/{start}.mp4"
        (cat.data_dir / rel).write_bytes(body)
        cat.add_segment(Segment(
            id=segment_id("cam1", start, "a"), camera="cam1", run_id=last.run_id, path=rel,
            start_us=start, end_us=start + SEG_US, media_start_us=0, media_end_us=SEG_US,
            frames=100, bytes=len(body), sha256=hashlib.sha256(body).hexdigest(), origin="a",
            codec="h264",
        ))  # fmt: skip


@needs_weed
def test_volume_server_killed_during_uploads(tmp_path: Path) -> None:
    """Three volume servers, replication 001: with one killed mid-backlog the uploads go on
    and every segment is there, byte-identical."""
    with SeaweedStore(volumes=3) as st3:
        cat = make_footage(tmp_path / "data", ("cam1", "cam2"), 8, 256 * KIB)
        up, puts, failed = make_uploader(archive_cfg(st3, tmp_path, new_bucket(st3)), cat)
        for _ in range(4):
            up.step()
        assert 0 < len(puts.segments()) < 16
        st3.kill_volume(1)
        up.start()
        wait_until(lambda: not cat.not_archived(1), 180, "every segment archived")
        up.stop()
        assert_identical(up, cat)
        assert max(puts.segments().values()) == 1 and not failed


@needs_weed
def test_bandwidth_cap_is_applied(store: SeaweedStore, tmp_path: Path) -> None:
    """The configured cap throttles the file reads: every byte goes through the Throttle and
    the upload takes at least bytes / rate."""
    cat = make_footage(tmp_path / "data", ("cam1",), 1, 1024 * KIB)
    cfg = archive_cfg(store, tmp_path, new_bucket(store), bandwidth_mbit=16.0)  # 2 MB/s
    up, _, _ = make_uploader(cfg, cat)
    assert up.cap is not None and up.cap.rate == pytest.approx(2e6)
    taken: list[int] = []
    real_take = up.cap.take
    up.cap.take = lambda n, now: (taken.append(n), real_take(n, now))[1]  # type: ignore[method-assign]
    seg = cat.segments()[0]
    t0 = time.monotonic()
    drain(up)
    elapsed = time.monotonic() - t0
    assert sum(taken) >= seg.bytes
    assert sum(taken) < 2 * seg.bytes  # read once: botocore's re-reads are not counted
    assert elapsed >= seg.bytes / 2e6


@needs_weed
def test_credentials_never_in_logs_status_or_alerts(
    store: SeaweedStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong secret fails every upload: the error, the alert, the status and every log line
    (botocore's debug included) carry neither the secret nor, outside boto, the access key."""
    caplog.set_level(logging.DEBUG)
    cat = make_footage(tmp_path / "data", ("cam1",), 1, 16 * KIB)
    wrong = tmp_path / "wrong.cred"
    secret = "WRONG-" + os.urandom(12).hex()
    wrong.write_text(f'access_key = "{store.access_key}"\nsecret_key = "{secret}"\n')
    wrong.chmod(0o600)
    cfg = ArchiveConfig(endpoint=store.endpoint, bucket=new_bucket(store), credentials_file=wrong)
    alerts = Alerts()
    up, _, _ = make_uploader(cfg, cat, alerts)
    up.plan.settings = PlanSettings(lag_alert_s=1.0, unreachable_after=1, backoff_min_s=0.0,
                                    backoff_max_s=0.0)  # fmt: skip
    for _ in range(3):
        up.step()
    st_ = up.status()
    assert st_["failures"] >= 1 and st_["last_error"]
    alert = alerts.get(AlertId.ARCHIVE_UNREACHABLE)
    assert alert is not None
    shown = [repr(st_), alert.text, up.last_error or "", repr(up.creds)]
    for text in shown + [r.getMessage() for r in caplog.records]:
        assert secret not in text
    for text in shown + [r.getMessage() for r in caplog.records if r.name.startswith("nvr")]:
        assert store.access_key not in text


@needs_weed
def test_new_active_board_uploads_nothing_twice(store: SeaweedStore, tmp_path: Path) -> None:
    """Board a archived part of the footage and failed; board b (the mirror's copy, a catalog
    of its own) goes on: it PUTs only what a did not, and marks the rest from the store."""
    cat_a = make_footage(tmp_path / "a", ("cam1", "cam2"), 5, 48 * KIB)
    cfg = archive_cfg(store, tmp_path, new_bucket(store))
    up_a, puts_a, _ = make_uploader(cfg, cat_a)
    for _ in range(6):
        up_a.step()
    done_by_a = set(puts_a.segments())
    assert len(done_by_a) == 6
    cat_b = mirror_of(tmp_path / "a", tmp_path / "b")
    up_b, puts_b, failed = make_uploader(cfg, cat_b, board="b")
    drain(up_b)
    assert not set(puts_b.segments()) & done_by_a
    assert len(puts_b.segments()) == 4 and up_b.status()["adopted"] == 6
    assert max(puts_b.segments().values()) == 1 and not failed
    assert_identical(up_b, cat_b)


@needs_weed
def test_object_lock_retention(store: SeaweedStore, tmp_path: Path) -> None:
    """A lock-enabled bucket and archive_days: each segment is COMPLIANCE-locked until its end
    plus archive_days, and its version cannot be deleted."""
    recent = (time.time_ns() // 1000 // 1_000_000 - 3600) * 1_000_000  # an hour ago
    cat = make_footage(tmp_path / "data", ("cam1",), 2, 16 * KIB, t0=recent)
    cfg = archive_cfg(store, tmp_path, new_bucket(store, lock=True), archive_days=2.0)
    up, _, failed = make_uploader(cfg, cat)
    drain(up)
    assert not failed
    s3 = up.store.client
    for seg in cat.segments():
        key = segment_key(up.prefix, seg)
        head = up.store.head(key)
        assert head is not None and head.lock_mode == "COMPLIANCE"
        want = dt.datetime.fromtimestamp(seg.end_us / 1e6 + 2 * 86400, dt.UTC)
        assert abs((head.retain_until - want).total_seconds()) <= 1.0  # type: ignore[operator]
        version = s3.head_object(Bucket=cfg.bucket, Key=key)["VersionId"]
        with pytest.raises(botocore_exceptions.ClientError) as err:
            s3.delete_object(Bucket=cfg.bucket, Key=key, VersionId=version)
        assert err.value.response["Error"]["Code"] == "AccessDenied"


@needs_weed
def test_object_lock_on_refuses_a_bucket_without_it(store: SeaweedStore, tmp_path: Path) -> None:
    """object_lock = "on" with a bucket lacking it: nothing goes up unlocked, and it says why."""
    cat = make_footage(tmp_path / "data", ("cam1",), 1, 16 * KIB)
    cfg = archive_cfg(store, tmp_path, new_bucket(store), archive_days=1.0, object_lock="on")
    up, puts, _ = make_uploader(cfg, cat)
    up.step()
    assert cat.not_archived(5) and not puts.segments()
    assert "has no Object Lock" in (up.last_error or "")


@needs_weed
def test_retired_segment_stays_known_by_its_row(store: SeaweedStore, tmp_path: Path) -> None:
    """Once archived and deleted locally, the segment is still listed from its kept row."""
    cat = make_footage(tmp_path / "data", ("cam1",), 3, 16 * KIB)
    up, _, _ = make_uploader(archive_cfg(store, tmp_path, new_bucket(store)), cat)
    drain(up)
    first = cat.segments()[0]
    cat.delete_segment_rows([first.id])
    assert cat.archived_segments("cam1", T0_US, T0_US + 10 * SEG_US) == [first]
    got = cat.archived(first.id)
    assert got is not None and got.segment == first and got.key == segment_key(up.prefix, first)
    body = up.store.open_segment(got.key)
    assert hashlib.sha256(body.read()).hexdigest() == first.sha256


# --- the catalog, the board, status ---------------------------------------------------------


def test_catalog_of_older_firmware_opens_with_the_archived_table(tmp_path: Path) -> None:
    """A data directory from before the archive (no `archived` table) opens and archives."""
    cat = make_footage(tmp_path / "data", ("cam1",), 2, 1 * KIB)
    with cat._tx() as db:
        db.execute("DROP TABLE archived")
    cat.close()
    old = Catalog(tmp_path / "data")
    seg = old.not_archived(10)[0]
    assert [s.id for s in old.not_archived(10)] == [s.id for s in old.segments()]
    old.mark_archived(seg, "k", 1)
    assert old.archived_ids([s.id for s in old.segments()]) == {seg.id}
    assert old.archived_summary() == {"cam1": (seg.start_us, seg.end_us, 1)}


def _board_config(tmp_path: Path, store: SeaweedStore, bucket: str, cred: Path) -> Path:
    from test_pair_token import write_config

    path = write_config(tmp_path, "a", None, listen_address="127.0.0.1")
    with path.open("a") as f:
        f.write(f'\n[archive]\nendpoint = "{store.endpoint}"\nbucket = "{bucket}"\n'
                f'credentials_file = "{cred}"\nlag_alert_minutes = 1\n')  # fmt: skip
    return path


@needs_weed
def test_single_board_uploads_and_shows_it(store: SeaweedStore, tmp_path: Path) -> None:
    """A single board with [archive] uploads a committed segment while it records, and its
    status, console lines and metrics show the archive (never the secret)."""
    import asyncio

    from prometheus_client import generate_latest

    from firmware.apiclient import status_lines
    from firmware.board import Board
    from firmware.config import load_config
    from firmware.metrics import registry_for

    bucket = new_bucket(store)
    b = Board(load_config(_board_config(tmp_path, store, bucket, creds_file(tmp_path, store))),
              serve_api=False)  # fmt: skip
    assert b.archive is not None and b.archive.prefix == "board-a"

    async def main() -> tuple[dict, str]:
        stop = asyncio.Event()
        task = asyncio.create_task(b.serve(stop))
        try:
            recent = (time.time_ns() // 1000 // 1_000_000 - 10) * 1_000_000
            await asyncio.to_thread(make_footage, b.data_dir, ("cam9",), 2, 8 * KIB, recent)
            b._catalog_changed()
            await asyncio.to_thread(wait_until, lambda: not b.catalog.not_archived(1), 60,
                                    "the board's segments archived")  # fmt: skip
            return b.status(), generate_latest(registry_for(b.snapshot)).decode()
        finally:
            stop.set()
            await task

    st_, metrics = asyncio.run(main())
    assert st_["archive"]["uploaded"] == 2 and st_["archive"]["prefix"] == "board-a"
    assert any(line.startswith(f"archive {bucket}/board-a: ") for line in status_lines(st_))
    assert "nvr_archive_lag_seconds" in metrics
    assert "nvr_archive_uploaded_bytes_total " in metrics
    assert store.secret_key not in repr(st_) + metrics


def test_board_with_unsafe_credentials_records_on_with_an_alert(tmp_path: Path) -> None:
    """A world-readable credentials file: no uploader, the critical alert names the file and
    the fix; the board is built and records."""
    from test_pair_token import write_config

    from firmware.board import Board
    from firmware.config import load_config
    from firmware.roles import RecorderMode

    cred = tmp_path / "cred"
    cred.write_text('access_key = "AK"\nsecret_key = "very-secret-value"\n')
    cred.chmod(0o644)
    path = write_config(tmp_path, "a", None, listen_address="127.0.0.1")
    with path.open("a") as f:
        f.write(f'\n[archive]\nendpoint = "http://127.0.0.1:9"\nbucket = "nvr-x"\n'
                f'credentials_file = "{cred}"\n')  # fmt: skip
    b = Board(load_config(path), serve_api=False)
    alert = b.alerts.get(AlertId.ARCHIVE_CREDENTIALS)
    assert b.archive is None and alert is not None and alert.severity == "critical"
    assert str(cred) in alert.text and "0600" in alert.text
    assert "very-secret" not in alert.text
    assert b.recorder.mode is RecorderMode.RECORD


def test_archive_config_refuses_credentials_in_the_url_and_bad_prefixes() -> None:
    """The endpoint carries no credentials; the prefix is a safe key prefix."""
    from firmware.config import parse_config

    base = '[archive]\nbucket = "nvr-x"\ncredentials_file = "/etc/nvr/archive.cred"\n'
    with pytest.raises(ConfigError, match="must not carry credentials") as err:
        parse_config(base + 'endpoint = "http://AK:topsecret@127.0.0.1:9"\n')
    assert "topsecret" not in str(err.value)
    with pytest.raises(ConfigError, match="http:// or https://"):
        parse_config(base + 'endpoint = "ftp://127.0.0.1"\n')
    for bad in ("../x", "/abs", "a//b", ".hidden", "a/", "a b"):
        with pytest.raises(ConfigError, match=r"archive\.prefix"):
            parse_config(base + f'endpoint = "http://127.0.0.1:9"\nprefix = "{bad}"\n')
    cfg = parse_config(base + 'endpoint = "https://s3.example.net/"\nprefix = "site1/pair-a"\n')
    assert cfg.archive is not None and cfg.archive.endpoint == "https://s3.example.net"
    assert cfg.archive.object_lock == "auto" and cfg.archive.bandwidth_mbit == 0


class _FakeNote:
    def render(self) -> str:
        return "nvr-a-1234\n7\nroot\n\n— a sig\n— b cosig\n"


class _FakeCheckpoint:
    origin = "nvr-a-1234"
    size = 7


class _FakeLog:
    """EvidenceLog's `cosigned()` as the uploader reads it: the newest cosigned checkpoint."""

    def cosigned(self) -> tuple[_FakeCheckpoint, _FakeNote]:
        return _FakeCheckpoint(), _FakeNote()


@needs_weed
def test_index_and_cosigned_checkpoint_published(store: SeaweedStore, tmp_path: Path) -> None:
    """The newest cosigned checkpoint goes under evidence/{origin}/checkpoint-{size}.txt, and
    the index merges what another board wrote (its boards, its cameras)."""
    cat = make_footage(tmp_path / "data", ("cam1",), 1, 4 * KIB)
    up, puts, _ = make_uploader(archive_cfg(store, tmp_path, new_bucket(store)), cat)
    up.store.put_json(index_key(up.prefix), {"boards": ["b"], "cameras": {"camX": {
        "first_us": 5, "last_us": 9, "segments": 1}}})  # fmt: skip
    up.evidence = lambda: _FakeLog()  # type: ignore[assignment,return-value]
    drain(up)
    up.clock.ahead += 60  # type: ignore[attr-defined]
    up.step()
    key = f"{up.prefix}/evidence/nvr-a-1234/checkpoint-7.txt"
    body = up.store.client.get_object(Bucket=up.cfg.bucket, Key=key)
    assert body["Body"].read().decode() == _FakeNote().render()
    index = up.store.get_json(index_key(up.prefix))
    assert index["boards"] == ["a", "b"] and set(index["cameras"]) == {"camX", "cam1"}
    puts_before = sum(puts.by_key.values())
    up.clock.ahead += 60  # type: ignore[attr-defined]
    up.step()  # nothing new: neither the index nor the checkpoint is written again
    assert sum(puts.by_key.values()) == puts_before


@needs_weed
def test_standby_uploads_nothing_and_a_changed_file_is_refused(
    store: SeaweedStore, tmp_path: Path
) -> None:
    """While the board does not record nothing goes up; a file that no longer matches its
    catalog row is never archived under the row's hash, and the rest goes on."""
    cat = make_footage(tmp_path / "data", ("cam1",), 3, 8 * KIB)
    up, puts, _ = make_uploader(archive_cfg(store, tmp_path, new_bucket(store)), cat)
    recording = False
    up.recording = lambda: recording
    for _ in range(3):
        up.step()
    assert not puts.by_key and up.status()["uploading"] is False and len(cat.not_archived(9)) == 3
    first = cat.segments()[0]
    (cat.data_dir / first.path).write_bytes(b"changed behind the catalog's back")
    recording = True
    drain_except = [up.step() for _ in range(6)]
    assert len(drain_except) == 6
    assert [s.id for s in cat.not_archived(9)] == [first.id]
    assert up.store.head(segment_key(up.prefix, first)) is None
    assert "does not match its catalog row" in (up.last_error or "")
    assert len(puts.segments()) == 2
