"""Salvage a segment whose writer died: keep its complete fragments, catalog them, drop the rest.

A fragmented MP4 is ftyp, moov, then (moof, mdat) pairs. Everything up to the last complete mdat
is playable; a torn tail is cut off. Used by start-up recovery and by a writer that hit a disk
error mid-segment.

PyAV is imported where a file's media is read: start-up recovery runs in the board's main
process, which loads PyAV only when there is a file to read.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

from firmware.catalog import Catalog, Segment
from firmware.recorder.segment_file import (
    PARTIAL,
    SegmentMeta,
    commit,
    drop_meta,
    read_meta,
    sha256_file,
)

log = logging.getLogger(__name__)


def complete_prefix(path: Path) -> int:
    """Bytes of the file that form whole boxes ending in a complete (moof, mdat) fragment."""
    size = path.stat().st_size
    good = 0
    have_moov = False
    last_moof = False
    with open(path, "rb") as f:
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            box_len, kind = struct.unpack(">I4s", head[:8])
            if box_len == 1:
                if len(head) < 16:
                    break
                box_len = struct.unpack(">Q", head[8:16])[0]
            elif box_len == 0:
                box_len = size - pos
            if box_len < 8 or pos + box_len > size:
                break
            pos += box_len
            if kind == b"moov":
                have_moov = True
            elif kind == b"moof":
                last_moof = True
                continue
            elif kind == b"mdat" and last_moof and have_moov:
                good = pos
            last_moof = False
    return good


def media_facts(path: Path) -> tuple[int, int, int]:
    """(video frames, first video pts us, end of last video frame us) by demuxing, no decoding."""
    import av

    frames = 0
    first = last = None
    step = 0
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        for pkt in c.demux(v):
            if pkt.size == 0 or pkt.pts is None:
                continue
            t = round(pkt.pts * v.time_base * 1_000_000)
            frames += 1
            first = t if first is None else min(first, t)
            if last is not None and t > last:
                step = t - last
            last = t if last is None else max(last, t)
    if first is None or last is None:
        return 0, 0, 0
    return frames, first, last + step


def catalog_file(
    final: Path, meta: SegmentMeta, catalog: Catalog, data_dir: Path, salvaged: bool
) -> Segment | None:
    """Insert the row for a committed file that has none (its writer died before the insert)."""
    frames, first, end = media_facts(final)
    if frames == 0:
        return None
    rel = str(final.relative_to(data_dir))
    seg = Segment(
        id=meta.id,
        camera=meta.camera,
        run_id=meta.run_id,
        path=rel,
        start_us=meta.start_us,
        end_us=meta.start_us + (end - first),
        media_start_us=meta.media_start_us,
        media_end_us=meta.media_start_us + (end - first),
        frames=frames,
        bytes=final.stat().st_size,
        sha256=sha256_file(final),
        origin=meta.origin,
        codec=meta.codec,
        salvaged=salvaged,
    )
    if not catalog.has_run(meta.run_id):
        catalog.restore_run(meta.run_id, meta.camera, meta.origin, seg.start_us, seg.end_us)
    catalog.add_segment(seg)
    return seg


def salvage_partial(data_dir: Path, final: Path, catalog: Catalog) -> str:
    """Turn final+'.partial' into a committed, cataloged segment, or remove it if nothing's left."""
    partial = Path(str(final) + PARTIAL)
    meta = read_meta(final)
    keep = complete_prefix(partial) if partial.exists() else 0
    seg = None
    if keep and meta is not None:
        import av

        with open(partial, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        try:
            commit(partial, final)
            seg = catalog_file(final, meta, catalog, data_dir, salvaged=True)
        except (av.error.FFmpegError, OSError) as e:
            log.error("salvage of %s failed: %s", final, e)
            seg = None
        if seg is None and final.exists():
            final.unlink()
    partial.unlink(missing_ok=True)
    drop_meta(final)
    if seg is None:
        return f"removed {partial.name}: no complete fragment"
    return f"salvaged {final.name}: {seg.frames} frames in {keep} bytes"
