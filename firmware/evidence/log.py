"""The board's transparency log: every committed segment and every audit line, as leaves of
an append-only Merkle tree, with the checkpoints this board signed, the cosignatures the peer
gave them, and the peer's checkpoints this board cosigned.

Files (in DATA/evidence, 0700): `board.key` (the board's Ed25519 key, 0600, made on first
use), `log.sqlite` (leaf data, ingest cursors, checkpoints, pinned peer keys) and `tree.sqlite`
(the tree's nodes). Leaves are written before the tree grows over them, so after a power cut
the tree is caught up from the leaves on open; a tree larger than its leaves is damage."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from firmware.audit import AUDIT_FILE
from firmware.catalog import Catalog, Segment
from firmware.evidence.merkle import MerkleTree
from firmware.evidence.nodes_sqlite import SqliteNodes, connect_read_only
from firmware.evidence.note import NoteSigner, load_or_create_key, read_key
from firmware.evidence.verifier import (
    Checkpoint,
    Note,
    VerifierKey,
    key_fingerprint,
    leaf_hash,
    parse_checkpoint,
    parse_note,
    parse_vkey,
)
from firmware.evidence.witness import Held, Offer

LOG_DIR = "evidence"
KEY_FILE = "board.key"
LOG_DB = "log.sqlite"
TREE_DB = "tree.sqlite"
BATCH = 512
"""Leaves per ingest transaction."""
MAX_AUDIT_LINE = 64 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL,
    signed_us INTEGER NOT NULL, cosigned TEXT);
CREATE TABLE IF NOT EXISTS witnessed (origin TEXT PRIMARY KEY, size INTEGER NOT NULL,
    note TEXT NOT NULL, at_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pins (origin TEXT PRIMARY KEY, note_vkey TEXT NOT NULL);
"""


def canonical(obj: dict) -> bytes:
    """The one byte form of a leaf: what the verifier re-derives from an export."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def segment_leaf(seg: Segment) -> bytes:
    return canonical({
        "kind": "segment", "id": seg.id, "camera": seg.camera, "origin": seg.origin,
        "start_us": seg.start_us, "end_us": seg.end_us, "frames": seg.frames,
        "bytes": seg.bytes, "sha256": seg.sha256, "path": seg.path,
    })  # fmt: skip


def audit_leaf(line: bytes) -> bytes:
    """One audit line as written (without its newline): its bytes are checked again later."""
    return canonical({"kind": "audit", "line": line.decode("utf-8", "replace")})


class LogMissing(Exception):
    """No evidence log in this data directory (a firmware before it, or not started yet)."""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class LogDamaged(Exception):
    """The log's own files contradict each other (not a peer's verdict: this board's)."""


@dataclass(frozen=True)
class Ingested:
    leaves: int
    audit_shrank: bool
    """audit.log is shorter than what the log already took from it: it was cut."""


class EvidenceLog:
    """One writer thread (the evidence service); the mirror's routes read from the loop."""

    def __init__(self, data_dir: Path, board: str, reader: bool = False) -> None:
        """reader: look only (nvr verify, nvr export beside the running firmware): nothing is
        made, and the tree is not caught up; LogMissing when there is no log."""
        self.data_dir = data_dir
        self.dir = data_dir / LOG_DIR
        self._place = _identity(data_dir)
        """The data directory as opened: a pulled disk leaves an empty mount point in its
        place, which is not the same directory, and its missing audit.log no cut."""
        if reader:
            if not (self.dir / KEY_FILE).exists() or not (self.dir / LOG_DB).exists():
                raise LogMissing(f"{self.dir}: no evidence log here")
            key = read_key(self.dir / KEY_FILE)
        else:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            key = load_or_create_key(self.dir / KEY_FILE)
        self._lock = threading.RLock()
        self.reader = reader
        if reader:
            self._db = connect_read_only(self.dir / LOG_DB, "meta")
        else:
            self._db = sqlite3.connect(self.dir / LOG_DB, isolation_level=None,
                                       check_same_thread=False)  # fmt: skip
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE name = 'origin'").fetchone()
        if row is None:
            if reader:
                raise LogDamaged(f"{self.dir / LOG_DB}: the log's name is not recorded")
            probe = NoteSigner(f"nvr-{board}", key)
            origin = f"nvr-{board}-{key_fingerprint(probe.note_key)[:8]}"
            self._db.execute("INSERT INTO meta VALUES ('origin', ?)", (origin,))
        else:
            origin = str(row[0])
        self.origin = origin
        """The log's name, fixed when it was made: the board's and its key's, so a new key is
        a new log, and renaming the board later does not change it."""
        self.signer = NoteSigner(self.origin, key)
        self.nodes = SqliteNodes(self.dir / TREE_DB, read_only=reader)
        self.tree = MerkleTree(self.nodes)
        if not reader:
            self._catch_up()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self.nodes.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.reader:
            raise PermissionError("the evidence log is open read-only here")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _cursor(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def leaves(self) -> int:
        """How many leaves are kept: the next index (a primary-key lookup, not a count of
        the table, which every second's ingest asks)."""
        with self._lock:
            (n,) = self._db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves").fetchone()
        return int(n)

    def leaf(self, index: int) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT data FROM leaves WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise KeyError(index)
        return bytes(row[0])

    def iter_leaves(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        at = start
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT idx, data FROM leaves WHERE idx >= ? ORDER BY idx LIMIT 4096", (at,)
                ).fetchall()
            if not rows:
                return
            for idx, data in rows:
                yield int(idx), bytes(data)
            at = int(rows[-1][0]) + 1

    def _catch_up(self) -> None:
        """After a power cut between a batch's leaves and its tree nodes."""
        size, count = self.tree.size(), self.leaves()
        if size > count:
            raise LogDamaged(f"the tree holds {size} entries but only {count} leaves are kept")
        if size < count:
            self.tree.append([leaf_hash(d) for _, d in self.iter_leaves(size)])

    # --- ingest ---------------------------------------------------------------------------------

    def _append(self, db: sqlite3.Connection, datas: list[bytes]) -> None:
        (n,) = db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves").fetchone()
        db.executemany("INSERT INTO leaves(idx, data) VALUES (?, ?)",
                       [(n + i, d) for i, d in enumerate(datas)])  # fmt: skip

    def ingest(self, catalog: Catalog) -> Ingested:
        """Take in what was committed since the last call: new catalog segments, then new
        audit lines. Leaves and cursors commit together, then the tree grows over them."""
        added = 0
        with self._lock:
            rows = catalog.segments_since(self._cursor("segments"), BATCH)
            lines, offset, shrank = self._audit_lines()
            if not rows and not lines:
                return Ingested(0, shrank)
            with self._tx() as db:
                self._append(db, [segment_leaf(s) for _, s in rows] + lines)
                if rows:
                    db.execute("INSERT OR REPLACE INTO cursors VALUES ('segments', ?)",
                               (rows[-1][0],))  # fmt: skip
                db.execute("INSERT OR REPLACE INTO cursors VALUES ('audit', ?)", (offset,))
            added = len(rows) + len(lines)
            self._catch_up()
        return Ingested(added, shrank)

    def _audit_lines(self) -> tuple[list[bytes], int, bool]:
        offset = self._cursor("audit")
        path = self.data_dir / AUDIT_FILE
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < offset:
                    return [], offset, True
                f.seek(offset)
                chunk = f.read(min(size - offset, BATCH * 1024))
        except FileNotFoundError:
            if offset and _identity(self.data_dir) != self._place:
                raise OSError(f"{self.data_dir} is no longer the directory the log was opened "
                              "in (its disk is gone?)") from None  # fmt: skip
            return [], offset, offset > 0
        lines: list[bytes] = []
        end = 0
        while len(lines) < BATCH:
            nl = chunk.find(b"\n", end)
            if nl < 0:
                if len(chunk) - end > MAX_AUDIT_LINE:  # a line without end: take it as is
                    lines.append(audit_leaf(chunk[end:]))
                    end = len(chunk)
                break
            lines.append(audit_leaf(chunk[end:nl]))
            end = nl + 1
        return lines, offset + end, False

    # --- checkpoints ----------------------------------------------------------------------------

    def latest(self) -> tuple[Checkpoint, Note] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        note = parse_note(row[0])
        return parse_checkpoint(note.text), note

    def sign(self, now_us: int, refresh_us: int) -> Checkpoint | None:
        """A new signed checkpoint if the tree grew, or the last is older than refresh_us."""
        if self.reader:
            raise PermissionError("the evidence log is open read-only here")
        with self._lock:
            size = self.tree.size()
            row = self._db.execute(
                "SELECT size, signed_us FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
            if row is not None and row[0] == size and now_us - row[1] < refresh_us:
                return None
            cp = Checkpoint(self.origin, size, self.tree.root(size),
                            (f"time {now_us // 1_000_000}",))  # fmt: skip
            note = self.signer.sign(cp.body())
            with self._tx() as db:
                db.execute(
                    "INSERT OR REPLACE INTO checkpoints(size, note, signed_us, cosigned)"
                    " VALUES (?, ?, ?, NULL)",
                    (size, note.render(), now_us),
                )
            return cp

    def offer(self, from_size: int) -> Offer | None:
        """The newest checkpoint for the peer to cosign, with the proof that it contains the
        tree of from_size entries the peer holds."""
        latest = self.latest()
        if latest is None:
            return None
        cp, note = latest
        proof = self.tree.consistency_proof(from_size, cp.size) if 0 < from_size <= cp.size else []
        return Offer(note.render(), tuple(proof), self.signer.vkey())

    def store_cosigned(self, note_text: str, cosigner: VerifierKey) -> Checkpoint:
        """The peer handed back one of this board's checkpoints cosigned. ValueError if it is
        not one this board signed, or the cosignature is not by the pinned key."""
        from firmware.evidence.witness import cosignature_ok

        note = parse_note(note_text)
        cp = parse_checkpoint(note.text)
        with self._tx() as db:
            row = db.execute("SELECT note FROM checkpoints WHERE size = ?", (cp.size,)).fetchone()
            if row is None or parse_note(row[0]).text != note.text:
                raise ValueError(f"no checkpoint of size {cp.size} was signed by this board")
            if not cosignature_ok(note, cosigner):
                raise ValueError("the cosignature is not by the peer's pinned key")
            db.execute("UPDATE checkpoints SET cosigned = ? WHERE size = ?",
                       (note.render(), cp.size))  # fmt: skip
        return cp

    def cosigned(self, covering: int = 0) -> tuple[Checkpoint, Note] | None:
        """The newest of this board's checkpoints cosigned by the peer, of at least `covering`
        entries."""
        with self._lock:
            row = self._db.execute(
                "SELECT cosigned FROM checkpoints WHERE cosigned IS NOT NULL AND size >= ?"
                " ORDER BY size DESC LIMIT 1",
                (covering,),
            ).fetchone()
        if row is None:
            return None
        note = parse_note(row[0])
        return parse_checkpoint(note.text), note

    def checkpoints(self) -> list[tuple[int, Note, Note | None]]:
        """Every kept checkpoint of this board's log: (size, signed note, the same cosigned by
        the peer or None), newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT size, note, cosigned FROM checkpoints ORDER BY size DESC"
            ).fetchall()
        return [(int(s), parse_note(n), parse_note(c) if c else None) for s, n, c in rows]

    def ingested_rows(self) -> int:
        """The catalog row id up to which segments were taken in."""
        with self._lock:
            return self._cursor("segments")

    def prune_checkpoints(self, before_us: int) -> None:
        """Keep every cosigned checkpoint's newest per hour, and all since before_us."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM checkpoints WHERE signed_us < ? AND size NOT IN ("
                " SELECT MAX(size) FROM checkpoints WHERE cosigned IS NOT NULL"
                " GROUP BY signed_us / 3600000000)",
                (before_us,),
            )

    # --- the peer's log, as its witness ---------------------------------------------------------

    def held(self, origin: str | None = None) -> Held | None:
        with self._lock:
            if origin is None:
                row = self._db.execute(
                    "SELECT note FROM witnessed ORDER BY at_us DESC LIMIT 1"
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT note FROM witnessed WHERE origin = ?", (origin,)
                ).fetchone()
        if row is None:
            return None
        note = parse_note(row[0])
        return Held(parse_checkpoint(note.text), row[0])

    def hold(self, held: Held, now_us: int) -> None:
        with self._tx() as db:
            cp = held.checkpoint
            db.execute("INSERT OR REPLACE INTO witnessed VALUES (?, ?, ?, ?)",
                       (cp.origin, cp.size, held.note, now_us))  # fmt: skip

    def pinned(self) -> VerifierKey | None:
        """The peer's log key, as first seen over the pair's authenticated channel."""
        with self._lock:
            row = self._db.execute("SELECT note_vkey FROM pins LIMIT 1").fetchone()
        return parse_vkey(row[0]) if row else None

    def pin(self, key: VerifierKey) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM pins")
            db.execute("INSERT INTO pins VALUES (?, ?)", (key.name, key.vkey()))

    def bind_pair(self, fingerprint: str) -> bool:
        """The pair this board is in (its key's fingerprint). A new pair means a new peer,
        whose log is another: the old peer's pinned key and held checkpoint are forgotten
        (True), or the new peer would be refused as a changed key."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'pair'").fetchone()
        if row is not None and row[0] == fingerprint:
            return False
        with self._tx() as db:
            db.execute("DELETE FROM pins")
            db.execute("DELETE FROM witnessed")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('pair', ?)", (fingerprint,))
        return row is not None
