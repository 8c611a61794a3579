"""What the boards hold of each camera, read back through their own API (the same way on
every kind of target): segment spans for the timeline, frame numbers for the RPO."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import quote

from firmware.timefmt import iso, parse_iso
from hil.drills.model import Span
from hil.framecheck import FrameRecord, frame_records
from hil.lab.protocols import BoardProtocol


def seconds(text: str) -> float:
    return parse_iso(text) / 1e6


def recordings(board: BoardProtocol, camera: str, start: float, end: float) -> list[dict]:
    """The board's segments of camera overlapping [start, end] (the recordings API)."""
    q = f"start={quote(iso(int(start * 1e6)) or '')}&end={quote(iso(int(end * 1e6)) or '')}"
    body = board.api(f"/api/v1/cameras/{quote(camera)}/recordings?{q}", timeout=10.0)
    return json.loads(body)["segments"]


def spans(name: str, segments: list[dict]) -> list[Span]:
    return [
        Span(name, s["camera"], seconds(s["start"]), seconds(s["end"]), s["origin"])
        for s in segments
    ]


def newest_frame(board: BoardProtocol, segment: dict) -> int:
    """The highest frame number in one of the board's segments (-1: none stamped)."""
    with tempfile.TemporaryDirectory(prefix="drill-footage-") as tmp:
        path = Path(tmp) / "segment.mp4"
        path.write_bytes(board.api(f"/api/v1/segments/{quote(segment['id'])}", timeout=30))
        return max((r.frame for r in frame_records(path)), default=-1)


def union_frames(
    boards: dict[str, BoardProtocol], held: dict[str, list[dict]]
) -> list[FrameRecord]:
    """The stamped frames of every segment any board holds, each segment id once (a mirrored copy
    is the same footage, verified by SHA-256), in time order; `held` maps board -> segments."""
    where: dict[str, tuple[str, dict]] = {}
    for board, segs in held.items():
        for s in segs:
            where.setdefault(s["id"], (board, s))
    out: list[FrameRecord] = []
    with tempfile.TemporaryDirectory(prefix="drill-footage-") as tmp:
        for board, s in sorted(where.values(), key=lambda x: (x[1]["start"], x[1]["id"])):
            path = Path(tmp) / "segment.mp4"
            path.write_bytes(boards[board].api(f"/api/v1/segments/{quote(s['id'])}", timeout=30))
            out += frame_records(path)
    return out
