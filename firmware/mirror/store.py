"""Putting a segment that came from the peer on this board's disk, exactly as the recorder
commits its own: written under a temporary name, checked, fsynced, renamed into place, the
directory fsynced, and only then the catalog row. A transfer cut short leaves its temporary
file, and the next attempt goes on from its length."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from firmware.catalog import Catalog
from firmware.mirror.wire import FeedSegment
from firmware.recorder.segment_file import SEGMENTS_DIR, commit, fsync_dir, relative_path

INCOMING = "mirror-incoming"


class Corrupt(Exception):
    """What arrived does not match the authenticated catalog row."""


def inside(base: Path, path: Path) -> bool:
    """Path names a place under base, whatever `..` or links it goes through."""
    return path.resolve().is_relative_to(base.resolve())


def incoming(data_dir: Path, sid: str) -> Path:
    """The temporary file of a transfer. The feed's decoder refuses ids that are not this
    board's own kind; this is the last line should one ever get here."""
    if "/" in sid or "\0" in sid:
        raise Corrupt(f"segment id {sid[:80]!r} is not a file name")
    d = data_dir / INCOMING
    d.mkdir(exist_ok=True)
    return d / f"{sid}.partial"


def fresh() -> tuple[int, hashlib._Hash]:
    return 0, hashlib.sha256()


def resume_point(path: Path) -> tuple[int, hashlib._Hash]:
    """Bytes already received and their running hash."""
    h = hashlib.sha256()
    n = 0
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
                n += len(block)
    except FileNotFoundError:
        pass
    return n, h


def receive(path: Path, offset: int, h: hashlib._Hash, chunks: Iterable[bytes]) -> int:
    """Append chunks at offset (0 = start over); returns the file's new length."""
    mode = "r+b" if offset else "wb"
    if offset and not path.exists():
        mode = "wb"
    with open(path, mode) as f:
        f.seek(offset)
        f.truncate()
        n = offset
        for chunk in chunks:
            f.write(chunk)
            h.update(chunk)
            n += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    return n


def commit_received(data_dir: Path, catalog: Catalog, row: FeedSegment, path: Path,
                    length: int, digest: str) -> bool:  # fmt: skip
    """Check, publish and catalog a complete transfer; False if this board had it already."""
    if length != row.bytes or digest != row.sha256:
        path.unlink(missing_ok=True)
        raise Corrupt(
            f"segment {row.id}: got {length} bytes with SHA-256 {digest[:12]}..., the row "
            f"says {row.bytes} bytes, {row.sha256[:12]}..."
        )
    if catalog.segment(row.id) is not None:
        path.unlink(missing_ok=True)
        return False
    rel = relative_path(row.camera, row.start_us, row.id)
    final = data_dir / rel
    if not inside(data_dir / SEGMENTS_DIR, final):
        path.unlink(missing_ok=True)
        raise Corrupt(f"segment {row.id[:80]!r}: its path {rel[:120]!r} leaves the segment tree")
    final.parent.mkdir(parents=True, exist_ok=True)
    commit(path, final)
    fsync_dir(path.parent)
    run_id = catalog.merge_run(row.run.to_run())
    try:
        catalog.add_segment(row.to_segment(run_id, rel))
    except sqlite3.IntegrityError:
        return False  # the same segment, committed by a concurrent transfer
    return True
