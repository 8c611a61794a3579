"""The catalog: which segments exist on this board, which runs they belong to, where the gaps are.

SQLite in WAL mode, shared by the recorder's worker processes and the API. A row is only written
after its file is durably in place (see recorder.segment_file), so a row never points at a file
that a crash could lose; the reverse (a file without a row) is repaired at start by recovery.
Deletions go through a garbage table so a crash between unlink and row delete is finished at start.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from firmware.timefmt import iso

CATALOG_FILE = "catalog.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    origin TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS runs_camera_start ON runs(camera, start_us);
CREATE TABLE IF NOT EXISTS segments (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    path TEXT NOT NULL UNIQUE,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    media_start_us INTEGER NOT NULL,
    media_end_us INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    origin TEXT NOT NULL,
    codec TEXT NOT NULL,
    salvaged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS segments_camera_start ON segments(camera, start_us);
CREATE INDEX IF NOT EXISTS segments_start ON segments(start_us);
CREATE TABLE IF NOT EXISTS garbage (
    path TEXT PRIMARY KEY
);
"""


@dataclass(frozen=True)
class Segment:
    id: str
    camera: str
    run_id: int
    path: str
    start_us: int
    end_us: int
    media_start_us: int
    media_end_us: int
    frames: int
    bytes: int
    sha256: str
    origin: str
    codec: str
    salvaged: bool = False

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "camera": self.camera,
            "path": self.path,
            "start": iso(self.start_us),
            "end": iso(self.end_us),
            "frames": self.frames,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "origin": self.origin,
            "codec": self.codec,
            "run": self.run_id,
            "salvaged": self.salvaged,
        }


@dataclass(frozen=True)
class Run:
    id: int
    camera: str
    origin: str
    start_us: int
    end_us: int
    end_reason: str | None


@dataclass(frozen=True)
class Gap:
    camera: str
    start_us: int
    end_us: int | None
    """None: the camera has not recorded since start_us (an open gap)."""
    reason: str

    def to_json(self) -> dict:
        return {
            "camera": self.camera,
            "start": iso(self.start_us),
            "end": iso(self.end_us),
            "reason": self.reason,
        }


def segment_id(camera: str, start_us: int, origin: str) -> str:
    """Stable across boards, so the pair can tell one recording from another without a lookup."""
    return f"{camera}.{start_us // 1000}.{origin}"


class Catalog:
    """One connection per thread; cheap to create, safe across processes."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / CATALOG_FILE
        self._local = threading.local()
        self._db().executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- writing -------------------------------------------------------------------------

    def new_run(self, camera: str, origin: str, start_us: int, end_us: int) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs(camera, origin, start_us, end_us) VALUES (?,?,?,?)",
                (camera, origin, start_us, end_us),
            )
            return int(cur.lastrowid)

    def add_segment(self, seg: Segment) -> None:
        """Insert the segment and stretch its run to cover it, in one transaction."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO segments(id, camera, run_id, path, start_us, end_us, media_start_us,"
                " media_end_us, frames, bytes, sha256, origin, codec, salvaged)"
                " VALUES (:id,:camera,:run_id,:path,:start_us,:end_us,:media_start_us,"
                ":media_end_us,:frames,:bytes,:sha256,:origin,:codec,:salvaged)",
                asdict(seg),
            )
            db.execute(
                "UPDATE runs SET end_us = MAX(end_us, ?) WHERE id = ?", (seg.end_us, seg.run_id)
            )

    def has_run(self, run_id: int) -> bool:
        return (
            self._db().execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None
        )

    def restore_run(
        self, run_id: int, camera: str, origin: str, start_us: int, end_us: int
    ) -> None:
        """Recreate a run row that recovery needs (the run's only segment was never cataloged)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs(id, camera, origin, start_us, end_us)"
                " VALUES (?,?,?,?,?)",
                (run_id, camera, origin, start_us, end_us),
            )

    def end_run(self, run_id: int, reason: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET end_reason = ? WHERE id = ? AND end_reason IS NULL",
                (reason, run_id),
            )

    def close_open_runs(self, reason: str, camera: str | None = None) -> int:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE runs SET end_reason = ? WHERE end_reason IS NULL"
                + (" AND camera = ?" if camera else ""),
                (reason, camera) if camera else (reason,),
            )
            return cur.rowcount

    def delete_segment_rows(self, ids: list[str]) -> list[str]:
        """Move segments to the garbage list; returns their paths for the caller to unlink."""
        paths: list[str] = []
        with self._tx() as db:
            for sid in ids:
                row = db.execute("SELECT path FROM segments WHERE id = ?", (sid,)).fetchone()
                if row is None:
                    continue  # another worker got there first
                db.execute("INSERT OR IGNORE INTO garbage(path) VALUES (?)", (row["path"],))
                db.execute("DELETE FROM segments WHERE id = ?", (sid,))
                paths.append(row["path"])
            db.execute(
                "DELETE FROM runs WHERE end_reason IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM segments s WHERE s.run_id = runs.id)"
                " AND id NOT IN (SELECT MAX(id) FROM runs GROUP BY camera)"
            )
        return paths

    def forget_garbage(self, paths: list[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM garbage WHERE path = ?", [(p,) for p in paths])

    def garbage(self) -> list[str]:
        return [r["path"] for r in self._db().execute("SELECT path FROM garbage")]

    # --- reading -------------------------------------------------------------------------

    @staticmethod
    def _segment(row: sqlite3.Row) -> Segment:
        d = dict(row)
        d["salvaged"] = bool(d["salvaged"])
        return Segment(**d)

    def segment(self, sid: str) -> Segment | None:
        row = self._db().execute("SELECT * FROM segments WHERE id = ?", (sid,)).fetchone()
        return self._segment(row) if row else None

    def segments(
        self,
        camera: str | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int | None = None,
    ) -> list[Segment]:
        """Segments overlapping [start_us, end_us), oldest first."""
        sql = "SELECT * FROM segments WHERE 1=1"
        args: list = []
        if camera is not None:
            sql += " AND camera = ?"
            args.append(camera)
        if start_us is not None:
            sql += " AND end_us > ?"
            args.append(start_us)
        if end_us is not None:
            sql += " AND start_us < ?"
            args.append(end_us)
        sql += " ORDER BY start_us, camera"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._segment(r) for r in self._db().execute(sql, args)]

    def paths(self) -> set[str]:
        return {r["path"] for r in self._db().execute("SELECT path FROM segments")}

    def runs(self, camera: str | None = None) -> list[Run]:
        sql = "SELECT * FROM runs" + (" WHERE camera = ?" if camera else "")
        sql += " ORDER BY camera, start_us, id"
        return [Run(**dict(r)) for r in self._db().execute(sql, (camera,) if camera else ())]

    def cameras(self) -> list[str]:
        return [r[0] for r in self._db().execute("SELECT DISTINCT camera FROM runs ORDER BY 1")]

    def gaps(
        self, camera: str | None = None, start_us: int | None = None, end_us: int | None = None
    ) -> list[Gap]:
        """Each run end opens a gap that lasts until the camera's next run starts."""
        out: list[Gap] = []
        by_camera: dict[str, list[Run]] = {}
        for run in self.runs(camera):
            by_camera.setdefault(run.camera, []).append(run)
        for cam, runs in by_camera.items():
            for i, run in enumerate(runs):
                if run.end_reason is None:
                    continue  # still recording (or crashed and not yet recovered)
                nxt = runs[i + 1].start_us if i + 1 < len(runs) else None
                gap = Gap(cam, run.end_us, nxt, run.end_reason)
                if end_us is not None and gap.start_us >= end_us:
                    continue
                if start_us is not None and gap.end_us is not None and gap.end_us <= start_us:
                    continue
                out.append(gap)
        out.sort(key=lambda g: (g.start_us, g.camera))
        return out

    def totals(self) -> dict[str, tuple[int, int]]:
        """Per camera: (segments, bytes) on disk now."""
        rows = self._db().execute(
            "SELECT camera, COUNT(*) n, COALESCE(SUM(bytes),0) b FROM segments GROUP BY camera"
        )
        return {r["camera"]: (r["n"], r["b"]) for r in rows}
