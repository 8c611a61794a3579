"""The mirror does not trust its peer blindly: what a feed answer may hold (the rules of this
board's own rows), fuzzing of the feed decoder, and the serving side's refusal of replayed or
stale requests."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mirror_parts import KEY, START, feed_body, page_of, peer_row

from firmware.catalog import Catalog, run_uid, segment_id
from firmware.mirror.auth import (
    REPLAY_WINDOW_S,
    REQUEST_HEADER,
    AuthError,
    ReplayGuard,
    new_nonce,
    sign_request,
    verify_request,
)
from firmware.mirror.server import MirrorServer
from firmware.mirror.store import Corrupt, commit_received, incoming
from firmware.mirror.wire import (
    FEED_CAMERAS_MAX,
    FEED_LIMIT,
    FEED_PATH,
    MAX_FEED_BYTES,
    FeedError,
    FeedPage,
    FeedRun,
    FeedSegment,
    decode_page,
)
from firmware.recorder.segment_file import SEGMENTS_DIR, relative_path

S = 1_000_000

# --- what a row may hold -----------------------------------------------------------------------


def _seg(**change: object) -> dict:
    return {**peer_row().to_json(), **change}


def _run(**change: object) -> dict:
    return {**peer_row().run.to_json(), **change}


EVIL = "../../../../tmp/evil"
BAD_SEGMENTS = {
    "id climbs out": _seg(id=EVIL),
    "id with a slash": _seg(id="c1/../../x.1700000000000.b"),
    "id with a NUL": _seg(id=segment_id("c1", START, "b") + "\0"),
    "id of another recording": _seg(id=segment_id("c1", START + S, "b")),
    "camera climbs out": _seg(camera="../../x", id=segment_id("../../x", START, "b")),
    "camera with a newline": _seg(camera="c1\n", id=segment_id("c1\n", START, "b")),
    "origin climbs out": _seg(origin="b/../..", id=segment_id("c1", START, "b/../..")),
    "start_us null": _seg(start_us=None),
    "start_us huge": _seg(start_us=2**70),
    "bytes negative": _seg(bytes=-1),
    "sha256 not hex": _seg(sha256="../" + "0" * 61),
    "codec with a NUL": _seg(codec="h264\0"),
    "codec very long": _seg(codec="x" * 5000),
    "last_frame not hex": _seg(last_frame="../x"),
    "media time beyond SQLite": _seg(media_end_us=2**64),
    "run of another camera": _seg(run=_run(camera="c2")),
    "run uid climbs out": _seg(run=_run(uid=EVIL)),
    "run continues a path": _seg(run=_run(continues=EVIL)),
}


@pytest.mark.parametrize("bad", list(BAD_SEGMENTS.values()), ids=list(BAD_SEGMENTS))
def test_a_row_breaking_the_local_rules_is_refused_and_the_rest_kept(bad):
    """Ids, names and numbers follow the rules of this board's own rows, or the row is refused
    (named, with why) and the good row of the same answer kept."""
    good = peer_row(start_us=START + 8 * S)
    page, refused = decode_page(feed_body(page_of(bad, good.to_json())))
    assert page.segments == (good,)
    assert len(refused) == 1 and refused[0].startswith("segment #0") and " refused: " in refused[0]


@pytest.mark.parametrize(
    "change",
    [{"uid": EVIL}, {"camera": "../c"}, {"start_us": None}, {"end_us": -1},
     {"uid": run_uid("c1", START, "b") + "\0"}, {"end_reason": "\0" * 10}],
)  # fmt: skip
def test_a_run_row_breaking_the_rules_is_refused(change):
    page, refused = decode_page(feed_body(page_of(runs=(_run(**change), _run()))))
    assert page.runs == (peer_row().run,) and len(refused) == 1
    assert refused[0].startswith("run #0")


@pytest.mark.parametrize(
    "change",
    [{"board": "../b"}, {"seg": -1}, {"run": 2**80},
     {"cameras": {"../c": {"end_us": 0, "recording": True}}},
     {"cameras": {"c1": {"end_us": 2**70, "recording": True}}},
     {"segments": [{}] * (FEED_LIMIT + 1)}],
)  # fmt: skip
def test_an_answer_breaking_the_rules_is_refused_whole(change):
    with pytest.raises(FeedError, match="feed answer malformed"):
        decode_page(feed_body({**page_of(), **change}))


def test_the_longest_answer_a_peer_can_send_fits_the_bound_and_more_is_refused():
    """MAX_FEED_BYTES is derived from FEED_LIMIT: a full page of rows with every field at its
    longest decodes; one byte more than the bound is refused before it is parsed."""
    cam, board = "c" * 63, "b" * 63
    segs, runs = [], []
    for i in range(FEED_LIMIT):
        start = (1 << 61) + i * 10**9
        run = FeedRun(run_uid(cam, start, board), cam, board, start, start + 1, "x" * 64,
                      segment_id(cam, start, board))  # fmt: skip
        segs.append(FeedSegment(segment_id(cam, start, board), cam, start, start + 1,
                                -(1 << 62) + 1, (1 << 62) - 1, (1 << 62) - 1, (1 << 62) - 1,
                                "f" * 64, board, "x" * 64, True, "f" * 32, run=run))  # fmt: skip
        runs.append(run)
    cameras = {f"{i:063d}": {"end_us": (1 << 62) - 1, "recording": False}
               for i in range(FEED_CAMERAS_MAX)}  # fmt: skip
    full = {"board": board, "segments": [s.to_json() for s in segs],
            "runs": [r.to_json() for r in runs], "seg": (1 << 62) - 1, "run": (1 << 62) - 1,
            "more": True, "cameras": cameras}  # fmt: skip
    body = json.dumps(full).encode()
    assert len(body) <= MAX_FEED_BYTES
    page, refused = decode_page(body)
    assert refused == [] and len(page.segments) == len(page.runs) == FEED_LIMIT
    with pytest.raises(FeedError, match="longer than"):
        decode_page(b" " * (MAX_FEED_BYTES + 1))


def test_deeply_nested_json_is_a_clean_refusal():
    with pytest.raises(FeedError):
        decode_page(b"[" * 200_000 + b"]" * 200_000)


# --- fuzzing the feed decoder ------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)  # fmt: skip
FIELDS = [*sorted(_seg()), "run.uid", "run.camera", "run.start_us", "run.continues"]


def _decoded_or_refused(body: bytes) -> None:
    """The only outcomes: a page whose rows are safe to act on, or FeedError."""
    try:
        page, refused = decode_page(body)
    except FeedError:
        return
    assert isinstance(page, FeedPage) and all(isinstance(r, str) for r in refused)
    for s in page.segments:
        assert s.id == segment_id(s.camera, s.start_us, s.origin)
        rel = relative_path(s.camera, s.start_us, s.id)
        assert rel.startswith(f"{SEGMENTS_DIR}/") and ".." not in rel.split("/")
        assert "\0" not in rel and 0 <= s.bytes < 1 << 62


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_feed_bodies_decode_or_are_refused_cleanly(body):
    _decoded_or_refused(body)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FIELDS), JSON | st.text()), min_size=1, max_size=3))
def test_fuzzed_feed_rows_decode_or_are_refused_cleanly(changes):
    """A real page with random values in its rows' fields."""
    row = _seg()
    for name, value in changes:
        if name.startswith("run.") and isinstance(row["run"], dict):
            row["run"] = {**row["run"], name.removeprefix("run."): value}
        else:
            row[name] = value
    _decoded_or_refused(feed_body(page_of(row, runs=(row["run"],))))


# --- the store: the last line ------------------------------------------------------------------


def test_the_store_refuses_a_path_out_of_the_data_dir_even_past_the_decoder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(Corrupt):
        incoming(data, "../../evil")
    row = peer_row()
    evil = dataclasses.replace(row, camera="../..")
    path = incoming(data, row.id)
    path.write_bytes(b"")
    with pytest.raises(Corrupt, match="leaves the segment tree"):
        commit_received(data, Catalog(data), evil, path, evil.bytes, evil.sha256)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# --- replayed requests -------------------------------------------------------------------------

T0 = START
W = round(REPLAY_WINDOW_S * S)


def test_a_nonce_is_accepted_once():
    guard = ReplayGuard()
    n = new_nonce(T0)
    guard.check(n, T0)
    with pytest.raises(AuthError, match="replayed"):
        guard.check(n, T0 + S)
    guard.check(new_nonce(T0), T0 + S)


@pytest.mark.parametrize("skew", [-W - 1000, W + 1000])
def test_a_request_outside_the_window_is_refused(skew):
    with pytest.raises(AuthError, match="from this board's clock"):
        ReplayGuard().check(new_nonce(T0 + skew), T0)
    ReplayGuard().check(new_nonce(T0 + skew // 2), T0)


@pytest.mark.parametrize("nonce", ["", "abc", "x.y", "12", ".abc", "１２.ab", "9" * 40 + ".a"])
def test_a_nonce_without_a_time_is_refused(nonce):
    with pytest.raises(AuthError):
        ReplayGuard().check(nonce, T0)


def test_the_cache_is_bounded_and_a_forgotten_nonce_still_cannot_be_replayed():
    guard = ReplayGuard(capacity=8)
    nonces = [new_nonce(T0 + i * 1000) for i in range(20)]
    for n in nonces:
        guard.check(n, T0 + 20_000)
    assert len(guard) == 8
    for n in nonces:  # the forgotten ones are refused by time, the kept ones by nonce
        with pytest.raises(AuthError):
            guard.check(n, T0 + 20_000)
    guard.check(new_nonce(T0 + 21_000), T0 + 21_000)  # fresh requests go on
    guard.check(new_nonce(T0 + 2 * W), T0 + 2 * W)  # expired entries are dropped
    assert len(guard) == 1


def test_a_non_ascii_pair_header_is_an_auth_error():
    with pytest.raises(AuthError):
        verify_request(KEY, "b é 00", "GET", FEED_PATH)


def test_a_replayed_feed_request_is_refused_and_cannot_hide_the_standbys_lag(tmp_path):
    """A captured request (here one reporting lag 0) played again gets 401 and changes
    nothing; a captured one played after the window too, even with a forgotten nonce."""
    clock = [T0]
    server = MirrorServer(KEY, "a", Catalog(tmp_path), tmp_path, lambda: {},
                          now_us=lambda: clock[0])  # fmt: skip

    def signed(qs: str) -> dict[str, str]:
        path_qs = f"{FEED_PATH}?{qs}"
        return {REQUEST_HEADER: sign_request(KEY, "b", "GET", path_qs, new_nonce(clock[0]))}

    async def run() -> list[int]:
        statuses = []
        async with TestServer(server.app()) as ts, ClientSession() as s:
            zero = "seg=0&run=0&wait=0&lag_ms=0&behind=0"
            captured = signed(zero)
            for qs, headers in [(zero, captured), ("seg=0&run=0&wait=0&lag_ms=9000&behind=5",
                                                   signed("seg=0&run=0&wait=0&lag_ms=9000&behind=5")),
                                (zero, captured)]:  # fmt: skip
                async with s.get(ts.make_url(f"{FEED_PATH}?{qs}"), headers=headers) as r:
                    statuses.append(r.status)
            clock[0] += W + S
            server.replay = ReplayGuard()  # a restarted board: nothing remembered
            async with s.get(ts.make_url(f"{FEED_PATH}?{zero}"), headers=captured) as r:
                statuses.append(r.status)
        return statuses

    assert asyncio.run(run()) == [200, 200, 401, 401]
    assert server.peer_lag is not None and server.peer_lag[:2] == (9.0, 5)
    assert server.served["rejected"] == 2


def test_what_the_peer_sent_and_was_refused_raises_an_alert_that_clears_itself(tmp_path):
    from test_mirror_parts import WALL0, mirror_service

    from firmware.mirror.service import REFUSED, REFUSED_ALERT_S

    m, _ = mirror_service(tmp_path)
    alerts = m.alerts

    def text() -> str | None:
        return next((a.text for a in alerts.active() if a.id == REFUSED), None)

    m.tick("standby", peer_active=True)
    assert text() is None
    m.client.refused = (WALL0, "sha256", "segment c1.1.b: got 60000000 bytes")
    m.tick("standby", peer_active=True)
    assert "refused" in (text() or "") and "sha256" in (text() or "")
    m.now_us = lambda: WALL0 + round(REFUSED_ALERT_S * S) + 1
    m.tick("standby", peer_active=True)
    assert text() is None
