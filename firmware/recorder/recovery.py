"""Start-up recovery: make the catalog and the files agree again after a crash or power cut.

Runs before any recorder starts. Finishes interrupted deletions, salvages partial segments
(complete fragments kept), catalogs committed files whose row was never written, drops rows whose
file is gone, and closes runs the crash left open. The result is logged and returned.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from firmware.catalog import Catalog
from firmware.recorder.retention import unlink_files
from firmware.recorder.salvage import catalog_file, salvage_partial
from firmware.recorder.segment_file import META, PARTIAL, SEGMENTS_DIR, drop_meta, read_meta

log = logging.getLogger(__name__)

CRASH = "recorder-crash"
LOST_AND_FOUND = "lost+found"


@dataclass
class RecoveryReport:
    garbage_finished: int = 0
    salvaged: list[str] = field(default_factory=list)
    removed_partials: list[str] = field(default_factory=list)
    recataloged: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    runs_closed: int = 0

    def summary(self) -> str:
        return (
            f"recovery: {len(self.salvaged)} partial segments salvaged, "
            f"{len(self.removed_partials)} removed (no complete fragment), "
            f"{len(self.recataloged)} files re-cataloged, {len(self.quarantined)} unknown files "
            f"moved to {LOST_AND_FOUND}/, {len(self.missing_files)} rows without file dropped, "
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
        for f in sorted(root.rglob("*.mp4")):
            rel = str(f.relative_to(data_dir))
            if rel in known:
                continue
            meta = read_meta(f)
            seg = catalog_file(f, meta, catalog, data_dir, salvaged=False) if meta else None
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
        for meta_file in root.rglob("*.mp4" + META):
            final = Path(str(meta_file)[: -len(META)])
            if not final.exists() and not Path(str(final) + PARTIAL).exists():
                meta_file.unlink()

    gone = [seg for seg in catalog.segments() if not (data_dir / seg.path).exists()]
    rep.missing_files = [seg.path for seg in gone]
    if gone:
        ids = [seg.id for seg in gone]
        catalog.forget_garbage(catalog.delete_segment_rows(ids))
        log.error("recovery: %d catalog rows had no file: %s", len(ids), rep.missing_files[:5])

    rep.runs_closed = catalog.close_open_runs(CRASH, origin)
    log.info(rep.summary())
    return rep


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
