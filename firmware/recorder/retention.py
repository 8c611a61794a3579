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
    _logged: LockHold = field(default=NO_HOLD, repr=False)

    def run(self, now_us: int, batch: int = 256) -> tuple[int, int]:
        """One pass; returns (segments deleted, bytes freed)."""
        total_n = total_b = 0
        max_age = round(self.cfg.retention_days * 86400e6)
        with open(self.data_dir / ".retention.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # workers share the disk: one deleter at a time
            self._hold(now_us - max_age)
            while True:
                free, total = disk_usage(self.data_dir)
                marks = watermarks(total, self.cfg)
                oldest = self.catalog.deletable_segments(limit=batch)
                keep = frozenset(s.id for s in self._newest())
                if not self._footage_can_make_room(free, marks, keep):
                    marks = Watermarks(0, 0)  # age only
                by_age, by_space = plan(oldest, free, marks, now_us, max_age, keep)
                if not by_age and not by_space:
                    break
                for why, segs in ((AGE, by_age), (FREE_SPACE, by_space)):
                    if not segs:
                        continue
                    paths = self.catalog.delete_segment_rows([s.id for s in segs])
                    unlink_files(self.data_dir, paths)
                    self.catalog.forget_garbage(paths)
                    nbytes = sum(s.bytes for s in segs)
                    total_n += len(segs)
                    total_b += nbytes
                    log.info(
                        "retention (%s): deleted %d segments, %d bytes; %s",
                        why, len(segs), nbytes, self.held.text(),
                    )  # fmt: skip
                    self.on_delete(why, len(segs), nbytes)
                    # A leaf of the evidence log: verify tells these from footage gone unsaid.
                    append_event(self.data_dir, now_us, "retention-deleted", why=why,
                                 segments=[s.id for s in segs])  # fmt: skip
                if len(oldest) < batch and not by_age and len(by_space) == len(oldest):
                    break  # nothing older left to delete
        return total_n, total_b

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
