"""Start-up recovery: make the catalog and the files agree again after a crash or power cut.

Runs before any recorder starts. Finishes interrupted deletions, salvages partial segments
(complete fragments kept), catalogs committed files whose row was never written, drops rows whose
file is gone, and closes runs the crash left open. The result is logged and returned.

A file without a row and without its .meta.json (the catalog was corrupt and set aside, so the
new one is empty) is cataloged from its name, which carries the camera, the start and the
origin, and its own media; consecutive segments are joined into runs. So a rebuilt catalog
is this same recovery over an empty catalog.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from firmware.audit import append_event
from firmware.catalog import Catalog, Segment, segment_id
from firmware.recorder.retention import unlink_files
from firmware.recorder.salvage import catalog_file, salvage_partial
from firmware.recorder.segment_file import (
    META,
    PARTIAL,
    SEGMENTS_DIR,
    SegmentMeta,
    drop_meta,
    read_meta,
)
from firmware.timefmt import now_us as wall_now_us

log = logging.getLogger(__name__)

CRASH = "recorder-crash"
REBUILT = "catalog-rebuilt"
"""End reason of a run joined from segment files after the catalog was rebuilt: why it
ended is not known any more."""
LOST_AND_FOUND = "lost+found"
REJOIN_US = 250_000
"""A file starting this close to a run's end continues it (ends are estimated from the media)."""


@dataclass
class RecoveryReport:
    garbage_finished: int = 0
    salvaged: list[str] = field(default_factory=list)
    removed_partials: list[str] = field(default_factory=list)
    recataloged: list[str] = field(default_factory=list)
    from_names: list[str] = field(default_factory=list)
    """Of those, the ones cataloged from their file names (no .meta.json): a rebuild."""
    quarantined: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    runs_closed: int = 0

    def summary(self) -> str:
        return (
            f"recovery: {len(self.salvaged)} partial segments salvaged, "
            f"{len(self.removed_partials)} removed (no complete fragment), "
            f"{len(self.recataloged)} files re-cataloged ({len(self.from_names)} from their "
            f"names), {len(self.quarantined)} unknown files moved to {LOST_AND_FOUND}/, "
            f"{len(self.missing_files)} files lost (rows dropped, to be fetched from the peer), "
            f"{self.runs_closed} runs closed, {self.garbage_finished} deletions finished"
        )


def recover(data_dir: Path, catalog: Catalog, origin: str) -> RecoveryReport:
    rep = RecoveryReport()
    garbage = catalog.garbage()
    unlink_files(data_dir, garbage)
    catalog.forget_garbage(garbage)
    rep.garbage_finished = len(garbage)

    root = data_dir / SEGMENTS_DIR
    if root.exists():
        for partial in sorted(root.rglob("*.mp4" + PARTIAL)):
            final = Path(str(partial)[: -len(PARTIAL)])
            result = salvage_partial(data_dir, final, catalog)
            (rep.salvaged if result.startswith("salvaged") else rep.removed_partials).append(
                str(final.relative_to(data_dir))
            )
            log.info("recovery: %s", result)
        known = catalog.paths()
        rejoined = _Rejoined(catalog, origin)
        for f in sorted(root.rglob("*.mp4")):
            rel = str(f.relative_to(data_dir))
            if rel in known:
                continue
            meta = read_meta(f)
            if meta:
                seg = catalog_file(f, meta, catalog, data_dir, salvaged=False)
            else:
                seg = rejoined.add(f, rel, data_dir)
                if seg is not None:
                    rep.from_names.append(rel)
            if seg is not None:
                rep.recataloged.append(rel)
                drop_meta(f)
                log.info("recovery: cataloged committed file %s", rel)
            else:
                # Never delete footage we cannot account for: keep it aside for a person.
                dest = data_dir / LOST_AND_FOUND / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(f, dest)
                drop_meta(f)
                rep.quarantined.append(rel)
                log.warning("recovery: %s has no catalog entry; moved to %s", rel, dest)
        rejoined.close()
        for meta_file in root.rglob("*.mp4" + META):
            final = Path(str(meta_file)[: -len(META)])
            if not final.exists() and not Path(str(final) + PARTIAL).exists():
                meta_file.unlink()

    gone = [seg for seg in catalog.segments() if not (data_dir / seg.path).exists()]
    rep.missing_files = [seg.path for seg in gone]
    if gone:
        # Lost behind the firmware's back, not deleted: no `deleted` entry, so the mirror
        # fetches the peer's copy back.
        catalog.drop_lost_rows([seg.id for seg in gone])
        append_event(data_dir, wall_now_us(), "segments-lost", segments=[seg.id for seg in gone],
                     found="at start: the files were gone")  # fmt: skip
        log.error("recovery: %d segment files are gone (rows dropped): %s", len(gone),
                  rep.missing_files[:5])  # fmt: skip

    rep.runs_closed = catalog.close_open_runs(CRASH, origin)
    log.info(rep.summary())
    return rep


def parse_name(rel: str) -> tuple[str, int, str] | None:
    """(camera, start µs, origin) from segments/<camera>/<day>/<camera>.<start ms>.<origin>.mp4,
    or None for a name the recorder does not write."""
    parts = rel.split("/")
    if len(parts) != 4 or parts[0] != SEGMENTS_DIR or not parts[3].endswith(".mp4"):
        return None
    camera, sid = parts[1], parts[3][: -len(".mp4")]
    ms, sep, origin = sid.removeprefix(camera + ".").partition(".")
    if not sid.startswith(camera + ".") or not sep or not ms.isdigit() or not origin:
        return None
    start_us = int(ms) * 1000
    return (camera, start_us, origin) if segment_id(camera, start_us, origin) == sid else None


@dataclass
class _Rejoined:
    """Catalogs files by their names, joining consecutive ones into runs (oldest first)."""

    catalog: Catalog
    origin: str
    made: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Runs made here: id -> (camera, origin)."""

    def add(self, f: Path, rel: str, data_dir: Path) -> Segment | None:
        named = parse_name(rel)
        if named is None or self.catalog.deleted([Path(rel).stem]):
            return None
        camera, start_us, origin = named
        import av  # here: recovery runs in the board's main process; only a rebuild needs it

        try:
            with av.open(str(f)) as c:
                codec = c.streams.video[0].codec_context.name
        except (av.error.FFmpegError, OSError, IndexError):
            return None
        run_id = self.catalog.run_covering(camera, origin, start_us, REJOIN_US)
        if run_id is None:
            run_id = self.catalog.new_run(camera, origin, start_us, start_us)
            self.made[run_id] = (camera, origin)
        meta = SegmentMeta(Path(rel).stem, camera, run_id, origin, codec, start_us, start_us)
        try:
            return catalog_file(f, meta, self.catalog, data_dir, salvaged=False)
        except (av.error.FFmpegError, OSError):
            return None

    def close(self) -> None:
        """Runs made here end as rebuilt; the newest of the peer's stays open (the peer's to
        close: the mirror merges its view of that run)."""
        newest: dict[tuple[str, str], int] = {}
        for run_id, key in self.made.items():
            newest[key] = max(newest.get(key, run_id), run_id)
        for run_id, (camera, origin) in self.made.items():
            if origin != self.origin and newest[(camera, origin)] == run_id:
                continue
            self.catalog.end_run(run_id, REBUILT)


def salvage_camera(data_dir: Path, catalog: Catalog, camera: str) -> list[str]:
    """After one worker died: salvage its cameras' partial and uncataloged files, nothing else
    (other workers are still writing theirs)."""
    done = []
    root = data_dir / SEGMENTS_DIR / camera
    if not root.exists():
        return done
    for partial in sorted(root.rglob("*.mp4" + PARTIAL)):
        final = Path(str(partial)[: -len(PARTIAL)])
        done.append(salvage_partial(data_dir, final, catalog))
    known = catalog.paths()
    for meta_file in sorted(root.rglob("*.mp4" + META)):
        final = Path(str(meta_file)[: -len(META)])
        meta = read_meta(final)
        if final.exists() and meta and str(final.relative_to(data_dir)) not in known:
            catalog_file(final, meta, catalog, data_dir, salvaged=False)
            done.append(f"cataloged {final.name}")
        drop_meta(final)
    for line in done:
        log.info("recovery (%s): %s", camera, line)
    return done
