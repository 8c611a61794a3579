"""Retention: delete the oldest footage by age and whenever free space falls below the watermark.

`plan` is pure (segments, free space and now in; what to delete out). `Retention` carries it out:
catalog rows first (into the garbage list), then the files, so a crash in between is finished by
recovery. A disk that fills up frees space and keeps recording; it never stops silently.

Space deletion takes the oldest footage first and never a camera's newest segment (what was
just written), so what is deleted is always the start of a camera's timeline, never a hole in
it. When the footage cannot make room (the disk is full of something else: a runaway log,
foreign files), nothing is deleted for space and `disk-full-not-footage` says why: deleting
the record would not free the disk, only lose evidence.

Footage an active evidence lock holds (firmware/evidence/locks.py) is never deleted, for age
or for space: the catalog hands retention only the segments no lock holds. What the locks
hold is logged and kept in `held` for status and the disk alerts, which say that releasing
the locks frees that space.

With the archive tier ([archive], `Tiering`), a segment's local file goes for age only once the
archive holds it (the uploader's `archived` mark, set after checking size and SHA-256) and not
before `local_days`; its `segments` row is deleted and the `archived` row keeps the segment's
fields, so the API lists it still and serves it from the store. For space, archived segments go
first (oldest first, whatever their age); only when they cannot make room does unarchived
footage go too, and `archive-deleted-unarchived` (critical) says how much went before the
archive had it. Every deletion's audit event says `archived` true or false.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from firmware.alert_ids import AlertId, Severity
from firmware.audit import append_event
from firmware.catalog import Catalog, Segment
from firmware.config import RecorderConfig
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.evidence.locks import NO_HOLD, LockHold

log = logging.getLogger(__name__)

FREE_SPACE = "free-space"
AGE = "age"


@dataclass(frozen=True)
class Watermarks:
    low: int
    """Below this many free bytes, delete."""
    target: int
    """Delete until this many bytes are free, so deletion runs in batches, not per segment."""


def watermarks(total_bytes: int, cfg: RecorderConfig) -> Watermarks:
    low = max(round(total_bytes * cfg.min_free_percent / 100), round(cfg.min_free_mb * 1e6))
    low = min(low, total_bytes // 2)
    return Watermarks(low, min(total_bytes, low + max(low // 4, 1)))


def plan(
    oldest_first: Iterable[Segment],
    free_bytes: int,
    marks: Watermarks,
    now_us: int,
    max_age_us: int,
    keep: frozenset[str] = frozenset(),
) -> tuple[list[Segment], list[Segment]]:
    """(deleted for age, deleted for space), oldest first; ids in `keep` never for space."""
    by_age: list[Segment] = []
    by_space: list[Segment] = []
    need_space: bool | None = None  # decided once age has freed what it frees
    for seg in oldest_first:
        if need_space is None and seg.end_us < now_us - max_age_us:
            by_age.append(seg)
            free_bytes += seg.bytes
            continue
        if need_space is None:
            need_space = free_bytes < marks.low
        if need_space and free_bytes < marks.target:
            if seg.id in keep:
                continue
            by_space.append(seg)
            free_bytes += seg.bytes
        else:
            break
    return by_age, by_space


def disk_usage(path: Path) -> tuple[int, int]:
    """(free bytes for us, total bytes) of the filesystem holding path."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def unlink_files(data_dir: Path, rel_paths: list[str]) -> None:
    dirs = set()
    for rel in rel_paths:
        p = data_dir / rel
        p.unlink(missing_ok=True)
        dirs.add(p.parent)
    for d in dirs:
        try:
            if d.exists() and not any(d.iterdir()):
                d.rmdir()
        except OSError:
            pass


UNARCHIVED_ALERT_HOLD_US = 86_400 * 1_000_000
"""`archive-deleted-unarchived` stays raised this long after the last such deletion."""


@dataclass(frozen=True)
class Tiering:
    """What retention knows of the archive tier: it is on, and how long footage stays local.
    Plain data (the workers get it from the supervisor): no store client here."""

    local_days: float


def tiering_of(archive_local_days: float | None, retention_days: float) -> Tiering:
    """[archive] local_days, default [recorder] retention_days."""
    return Tiering(retention_days if archive_local_days is None else archive_local_days)


@dataclass
class Retention:
    data_dir: Path
    cfg: RecorderConfig
    catalog: Catalog
    on_delete: Callable[[str, int, int], None] = lambda why, n, nbytes: None
    """Told (why, segments, bytes) after each deletion, for alerts and metrics."""
    report: Callable[[RaiseAlert | ClearAlert], None] = lambda alert: None
    """Raises or clears `disk-full-not-footage`."""
    held: LockHold = NO_HOLD
    """What active evidence locks held at the last pass (kept from deletion)."""
    tiering: Tiering | None = None
    """The archive tier ([archive]); None: no archive, retention as without one."""
    unarchived_deleted: tuple[int, int] = (0, 0)
    """(segments, bytes) deleted for space before the archive had them, since the start."""
    _unarchived_at_us: int | None = field(default=None, repr=False)
    _logged: LockHold = field(default=NO_HOLD, repr=False)

    def run(self, now_us: int, batch: int = 256) -> tuple[int, int]:
        """One pass; returns (segments deleted, bytes freed)."""
        total_n = total_b = 0
        days = self.cfg.retention_days if self.tiering is None else self.tiering.local_days
        max_age = round(days * 86400e6)
        with open(self.data_dir / ".retention.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # workers share the disk: one deleter at a time
            self._hold(now_us - max_age)
            while True:
                free, total = disk_usage(self.data_dir)
                marks = watermarks(total, self.cfg)
                keep = frozenset(s.id for s in self._newest())
                if not self._footage_can_make_room(free, marks, keep):
                    marks = Watermarks(0, 0)  # age only
                if self.tiering is None:
                    oldest = self.catalog.deletable_segments(limit=batch)
                    by_age, by_space = plan(oldest, free, marks, now_us, max_age, keep)
                    batches = [(AGE, by_age, None), (FREE_SPACE, by_space, None)]
                    done = len(oldest) < batch and not by_age and len(by_space) == len(oldest)
                else:
                    batches, done = self._tiered(free, marks, now_us, max_age, keep, batch)
                if not any(segs for _, segs, _ in batches):
                    break
                for why, segs, archived in batches:
                    if segs:
                        total_n += len(segs)
                        total_b += self._delete(why, segs, archived, now_us)
                if done:
                    break  # nothing older left to delete
            if self.tiering is not None:
                self._unarchived_alert(now_us)
        return total_n, total_b

    def _tiered(
        self, free: int, marks: Watermarks, now_us: int, max_age: int,
        keep: frozenset[str], batch: int,
    ) -> tuple[list[tuple[str, list[Segment], bool | None]], bool]:  # fmt: skip
        """With the archive tier: archived segments for age and then for space; unarchived
        ones only for space, once the archived ones cannot make room. (batches, done)."""
        archived = self.catalog.deletable_segments(limit=batch, archived=True)
        by_age, by_space = plan(archived, free, marks, now_us, max_age, keep)
        freed = sum(s.bytes for s in by_age + by_space)
        out: list[tuple[str, list[Segment], bool | None]] = [
            (AGE, by_age, True), (FREE_SPACE, by_space, True),
        ]  # fmt: skip
        more_archived = len(archived) == batch
        if more_archived or free + freed >= marks.low:
            return out, False
        # The archive is behind and the disk is about to run out: unarchived footage goes too.
        pending = self.catalog.deletable_segments(limit=batch, archived=False)
        _, unarchived = plan(pending, free + freed, marks, now_us, 1 << 62, keep)
        out.append((FREE_SPACE, unarchived, False))
        return out, False  # the next pass finds nothing more to delete, or the disk above low

    def _delete(self, why: str, segs: list[Segment], archived: bool | None, now_us: int) -> int:
        """Audited first (a crash after it leaves rows a later pass deletes again; one before
        it, rows gone unsaid), then rows (into the garbage list), then the files."""
        # A leaf of the evidence log: verify tells these from footage gone unsaid.
        extra = {} if archived is None else {"archived": archived}
        append_event(self.data_dir, now_us, "retention-deleted", why=why,
                     segments=[s.id for s in segs], **extra)  # fmt: skip
        paths = self.catalog.delete_segment_rows([s.id for s in segs])
        unlink_files(self.data_dir, paths)
        self.catalog.forget_garbage(paths)
        nbytes = sum(s.bytes for s in segs)
        tier = "" if archived is None else (" (archived)" if archived else " (NOT archived)")
        log.info(
            "retention (%s): deleted %d segments, %d bytes%s; %s",
            why, len(segs), nbytes, tier, self.held.text(),
        )  # fmt: skip
        self.on_delete(why, len(segs), nbytes)
        if archived is False:
            n, b = self.unarchived_deleted
            self.unarchived_deleted = (n + len(segs), b + nbytes)
            self._unarchived_at_us = now_us
            self._unarchived_alert(now_us)
        return nbytes

    def _unarchived_alert(self, now_us: int) -> None:
        """Raised when unarchived footage went; cleared a day after the last time."""
        at = self._unarchived_at_us
        if at is None:
            return
        if now_us - at >= UNARCHIVED_ALERT_HOLD_US:
            self._unarchived_at_us = None
            self.report(ClearAlert(AlertId.ARCHIVE_DELETED_UNARCHIVED))
            return
        n, b = self.unarchived_deleted
        self.report(RaiseAlert(
            AlertId.ARCHIVE_DELETED_UNARCHIVED, Severity.CRITICAL,
            f"the data disk ran below its free-space watermark with the archive behind: "
            f"{n} segments ({b / 1e6:.1f} MB) were deleted before the archive had them "
            "(they are lost); the archive is not keeping up or is unreachable",
        ))  # fmt: skip

    def _hold(self, expired_before_us: int) -> None:
        """What the locks hold now, logged when it changes."""
        self.held = self.catalog.lock_hold(expired_before_us)
        if self.held != self._logged:
            self._logged = self.held
            log.info("retention: %s; not deleted while locked", self.held.text())

    def _newest(self) -> list[Segment]:
        return [s for cam in self.catalog.totals() for s in self.catalog.latest_segments(cam)]

    def _footage_can_make_room(self, free: int, marks: Watermarks, keep: frozenset[str]) -> bool:
        """False (and the alert raised) when deleting every segment retention may delete would
        still leave the disk below its watermark: the disk is full of something else."""
        if free >= marks.low:
            self.report(ClearAlert(AlertId.DISK_FULL_NOT_FOOTAGE))
            return True
        footage = sum(b for _, b in self.catalog.totals().values())
        newest = [s for s in self._newest() if s.id in keep]
        locked = self.catalog.held_ids([s.id for s in newest])  # counted in held already
        kept = sum(s.bytes for s in newest if s.id not in locked) + self.held.bytes
        if free + footage - kept >= marks.low:
            self.report(ClearAlert(AlertId.DISK_FULL_NOT_FOOTAGE))
            return True
        if self.held.bytes:
            text = (
                f"data disk full: {free / 1e6:.1f} MB free, {footage / 1e6:.1f} MB of footage "
                "of which retention may delete too little to make room, so none is deleted "
                "for space; recording stops when the disk is full" + self.held.freeing_note()
            )
        else:
            text = (
                f"data disk full of data that is not footage: {free / 1e6:.1f} MB free, "
                f"{footage / 1e6:.1f} MB of footage; deleting footage cannot make room, so none "
                "is deleted for space; recording stops when the disk is full (free the disk)"
            )
        self.report(RaiseAlert(AlertId.DISK_FULL_NOT_FOOTAGE, Severity.CRITICAL, text))
        return False

    def below_watermark(self) -> bool:
        free, total = disk_usage(self.data_dir)
        return free < watermarks(total, self.cfg).low
