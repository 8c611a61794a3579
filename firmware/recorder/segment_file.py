"""Crash-safe segment files: write under a temporary name, fsync, rename, fsync the directory.

Layout under the data directory: segments/<camera>/<YYYY-MM-DD>/<segment id>.mp4. While a
segment is being written it is <name>.mp4.partial, with a small <name>.mp4.meta.json beside it
that recovery needs to salvage or re-catalog it after a crash. The .meta.json goes only after the
catalog row exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av

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


class SegmentWriter:
    """A segment's muxer and the file it writes, FFmpeg writing it without Python in between.

    The file is created here (O_EXCL: two writers must never share a file, and a stale partial
    is recovery's job) and handed to FFmpeg as `pipe:<fd>`: its pipe protocol writes a copy of
    the fd with write(2), never seeks (fMP4 then never seeks back: the same bytes a non-seekable
    Python file got) and closes its copy when the muxer closes. flush_packets=1 makes every
    packet a write(2) of its own, so a crash leaves every complete fragment on disk. The SHA-256
    is of the file as stored, read back once the muxer is done (one mapped buffer: hashlib
    hashes it without the GIL).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        import av  # here: provision (every boot) uses this module's fsync_dir without PyAV

        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            self.out: av.container.OutputContainer = av.open(
                f"pipe:{self._fd}", "w", format="mp4", options=FMP4_OPTIONS
            )
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self.bytes = 0

    def finish(self) -> str:
        """Write the trailer, fsync, and hash the file: its SHA-256 (hex). Raises OSError or
        av.error.FFmpegError; the caller then abandons it."""
        self.out.close()
        os.fsync(self._fd)
        size = os.fstat(self._fd).st_size
        h = hashlib.sha256()
        if size:
            with mmap.mmap(self._fd, size, prot=mmap.PROT_READ) as m:
                h.update(m)
        self.bytes = size
        os.close(self._fd)
        self._fd = -1
        return h.hexdigest()

    def abandon(self) -> None:
        """Give up the file as it is on disk (the caller salvages or removes it). The muxer is
        closed quietly: what it still held may reach the file, as whole boxes or a torn tail
        that salvage cuts off."""
        if self._fd < 0:
            return
        with contextlib.suppress(Exception):  # PyAV marks it done even if the trailer fails
            self.out.close()
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
