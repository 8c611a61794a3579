"""The pair's merged timeline of a camera, read back by frame numbers (hil.framecheck).

Both boards' catalogs are joined by segment id (the same id is the same footage, verified by
SHA-256 when mirrored) and ordered by start; a frame that two segments hold counts twice.
This is how the drills measure RPO: frames the camera sent that no board kept, plus frames
kept twice.
"""

from __future__ import annotations

from pathlib import Path

from firmware.catalog import Catalog, Segment
from hil.framecheck import ContiguityReport, check_contiguous, frame_numbers


def segments(data_dir: Path, camera: str) -> list[Segment]:
    cat = Catalog(data_dir)
    try:
        return cat.segments(camera=camera)
    finally:
        cat.close()


def frames(data_dir: Path, segs: list[Segment]) -> list[int]:
    out: list[int] = []
    for s in sorted(segs, key=lambda s: (s.start_us, s.id)):
        out += frame_numbers(data_dir / s.path)
    return out


def merged(data_dirs: list[Path], camera: str) -> list[int]:
    """Frame numbers of the union of the boards' segments, each id once, in time order."""
    where: dict[str, tuple[Path, Segment]] = {}
    for d in data_dirs:
        for s in segments(d, camera):
            where.setdefault(s.id, (d, s))
    out: list[int] = []
    for d, s in sorted(where.values(), key=lambda x: (x[1].start_us, x[1].id)):
        out += frame_numbers(d / s.path)
    return out


def check(numbers: list[int], first: int, last: int) -> ContiguityReport:
    """Every frame first..last exactly once (frames outside are ignored)."""
    return check_contiguous([n for n in numbers if first <= n <= last], first, last)
