"""`nvr verify`'s check of the evidence log: every leaf against the files, the catalog and
audit.log, the tree against its leaves, and the checkpoints' signatures and cosignatures.

Each finding says what it means (a missing segment, a changed byte, a cut log), so a person
reading `nvr verify` knows what was done to the footage, not only that a hash differs."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from firmware.audit import AUDIT_FILE
from firmware.catalog import Catalog, Segment
from firmware.evidence.log import EvidenceLog
from firmware.evidence.verifier import (
    EMPTY_ROOT,
    Note,
    leaf_hash,
    node_hash,
    parse_checkpoint,
    verify_cosignature,
    verify_note_signature,
)
from firmware.evidence.witness import cosign_key_of

DELETIONS = frozenset({"retention-deleted", "spare-copies-deleted"})
"""Audit events that delete footage on purpose; `segments-lost` records a loss instead."""


class Break(StrEnum):
    SEGMENT_CHANGED = "segment-changed"
    SEGMENT_DELETED = "segment-deleted"
    SEGMENT_LOST = "segment-lost"
    ROW_CHANGED = "row-changed"
    ROW_NOT_IN_LOG = "row-not-in-log"
    AUDIT_CHANGED = "audit-changed"
    AUDIT_CUT = "audit-cut"
    TREE_CHANGED = "tree-changed"
    LOG_CUT = "log-cut"
    CHECKPOINT_UNSIGNED = "checkpoint-unsigned"
    HISTORY_CHANGED = "history-changed"
    NOT_WITNESSED = "not-witnessed"
    NOT_YET_LOGGED = "not-yet-logged"


NOTICE = frozenset({Break.SEGMENT_LOST, Break.NOT_WITNESSED, Break.NOT_YET_LOGGED})
"""Findings that are said but are no evidence of tampering."""


@dataclass(frozen=True)
class Finding:
    kind: Break
    text: str


@dataclass(frozen=True)
class LogReport:
    leaves: int
    segments: int
    audit_lines: int
    signed: int | None
    cosigned: int | None
    findings: tuple[Finding, ...]

    @property
    def broken(self) -> bool:
        return any(f.kind not in NOTICE for f in self.findings)


def roots_at(hashes: Iterable[bytes], sizes: set[int]) -> dict[int, bytes]:
    """RFC 6962 roots of the first n leaves for every n in sizes, in one pass and O(log n)
    memory (the perfect subtrees of the tree so far, merged as they complete)."""
    out: dict[int, bytes] = {0: EMPTY_ROOT} if 0 in sizes else {}
    stack: list[tuple[int, bytes]] = []  # (height, hash)
    for n, h in enumerate(hashes, 1):
        height = 0
        while stack and stack[-1][0] == height:
            h = node_hash(stack.pop()[1], h)
            height += 1
        stack.append((height, h))
        if n in sizes:
            root = stack[-1][1]
            for _, left in reversed(stack[:-1]):
                root = node_hash(left, root)
            out[n] = root
    return out


def _audit_lines(data_dir: Path) -> Iterator[bytes]:
    try:
        with open(data_dir / AUDIT_FILE, "rb") as f:
            for line in f:
                yield line.rstrip(b"\n")
    except FileNotFoundError:
        return


def _deletion(line: str | bytes) -> tuple[str | None, list[str]]:
    """An audit line's event name and the segment ids it names ((None, []) if not JSON)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None, []
    if not isinstance(event, dict):
        return None, []
    return event.get("event"), list(event.get("segments") or [])


def _segment_text(d: dict) -> str:
    return f"segment {d.get('id')} ({d.get('camera')}, {d.get('path')})"


def check_log(data_dir: Path, catalog: Catalog, evlog: EvidenceLog,
              file_sha256: Callable[[Path], str]) -> LogReport:  # fmt: skip
    """Everything `nvr verify` says of the log, the first break first."""
    found: list[Finding] = []
    # The cursor before the leaves: a running firmware may ingest between the reads, and a
    # cursor read after them would claim rows whose leaves this pass never saw.
    cursor = evlog.ingested_rows()
    size = evlog.tree.size()
    checkpoints = evlog.checkpoints()
    wanted = {size} | {cp_size for cp_size, _, _ in checkpoints}
    leaf_hashes: list[bytes] = []
    segs: dict[str, dict] = {}
    deleted: dict[str, str] = {}
    audit = _audit_lines(data_dir)
    n_audit = n_leaves = 0
    cut = False
    for _, data in evlog.iter_leaves():
        n_leaves += 1
        leaf_hashes.append(leaf_hash(data))
        d = json.loads(data)
        if d.get("kind") == "segment":
            segs[d["id"]] = d
            continue
        line = d.get("line", "")
        n_audit += 1
        disk = next(audit, None)
        if disk is None:
            if not cut:
                found.append(Finding(Break.AUDIT_CUT, f"audit.log ends at line {n_audit - 1}; "
                                     "the log holds more: audit events were removed"))  # fmt: skip
            cut = True
        elif disk.decode("utf-8", "replace") != line:
            found.append(Finding(Break.AUDIT_CHANGED, f"audit.log line {n_audit} differs from "
                                 "the log's record of it: the event was rewritten"))  # fmt: skip
        name, ids = _deletion(line)
        if name in DELETIONS or name == "segments-lost":
            deleted.update(dict.fromkeys(ids, name))
    roots = roots_at(leaf_hashes, wanted)
    del leaf_hashes
    if n_leaves < size:
        found.append(Finding(Break.LOG_CUT, f"the tree holds {size} entries, {n_leaves} leaves"))
    elif roots.get(size) != evlog.tree.root(size):
        found.append(Finding(Break.TREE_CHANGED, "the log's leaves do not hash to its tree: "
                             "entries were changed"))  # fmt: skip
    found += _check_checkpoints(evlog, checkpoints, roots, n_leaves)

    @functools.cache
    def deleted_since() -> frozenset[str]:
        """Deletions audit.log holds past the log's leaves: a running firmware's, still to be
        taken in (the event is written before the rows go, so it is there once they are gone)."""
        return frozenset(sid for raw in audit for name, ids in [_deletion(raw)]
                         if name in DELETIONS for sid in ids)  # fmt: skip

    found += _check_segments(data_dir, catalog, cursor, segs, deleted, deleted_since,
                             file_sha256)  # fmt: skip
    latest = checkpoints[0][0] if checkpoints else None
    cosigned = next((s for s, _, c in checkpoints if c is not None), None)
    return LogReport(n_leaves, len(segs), n_audit, latest, cosigned, tuple(found))


def _check_checkpoints(evlog: EvidenceLog, checkpoints: list[tuple[int, Note, Note | None]],
                       roots: dict[int, bytes], n_leaves: int) -> list[Finding]:  # fmt: skip
    found: list[Finding] = []
    peer = evlog.pinned()
    for size, note, cosigned in checkpoints:
        cp = parse_checkpoint(note.text)
        if not verify_note_signature(note, evlog.signer.note_key):
            found.append(Finding(Break.CHECKPOINT_UNSIGNED, f"checkpoint of {size} entries is "
                                 "not signed by this board's key"))  # fmt: skip
        if size > n_leaves:
            found.append(Finding(Break.LOG_CUT, f"this board signed {size} entries, only "
                                 f"{n_leaves} remain: the log was cut"))  # fmt: skip
        elif roots.get(size) != cp.root:
            kind = Break.HISTORY_CHANGED if cosigned is not None else Break.TREE_CHANGED
            peer_said = " (the peer cosigned the original)" if cosigned else ""
            found.append(Finding(kind, f"the first {size} entries no longer hash to the "
                                 "checkpoint signed for them: the log was "
                                 f"rewritten{peer_said}"))  # fmt: skip
        if (
            cosigned is not None
            and peer is not None
            and (
                cosigned.text != note.text
                or verify_cosignature(cosigned, cosign_key_of(peer)) is None
            )
        ):
            found.append(Finding(Break.HISTORY_CHANGED, f"checkpoint of {size} entries: the "
                                 "peer's cosignature does not hold"))  # fmt: skip
    if peer is not None and not any(c is not None for _, _, c in checkpoints):
        found.append(Finding(Break.NOT_WITNESSED, "no checkpoint is cosigned by the peer yet"))
    return found


def _check_segments(data_dir: Path, catalog: Catalog, cursor: int,
                    segs: dict[str, dict], deleted: dict[str, str],
                    deleted_since: Callable[[], frozenset[str]],
                    file_sha256: Callable[[Path], str]) -> list[Finding]:  # fmt: skip
    found: list[Finding] = []
    going = 0
    numbered = catalog.segments_since(0, 1 << 62)  # every row, read once, with its row id
    rows: dict[str, Segment] = {s.id: s for _, s in numbered}
    for sid, d in segs.items():
        row = rows.get(sid)
        what = _segment_text(d)
        if row is None:
            why = deleted.get(sid)
            if why == "segments-lost":
                found.append(Finding(Break.SEGMENT_LOST, f"{what}: lost (its file was gone "
                                     "when the firmware started; recorded as lost)"))  # fmt: skip
            elif why is None and sid in deleted_since():
                going += 1
            elif why is None:
                found.append(Finding(Break.SEGMENT_DELETED, f"{what}: in the log, but its row "
                                     "and file are gone and no deletion was recorded"))  # fmt: skip
            continue
        if (row.sha256, row.bytes, row.start_us, row.end_us) != (
            d["sha256"],
            d["bytes"],
            d["start_us"],
            d["end_us"],
        ):
            found.append(Finding(Break.ROW_CHANGED, f"{what}: the catalog row differs from "
                                 "what was committed (hash, size or times)"))  # fmt: skip
        try:
            digest = file_sha256(data_dir / row.path)
        except FileNotFoundError:
            if sid in deleted_since():
                going += 1
            elif sid not in deleted:
                found.append(Finding(Break.SEGMENT_DELETED, f"{what}: the file is gone"))
            continue
        if digest != d["sha256"]:
            found.append(Finding(Break.SEGMENT_CHANGED, f"{what}: the file was changed after "
                                 "it was recorded"))  # fmt: skip
    later = 0
    for rowid, seg in numbered:
        if rowid > cursor:
            later += 1
            continue
        if seg.id not in segs:
            found.append(Finding(Break.ROW_NOT_IN_LOG, f"segment {seg.id} ({seg.camera}, "
                                 f"{seg.path}): in the catalog but not in the log: added "
                                 "behind the firmware's back"))  # fmt: skip
    if later:
        found.append(Finding(Break.NOT_YET_LOGGED, f"{later} segments were committed after the "
                             "log's last ingest (taken in within a second by the running "
                             "firmware, or at its next start)"))  # fmt: skip
    if going:
        found.append(Finding(Break.NOT_YET_LOGGED, f"{going} segments were deleted after the "
                             "log's last ingest; audit.log holds their deletion"))  # fmt: skip
    return found
