"""The pair settings' adapter (firmware/pairsync.py): two boards' PairSync, each with its own
config file, data directory and a real mirror server on loopback (the pair key's
authentication), replicate an edit; a hostile peer (hil/hostile_peer.py) with the key sends
documents that do not validate, are oversized, older, or lie about their hash, and one
without the key: each is refused naming the problem, and the board's config stays as it was."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.alert_ids import AlertId
from firmware.alerts import Alerts
from firmware.audit import AuditLog
from firmware.catalog import Catalog
from firmware.config import load_config, parse_config
from firmware.httpedge import serve
from firmware.mirror.client import MirrorClient
from firmware.mirror.server import MirrorServer
from firmware.pairsettings import Camera, PairSettings
from firmware.pairsync import (
    ADOPT_FILE,
    DOC_PATH,
    HEAD_PATH,
    MAX_DOC_BYTES,
    PairSync,
    adopt_on_join,
    content_hash,
    merge,
    seal,
    settings_of,
    unseal,
)
from firmware.timefmt import now_us
from hil.hostile_peer import HostilePeer, HugeFeed
from hil.loopthread import LoopThread

KEY = bytes(range(32))
PASSWORD = "s3cret-Pw"
TOKEN = "T" * 43

BASE = """\
# board {name}: the installer's notes stay
[board]
name = "{name}"            # this board
data_dir = "{data}"

[pair]
peer_lan_address = "192.0.2.{peer_host}"
peer_sync_address = "198.51.100.{peer_host}"
virtual_ip = "192.0.2.100/24"
priority = {priority}
key_file = "{data}/pair.key"

[recorder]
segment_seconds = 2.0
workers = 1
retention_days = 30

[api]
listen_port = 0

# the door camera
[[camera]]
name = "door"   # front door
url = "rtsp://192.0.2.31:8554/door"
"""


def write_config(root: Path, name: str) -> Path:
    data = root / name / "data"
    data.mkdir(parents=True)
    path = root / name / "nvr.toml"
    path.write_text(BASE.format(name=name, data=data, peer_host=12 if name == "a" else 11,
                                priority=150 if name == "a" else 100))  # fmt: skip
    return path


@dataclass
class Node:
    name: str
    path: Path
    sync: PairSync
    alerts: Alerts
    server: MirrorServer
    port: int = 0

    def reload(self) -> None:
        """What Board.reload does after the config watch saw the file change."""
        self.sync.local(load_config(self.path))

    def audit(self) -> list[dict]:
        log = self.path.parent / "data" / "audit.log"
        return [json.loads(line) for line in log.read_text().splitlines()]


def make_node(root: Path, name: str, peer_port: int | None = None, key: bytes = KEY,
              before: Callable[[Path], None] = lambda path: None) -> Node:  # fmt: skip
    """`before(config path)`: what happens to the board before its firmware starts."""
    path = write_config(root, name)
    before(path)
    cfg = load_config(path)
    data = cfg.board.data_dir
    alerts = Alerts()
    client = MirrorClient(board=name, key=key, data_dir=data, catalog=Catalog(data),
                          peer={"lan": "127.0.0.1"}, port=peer_port or 1, order="oldest",
                          concurrency=1, path_usable=lambda p: True, now_us=now_us)  # fmt: skip
    sync = PairSync(board=name, key=key, config_path=path, cfg=cfg, token=None, alerts=alerts,
                    audit=AuditLog(data / "audit.log"), request=client.request,
                    now_us=now_us)  # fmt: skip
    server = MirrorServer(key, name, Catalog(data), data, lambda: {})
    server.routes += sync.routes()
    return Node(name, path, sync, alerts, server)


@contextmanager
def two_boards(
    root: Path, before: Callable[[Path], None] = lambda path: None
) -> Iterator[tuple[Node, Node]]:
    with LoopThread() as loop:
        a, b = make_node(root, "a", before=before), make_node(root, "b", before=before)
        served = []
        for n in (a, b):
            s = loop.run(serve(n.server.app(), "127.0.0.1", 0, f"mirror {n.name}"))
            served.append(s)
            n.port = s.port
        # each board's client asks the other's server
        for n, peer in ((a, b), (b, a)):
            n.sync.request = _client(n, peer.port).request
        try:
            yield a, b
        finally:
            for s in served:
                loop.run(s.close())


def _client(n: Node, port: int) -> MirrorClient:
    data = n.path.parent / "data"
    return MirrorClient(board=n.name, key=KEY, data_dir=data, catalog=Catalog(data),
                        peer={"lan": "127.0.0.1"}, port=port, order="oldest", concurrency=1,
                        path_usable=lambda p: True, now_us=now_us)  # fmt: skip


def exchange(a: Node, b: Node) -> None:
    for _ in range(3):
        a.sync.poll()
        b.sync.poll()


# --- merge ---------------------------------------------------------------------------------------


def test_merge_changes_only_the_pair_wide_keys_and_keeps_comments(tmp_path):
    path = write_config(tmp_path, "a")
    text = path.read_text()
    s = PairSettings(
        cameras=(Camera("door", "rtsp://192.0.2.31:8554/door"),
                 Camera("yard", f"rtsp://admin:{PASSWORD}@192.0.2.32/yard", enabled=False)),
        retention_days=7.0, min_free_percent=5.0, min_free_mb=256.0,
        virtual_ip="192.0.2.101/24",
        recorder=(("segment_seconds", 3.0),),
    )  # fmt: skip
    out = merge(text, s, tmp_path / "api.token")
    cfg = parse_config(out)
    assert settings_of(cfg, None) == s
    assert cfg.recorder.segment_seconds == 3  # the recorder's settings are the pair's
    assert cfg.recorder.workers == 1, "workers stays this board's own"
    assert cfg.board.name == "a" and cfg.pair.priority == 150
    for kept in ("# board a: the installer's notes stay", "# this board", "# front door",
                 "# the door camera"):  # fmt: skip
        assert kept in out, f"lost {kept!r}"
    assert merge(out, s, tmp_path / "api.token") == out, "merging the same settings is a no-op"


def test_merge_sets_and_removes_the_token_file_key(tmp_path):
    text = write_config(tmp_path, "a").read_text()
    s = settings_of(parse_config(text), None)
    with_token = merge(text, PairSettings(**{**s.__dict__, "api_token": TOKEN}), tmp_path / "t")
    assert parse_config(with_token).api.token_file == tmp_path / "t"
    assert TOKEN not in with_token, "the token goes into its own file, not nvr.toml"
    assert parse_config(merge(with_token, s, tmp_path / "t")).api.token_file is None


def test_sealed_settings_do_not_show_the_secrets_and_open_with_the_key_only():
    plain = json.dumps({"url": f"rtsp://admin:{PASSWORD}@x", "api_token": TOKEN}).encode()
    sealed = seal(KEY, plain)
    assert PASSWORD.encode().hex() not in sealed and TOKEN.encode().hex() not in sealed
    assert unseal(KEY, sealed) == plain
    with pytest.raises(ValueError, match="do not open with the pair key"):
        unseal(bytes(32), sealed)
    flipped = sealed[:-1] + ("0" if sealed[-1] != "0" else "1")
    with pytest.raises(ValueError, match="do not open"):
        unseal(KEY, flipped)  # authenticated: a changed byte is refused, not read
    assert seal(KEY, plain) != sealed, "a fresh nonce each time"


# --- two boards ---------------------------------------------------------------------------------


def test_an_edit_on_b_reaches_a_with_the_previous_file_kept_and_audited(tmp_path):
    with two_boards(tmp_path) as (a, b):
        exchange(a, b)
        assert a.sync.status()["agree"] and b.sync.status()["agree"]
        v0 = a.sync.status()["version"]
        before_a = a.path.read_text()
        text = b.path.read_text().replace("retention_days = 30", "retention_days = 7")
        text += f'\n[[camera]]\nname = "yard"\nurl = "rtsp://admin:{PASSWORD}@192.0.2.32/y"\n'
        b.path.write_text(text)
        b.reload()
        exchange(a, b)
        cfg = load_config(a.path)
        assert cfg.recorder.retention_days == 7
        assert [c.name for c in cfg.camera] == ["door", "yard"]
        assert cfg.board.name == "a" and cfg.pair.priority == 150, "per-board keys stay"
        assert "# board a: the installer's notes stay" in a.path.read_text()
        assert a.path.with_name("nvr.toml.prev").read_text() == before_a
        a.reload()  # the config watch picks the written file up: no change of its own
        exchange(a, b)
        sa, sb = a.sync.status(), b.sync.status()
        assert sa["version"] == sb["version"] == v0 + 1 and sa["hash"] == sb["hash"]
        assert sa["agree"] and sb["agree"] and sa["origin"] == "b"
        applied = [e for e in a.audit() if e["event"] == "pair-settings-applied"]
        assert applied and applied[-1]["origin"] == "b" and applied[-1]["version"] == v0 + 1
        assert applied[-1]["keys"] == ["camera[yard] added", "recorder.retention_days"]
        changed = [e for e in b.audit() if e["event"] == "pair-settings-changed"]
        assert changed[-1]["board"] == "b" and "recorder.retention_days" in changed[-1]["keys"]
        for n in (a, b):
            shown = json.dumps(n.audit()) + json.dumps(n.sync.status())
            shown += json.dumps([al.to_json() for al in n.alerts.active()])
            assert PASSWORD not in shown
            assert not n.alerts.active()


def test_the_pair_s_token_file_reaches_a_private_and_never_shown(tmp_path):
    with two_boards(tmp_path) as (a, b):
        exchange(a, b)
        token_b = tmp_path / "b" / "data" / "pair-api.token"
        token_b.write_text(TOKEN + "\n")
        token_b.chmod(0o600)
        b.path.write_text(b.path.read_text().replace(
            "listen_port = 0", f'listen_port = 0\ntoken_file = "{token_b}"'))  # fmt: skip
        b.reload()
        exchange(a, b)
        cfg = load_config(a.path)
        assert cfg.api.token_file == tmp_path / "a" / "data" / "api.token"
        assert cfg.api.token_file.read_text().strip() == TOKEN
        assert cfg.api.token_file.stat().st_mode & 0o777 == 0o600
        assert TOKEN not in a.path.read_text()
        assert a.alerts.get(AlertId.RESTART_NEEDED) is not None
        a.reload()
        exchange(a, b)
        assert a.sync.status()["agree"] and b.sync.status()["agree"]
        assert [e["keys"] for e in a.audit() if e["event"] == "pair-settings-applied"][-1] \
            == ["api.token"]  # fmt: skip
        for n in (a, b):
            shown = json.dumps(n.audit()) + json.dumps(n.sync.status())
            shown += json.dumps([al.to_json() for al in n.alerts.active()])
            assert TOKEN not in shown


def test_concurrent_edits_settle_on_one_with_the_discarded_file_kept_and_an_alert(tmp_path):
    with two_boards(tmp_path) as (a, b):
        exchange(a, b)
        a.path.write_text(a.path.read_text().replace("retention_days = 30", "retention_days = 5"))
        a.reload()
        mine = a.path.read_text()
        b.path.write_text(b.path.read_text().replace("retention_days = 30", "retention_days = 9"))
        b.reload()  # later: b's change wins the tie-break
        exchange(a, b)
        a.reload()
        exchange(a, b)
        assert load_config(a.path).recorder.retention_days == 9
        assert a.path.with_name("nvr.toml.prev").read_text() == mine
        for n in (a, b):
            alert = n.alerts.get(AlertId.PAIR_SETTINGS_CONFLICT)
            assert alert is not None and " of a " in alert.text and " of b " in alert.text
        assert a.sync.status()["agree"] and b.sync.status()["agree"]


def test_an_edit_here_not_yet_loaded_is_never_written_over(tmp_path):
    """The peer's newer settings arrive while this board's file holds an edit the config watch
    has not loaded yet: the write waits, the edit is counted first, and the pair settles on it
    with a conflict alert on both boards (b's change was made without seeing a's)."""
    with two_boards(tmp_path) as (a, b):
        exchange(a, b)
        b.path.write_text(b.path.read_text().replace("retention_days = 30", "retention_days = 9"))
        b.reload()
        a.path.write_text(a.path.read_text().replace("retention_days = 30", "retention_days = 5"))
        a.sync.poll()  # fetches b's version, finds the file edited: does not write
        assert "retention_days = 5" in a.path.read_text()
        assert not a.path.with_name("nvr.toml.prev").exists()
        a.reload()  # the config watch loads the edit: a later change than b's
        exchange(a, b)
        b.reload()
        exchange(a, b)
        assert load_config(a.path).recorder.retention_days == 5
        assert load_config(b.path).recorder.retention_days == 5
        assert a.sync.status()["agree"] and b.sync.status()["agree"]
        for n in (a, b):
            alert = n.alerts.get(AlertId.PAIR_SETTINGS_CONFLICT)
            assert alert is not None and " of b " in alert.text and " of a " in alert.text


def test_an_edit_that_is_invalid_here_is_refused_and_the_config_stays(tmp_path):
    """A peer that serves settings its own loader would have refused (two cameras of one
    name): this board's loader judges the merged file and refuses it, naming key and problem."""
    with two_boards(tmp_path) as (a, b):
        exchange(a, b)
        before = a.path.read_text()
        b.sync.known.clear()
        bad = PairSettings(cameras=(Camera("door", "rtsp://192.0.2.31/x"),
                                    Camera("door", "rtsp://192.0.2.31/y")))  # fmt: skip
        _force_local(b, bad)
        exchange(a, b)
        assert a.path.read_text() == before
        alert = a.alerts.get(AlertId.PAIR_SETTINGS_REFUSED)
        assert alert is not None and "camera" in alert.text and "used twice" in alert.text
        assert not a.path.with_name("nvr.toml.prev").exists()


def _force_local(n: Node, s: PairSettings) -> None:
    """Make the board serve settings its own loader would not have taken (a broken peer)."""
    h = content_hash(KEY, s)
    n.sync.known[h] = s
    n.sync._run(n.sync.core.local(h, now_us()))


# --- a hostile peer ------------------------------------------------------------------------------


def version_json(s: PairSettings, counts: dict, key: bytes = KEY) -> dict:
    return {"counts": counts, "origin": "b", "time_us": now_us(),
            "hash": content_hash(key, s), "replaced": None, "bases": []}  # fmt: skip


def doc(s: PairSettings, counts: dict, key: bytes = KEY, hash_of: PairSettings | None = None):
    v = version_json(hash_of or s, counts, key)
    return {"board": "b", "version": v, "settings": seal(key, s.canonical())}


GOOD = PairSettings(cameras=(Camera("door", "rtsp://192.0.2.31:8554/door"),), retention_days=3,
                    virtual_ip="192.0.2.100/24")  # fmt: skip
HIGH = {"a": 1, "b": 50}


@contextmanager
def facing(tmp_path: Path, answers: dict, key: bytes | None = KEY) -> Iterator[Node]:
    with HostilePeer(key, answers=answers) as peer:
        n = make_node(tmp_path, "a", peer.port)
        yield n


@pytest.mark.parametrize(
    ("answers", "why"),
    [
        ({HEAD_PATH: {"board": "b", "version": version_json(GOOD, HIGH)},
          DOC_PATH: doc(PairSettings(**{**GOOD.__dict__, "retention_days": -4.0}), HIGH)},
         "recorder.retention_days"),
        ({HEAD_PATH: {"board": "b", "version": version_json(GOOD, HIGH)},
          DOC_PATH: HugeFeed(MAX_DOC_BYTES + 10)},
         "oversized"),
        ({HEAD_PATH: {"board": "b", "version": version_json(GOOD, HIGH)},
          DOC_PATH: HugeFeed(MAX_DOC_BYTES * 40, announce=False)},
         "oversized"),
        ({HEAD_PATH: {"board": "b", "version": version_json(GOOD, HIGH)},
          DOC_PATH: doc(GOOD, {})},
         "older"),
        ({HEAD_PATH: {"board": "b", "version": version_json(GOOD, HIGH)},
          DOC_PATH: doc(GOOD, HIGH, hash_of=PairSettings())},
         "do not match the hash"),
        ({HEAD_PATH: {"board": "b", "version": version_json(GOOD, HIGH)},
          DOC_PATH: {**doc(GOOD, HIGH), "settings": seal(KEY, b'{"cameras": "../../x"}')}},
         "settings.cameras"),
        ({HEAD_PATH: {"board": "b", "version": version_json(GOOD, HIGH)},
          DOC_PATH: {**doc(GOOD, HIGH), "version": {**version_json(GOOD, HIGH),
                                                    "origin": "../etc"}}},
         "version.origin"),
    ],
    ids=["invalid-here", "oversized", "oversized-unannounced", "older", "hash-lie", "malformed",
         "bad-origin"],
)  # fmt: skip
def test_a_hostile_peer_s_document_is_refused_naming_the_problem(tmp_path, answers, why):
    with facing(tmp_path, answers) as n:
        before = n.path.read_text()
        record = (n.path.parent / "data" / "pair-settings.json").read_text()
        n.sync.poll()
        n.sync.poll()
        alert = n.alerts.get(AlertId.PAIR_SETTINGS_REFUSED)
        assert alert is not None and why in alert.text, alert
        assert "keeps its own settings" in alert.text
        assert n.path.read_text() == before, "the config file was touched"
        assert not n.path.with_name("nvr.toml.prev").exists()
        assert json.loads((n.path.parent / "data" / "pair-settings.json").read_text()) \
            == json.loads(record)  # fmt: skip
        refused = [e for e in n.audit() if e["event"] == "pair-settings-refused"]
        assert refused and why in refused[-1]["reason"]


def test_a_peer_without_the_pair_key_is_never_fetched_from(tmp_path):
    other = bytes(32)
    answers = {HEAD_PATH: {"board": "b", "version": version_json(GOOD, HIGH, other)},
               DOC_PATH: doc(GOOD, HIGH, other)}  # fmt: skip
    with HostilePeer(other, answers=answers) as peer:
        n = make_node(tmp_path, "a", peer.port)
        before = n.path.read_text()
        n.sync.poll()
        assert "not signed with this pair's key" in (n.sync.last_error or "")
        assert peer.requests[DOC_PATH] == 0 and n.path.read_text() == before
        assert n.sync.status()["peer_version"] is None


def test_the_record_survives_a_restart_and_the_written_file_is_no_change_of_its_own(tmp_path):
    with facing(tmp_path, {HEAD_PATH: {"board": "b", "version": version_json(GOOD, HIGH)},
                           DOC_PATH: doc(GOOD, HIGH)}) as n:  # fmt: skip
        n.sync.poll()
        assert load_config(n.path).recorder.retention_days == 3
        v = n.sync.core.current
        assert v.counts == (("a", 1), ("b", 50)) and v.hash == content_hash(KEY, GOOD)
        again = make_node_again(n)
        assert again.core.current == v, "a restart reads the record, counts no change"


def make_node_again(n: Node) -> PairSync:
    cfg = load_config(n.path)
    return PairSync(board="a", key=KEY, config_path=n.path, cfg=cfg, token=None,
                    alerts=Alerts(), audit=AuditLog(cfg.board.data_dir / "audit.log"),
                    request=n.sync.request, now_us=now_us)  # fmt: skip


def test_version_in_status_only_hashes_and_counts(tmp_path):
    with facing(tmp_path, {}) as n:
        st = n.sync.status()
        assert st["version"] == 1 and st["counts"] == {"a": 1} and len(st["hash"]) == 12
        assert st["peer_version"] is None and st["agree"] is None


def test_nvr_status_prints_both_boards_versions():
    from firmware.apiclient import status_lines

    ps = {"version": 4, "hash": "0123456789ab", "origin": "b", "peer_version": 5,
          "peer_hash": "ba9876543210", "agree": False}  # fmt: skip
    st = {"board": "a", "role": "standby", "virtual_ip": "192.0.2.100/24", "epoch": 1,
          "cameras": [], "alerts": [],
          "pair_settings": ps}  # fmt: skip
    want = "pair settings v4 (0123456789ab, from b); peer has v5 (ba9876543210): NOT the same yet"
    assert want in status_lines(st)
    st["pair_settings"] |= {"peer_version": 4, "peer_hash": "0123456789ab", "agree": True}
    assert "pair settings v4 (0123456789ab, from b); the same on the peer" in status_lines(st)


def test_the_board_that_joins_takes_the_pair_s_settings_without_a_conflict(tmp_path):
    """a was set up alone (its own cameras and retention) and shows the code; b, fresh, joins
    with other settings of its own: b takes a's, nothing is contested, no alert, and a keeps
    what it had."""

    def before(path: Path) -> None:
        if path.parent.name == "a":
            text = path.read_text().replace("retention_days = 30", "retention_days = 9")
            path.write_text(text + '\n[[camera]]\nname = "gate"\nurl = "rtsp://192.0.2.31/g"\n')
        else:
            adopt_on_join(load_config(path).board.data_dir)  # what `nvr pair join` leaves

    with two_boards(tmp_path, before) as (a, b):
        assert b.sync.status()["version"] == 0  # nothing of its own counted
        assert not (b.path.parent / "data" / ADOPT_FILE).exists(), "used once, then gone"
        a_before = a.path.read_text()
        exchange(a, b)
        b.reload()
        exchange(a, b)
        cfg_b = load_config(b.path)
        assert cfg_b.recorder.retention_days == 9 and "gate" in [c.name for c in cfg_b.camera]
        assert a.path.read_text() == a_before
        for n in (a, b):
            assert n.alerts.get(AlertId.PAIR_SETTINGS_CONFLICT) is None
            assert n.sync.status()["agree"]


def test_without_the_join_two_different_first_settings_are_a_conflict(tmp_path):
    """The rule the join avoids: two boards paired by a key file with different settings
    each count their own, so one wins and both say so."""

    def before(path: Path) -> None:
        if path.parent.name == "a":
            path.write_text(path.read_text().replace("retention_days = 30", "retention_days = 9"))

    with two_boards(tmp_path, before) as (a, b):
        exchange(a, b)
        a.reload()
        b.reload()
        exchange(a, b)
        assert all(n.alerts.get(AlertId.PAIR_SETTINGS_CONFLICT) for n in (a, b))
