"""The catalog: which segments exist on this board, which runs they belong to, where the gaps are.

SQLite in WAL mode, shared by the recorder's worker processes and the API. A row is only written
after its file is durably in place (see recorder.segment_file), so a row never points at a file
that a crash could lose; the reverse (a file without a row) is repaired at start by recovery.
Deletions go through a garbage table so a crash between unlink and row delete is finished at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import quote

from firmware.evidence.locks import NO_HOLD, EvidenceLock, LockError, LockHold
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
CREATE TABLE IF NOT EXISTS deleted (
    id TEXT PRIMARY KEY,
    start_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_seq (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (
    id TEXT PRIMARY KEY,
    camera TEXT,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    released_us INTEGER,
    release_reason TEXT,
    changed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS locks_changed ON locks(changed);
CREATE TABLE IF NOT EXISTS archived (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    bytes INTEGER,
    sha256 TEXT,
    archived_us INTEGER,
    row TEXT NOT NULL
);
"""

# Columns added after the first release: (table, column, declaration). Added on open, so a
# data directory from an older firmware keeps working.
MIGRATIONS = (
    ("runs", "uid", "TEXT"),
    ("runs", "continues", "TEXT"),
    ("runs", "changed", "INTEGER NOT NULL DEFAULT 0"),
    ("segments", "last_frame", "TEXT NOT NULL DEFAULT ''"),
)

COVER_SLACK_US = 1000
"""Run times are rounded to the millisecond."""

HELD = (
    "EXISTS (SELECT 1 FROM locks l WHERE l.released_us IS NULL"
    " AND (l.camera IS NULL OR l.camera = s.camera)"
    " AND s.start_us < l.end_us AND s.end_us > l.start_us)"
)
"""A segment `s` that an active evidence lock holds (firmware/evidence/locks.py `holds`)."""

ARCHIVED = (
    "EXISTS (SELECT 1 FROM archived a WHERE a.id = s.id"
    " AND a.bytes = s.bytes AND a.sha256 = s.sha256)"
)
"""A segment `s` the archive holds, as the uploader checked it (size and SHA-256)."""


def _no_locks_table(e: sqlite3.OperationalError) -> bool:
    """A catalog of older firmware opened read-only: it has no locks, so none hold."""
    return "no such table: locks" in str(e)


def _next_seq(db: sqlite3.Connection, name: str) -> int:
    """The next number of a mirror feed cursor ('segments': the row id, 'runs': `changed`),
    inside the caller's transaction. Kept in a table, never derived from MAX(): SQLite reuses
    the highest row id once that row is deleted (a spare copy pruned), and a peer whose
    cursor had passed it would never see the segment that took the number again."""
    row = db.execute(
        "UPDATE feed_seq SET value = value + 1 WHERE name = ? RETURNING value", (name,)
    ).fetchone()
    return int(row[0])


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
    last_frame: str = ""
    """Fingerprint of the last video frame (see recorder.fingerprint): where a standby that
    takes over continues, matched by content across the two boards' camera sessions."""

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
class ArchivedSegment:
    """A segment the archive holds (firmware/archive/): its key in the bucket and the
    catalog row as it was uploaded, kept after the local copy is deleted."""

    id: str
    key: str
    bytes: int
    sha256: str
    archived_us: int
    segment: Segment


def segment_from_row(row: dict) -> Segment:
    """A Segment from the JSON the archive keeps (`archived.row`): every field of the table."""
    return Segment(**{k: row[k] for k in Segment.__dataclass_fields__ if k in row})


@dataclass(frozen=True)
class Run:
    id: int
    """Local row id; `uid` names the run across the pair."""
    camera: str
    origin: str
    start_us: int
    end_us: int
    end_reason: str | None
    uid: str = ""
    continues: str | None = None
    """Id of the peer's segment this run took over after, frame for frame (takeover runs)."""
    changed: int = 0
    """Change counter: the mirror sends runs changed since the peer last asked."""

    def to_json(self) -> dict:
        return {
            "uid": self.uid,
            "camera": self.camera,
            "origin": self.origin,
            "start_us": self.start_us,
            "end_us": self.end_us,
            "end_reason": self.end_reason,
            "continues": self.continues,
        }


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


def run_uid(camera: str, start_us: int, origin: str) -> str:
    return f"{camera}.{start_us}.{origin}"


class CatalogCorrupt(Exception):
    """The catalog file is not a sound SQLite database (garbage in its header, a malformed
    page): said as such, never as a traceback."""


CORRUPT_SUFFIX = ".corrupt-"


def _corruption(path: Path) -> str | None:
    """What is wrong with the catalog file, or None if SQLite finds it sound (or it cannot be
    told now: locked, read-only, missing, which are not corruption)."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.OperationalError:
        return None
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError as e:
        if "malformed" in str(e) or "not a database" in str(e):
            return str(e)
        return None  # locked, unreadable now: the open that follows says so
    except sqlite3.DatabaseError as e:
        return str(e)
    finally:
        db.close()
    problems = [r[0] for r in rows if r[0] != "ok"]
    return "; ".join(problems[:3]) if problems else None


def set_aside_if_corrupt(data_dir: Path) -> tuple[Path, str] | None:
    """Start-up check: a corrupt catalog is renamed (with its -wal and -shm), kept for
    analysis, so a fresh one can be rebuilt from the segment files (recovery). Returns (the
    copy, the problem) when it did."""
    path = Path(data_dir) / CATALOG_FILE
    problem = _corruption(path)
    if problem is None:
        return None
    aside = path.with_name(f"{CATALOG_FILE}{CORRUPT_SUFFIX}{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("-wal", "-shm", ""):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    fresh = Catalog(data_dir)
    with contextlib.suppress(sqlite3.OperationalError):  # a full disk: numbered from 0 then
        fresh.number_feed_from(time.time_ns() // 1000)
    fresh.close()
    return aside, problem


def set_aside_copies(data_dir: Path) -> list[Path]:
    """Corrupt catalogs kept for analysis, oldest first."""
    return sorted(Path(data_dir).glob(f"{CATALOG_FILE}{CORRUPT_SUFFIX}*[0-9]"))


def _open_read_only(path: Path) -> sqlite3.Connection:
    """Read-only, with the write-ahead log the board left (its committed rows are there);
    without it (no -shm can be made) as an immutable file, which misses only what the log
    held."""
    base = f"file:{quote(str(path))}?mode=ro"
    for uri in (base, base + "&immutable=1"):
        db = sqlite3.connect(uri, uri=True, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("SELECT 1 FROM segments LIMIT 1")
            return db
        except sqlite3.OperationalError:
            db.close()
    raise sqlite3.OperationalError(f"{path}: cannot be read")


def _full_not_read_only(data_dir: Path, e: sqlite3.Error) -> bool:
    """A write failed on a mounted-writable disk for lack of space (a full disk cannot even
    grow the -shm file: an I/O error), not because the disk is read-only."""
    code = getattr(e, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) and not (
        os.statvfs(data_dir).f_flag & os.ST_RDONLY
    )


def is_corruption(e: sqlite3.Error) -> bool:
    return "malformed" in str(e) or "not a database" in str(e)


class Catalog:
    """One connection per thread; cheap to create, safe across processes."""

    def __init__(self, data_dir: Path, reader: bool = False) -> None:
        """reader: a tool that only reads (`nvr catalog`, `nvr verify`): any disk that will
        not take writes opens read-only. The firmware's stays writable on a full disk, where
        writes fail until space returns (and are handled as disk faults)."""
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / CATALOG_FILE
        self._local = threading.local()
        self.read_only = False
        # Only the first connection may create the file: a later one (another thread) on a
        # disk that was pulled would otherwise start an empty catalog in the bare directory.
        self._may_create = True
        try:
            self._open(reader)
        finally:
            self._may_create = False

    def _open(self, reader: bool) -> None:
        try:
            try:
                db = self._db()
                db.executescript(SCHEMA)
                self._migrate(db)
            except sqlite3.OperationalError as e:
                if not self.path.exists() or is_corruption(e):
                    raise
                if not reader and _full_not_read_only(self.data_dir, e):
                    self.close()
                    return
                # A disk the kernel turned read-only (or a copy mounted read-only): the footage
                # can still be listed, verified and exported, nothing is written.
                self.close()
                self.read_only = True
                self._db().execute("SELECT 1 FROM segments LIMIT 1")
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and not is_corruption(e):
                raise
            self.close()
            raise CatalogCorrupt(f"{self.path}: corrupt catalog: {e}") from None

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for table, column, decl in MIGRATIONS:
                have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            db.execute(
                "UPDATE runs SET uid = camera || '.' || start_us || '.' || origin WHERE uid IS NULL"
            )
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS runs_uid ON runs(uid)")
            db.execute("CREATE INDEX IF NOT EXISTS runs_changed ON runs(changed)")
            db.execute("INSERT OR IGNORE INTO feed_seq(name, value)"
                       " SELECT 'segments', COALESCE(MAX(rowid), 0) FROM segments")  # fmt: skip
            db.execute("INSERT OR IGNORE INTO feed_seq(name, value)"
                       " SELECT 'runs', COALESCE(MAX(changed), 0) FROM runs")  # fmt: skip
            db.execute("INSERT OR IGNORE INTO feed_seq(name, value)"
                       " SELECT 'locks', COALESCE(MAX(changed), 0) FROM locks")  # fmt: skip
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None and self.read_only:
            db = _open_read_only(self.path)
            self._local.db = db
        if db is None:
            mode = "rwc" if self._may_create else "rw"
            uri = f"file:{quote(str(self.path))}?mode={mode}"
            db = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
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

    def new_run(
        self,
        camera: str,
        origin: str,
        start_us: int,
        end_us: int,
        continues: str | None = None,
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs(camera, origin, start_us, end_us, uid, continues, changed)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    camera,
                    origin,
                    start_us,
                    end_us,
                    run_uid(camera, start_us, origin),
                    continues,
                    _next_seq(db, "runs"),
                ),
            )
            return int(cur.lastrowid)

    def merge_run(self, run: Run) -> int:
        """Take in the peer's view of one of its runs (the mirror); returns the local id. Ends
        only grow and a reason once set stays, so replays and reordering change nothing."""
        with self._tx() as db:
            row = db.execute(
                "SELECT id, end_us, end_reason, continues FROM runs WHERE uid = ?", (run.uid,)
            ).fetchone()
            if row is None:
                cur = db.execute(
                    "INSERT INTO runs(camera, origin, start_us, end_us, end_reason, uid,"
                    " continues, changed) VALUES (?,?,?,?,?,?,?,?)",
                    (run.camera, run.origin, run.start_us, run.end_us, run.end_reason,
                     run.uid, run.continues, _next_seq(db, "runs")),
                )  # fmt: skip
                return int(cur.lastrowid)
            end = max(row["end_us"], run.end_us)
            reason = row["end_reason"] or run.end_reason
            continues = row["continues"] or run.continues
            if (end, reason, continues) != (row["end_us"], row["end_reason"], row["continues"]):
                db.execute(
                    "UPDATE runs SET end_us = ?, end_reason = ?, continues = ?,"
                    " changed = ? WHERE id = ?",
                    (end, reason, continues, _next_seq(db, "runs"), row["id"]),
                )
            return int(row["id"])

    def add_segment(self, seg: Segment) -> None:
        """Insert the segment and stretch its run to cover it, in one transaction."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO segments(rowid, id, camera, run_id, path, start_us, end_us,"
                " media_start_us, media_end_us, frames, bytes, sha256, origin, codec, salvaged,"
                " last_frame) VALUES (:rowid,:id,:camera,:run_id,:path,:start_us,:end_us,"
                ":media_start_us,:media_end_us,:frames,:bytes,:sha256,:origin,:codec,:salvaged,"
                ":last_frame)",
                {**asdict(seg), "rowid": _next_seq(db, "segments")},
            )
            if db.execute("SELECT 1 FROM runs WHERE id = ? AND end_us < ?",
                          (seg.run_id, seg.end_us)).fetchone():  # fmt: skip
                db.execute(
                    "UPDATE runs SET end_us = ?, changed = ? WHERE id = ?",
                    (seg.end_us, _next_seq(db, "runs"), seg.run_id),
                )

    def run_covering(self, camera: str, origin: str, at_us: int, slack_us: int) -> int | None:
        """The id of a run of this camera and board that reaches `at_us` (within the slack)."""
        sql = (
            "SELECT id FROM runs WHERE camera = ? AND origin = ? AND start_us <= ?"
            " AND end_us >= ? ORDER BY start_us DESC LIMIT 1"
        )
        args = (camera, origin, at_us + slack_us, at_us - slack_us)
        row = self._db().execute(sql, args).fetchone()
        return int(row["id"]) if row else None

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
                "INSERT OR IGNORE INTO runs(id, camera, origin, start_us, end_us, uid, changed)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    run_id,
                    camera,
                    origin,
                    start_us,
                    end_us,
                    run_uid(camera, start_us, origin),
                    _next_seq(db, "runs"),
                ),
            )

    def end_run(self, run_id: int, reason: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET end_reason = ?, changed = ? WHERE id = ? AND end_reason IS NULL",
                (reason, _next_seq(db, "runs"), run_id),
            )

    def close_open_runs(self, reason: str, origin: str, camera: str | None = None) -> int:
        """Only this board's own runs: a peer's open run is the peer's to close."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE runs SET end_reason = ?, changed = ?"
                " WHERE end_reason IS NULL AND origin = ?" + (" AND camera = ?" if camera else ""),
                (reason, _next_seq(db, "runs"), origin, *((camera,) if camera else ())),
            )
            return cur.rowcount

    def delete_segment_rows(self, ids: list[str]) -> list[str]:
        """Move segments to the garbage list; returns their paths for the caller to unlink.
        The ids are remembered, so the mirror never copies them back from the peer."""
        paths: list[str] = []
        with self._tx() as db:
            for sid in ids:
                row = db.execute(
                    "SELECT path, start_us FROM segments WHERE id = ?", (sid,)
                ).fetchone()
                if row is None:
                    continue  # another worker got there first
                db.execute("INSERT OR IGNORE INTO garbage(path) VALUES (?)", (row["path"],))
                db.execute(
                    "INSERT OR IGNORE INTO deleted(id, start_us) VALUES (?,?)",
                    (sid, row["start_us"]),
                )
                db.execute("DELETE FROM segments WHERE id = ?", (sid,))
                paths.append(row["path"])
            db.execute(
                "DELETE FROM runs WHERE end_reason IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM segments s WHERE s.run_id = runs.id)"
                " AND id NOT IN (SELECT MAX(id) FROM runs GROUP BY camera)"
            )
        return paths

    def drop_lost_rows(self, ids: list[str]) -> None:
        """Rows whose file went missing behind the firmware's back: a loss, not a deletion.
        No `deleted` entry, so the mirror fetches the peer's copy back."""
        with self._tx() as db:
            db.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in ids])

    def number_feed_from(self, value: int) -> None:
        """A rebuilt catalog numbers its mirror feed above anything the old one handed out
        (the wall clock in µs is): a peer whose cursor had passed a number still sees the rows
        that would have taken it again."""
        with self._tx() as db:
            db.execute("UPDATE feed_seq SET value = MAX(value, ?)", (value,))

    def forget_deleted(self, before_us: int) -> None:
        """Deleted ids older than retention can go: the peer's retention removes them too."""
        with self._tx() as db:
            db.execute("DELETE FROM deleted WHERE start_us < ?", (before_us,))

    def deleted(self, ids: list[str]) -> set[str]:
        """Those of ids that this board deleted."""
        db = self._db()
        return {
            sid
            for sid in ids
            if db.execute("SELECT 1 FROM deleted WHERE id = ?", (sid,)).fetchone()
        }

    def forget_garbage(self, paths: list[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM garbage WHERE path = ?", [(p,) for p in paths])

    def garbage(self) -> list[str]:
        return [r["path"] for r in self._db().execute("SELECT path FROM garbage")]

    # --- the archive tier (firmware/archive/) ---------------------------------------------

    def mark_archived(self, seg: Segment, key: str, now_us: int) -> None:
        """The archive holds seg (size and hash checked) under key. The row keeps the segment's
        fields, so it is still known after retention deletes the local file."""
        row = json.dumps(asdict(seg), sort_keys=True)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO archived(id, key, bytes, sha256, archived_us, row)"
                " VALUES (?,?,?,?,?,?)",
                (seg.id, key, seg.bytes, seg.sha256, now_us, row),
            )

    def archived(self, sid: str) -> ArchivedSegment | None:
        try:
            r = self._db().execute("SELECT * FROM archived WHERE id = ?", (sid,)).fetchone()
        except sqlite3.OperationalError as e:
            if "no such table: archived" in str(e):
                return None
            raise
        if r is None:
            return None
        seg = segment_from_row(json.loads(r["row"]))
        return ArchivedSegment(r["id"], r["key"], r["bytes"], r["sha256"], r["archived_us"], seg)

    def archived_marks(self) -> Iterator[ArchivedSegment]:
        """Every archived mark, oldest archived first (nvr verify --archive)."""
        try:
            rows = self._db().execute("SELECT * FROM archived ORDER BY archived_us, id")
        except sqlite3.OperationalError as e:
            if "no such table: archived" in str(e):
                return
            raise
        for r in rows:
            seg = segment_from_row(json.loads(r["row"]))
            yield ArchivedSegment(r["id"], r["key"], r["bytes"], r["sha256"], r["archived_us"],
                                  seg)  # fmt: skip

    def archived_ids(self, ids: list[str]) -> set[str]:
        """Those of ids that the archive holds."""
        db = self._db()
        return {
            sid
            for sid in ids
            if db.execute("SELECT 1 FROM archived WHERE id = ?", (sid,)).fetchone()
        }

    def not_archived(self, limit: int, from_us: int | None = None) -> list[Segment]:
        """Local segments not yet archived, oldest first. A row exists only once its file is
        durably in place (recorder.segment_file), so each is a committed file. from_us: only
        those starting then or later (the index on start_us skips what is archived already)."""
        rows = self._db().execute(
            "SELECT s.* FROM segments s LEFT JOIN archived a ON a.id = s.id"
            " WHERE a.id IS NULL AND s.start_us >= ? ORDER BY s.start_us, s.camera LIMIT ?",
            (-(1 << 62) if from_us is None else from_us, limit),
        )
        return [self._segment(r) for r in rows]

    def archived_segments(self, camera: str, start_us: int, end_us: int) -> list[Segment]:
        """Archived segments of camera overlapping [start_us, end_us) that are no longer
        local, oldest first, from the rows kept at upload."""
        rows = self._db().execute(
            "SELECT a.row FROM archived a WHERE json_extract(a.row, '$.camera') = ?"
            " AND json_extract(a.row, '$.end_us') > ?"
            " AND json_extract(a.row, '$.start_us') < ?"
            " AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.id = a.id)",
            (camera, start_us, end_us),
        )
        segs = [segment_from_row(json.loads(r["row"])) for r in rows]
        return sorted(segs, key=lambda s: (s.start_us, s.id))

    def archived_expired(self, before_us: int, limit: int) -> list[ArchivedSegment]:
        """Archived-only segments (no longer local) that ended before before_us and that no
        active evidence lock holds, oldest first: what the archive may let go."""
        held = (
            "EXISTS (SELECT 1 FROM locks l WHERE l.released_us IS NULL"
            " AND (l.camera IS NULL OR l.camera = json_extract(a.row, '$.camera'))"
            " AND json_extract(a.row, '$.start_us') < l.end_us"
            " AND json_extract(a.row, '$.end_us') > l.start_us)"
        )
        rows = (
            self._db()
            .execute(
                "SELECT a.id FROM archived a WHERE json_extract(a.row, '$.end_us') < ?"
                " AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.id = a.id)"
                f" AND NOT {held} ORDER BY json_extract(a.row, '$.end_us') LIMIT ?",
                (before_us, limit),
            )
            .fetchall()
        )
        return [a for a in (self.archived(r["id"]) for r in rows) if a is not None]

    def forget_archived(self, ids: list[str]) -> None:
        """The archive let these go (expired): they are no longer listed or served."""
        with self._tx() as db:
            db.executemany("DELETE FROM archived WHERE id = ?", [(i,) for i in ids])

    def archived_summary(self) -> dict[str, tuple[int, int, int]]:
        """Per camera: (first start_us, last end_us, segments) of what the archive holds."""
        rows = self._db().execute(
            "SELECT json_extract(row, '$.camera') c, MIN(json_extract(row, '$.start_us')) a,"
            " MAX(json_extract(row, '$.end_us')) b, COUNT(*) n FROM archived GROUP BY c"
        )
        return {r["c"]: (int(r["a"]), int(r["b"]), int(r["n"])) for r in rows}

    # --- evidence locks ------------------------------------------------------------------

    @staticmethod
    def _lock(row: sqlite3.Row) -> EvidenceLock:
        return EvidenceLock(**dict(row))

    def add_lock(self, lock: EvidenceLock) -> EvidenceLock:
        """Store a new lock (firmware/evidence/locks.py `make_lock`); returns it as stored."""
        with self._tx() as db:
            changed = _next_seq(db, "locks")
            try:
                db.execute(
                    "INSERT INTO locks(id, camera, start_us, end_us, reason, created_us,"
                    " released_us, release_reason, changed) VALUES (?,?,?,?,?,?,?,?,?)",
                    (lock.id, lock.camera, lock.start_us, lock.end_us, lock.reason,
                     lock.created_us, lock.released_us, lock.release_reason, changed),
                )  # fmt: skip
            except sqlite3.IntegrityError:
                raise LockError(f"lock {lock.id} exists already") from None
        return replace(lock, changed=changed)

    def release_lock(self, lock_id: str, reason: str, now_us: int) -> EvidenceLock:
        """Release: the row stays, with when and why. LockError for an unknown id or a lock
        released already."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM locks WHERE id = ?", (lock_id,)).fetchone()
            if row is None:
                raise LockError(f"no lock {lock_id!r} (nvr locks --all lists them)")
            if row["released_us"] is not None:
                raise LockError(
                    f"lock {lock_id} was released already at {iso(row['released_us'])}"
                    f" ({row['release_reason']})"
                )
            changed = _next_seq(db, "locks")
            db.execute(
                "UPDATE locks SET released_us = ?, release_reason = ?, changed = ? WHERE id = ?",
                (now_us, reason, changed, lock_id),
            )
        return replace(self._lock(row), released_us=now_us, release_reason=reason,
                       changed=changed)  # fmt: skip

    def merge_lock(self, lock: EvidenceLock) -> bool:
        """Take in the peer's view of a lock (the mirror); True if this board's row changed.
        A release, once known, stays: replays and reordering change nothing."""
        with self._tx() as db:
            row = db.execute("SELECT released_us FROM locks WHERE id = ?", (lock.id,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO locks(id, camera, start_us, end_us, reason, created_us,"
                    " released_us, release_reason, changed) VALUES (?,?,?,?,?,?,?,?,?)",
                    (lock.id, lock.camera, lock.start_us, lock.end_us, lock.reason,
                     lock.created_us, lock.released_us, lock.release_reason,
                     _next_seq(db, "locks")),
                )  # fmt: skip
                return True
            if row["released_us"] is None and lock.released_us is not None:
                db.execute(
                    "UPDATE locks SET released_us = ?, release_reason = ?, changed = ?"
                    " WHERE id = ?",
                    (lock.released_us, lock.release_reason, _next_seq(db, "locks"), lock.id),
                )
                return True
            return False

    def lock(self, lock_id: str) -> EvidenceLock | None:
        try:
            row = self._db().execute("SELECT * FROM locks WHERE id = ?", (lock_id,)).fetchone()
        except sqlite3.OperationalError as e:
            if _no_locks_table(e):
                return None
            raise
        return self._lock(row) if row else None

    def locks(self, active_only: bool = True) -> list[EvidenceLock]:
        """Oldest range first."""
        sql = "SELECT * FROM locks" + (" WHERE released_us IS NULL" if active_only else "")
        try:
            rows = self._db().execute(sql + " ORDER BY start_us, created_us, id").fetchall()
        except sqlite3.OperationalError as e:
            if _no_locks_table(e):
                return []
            raise
        return [self._lock(r) for r in rows]

    def locks_since(self, changed: int, limit: int) -> list[EvidenceLock]:
        """Locks made or released after the change counter `changed`: the mirror feed."""
        rows = self._db().execute(
            "SELECT * FROM locks WHERE changed > ? ORDER BY changed LIMIT ?", (changed, limit)
        )
        return [self._lock(r) for r in rows]

    def deletable_segments(self, limit: int, archived: bool | None = None) -> list[Segment]:
        """The oldest segments no active lock holds: what retention may delete, oldest first.
        archived: only those the archive holds (True; the mark's size and hash match the row)
        or only those it does not hold yet (False); None: either."""
        tier = "" if archived is None else f" AND {'' if archived else 'NOT '}{ARCHIVED}"
        rows = self._db().execute(
            f"SELECT * FROM segments s WHERE NOT {HELD}{tier} ORDER BY start_us, camera LIMIT ?",
            (limit,),
        )
        return [self._segment(r) for r in rows]

    def held_ids(self, ids: list[str]) -> set[str]:
        """Those of ids that an active lock holds."""
        db = self._db()
        return {
            sid
            for sid in ids
            if db.execute(f"SELECT 1 FROM segments s WHERE s.id = ? AND {HELD}", (sid,)).fetchone()
        }

    def lock_hold(self, expired_before_us: int | None = None) -> LockHold:
        """What the active locks hold on this disk now: segments and bytes, and how many of
        those segments ended before `expired_before_us` (past retention: kept only by a lock)."""
        try:
            row = self._db().execute(
                "SELECT COUNT(*) n, MIN(start_us) a, MAX(end_us) b FROM locks"
                " WHERE released_us IS NULL"
            ).fetchone()  # fmt: skip
        except sqlite3.OperationalError as e:
            if _no_locks_table(e):
                return NO_HOLD
            raise
        if not row["n"]:
            return NO_HOLD
        held = self._db().execute(
            f"SELECT COUNT(*) n, COALESCE(SUM(bytes), 0) b,"
            f" COALESCE(SUM(s.end_us < ?), 0) x FROM segments s"
            f" WHERE s.start_us < ? AND s.end_us > ? AND {HELD}",
            (-1 if expired_before_us is None else expired_before_us, row["b"], row["a"]),
        ).fetchone()  # fmt: skip
        return LockHold(row["n"], held["n"], held["b"], held["x"])

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

    def segments_since(self, rowid: int, limit: int) -> list[tuple[int, Segment]]:
        """Segments inserted after rowid (rows never change once inserted): the mirror feed."""
        rows = self._db().execute(
            "SELECT rowid AS rowid_, * FROM segments WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (rowid, limit),
        )
        out = []
        for r in rows:
            d = dict(r)
            rid = d.pop("rowid_")
            d["salvaged"] = bool(d["salvaged"])
            out.append((rid, Segment(**d)))
        return out

    def runs_since(self, changed: int, limit: int) -> list[Run]:
        rows = self._db().execute(
            "SELECT * FROM runs WHERE changed > ? ORDER BY changed LIMIT ?", (changed, limit)
        )
        return [Run(**dict(r)) for r in rows]

    def run_by_id(self, run_id: int) -> Run | None:
        row = self._db().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return Run(**dict(row)) if row else None

    def takeover_runs(self) -> list[Run]:
        return [
            Run(**dict(r))
            for r in self._db().execute("SELECT * FROM runs WHERE continues IS NOT NULL")
        ]

    def run_by_uid(self, uid: str) -> Run | None:
        row = self._db().execute("SELECT * FROM runs WHERE uid = ?", (uid,)).fetchone()
        return Run(**dict(row)) if row else None

    def run_segments(self, run_id: int) -> list[Segment]:
        rows = self._db().execute(
            "SELECT * FROM segments WHERE run_id = ? ORDER BY start_us", (run_id,)
        )
        return [self._segment(r) for r in rows]

    def latest_segments(self, camera: str, n: int = 1) -> list[Segment]:
        """The camera's n newest segments, newest first."""
        rows = self._db().execute(
            "SELECT * FROM segments WHERE camera = ? ORDER BY start_us DESC LIMIT ?", (camera, n)
        )
        return [self._segment(r) for r in rows]

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
        """Each run end opens a gap that lasts until the camera's next run starts, unless a run
        of the other board covers that moment (a takeover): the timeline is the pair's."""
        out: list[Gap] = []
        by_camera: dict[str, list[Run]] = {}
        for run in self.runs(camera):
            by_camera.setdefault(run.camera, []).append(run)
        for cam, runs in by_camera.items():
            for run in runs:
                if run.end_reason is None:
                    continue  # still recording (or crashed and not yet recovered)
                t = run.end_us
                # Only as far as a run has committed footage: a run left open by a board that
                # died covers nothing after its last segment.
                if any(
                    r is not run and r.start_us <= t + COVER_SLACK_US and r.end_us > t for r in runs
                ):
                    continue
                nxt = min((r.start_us for r in runs if r.start_us > t), default=None)
                gap = Gap(cam, t, nxt, run.end_reason)
                if end_us is not None and gap.start_us >= end_us:
                    continue
                if start_us is not None and gap.end_us is not None and gap.end_us <= start_us:
                    continue
                out.append(gap)
        out.sort(key=lambda g: (g.start_us, g.camera))
        return out

    def rates(self, since_us: int) -> dict[str, tuple[int, int]]:
        """Per camera: (bytes, microseconds of footage) of the segments started since
        `since_us` (the index on start_us): the measured rate capacity planning uses."""
        rows = self._db().execute(
            "SELECT camera, COALESCE(SUM(bytes),0) b, COALESCE(SUM(end_us - start_us),0) d "
            "FROM segments WHERE start_us >= ? GROUP BY camera",
            (since_us,),
        )
        return {r["camera"]: (r["b"], r["d"]) for r in rows}

    def totals(self) -> dict[str, tuple[int, int]]:
        """Per camera: (segments, bytes) on disk now."""
        rows = self._db().execute(
            "SELECT camera, COUNT(*) n, COALESCE(SUM(bytes),0) b FROM segments GROUP BY camera"
        )
        return {r["camera"]: (r["n"], r["b"]) for r in rows}
