"""The Merkle node store on disk: one SQLite file of its own, WAL, synchronous=FULL.

Each `put` is one transaction holding the new nodes and the new size, so after a power cut
the file holds either the tree before the append or the tree after it, never a mix. Nodes
are only ever inserted (a node written twice is an error), the size only grows."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree_size (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    size INTEGER NOT NULL CHECK (size >= 0)
);
INSERT OR IGNORE INTO tree_size (id, size) VALUES (0, 0);
"""


def connect_read_only(path: Path, table: str) -> sqlite3.Connection:
    """A read-only connection that sees what the writer committed (its write-ahead log too);
    `immutable` where the directory cannot hold the WAL's shared memory (a read-only copy)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing")
    base = f"file:{quote(str(path))}?mode=ro"
    for uri in (base, base + "&immutable=1"):
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"SELECT 1 FROM {table} LIMIT 1")
            return db
        except sqlite3.OperationalError:
            db.close()
    raise sqlite3.OperationalError(f"{path}: cannot be read")


class SqliteNodes:
    """NodeStore in its own SQLite file; one writer thread, readers from any thread (calls
    are serialised on one connection)."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        """read_only: beside the writer (nvr verify, nvr export): nothing is written, not even
        the schema; `put` fails."""
        self.path = Path(path)
        self._lock = threading.Lock()
        if read_only:
            self._db = connect_read_only(self.path, "tree_size")
            return
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def size(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT size FROM tree_size WHERE id = 0").fetchone()
        return int(row[0])

    def get(self, level: int, index: int) -> bytes:
        with self._lock:
            row = self._db.execute(
                "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)
            ).fetchone()
        if row is None:
            raise KeyError((level, index))
        return bytes(row[0])

    def put(self, nodes: list[tuple[int, int, bytes]], size: int) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (current,) = self._db.execute("SELECT size FROM tree_size WHERE id = 0").fetchone()
                if size < current:
                    raise ValueError(f"tree size cannot shrink from {current} to {size}")
                self._db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
                self._db.execute("UPDATE tree_size SET size = ? WHERE id = 0", (size,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
