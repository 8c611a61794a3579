"""The uploader: a thread (under keep_running) that copies every committed segment to the
archive, oldest first, while this board records (the active board of a pair, or a single
board). The decisions are firmware/archive/plan.py's; this file carries them out.

After a failover the new active board goes on where the old one stopped: before its first
upload into a camera-day in this run it LISTs that day's folder in the store, and each local
segment found there with the same size is HEADed; if its sha256 metadata matches it is marked
archived without a PUT (the mirror gave this board the same files, so ids, sizes and hashes
agree). put_segment's own HEAD catches anything else: nothing is uploaded twice."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.alerts import Alerts
from firmware.archive.plan import Action, ArchivePlan, PlanSettings
from firmware.archive.store import (
    ArchiveStore,
    Credentials,
    Throttle,
    checkpoint_key,
    day_of,
    day_prefix,
    index_key,
    scrub,
    segment_key,
)
from firmware.audit import append_event
from firmware.catalog import Catalog, Segment
from firmware.config import ArchiveConfig
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.supervise import Failure, keep_running
from firmware.timefmt import iso, now_us

if TYPE_CHECKING:
    from firmware.evidence.log import EvidenceLog

log = logging.getLogger("nvr.archive")

BATCH = 64
INDEX_S = 60.0
"""index.json and the evidence checkpoints at most this often."""
STOP_JOIN_S = 10.0
DAY_US = 86_400 * 1_000_000
RESCAN_S = 600.0
FLOOR_SLACK_US = 3600 * 1_000_000
"""Segments commit at most a segment length after they start (up to 10 min): an hour back
from now covers every segment still to come from this board's recorder."""
LOCK_MARGIN_US = 60 * 1_000_000
BACKOFF_S = 60.0
"""A standby whose look at the store failed looks again this much later."""
STALE_UPLOAD_S = 3600.0
"""Multipart uploads of this prefix begun longer ago are aborted when this board starts
uploading (a board stopped in the middle of one leaves its parts behind)."""


class Uploader:
    def __init__(
        self,
        cfg: ArchiveConfig,
        creds: Credentials,
        prefix: str,
        board: str,
        catalog: Catalog,
        data_dir: Path,
        alerts: Alerts,
        failed: Failure,
        recording: Callable[[], bool],
        evidence: Callable[[], EvidenceLog | None] = lambda: None,
        store: ArchiveStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_us: Callable[[], int] = now_us,
    ) -> None:
        self.cfg, self.creds, self.prefix, self.board = cfg, creds, prefix, board
        self.catalog, self.data_dir, self.alerts, self.failed = catalog, data_dir, alerts, failed
        self.recording, self.evidence = recording, evidence
        self.store = store or ArchiveStore(cfg, creds, prefix)
        self.clock, self.wall_us = clock, wall_us
        self.plan = ArchivePlan(PlanSettings(lag_alert_s=cfg.lag_alert_minutes * 60))
        self.cap = Throttle.mbit(cfg.bandwidth_mbit)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._adopted_days: set[tuple[str, str]] = set()
        self._skipped: set[str] = set()
        self._index_at = -INDEX_S
        self._index_dirty = True
        self._checkpoint_size: int | None = None
        self._floor_us: int | None = None
        self._allowed = False
        self._rescan_at = -RESCAN_S
        self.lag_s: float | None = None
        self.uploaded = self.uploaded_bytes = self.adopted = self.already = 0
        self.failures = 0
        self.last_error: str | None = None
        self._busy_s = 0.0
        self._stale_checked = False
        self.stale_aborted = 0
        self._standby_at = -RESCAN_S
        self._expired_at = -RESCAN_S

    # --- one step ---------------------------------------------------------------------

    def step(self) -> float:
        """Upload at most one segment (or adopt the store's copies); returns the deadline
        (the clock's time) for the next step."""
        now = self.clock()
        allowed = self.recording()
        if allowed and not self._allowed:
            # Active again (a failover back): the other board may have archived meanwhile.
            self._adopted_days.clear()
            self._rescan_at = -RESCAN_S
        self._allowed = allowed
        if allowed and not self._stale_checked:
            self._abort_stale()
        if not allowed:
            self._standby_adopt(now)
        pending = self._pending(now)
        oldest = pending[0] if pending else None
        decision = self.plan.step(now, self.wall_us(), oldest, allowed)
        self._apply(decision.actions)
        self.lag_s = decision.lag_s
        if decision.lag_s is not None:  # this board uploads: the index goes on during a backlog
            self._publish(now)
            self._expire(now)
        if decision.upload is None:
            return decision.deadline
        try:
            self._upload(decision.upload, pending)
        except Exception as e:
            if not _store_error(e):
                raise
            self.failures += 1
            self.last_error = scrub(f"{type(e).__name__}: {e}", self.creds)
            log.warning("archive: %s: %s", decision.upload.id, self.last_error)
            if isinstance(e, ValueError):  # the file no longer matches its row: not retried
                self._skipped.add(decision.upload.id)  # (nvr verify says what happened to it)
                return self.clock()
            self._apply(self.plan.failed(self.clock(), _error_class(e)))
            return self.plan.retry_at
        self._apply(self.plan.succeeded())
        return self.clock()

    def _standby_adopt(self, now: float) -> None:
        """A board that does not upload (the standby) learns what the other board archived,
        so that its own retention, which waits for the archive, may delete it: every RESCAN_S
        its segments older than an hour that the store holds (LIST per camera-day for the
        size, then HEAD for the SHA-256) are marked archived. Nothing is written."""
        if now - self._standby_at < RESCAN_S:
            return
        self._standby_at = now
        before = self.wall_us() - FLOOR_SLACK_US
        listed: dict[tuple[str, str], dict[str, int]] = {}
        seen: set[str] = set()
        from_us: int | None = None
        try:
            while not self._stop.is_set():
                rows = [s for s in self.catalog.not_archived(BATCH, from_us)
                        if s.id not in seen and s.start_us < before]  # fmt: skip
                if not rows:
                    return
                for seg in rows:
                    seen.add(seg.id)
                    day = (seg.camera, day_of(seg.start_us))
                    if day not in listed:
                        listed[day] = dict(self.store.list_keys(day_prefix(self.prefix, *day)))
                    key = segment_key(self.prefix, seg)
                    if listed[day].get(key) != seg.bytes:
                        continue
                    head = self.store.head(key)
                    if head is not None and head.sha256 == seg.sha256:
                        self.catalog.mark_archived(seg, key, self.wall_us())
                        self.adopted += 1
                from_us = rows[-1].start_us
        except Exception as e:
            if not _store_error(e):
                raise
            self._standby_at = now - RESCAN_S + BACKOFF_S  # tried again soon, not at once
            self.last_error = scrub(f"standby: {type(e).__name__}: {e}", self.creds)

    def _abort_stale(self) -> None:
        """Once per run, when this board first uploads: the parts of uploads left half done."""
        try:
            self.stale_aborted += self.store.abort_stale_uploads(STALE_UPLOAD_S)
            self._stale_checked = True
        except Exception as e:
            if not _store_error(e):
                raise
            self.last_error = scrub(f"stale uploads: {type(e).__name__}: {e}", self.creds)

    def _pending(self, now: float) -> list[Segment]:
        """The oldest segments not yet archived. Searched from a floor (the oldest pending
        one, or an hour before now when none is) so a catalog of months is not scanned each
        step; a full search every RESCAN_S finds rows the mirror added behind the floor."""
        full = now - self._rescan_at >= RESCAN_S
        if full:
            self._rescan_at = now
        rows = self.catalog.not_archived(BATCH, None if full else self._floor_us)
        pending = [s for s in rows if s.id not in self._skipped]
        self._floor_us = (pending[0].start_us if pending
                          else self.wall_us() - FLOOR_SLACK_US)  # fmt: skip
        return pending

    def _upload(self, seg: Segment, pending: list[Segment]) -> None:
        day = (seg.camera, day_of(seg.start_us))
        if day not in self._adopted_days:
            self._adopt(day, pending)
            self._adopted_days.add(day)
            if self.catalog.archived(seg.id) is not None:
                return
        t0 = self.clock()
        obj = self.store.put_segment(
            seg, self.data_dir / seg.path, self._row(seg), self._retain_until(seg), self.cap
        )
        self.catalog.mark_archived(seg, obj.key, self.wall_us())
        self._index_dirty = True
        if obj.uploaded:
            self.uploaded += 1
            self.uploaded_bytes += obj.bytes
            self._busy_s += self.clock() - t0
        else:
            self.already += 1

    def _adopt(self, day: tuple[str, str], pending: list[Segment]) -> None:
        """Mark what the store holds of this camera-day already (another board uploaded it)."""
        camera, date = day
        listed = dict(self.store.list_keys(day_prefix(self.prefix, camera, date)))
        for seg in pending:
            if (seg.camera, day_of(seg.start_us)) != day:
                continue
            key = segment_key(self.prefix, seg)
            if listed.get(key) != seg.bytes:
                continue
            head = self.store.head(key)
            if head is not None and head.sha256 == seg.sha256:
                self.catalog.mark_archived(seg, key, self.wall_us())
                self.adopted += 1

    def _row(self, seg: Segment) -> bytes:
        """The catalog row as archived: the API's form, every field, and the run it is in."""
        run = self.catalog.run_by_id(seg.run_id)
        return json.dumps({
            **seg.to_json(), "fields": asdict(seg), "board": self.board,
            "run_info": run.to_json() if run is not None else None,
        }, sort_keys=True).encode()  # fmt: skip

    def _retain_until(self, seg: Segment) -> int | None:
        if self.cfg.archive_days is None or self.cfg.object_lock == "off":
            return None
        if not self.store.object_lock():
            if self.cfg.object_lock == "on":
                raise LockMissing(
                    f"bucket {self.cfg.bucket} has no Object Lock ([archive] object_lock = on)"
                )
            return None
        until = seg.end_us + int(self.cfg.archive_days * DAY_US)
        # Footage older than archive_days is past its retention already: a store refuses a
        # lock date in the past, so it goes up unlocked (the store's lifecycle may remove it).
        return until if until > self.wall_us() + LOCK_MARGIN_US else None

    def expire(self) -> int:
        """Let go what is past archive_days in the archive (never what a lock holds, never
        what is still local): deleted from the store, every version, its row forgotten, and
        audited (`archive-expired`, a leaf of the evidence log). Returns how many."""
        if self.cfg.archive_days is None:
            return 0
        before = self.wall_us() - int(self.cfg.archive_days * DAY_US)
        gone: list[str] = []
        for arch in self.catalog.archived_expired(before, BATCH):
            self.store.delete_segment(arch.segment)
            gone.append(arch.id)
        if gone:
            self.catalog.forget_archived(gone)
            append_event(self.data_dir, self.wall_us(), "archive-expired", segments=gone,
                         archive_days=self.cfg.archive_days)  # fmt: skip
            log.info("archive: %d segments past archive_days let go", len(gone))
        return len(gone)

    def _expire(self, now: float) -> None:
        """expire() at most every RESCAN_S; a store error is said, not fatal."""
        if now - self._expired_at < RESCAN_S:
            return
        self._expired_at = now
        try:
            self.expire()
        except Exception as e:
            if not _store_error(e):
                raise
            self.last_error = scrub(f"expiry: {type(e).__name__}: {e}", self.creds)

    def _publish(self, now: float) -> None:
        """index.json and the newest cosigned checkpoint, at most every INDEX_S."""
        if now - self._index_at < INDEX_S:
            return
        self._index_at = now
        try:
            if self._index_dirty:
                self._put_index()
                self._index_dirty = False
            self._checkpoint()
        except Exception as e:
            if not _store_error(e):
                raise
            self.last_error = scrub(f"index: {type(e).__name__}: {e}", self.creds)

    def _put_index(self) -> None:
        """index.json, merged with what is there (the other board's boards and cameras);
        not written again when nothing but its time would change."""
        old = self.store.get_json(index_key(self.prefix)) or {}
        new = self._index(old)
        if {**new, "updated": None} != {**old, "updated": None}:
            self.store.put_json(index_key(self.prefix), new)

    def _index(self, old: dict) -> dict:
        cams = dict(old.get("cameras") or {})
        for cam, (first, last, n) in self.catalog.archived_summary().items():
            prev = cams.get(cam) or {}
            first = min(first, prev.get("first_us", first))
            last = max(last, prev.get("last_us", last))
            n = max(n, prev.get("segments", 0))
            cams[cam] = {"first_us": first, "last_us": last, "first": iso(first),
                         "last": iso(last), "segments": n}  # fmt: skip
        return {
            "pair": self.prefix,
            "boards": sorted({*(old.get("boards") or []), self.board}),
            "cameras": cams,
            "updated": iso(self.wall_us()),
        }

    def _checkpoint(self) -> None:
        evlog = self.evidence()
        if evlog is None:
            return
        got = evlog.cosigned()
        if got is None or got[0].size == self._checkpoint_size:
            return
        cp, note = got
        self.store.put_text(checkpoint_key(self.prefix, cp.origin, cp.size), note.render())
        self._checkpoint_size = cp.size

    def _apply(self, actions: Iterable[Action]) -> None:
        for a in actions:
            if isinstance(a, RaiseAlert):
                self.alerts.raise_(a.id, a.severity, a.text, self.wall_us())
            elif isinstance(a, ClearAlert):
                self.alerts.clear(a.id)

    # --- the thread -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=keep_running,
            args=("the archive uploader", self._follow, self._stop, self.failed),
            name="nvr-archive",
            daemon=True,
        )
        self._thread.start()

    def wake(self) -> None:
        """A segment was committed (the recorder's on_change)."""
        self._wake.set()

    def _follow(self) -> None:
        while not self._stop.is_set():
            deadline = self.step()
            wait = deadline - self.clock()
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_S)

    def status(self) -> dict:
        """For BoardStatus.archive: counts and times, the endpoint without credentials."""
        return {
            "endpoint": self.cfg.endpoint,
            "bucket": self.cfg.bucket,
            "prefix": self.prefix,
            "uploading": self.lag_s is not None,
            "lag_seconds": None if self.lag_s is None else round(self.lag_s, 1),
            "uploaded": self.uploaded,
            "bytes": self.uploaded_bytes,
            "already_there": self.already,
            "adopted": self.adopted,
            "failures": self.failures,
            "last_error": self.last_error,
            "throughput_bytes_s": round(self.uploaded_bytes / self._busy_s)
            if self._busy_s
            else None,
            "bandwidth_mbit": self.cfg.bandwidth_mbit,
        }


class LockMissing(Exception):
    """[archive] object_lock = on, and the bucket has no Object Lock."""


def _store_error(e: Exception) -> bool:
    """A failure of the store, the network or the file: retried with backoff. Anything else
    is a bug, left to keep_running."""
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(e, BotoCoreError | ClientError | OSError | ValueError | LockMissing)


def _error_class(e: Exception) -> str:
    """What the alert may say about a failure: the store's error code or the exception's
    class, never its text (it may quote the endpoint)."""
    from botocore.exceptions import ClientError

    if isinstance(e, ClientError):
        return str(e.response.get("Error", {}).get("Code") or type(e).__name__)[:64]
    return type(e).__name__
