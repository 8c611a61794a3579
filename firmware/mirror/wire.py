"""What the mirror feed carries: catalog rows as JSON, with the run named by its pair-wide uid
instead of this board's row id, and the path left to the receiver's own layout."""

from __future__ import annotations

from dataclasses import asdict

from firmware.catalog import Run, Segment

FEED_PATH = "/mirror/v1/feed"
SEGMENT_PATH = "/mirror/v1/segments/"
FEED_LIMIT = 500


def segment_to_wire(seg: Segment, run: Run) -> dict:
    d = asdict(seg)
    del d["run_id"], d["path"]
    d["run"] = run_to_wire(run)
    return d


def run_to_wire(run: Run) -> dict:
    return {
        "uid": run.uid,
        "camera": run.camera,
        "origin": run.origin,
        "start_us": run.start_us,
        "end_us": run.end_us,
        "end_reason": run.end_reason,
        "continues": run.continues,
    }


def run_from_wire(d: dict) -> Run:
    return Run(
        id=0,
        camera=str(d["camera"]),
        origin=str(d["origin"]),
        start_us=int(d["start_us"]),
        end_us=int(d["end_us"]),
        end_reason=d["end_reason"],
        uid=str(d["uid"]),
        continues=d["continues"],
    )


def segment_from_wire(d: dict, run_id: int, path: str) -> Segment:
    return Segment(
        id=str(d["id"]),
        camera=str(d["camera"]),
        run_id=run_id,
        path=path,
        start_us=int(d["start_us"]),
        end_us=int(d["end_us"]),
        media_start_us=int(d["media_start_us"]),
        media_end_us=int(d["media_end_us"]),
        frames=int(d["frames"]),
        bytes=int(d["bytes"]),
        sha256=str(d["sha256"]),
        origin=str(d["origin"]),
        codec=str(d["codec"]),
        salvaged=bool(d["salvaged"]),
        last_frame=str(d.get("last_frame", "")),
    )
