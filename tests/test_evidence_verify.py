"""`nvr verify` on the evidence log: what a flipped byte, a segment deleted with its row, a cut
log or audit.log, a rewritten log and a catalog row made to match a changed file each show,
and that deletions the firmware recorded are no break."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path

from conftest import NVR
from test_evidence_log import T0, Board, add_segment, board, rounds, two_boards

from firmware.audit import AUDIT_FILE, append_event
from firmware.evidence.check import Break, check_log
from firmware.evidence.log import LOG_DB, LOG_DIR, TREE_DB, EvidenceLog
from firmware.recorder.segment_file import sha256_file


def recorded(tmp_path: Path, n: int = 3) -> Board:
    b = board(tmp_path, "a")
    for i in range(n):
        add_segment(b.data, b.catalog, "door", T0 + i * 4_000_000, bytes([65 + i]) * 1000)
        b.audit.append(T0 + i, "role", role="active", n=i)
    b.log.ingest(b.catalog)
    b.log.sign(T0, 0)
    return b


def kinds(b: Board) -> list[Break]:
    return [f.kind for f in check_log(b.data, b.catalog, b.log, sha256_file).findings]


def verify(b: Board) -> subprocess.CompletedProcess:
    b.log.close()
    done = subprocess.run([*NVR, "verify", "--data", str(b.data)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    b.log = EvidenceLog(b.data, "a")
    return done


def test_an_intact_log_verifies(tmp_path: Path) -> None:
    b = recorded(tmp_path)
    assert kinds(b) == []
    done = verify(b)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "evidence log: 6 entries (3 segments, 3 audit events)" in done.stdout
    assert "evidence log: intact" in done.stdout


def test_a_flipped_byte_is_a_changed_segment(tmp_path: Path) -> None:
    b = recorded(tmp_path)
    seg = b.catalog.segments()[1]
    path = b.data / seg.path
    body = bytearray(path.read_bytes())
    body[500] ^= 0x01
    path.write_bytes(bytes(body))
    assert kinds(b) == [Break.SEGMENT_CHANGED]
    done = verify(b)
    assert done.returncode == 1
    assert f"segment {seg.id}" in done.stdout and "changed after it was recorded" in done.stdout


def test_a_changed_file_with_its_row_made_to_match_is_still_caught(tmp_path: Path) -> None:
    b = recorded(tmp_path)
    seg = b.catalog.segments()[0]
    (b.data / seg.path).write_bytes(b"forged" * 100)
    db = sqlite3.connect(b.data / "catalog.sqlite")
    db.execute("UPDATE segments SET sha256 = ?, bytes = ? WHERE id = ?",
               (sha256_file(b.data / seg.path), 600, seg.id))  # fmt: skip
    db.commit()
    db.close()
    assert sorted(kinds(b)) == sorted([Break.ROW_CHANGED, Break.SEGMENT_CHANGED])


def test_a_segment_deleted_with_its_row_is_caught_unless_the_firmware_deleted_it(
    tmp_path: Path,
) -> None:
    b = recorded(tmp_path)
    gone, kept = b.catalog.segments()[0], b.catalog.segments()[1]
    for seg in (gone, kept):
        b.catalog.delete_segment_rows([seg.id])
        (b.data / seg.path).unlink()
    append_event(b.data, T0 + 10, "retention-deleted", why="age", segments=[kept.id])
    b.log.ingest(b.catalog)
    found = check_log(b.data, b.catalog, b.log, sha256_file).findings
    assert [f.kind for f in found] == [Break.SEGMENT_DELETED]
    assert gone.id in found[0].text and "no deletion was recorded" in found[0].text


def test_a_cut_audit_log_and_a_cut_evidence_log_are_caught(tmp_path: Path) -> None:
    b = recorded(tmp_path)
    audit = b.data / AUDIT_FILE
    audit.write_bytes(b"".join(audit.read_bytes().splitlines(keepends=True)[:1]))
    assert kinds(b) == [Break.AUDIT_CUT]

    c = recorded(tmp_path / "c")
    c.log.close()
    db = sqlite3.connect(c.data / LOG_DIR / LOG_DB)
    db.execute("DELETE FROM leaves WHERE idx >= 4")  # the log cut to four entries...
    db.commit()
    db.close()
    (c.data / LOG_DIR / TREE_DB).unlink()  # ...and its tree built again from them
    c.log = EvidenceLog(c.data, "a")
    assert c.log.tree.size() == 4
    assert Break.LOG_CUT in kinds(c)  # the checkpoint this board signed says six


def test_a_rewritten_log_contradicts_what_the_peer_cosigned(tmp_path: Path) -> None:
    with two_boards(tmp_path) as (a, b):
        for i in range(4):
            a.b.audit.append(T0 + i, "event", n=i)
        rounds(a, b)
        assert kinds(a.b) == []
        # Rewrite the leaves (same count) and the tree, re-sign with the board's own key.
        a.b.log.close()
        db = sqlite3.connect(a.b.data / LOG_DIR / LOG_DB)
        db.execute("UPDATE leaves SET data = ? WHERE idx = 1", (b'{"kind":"audit","line":"x"}',))
        db.commit()
        db.close()
        (a.b.data / LOG_DIR / TREE_DB).unlink()
        a.b.log = EvidenceLog(a.b.data, "a")
        a.b.log.sign(T0 + 100, 0)
        found = kinds(a.b)
        assert Break.HISTORY_CHANGED in found and Break.AUDIT_CHANGED in found


def test_retention_records_what_it_deletes_and_the_log_stays_intact(tmp_path: Path) -> None:
    from firmware.config import RecorderConfig
    from firmware.recorder.retention import Retention

    b = recorded(tmp_path)
    ids = [s.id for s in b.catalog.segments()]
    deleted, _ = Retention(b.data, RecorderConfig(retention_days=1), b.catalog).run(
        T0 + 2 * 86_400_000_000
    )
    assert deleted == 3 and b.catalog.segments() == []
    b.log.ingest(b.catalog)
    events = [e for e in (b.data / AUDIT_FILE).read_text().splitlines() if "retention" in e]
    assert len(events) == 1 and all(i in events[0] for i in ids)
    assert kinds(b) == []


def _ingest_after_the_leaves(b: Board, then) -> None:
    """The running firmware's next step lands while verify is between its reads."""
    leaves = b.log.iter_leaves

    def iter_then_write(start: int = 0):
        yield from leaves(start)
        then()

    b.log.iter_leaves = iter_then_write  # type: ignore[method-assign]


def test_rows_taken_in_during_a_pass_are_not_yet_logged_not_added_behind_its_back(
    tmp_path: Path,
) -> None:
    b = recorded(tmp_path)
    for i in range(4):  # a segment boundary: every camera commits at once
        add_segment(b.data, b.catalog, f"cam{i}", T0 + 20_000_000, bytes([70 + i]) * 500)
    _ingest_after_the_leaves(b, lambda: b.log.ingest(b.catalog))
    found = check_log(b.data, b.catalog, b.log, sha256_file).findings
    assert [f.kind for f in found] == [Break.NOT_YET_LOGGED]
    assert found[0].text.startswith("4 segments were committed after")
    assert kinds(b) == []  # the next pass sees them in the log


def test_a_deletion_during_a_pass_is_not_yet_logged_when_audit_log_holds_it(
    tmp_path: Path,
) -> None:
    from firmware.config import RecorderConfig
    from firmware.recorder.retention import Retention

    b = recorded(tmp_path)
    retention = Retention(b.data, RecorderConfig(retention_days=1), b.catalog)
    _ingest_after_the_leaves(b, lambda: retention.run(T0 + 2 * 86_400_000_000))
    found = check_log(b.data, b.catalog, b.log, sha256_file).findings
    assert [f.kind for f in found] == [Break.NOT_YET_LOGGED]
    assert found[0].text.startswith("3 segments were deleted after")
    b.log.ingest(b.catalog)
    assert kinds(b) == []


def audit_log_at_each_row_deletion(b: Board) -> list[str]:
    """audit.log's text as it was each time catalog rows were about to be deleted."""
    seen: list[str] = []
    delete_rows = b.catalog.delete_segment_rows

    def watched(ids: list[str]) -> list[str]:
        seen.append((b.data / AUDIT_FILE).read_text())
        return delete_rows(ids)

    b.catalog.delete_segment_rows = watched  # type: ignore[method-assign]
    return seen


def test_retention_writes_the_audit_event_before_the_rows_go(tmp_path: Path) -> None:
    """A crash between the two then leaves rows to delete again, never a deletion unsaid."""
    from firmware.config import RecorderConfig
    from firmware.recorder.retention import Retention

    b = recorded(tmp_path)
    seen = audit_log_at_each_row_deletion(b)
    ids = [s.id for s in b.catalog.segments()]
    Retention(b.data, RecorderConfig(retention_days=1), b.catalog).run(T0 + 2 * 86_400_000_000)
    assert len(seen) == 1 and "retention-deleted" in seen[0] and ids[0] in seen[0]


def test_the_mirrors_pruning_writes_the_audit_event_before_the_rows_go(tmp_path: Path) -> None:
    """A takeover run that went on past the run it took over from: the old run's segments after
    the takeover point are spare copies; their deletion is on disk before they go."""
    from firmware.catalog import Segment, segment_id
    from firmware.mirror.service import prune_superseded
    from firmware.recorder.segment_file import relative_path

    b = board(tmp_path, "a")
    s = 4_000_000

    def seg(run: int, origin: str, i: int) -> Segment:
        start = T0 + i * s
        sid = segment_id("door", start, origin)
        rel = relative_path("door", start, sid)
        (b.data / rel).parent.mkdir(parents=True, exist_ok=True)
        body = f"{origin}{i}".encode() * 100
        (b.data / rel).write_bytes(body)
        out = Segment(sid, "door", run, rel, start, start + s, 0, s, 100, len(body),
                      hashlib.sha256(body).hexdigest(), origin, "h264")  # fmt: skip
        b.catalog.add_segment(out)
        return out

    old = b.catalog.new_run("door", "b", T0, T0)
    old_segs = [seg(old, "b", i) for i in range(3)]
    b.catalog.end_run(old, "power-cut")
    took = b.catalog.new_run("door", "a", T0 + s, T0 + s, continues=old_segs[0].id)
    for i in range(1, 4):
        seg(took, "a", i)
    seen = audit_log_at_each_row_deletion(b)
    gone = prune_superseded(b.catalog)
    assert gone == sorted(x.id for x in old_segs[1:])
    assert len(seen) == 1 and "spare-copies-deleted" in seen[0]
    assert all(x in seen[0] for x in gone)
    b.log.ingest(b.catalog)
    assert kinds(b) == []
