"""The board's transparency log and the peer's witness: what goes in, what a truncated or
rewritten log (even re-signed with the board's own key) meets at the peer, and the alerts."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.alert_ids import AlertId
from firmware.alerts import Alerts
from firmware.apiclient import evidence_line
from firmware.audit import AUDIT_FILE, AuditLog
from firmware.catalog import Catalog, Segment, segment_id
from firmware.evidence.log import LOG_DB, LOG_DIR, EvidenceLog, LogDamaged, segment_leaf
from firmware.evidence.merkle import MemoryNodes, MerkleTree
from firmware.evidence.service import CHECKPOINT_US, EvidenceService
from firmware.evidence.verifier import leaf_hash, parse_note, verify_cosignature
from firmware.evidence.witness import (
    Cosigned,
    Offer,
    Problem,
    Refused,
    Unchanged,
    cosign_key_of,
    judge,
)
from firmware.httpedge import serve
from firmware.mirror.client import MirrorClient
from firmware.mirror.server import MirrorServer
from firmware.timefmt import now_us
from hil.loopthread import LoopThread

KEY = b"k" * 32
T0 = 1_700_000_000_000_000


def add_segment(data: Path, cat: Catalog, camera: str, start_us: int, body: bytes) -> Segment:
    """A real file and its catalog row, as the recorder commits them."""
    run = cat.new_run(camera, "a", start_us, start_us)
    sid = segment_id(camera, start_us, "a")
    rel = f"segments/{camera}/{sid}.mp4"
    (data / rel).parent.mkdir(parents=True, exist_ok=True)
    (data / rel).write_bytes(body)
    seg = Segment(sid, camera, run, rel, start_us, start_us + 4_000_000, 0, 4_000_000, 100,
                  len(body), hashlib.sha256(body).hexdigest(), "a", "h264")  # fmt: skip
    cat.add_segment(seg)
    return seg


@dataclass
class Board:
    name: str
    data: Path
    catalog: Catalog
    audit: AuditLog
    log: EvidenceLog

    def reopen(self) -> None:
        self.log.close()
        self.log = EvidenceLog(self.data, self.name)


def board(root: Path, name: str) -> Board:
    data = root / name
    data.mkdir(parents=True)
    return Board(name, data, Catalog(data), AuditLog(data / AUDIT_FILE), EvidenceLog(data, name))


def test_segments_and_audit_lines_become_leaves_and_survive_a_restart(tmp_path: Path) -> None:
    b = board(tmp_path, "a")
    segs = [add_segment(b.data, b.catalog, "door", T0 + i * 4_000_000, bytes([i]) * 100)
            for i in range(3)]  # fmt: skip
    b.audit.append(T0, "role", role="active")
    got = b.log.ingest(b.catalog)
    assert got.leaves == 4 and not got.audit_shrank
    assert [b.log.leaf(i) for i in range(3)] == [segment_leaf(s) for s in segs]
    assert b"role" in b.log.leaf(3)
    ref = MerkleTree(MemoryNodes())
    ref.append([leaf_hash(d) for _, d in b.log.iter_leaves()])
    assert b.log.tree.root() == ref.root()
    assert b.log.ingest(b.catalog).leaves == 0  # nothing new, nothing twice
    root = b.log.tree.root()
    b.reopen()
    assert b.log.tree.size() == 4 and b.log.tree.root() == root


def test_a_power_cut_between_leaves_and_tree_is_caught_up_on_open(tmp_path: Path) -> None:
    b = board(tmp_path, "a")
    b.audit.append(T0, "one")
    b.log.ingest(b.catalog)
    b.log.close()
    db = sqlite3.connect(b.data / LOG_DIR / LOG_DB)
    db.execute("INSERT INTO leaves VALUES (1, ?)", (b'{"kind":"audit","line":"x"}',))
    db.commit()
    db.close()
    b.log = EvidenceLog(b.data, "a")
    assert b.log.tree.size() == 2


def test_a_tree_larger_than_its_leaves_is_damage(tmp_path: Path) -> None:
    b = board(tmp_path, "a")
    b.audit.append(T0, "one")
    b.audit.append(T0, "two")
    b.log.ingest(b.catalog)
    b.log.close()
    db = sqlite3.connect(b.data / LOG_DIR / LOG_DB)
    db.execute("DELETE FROM leaves WHERE idx = 1")
    db.commit()
    db.close()
    with pytest.raises(LogDamaged, match="2 entries but only 1"):
        EvidenceLog(b.data, "a")


def test_a_cut_audit_log_raises_the_damage_alert(tmp_path: Path) -> None:
    b = board(tmp_path, "a")
    for i in range(3):
        b.audit.append(T0, "event", n=i)
    alerts = Alerts()
    svc = EvidenceService(b.log, b.catalog, alerts, lambda what, e: None)
    svc.step()
    assert alerts.get(AlertId.EVIDENCE_LOG_DAMAGED) is None
    path = b.data / AUDIT_FILE
    path.write_bytes(path.read_bytes().split(b"\n", 1)[0] + b"\n")
    svc.step()
    a = alerts.get(AlertId.EVIDENCE_LOG_DAMAGED)
    assert a is not None and a.severity == "critical" and "audit.log" in a.text


def test_a_data_directory_gone_with_its_disk_is_no_cut_audit_log(tmp_path: Path) -> None:
    """A pulled data disk leaves an empty mount point where the data directory was: the log
    is behind (a warning, taken in when the disk is back), not damaged; the same file
    missing from the directory the log was opened in is damage."""
    b = board(tmp_path, "a")
    b.audit.append(T0, "event")
    alerts = Alerts()
    svc = EvidenceService(b.log, b.catalog, alerts, lambda what, e: None)
    svc.step()
    b.data.rename(tmp_path / "pulled")
    b.data.mkdir()  # the empty mount point
    svc.step()
    assert alerts.get(AlertId.EVIDENCE_LOG_DAMAGED) is None
    behind = alerts.get(AlertId.EVIDENCE_LOG_BEHIND)
    assert behind is not None and "disk is gone" in behind.text
    b.data.rmdir()
    (tmp_path / "pulled").rename(b.data)  # the disk is back
    svc.step()
    assert alerts.get(AlertId.EVIDENCE_LOG_BEHIND) is None
    assert alerts.get(AlertId.EVIDENCE_LOG_DAMAGED) is None
    (b.data / AUDIT_FILE).unlink()
    svc.step()
    damaged = alerts.get(AlertId.EVIDENCE_LOG_DAMAGED)
    assert damaged is not None and "audit.log" in damaged.text


# --- the witness, sans-IO ------------------------------------------------------------------------


def offer_of(b: Board, from_size: int) -> Offer:
    b.log.sign(now_us(), 0)
    offer = b.log.offer(from_size)
    assert offer is not None
    return offer


def test_the_witness_cosigns_growth_and_refuses_truncation_and_a_rewrite(tmp_path: Path) -> None:
    a, w = board(tmp_path, "a"), board(tmp_path, "b")
    for i in range(5):
        a.audit.append(T0 + i, "event", n=i)
    a.log.ingest(a.catalog)
    first = judge(offer_of(a, 0), None, None, w.log.signer, 100)
    assert isinstance(first, Cosigned) and first.pin == a.log.signer.note_key
    held, pinned = first.held, first.pin
    note = parse_note(held.note)
    assert verify_cosignature(note, cosign_key_of(pinned)) is None  # the peer's key: not a's
    assert verify_cosignature(note, w.log.signer.cosign_key) == 100

    a.audit.append(T0 + 9, "event", n=9)
    a.log.ingest(a.catalog)
    grown = judge(offer_of(a, held.checkpoint.size), held, pinned, w.log.signer, 101)
    assert isinstance(grown, Cosigned) and grown.pin is None
    held = grown.held
    assert isinstance(judge(offer_of(a, held.checkpoint.size), held, pinned, w.log.signer, 102),
                      Unchanged)  # fmt: skip

    # Truncated: the same key, the log of the first three entries only.
    data = tmp_path / "a-cut"
    (data / LOG_DIR).mkdir(parents=True, mode=0o700)
    shutil.copy(a.data / LOG_DIR / "board.key", data / LOG_DIR / "board.key")
    cut = Board("a", data, Catalog(data), AuditLog(data / AUDIT_FILE), EvidenceLog(data, "a"))
    for i in range(3):
        cut.audit.append(T0 + i, "event", n=i)
    cut.log.ingest(cut.catalog)
    v = judge(offer_of(cut, held.checkpoint.size), held, pinned, w.log.signer, 103)
    assert isinstance(v, Refused) and v.problem is Problem.SHRANK

    # Rewritten and re-signed with a's own key, then grown past what the witness holds.
    for i in range(10):
        cut.audit.append(T0 + i, "forged", n=i)
    cut.log.ingest(cut.catalog)
    assert cut.log.origin == a.log.origin  # the same key: the same log name
    v = judge(offer_of(cut, held.checkpoint.size), held, pinned, w.log.signer, 104)
    assert isinstance(v, Refused) and v.problem is Problem.FORKED

    other = board(tmp_path, "x")
    other.log.ingest(other.catalog)
    v = judge(offer_of(other, 0), held, pinned, w.log.signer, 105)
    assert isinstance(v, Refused) and v.problem is Problem.KEY_CHANGED


@pytest.mark.parametrize(
    "mangle",
    [
        lambda o: Offer("garbage", o.proof, o.vkey),
        lambda o: Offer(o.note, o.proof, "nobody+00000000+AQ=="),
        lambda o: Offer(o.note.replace("\n\n", "\nextra\n\n", 1), o.proof, o.vkey),
    ],
    ids=["note", "vkey", "changed-text"],
)
def test_a_malformed_or_unsigned_offer_is_refused_and_nothing_is_held(tmp_path, mangle) -> None:
    a, w = board(tmp_path, "a"), board(tmp_path, "b")
    a.audit.append(T0, "event")
    a.log.ingest(a.catalog)
    v = judge(mangle(offer_of(a, 0)), None, None, w.log.signer, 100)
    assert isinstance(v, Refused)
    assert v.problem in (Problem.MALFORMED, Problem.BAD_SIGNATURE)


# --- two boards over the mirror's channel --------------------------------------------------------


@dataclass
class Node:
    b: Board
    alerts: Alerts
    svc: EvidenceService
    server: MirrorServer


@contextmanager
def two_boards(root: Path) -> Iterator[tuple[Node, Node]]:
    with LoopThread() as loop:
        nodes = []
        for name in ("a", "b"):
            b = board(root, name)
            alerts = Alerts()
            svc = EvidenceService(b.log, b.catalog, alerts, lambda what, e: None, key=KEY,
                                  clock=CLOCK.now_us)  # fmt: skip
            server = MirrorServer(KEY, name, Catalog(b.data), b.data, lambda: {})
            server.routes += svc.routes()
            nodes.append(Node(b, alerts, svc, server))
        served = [loop.run(serve(n.server.app(), "127.0.0.1", 0, "mirror")) for n in nodes]
        for n, s in zip(nodes[::-1], served, strict=True):  # each asks the other's server
            client = MirrorClient(board=n.b.name, key=KEY, data_dir=n.b.data,
                                  catalog=n.b.catalog, peer={"lan": "127.0.0.1"}, port=s.port,
                                  order="oldest", concurrency=1, path_usable=lambda p: True,
                                  now_us=now_us)  # fmt: skip
            n.svc.request = client.request
        try:
            yield nodes[0], nodes[1]
        finally:
            for s in served:
                loop.run(s.close())


class Clock:
    """The boards' wall clock in these tests: a round is a checkpoint period later."""

    def __init__(self) -> None:
        self.t = now_us()

    def now_us(self) -> int:
        return self.t


CLOCK = Clock()


def rounds(*nodes: Node, n: int = 2) -> None:
    for _ in range(n):
        CLOCK.t += CHECKPOINT_US
        for x in nodes:
            x.svc.step()
        for x in nodes:
            x.svc.witness()


def test_each_board_holds_the_other_s_checkpoint_and_its_own_cosigned(tmp_path: Path) -> None:
    with two_boards(tmp_path) as (a, b):
        add_segment(a.b.data, a.b.catalog, "door", T0, b"frames")
        a.b.audit.append(T0, "role", role="active")
        rounds(a, b)
        for x, peer in ((a, b), (b, a)):
            assert x.svc.last_error is None
            mine = x.b.log.cosigned()
            assert mine is not None and mine[0].size == x.b.log.tree.size()
            assert verify_cosignature(mine[1], peer.b.log.signer.cosign_key) is not None
            held = x.b.log.held()
            assert held is not None and held.checkpoint.origin == peer.b.log.origin
            st = x.svc.status()
            assert st["peer_key"] == peer.svc.status()["key"]
            line = evidence_line(st)
            assert f"cosigned by the peer up to {mine[0].size}" in line and st["peer_key"] in line
        assert not a.alerts.active() and not b.alerts.active()


def test_a_rewritten_log_re_signed_with_the_board_s_key_alerts_both_boards(tmp_path) -> None:
    with two_boards(tmp_path) as (a, b):
        for i in range(4):
            a.b.audit.append(T0 + i, "event", n=i)
        rounds(a, b)
        held = b.b.log.held()
        assert held is not None and held.checkpoint.size == 4
        # Someone with the data disk rewrites a's log and audit.log and re-signs with a's key.
        evdir = a.b.data / LOG_DIR
        for f in evdir.iterdir():
            if f.name != "board.key":
                f.unlink()
        (a.b.data / AUDIT_FILE).write_text("")
        a.b.log.close()
        a.b.log = a.svc.log = EvidenceLog(a.b.data, "a")
        for i in range(6):
            a.b.audit.append(T0 + i, "innocent", n=i)
        rounds(a, b)
        changed = b.alerts.get(AlertId.EVIDENCE_PEER_LOG_CHANGED)
        refused = a.alerts.get(AlertId.EVIDENCE_LOG_REFUSED)
        assert changed is not None and changed.severity == "critical"
        assert refused is not None and refused.severity == "critical"
        assert "does not contain the 4 entries" in changed.text
        held_after = b.b.log.held()
        assert held_after is not None and held_after.note == held.note  # b keeps the evidence


def test_a_full_disk_holds_the_log_back_and_it_catches_up_losing_nothing(tmp_path) -> None:
    """A real small filesystem filled up: the log says it is behind, then takes everything
    in once there is room (the cursors move only with the leaves)."""
    from conftest import mounted_tmpfs

    with mounted_tmpfs(tmp_path / "disk", "4m") as disk:
        b = board(disk, "a")
        alerts = Alerts()
        svc = EvidenceService(b.log, b.catalog, alerts, lambda what, e: None)
        b.audit.append(T0, "before")
        svc.step()
        for i in range(40):
            add_segment(b.data, b.catalog, "door", T0 + i * 4_000_000, b"x" * 100)
        filler = disk / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        svc.step()
        behind = alerts.get(AlertId.EVIDENCE_LOG_BEHIND)
        assert behind is not None and "cannot write" in behind.text
        filler.unlink()
        svc.step()
        assert alerts.get(AlertId.EVIDENCE_LOG_BEHIND) is None
        assert b.log.tree.size() == 41  # the audit line and every segment, once
        assert kinds_of(b) == []
        b.log.close()


def kinds_of(b: Board) -> list:
    from firmware.evidence.check import check_log
    from firmware.recorder.segment_file import sha256_file

    return [f.kind for f in check_log(b.data, b.catalog, b.log, sha256_file).findings]


def test_pairing_anew_forgets_the_old_peer_s_key_but_a_restart_does_not(tmp_path) -> None:
    """A new pair (another pair key) has another peer: its log is not a changed key."""
    w, old, new = board(tmp_path, "b"), board(tmp_path, "a"), board(tmp_path, "c")
    for x in (old, new):
        x.audit.append(T0, "event")
        x.log.ingest(x.catalog)
    assert w.log.bind_pair("f" * 64) is False  # the first pair: nothing to forget
    first = judge(offer_of(old, 0), None, None, w.log.signer, 100)
    assert isinstance(first, Cosigned) and first.pin is not None
    w.log.pin(first.pin)
    w.log.hold(first.held, T0)
    assert w.log.bind_pair("f" * 64) is False  # a restart in the same pair keeps them
    assert w.log.pinned() == first.pin and w.log.held() is not None
    assert w.log.bind_pair("e" * 64) is True
    assert w.log.pinned() is None and w.log.held() is None
    v = judge(offer_of(new, 0), w.log.held(), w.log.pinned(), w.log.signer, 101)
    assert isinstance(v, Cosigned)
