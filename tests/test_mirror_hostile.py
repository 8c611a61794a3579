"""A real MirrorClient (its threads, its HTTP, a catalog and data directory in a temp dir)
pointed on loopback at a hostile peer (hil/hostile_peer.py) that speaks the mirror protocol
with or without the pair key: nothing lands outside the data directory, nothing that does not
verify is committed, memory and disk stay bounded, and the client keeps running and counts
what it refused."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_mirror_parts import DATA, KEY, START, FakePeer, page_of, peer_row

from firmware.catalog import Catalog, segment_id
from firmware.mirror import client as client_module
from firmware.mirror.client import MirrorClient
from firmware.mirror.wire import MAX_FEED_BYTES
from firmware.recorder.segment_file import relative_path
from hil.hostile_peer import FileAnswer, HostilePeer, HugeFeed
from hil.wait import holds, wait_until

S = 1_000_000
MB = 1 << 20


@contextmanager
def following(peer: HostilePeer | FakePeer, data: Path) -> Iterator[tuple[MirrorClient, Catalog]]:
    data.mkdir(exist_ok=True)
    cat = Catalog(data)
    port = peer.port if isinstance(peer, HostilePeer) else 1
    client = MirrorClient(board="a", key=KEY, data_dir=data, catalog=cat,
                          peer={"lan": "127.0.0.1"}, port=port, order="oldest", concurrency=2,
                          path_usable=lambda p: True, now_us=lambda: START)  # fmt: skip
    if isinstance(peer, FakePeer):
        client._request = peer  # type: ignore[method-assign]
    client.start()
    try:
        yield client, cat
    finally:
        client.stop()
    assert all(not t.is_alive() for t in client._threads), "a mirror thread did not stop"


@contextmanager
def hostile(
    tmp_path: Path, key: bytes | None, pages: list, files: dict | None = None
) -> Iterator[tuple[HostilePeer, MirrorClient, Catalog]]:
    """A hostile peer and a client following it, with its data directory in tmp_path/data."""
    with (
        HostilePeer(key, pages, files or {}) as peer,
        following(peer, tmp_path / "data") as (client, cat),
    ):
        yield peer, client, cat


def only_data_dir(tmp_path: Path) -> None:
    """Nothing was written next to the data directory (where `../` would have put it)."""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def files_under(data: Path) -> dict[str, int]:
    return {str(p.relative_to(data)): p.stat().st_size for p in data.rglob("*") if p.is_file()}


def test_rows_that_climb_out_of_the_data_dir_are_refused_and_the_good_one_mirrors(tmp_path):
    """Authentic rows (the peer has the key) whose id, camera or run climb out with `../`: refused
    at the decoder and counted, never requested, nothing written outside the data directory;
    the good row of the same answer is committed and the client goes on."""
    good = peer_row(start_us=START + 8 * S)
    evil_cam = "../../../evil"
    bad = [
        {**peer_row().to_json(), "id": "../../../evil"},
        {**peer_row().to_json(), "camera": evil_cam, "id": segment_id(evil_cam, START, "b")},
        {**peer_row(start_us=START + 4 * S).to_json(),
         "run": {**peer_row().run.to_json(), "camera": evil_cam}},
    ]  # fmt: skip
    files = {r["id"]: FileAnswer(DATA, length=len(DATA)) for r in bad}
    files[good.id] = FileAnswer(DATA, length=len(DATA))
    with hostile(tmp_path, KEY, [page_of(*bad, good.to_json()), page_of()], files) as (
        peer,
        client,
        cat,
    ):
        wait_until(lambda: cat.segment(good.id) is not None, 10, "the good row committed")
        wait_until(lambda: peer.requests["feed"] >= 3, 10, "the feed followed on")
    assert all(peer.requests[r["id"]] == 0 for r in bad), "a refused row was fetched"
    only_data_dir(tmp_path)
    assert [s.id for s in cat.segments()] == [good.id]
    assert client.counters.errors == {"row": 3}
    assert client.connected and client.refused is not None and client.refused[1] == "row"


def test_null_fields_and_nul_ids_neither_stop_the_follower_nor_the_fetchers(tmp_path):
    """`start_us: null`, a NUL in an id, a null run: refused and counted; the answers after them
    are still followed and fetched, no thread failed."""
    first = page_of(
        {**peer_row().to_json(), "start_us": None},
        {**peer_row().to_json(), "id": peer_row().id + "\0"},
        {**peer_row().to_json(), "run": None},
        runs=({**peer_row().run.to_json(), "start_us": None},),
    )
    good = peer_row(start_us=START + 8 * S)
    files = {good.id: FileAnswer(DATA, length=len(DATA)),
             peer_row().id + "\0": FileAnswer(DATA, length=len(DATA))}  # fmt: skip
    pages = [first, page_of(good.to_json()), page_of()]
    with hostile(tmp_path, KEY, pages, files) as (_, client, cat):
        wait_until(lambda: cat.segment(good.id) is not None, 10, "the later row committed")
    assert client.counters.errors == {"row": 4}
    assert [s.id for s in cat.segments()] == [good.id]
    only_data_dir(tmp_path)


def test_a_file_longer_than_its_row_is_read_to_the_rows_size_and_committed_if_it_verifies(
    tmp_path,
):
    """60 MB sent for a 10 KB row (right bytes first, then zeros; no length announced): the
    client stops at the row's size, the hash verifies, the segment is committed as it should
    be; the peer could not push much more than the row before the connection was closed."""
    row = peer_row()
    files = {row.id: FileAnswer(DATA, tail=60 * MB)}
    with hostile(tmp_path, KEY, [page_of(row.to_json()), page_of()], files) as (peer, client, cat):
        wait_until(lambda: cat.segment(row.id) is not None, 10, "the segment committed")
    assert peer.sent[row.id] < 20 * MB
    final = tmp_path / "data" / relative_path(row.camera, row.start_us, row.id)
    assert final.read_bytes() == DATA
    assert client.counters.segments == 1 and client.counters.bytes == len(DATA)


@pytest.mark.parametrize("announce", [True, False])
def test_a_wrong_file_of_any_length_is_never_committed_and_never_fills_the_disk(tmp_path, announce):
    """Wrong bytes, 60 MB of them for a 10 KB row, again at every retry: each attempt stops at
    the row's size, fails its SHA-256 and is discarded; the disk holds no more than the row."""
    row = peer_row()
    wrong = bytes([DATA[0] ^ 1]) + DATA[1:]
    tail = 60 * MB
    files = {row.id: FileAnswer(wrong, tail=tail, length=len(wrong) + tail if announce else None)}
    data = tmp_path / "data"
    with hostile(tmp_path, KEY, [page_of(row.to_json()), page_of()], files) as (peer, client, cat):
        wait_until(lambda: client.counters.errors.get("sha256", 0) >= 3, 15,
                   "three attempts refused")  # fmt: skip
        holds(lambda: max(files_under(data / "mirror-incoming").values(), default=0)
              <= row.bytes, 1, "the partial file never outgrows its row")  # fmt: skip
    assert peer.sent[row.id] < peer.requests[row.id] * 20 * MB
    assert cat.segment(row.id) is None and cat.segments() == []
    assert not (data / "segments").exists() or files_under(data / "segments") == {}
    assert sum(files_under(data).values()) < 4 * MB
    assert set(client.counters.errors) == {"sha256"} and client.refused[1] == "sha256"
    only_data_dir(tmp_path)


@pytest.mark.parametrize("announce", [True, False])
def test_a_huge_unsigned_feed_answer_is_not_read_past_the_bound(tmp_path, announce):
    """A stranger answering for the peer with 200 MB: refused at MAX_FEED_BYTES (before the
    MAC is checked), counted, memory stays bounded, and the client keeps asking."""
    with HostilePeer(None, [HugeFeed(200 * MB, announce)]) as peer:
        tracemalloc.start()
        try:
            with following(peer, tmp_path / "data") as (client, cat):
                wait_until(lambda: client.counters.errors.get("oversize", 0) >= 3, 20,
                           "three oversize answers refused")  # fmt: skip
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peer.sent["feed"] < peer.requests["feed"] * (MAX_FEED_BYTES + 20 * MB)
    assert peak < 4 * MAX_FEED_BYTES + 8 * MB
    assert set(client.counters.errors) == {"oversize"} and client.refused[1] == "oversize"
    assert not client.connected and "bytes" in (client.last_error or "")
    assert cat.segments() == []


@pytest.mark.parametrize("key", [None, b"another pair's key"])
def test_answers_not_signed_with_the_pair_key_are_refused(tmp_path, key):
    """The protocol spoken right but without the pair key: every answer is refused and
    counted, no row taken, nothing fetched."""
    row = peer_row()
    files = {row.id: FileAnswer(DATA, length=len(DATA))}
    with hostile(tmp_path, key, [page_of(row.to_json())], files) as (peer, client, cat):
        wait_until(lambda: client.counters.errors.get("auth", 0) >= 3, 10,
                   "three answers refused")  # fmt: skip
    assert peer.requests[row.id] == 0
    assert set(client.counters.errors) == {"auth"} and not client.connected
    assert client.refused is not None and client.refused[1] == "auth"
    assert cat.segments() == [] and cat.runs() == []


def test_a_fetch_that_fails_unexpectedly_is_retried_not_left_busy(tmp_path, monkeypatch):
    """A fetch thread failing on something nobody foresaw is restarted and counted, and the
    segment it was fetching is fetched again (it used to stay marked busy for ever)."""
    row = peer_row()
    real = client_module.commit_received
    calls = []

    def once_broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("unforeseen")
        return real(*args, **kwargs)

    monkeypatch.setattr(client_module, "commit_received", once_broken)
    monkeypatch.setattr(client_module, "RETRY_S", 0.05)
    peer = FakePeer(page_of(row.to_json()), {row.id: DATA})
    with following(peer, tmp_path / "data") as (client, cat):
        wait_until(lambda: cat.segment(row.id) is not None, 10, "committed on the retry")
        wait_until(lambda: client.synced, 10, "synced")
    assert client.counters.errors == {"crash": 1}
