"""Crash-safe segment files: write under a temporary name, fsync, rename, fsync the directory.

Layout under the data directory: segments/<camera>/<YYYY-MM-DD>/<segment id>.mp4. While a
segment is being written it is <name>.mp4.partial, with a small <name>.mp4.meta.json beside it
that recovery needs to salvage or re-catalog it after a crash. The .meta.json goes only after the
catalog row exists.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

SEGMENTS_DIR = "segments"
PARTIAL = ".partial"
META = ".meta.json"

# Fragment at every keyframe with a self-contained moov: a crash leaves a playable prefix.
FMP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


@dataclass(frozen=True)
class SegmentMeta:
    """What recovery needs to catalog a segment whose writer died."""

    id: str
    camera: str
    run_id: int
    origin: str
    codec: str
    start_us: int
    media_start_us: int


def relative_path(camera: str, start_us: int, sid: str) -> str:
    day = datetime.fromtimestamp(start_us / 1e6, tz=UTC).strftime("%Y-%m-%d")
    return f"{SEGMENTS_DIR}/{camera}/{day}/{sid}.mp4"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class HashingFile:
    """The muxer's output: hashes as it writes, and is not seekable so fMP4 never seeks back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # O_EXCL: two writers must never share a file, and a stale partial is recovery's job.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._hash = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self._hash.update(view[:n])
            view = view[n:]
            self.bytes += n
        return len(data)

    def flush(self) -> None:
        pass  # every write is already a write(2); durability comes from commit()'s fsync

    def fsync_close(self) -> str:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        return self._hash.hexdigest()

    def abandon(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_meta(final: Path, meta: SegmentMeta) -> None:
    Path(str(final) + META).write_text(json.dumps(asdict(meta)))


def read_meta(final: Path) -> SegmentMeta | None:
    try:
        return SegmentMeta(**json.loads(Path(str(final) + META).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def commit(partial: Path, final: Path) -> None:
    """Atomically publish a fully written and fsynced partial file under its final name."""
    os.rename(partial, final)
    fsync_dir(final.parent)


def drop_meta(final: Path) -> None:
    Path(str(final) + META).unlink(missing_ok=True)
