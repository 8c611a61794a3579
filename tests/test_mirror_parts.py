"""Mirror and hot-standby parts: standby ring, spare copies, lag, pair auth, receiving store,
feed rows, catalog migration and the pair's gaps."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.catalog import Catalog, Gap, Run, Segment, run_uid, segment_id
from firmware.mirror.auth import (
    RESPONSE_HEADER,
    AuthError,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)
from firmware.mirror.client import MirrorClient
from firmware.mirror.plan import PeerCamera, RunFacts, SegFacts, Summary, lag, superseded
from firmware.mirror.store import (
    Corrupt,
    commit_received,
    fresh,
    incoming,
    receive,
    resume_point,
)
from firmware.mirror.wire import (
    FEED_PATH,
    SEGMENT_PATH,
    FeedError,
    FeedPage,
    FeedSegment,
    decode_page,
)
from firmware.recorder.policy import Clocks
from firmware.recorder.ring import Held, Point, StandbyRing, fingerprint
from firmware.recorder.segment_file import relative_path
from hil.wait import wait_until

# --- standby ring ------------------------------------------------------------------------

FRAME_US = 40_000  # 25 fps
GOP = 25
WALL0 = 1_700_000_000_000_000


def fp(n: int) -> str:
    return fingerprint(f"frame{n}".encode())


def wall(n: int) -> int:
    return WALL0 + n * FRAME_US


def frame(n: int, gop: int = GOP) -> Held:
    return Held(n, True, n % gop == 0, fp(n), Clocks(n * FRAME_US, wall(n)))


def audio(n: int, k: int) -> Held:
    t = n * FRAME_US + 10_000 + k
    return Held(("audio", n, k), False, True, "", Clocks(t, WALL0 + t))


def ring_of(frames: range, span_us: int = 2_000_000) -> StandbyRing:
    r = StandbyRing(span_us)
    for n in frames:
        r.push(frame(n))
    return r


def held(r: StandbyRing) -> list:
    return [h.packet for h in r.takeover([]).packets]


def test_ring_starts_only_at_a_video_keyframe():
    """Packets before the first video keyframe (audio included) are not held."""
    r = StandbyRing(10_000_000)
    r.push(audio(0, 0))
    for n in range(3, 31):
        r.push(frame(n))
    assert held(r) == list(range(25, 31))
    assert len(r) == 6


def test_ring_keeps_the_span_and_drops_whole_gops_from_the_front():
    """After every push: starts at a keyframe, contiguous, >= span, and no GOP more than needed."""
    span = 2_000_000
    r = StandbyRing(span)
    for n in range(300):
        r.push(frame(n))
        kept = held(r)
        first = kept[0]
        assert first % GOP == 0
        assert kept == list(range(first, n + 1))
        if n * FRAME_US >= span:
            assert (n - first) * FRAME_US >= span
            assert r.seconds >= span / 1e6
        assert (n - (first + GOP)) * FRAME_US < span  # dropping one more GOP would be too short


def test_ring_keeps_a_lone_gop_longer_than_the_span():
    """A single GOP longer than three spans is kept (it is all there is), not dropped."""
    r = StandbyRing(1_000_000)
    for n in range(81):  # 4 s GOP, 3.2 s pushed
        r.push(frame(n, gop=100))
    assert r.seconds >= 1.0
    assert held(r)[0] == 0


def test_takeover_continues_right_after_a_point_followed_by_a_keyframe():
    """Exactly the packets from the keyframe after the point's last frame, after == point."""
    r = ring_of(range(100))
    p = Point("c1.1.b", fp(49), wall(50))
    t = r.takeover([p])
    assert [h.packet for h in t.packets] == list(range(50, 100))
    assert t.after == p


def test_takeover_skips_a_newest_point_that_ends_mid_gop():
    """Handover: the short newest segment ends mid-GOP, the older one before a keyframe wins."""
    r = ring_of(range(100))
    short = Point("short", fp(60), wall(61))
    older = Point("older", fp(49), wall(50))
    t = r.takeover([short, older])
    assert [h.packet for h in t.packets] == list(range(50, 100))
    assert t.after == older


def test_takeover_of_an_unheld_point_starts_at_the_next_keyframe_by_wall_clock():
    """An unmatched point falls back to the first keyframe at/after its end_us, after None."""
    r = ring_of(range(100))
    gone = Point("gone", fingerprint(b"not in the ring"), wall(60) + 1)
    t = r.takeover([gone])
    assert [h.packet for h in t.packets] == list(range(75, 100)) and t.after is None
    exact = r.takeover([Point("gone", fingerprint(b"x"), wall(75))])
    assert exact.packets[0].packet == 75 and exact.after is None
    late = r.takeover([Point("gone", fingerprint(b"x"), wall(75) + 1)])
    assert late.packets == [] and late.after is None


def test_takeover_without_points_writes_everything_from_the_oldest_keyframe():
    """No points: all held packets, from the oldest held keyframe; an empty ring gives none."""
    r = ring_of(range(100))
    t = r.takeover([])
    assert [h.packet for h in t.packets] == list(range(25, 100)) and t.after is None
    empty = StandbyRing(2_000_000).takeover([Point("p", fp(1), wall(1))])
    assert empty.packets == [] and empty.after is None


def test_takeover_skips_audio_between_the_matched_frame_and_the_keyframe():
    """Audio right after the matched frame is skipped: the output starts at the video keyframe."""
    r = StandbyRing(10_000_000)
    for n in range(100):
        r.push(frame(n))
        if n == 49:
            for k in range(3):
                r.push(audio(n, k))
    p = Point("c1.1.b", fp(49), wall(50))
    t = r.takeover([p])
    assert [h.packet for h in t.packets] == list(range(50, 100))
    assert t.after == p


def test_point_without_a_last_frame_does_not_match_audio():
    """An old segment's empty last_frame never matches audio (empty fingerprint): time fallback."""
    r = ring_of(range(50), span_us=10_000_000)
    for k in range(2):
        r.push(audio(49, k))
    for n in range(50, 100):
        r.push(frame(n))
    t = r.takeover([Point("old", "", wall(60))])
    assert [h.packet for h in t.packets] == list(range(75, 100)) and t.after is None


# --- spare copies after a takeover -----------------------------------------------------------

S = 1_000_000


def segs(run: str, *bounds: tuple[int, int]) -> list[SegFacts]:
    return [SegFacts(f"{run}{i}", run, a * S, b * S) for i, (a, b) in enumerate(bounds, 1)]


def test_handover_leaves_the_old_runs_last_segments_spare():
    """Old run ended, takeover run went past its end: old segments after the point are spare."""
    a = segs("A", (0, 4), (4, 8), (8, 12))
    r = segs("R", (4, 8), (8, 12), (12, 16))
    runs = [RunFacts("A", 0, 12 * S, True, None), RunFacts("R", 4 * S, 16 * S, False, "A1")]
    assert superseded(runs, a + r) == {"A2", "A3"}


def test_a_hole_in_the_takeover_run_keeps_the_old_copy():
    """A segment not fully covered by the other run's segments is never spare."""
    a = segs("A", (0, 4), (4, 8), (8, 12))
    r = segs("R", (4, 8), (12, 16))
    runs = [RunFacts("A", 0, 12 * S, True, None), RunFacts("R", 4 * S, 16 * S, False, "A1")]
    assert superseded(runs, a + r) == {"A2"}


def test_dual_active_where_the_old_run_went_on_spares_the_takeover_run():
    """Takeover run ended while the old run went on past it: the takeover run's copy is spare."""
    a = segs("A", (0, 4), (4, 8), (8, 12), (12, 16), (16, 20))
    r = segs("R", (4, 8), (8, 12))
    runs = [RunFacts("A", 0, 20 * S, False, None), RunFacts("R", 4 * S, 12 * S, True, "A1")]
    assert superseded(runs, a + r) == {"R1", "R2"}


def test_nothing_is_spare_while_neither_run_has_ended():
    """Undecided while both runs may still grow."""
    a = segs("A", (0, 4), (4, 8), (8, 12))
    r = segs("R", (4, 8), (8, 12), (12, 16))
    runs = [RunFacts("A", 0, 12 * S, False, None), RunFacts("R", 4 * S, 16 * S, False, "A1")]
    assert superseded(runs, a + r) == set()


@pytest.mark.parametrize(("a_end", "r_end"), [(12, 16), (16, 12), (12, 12)])
def test_both_ended_spares_exactly_one_side(a_end, r_end):
    """Both runs ended and overlapping: one side's overlap is spare, the other's kept."""
    a = segs("A", *[(t, t + 4) for t in range(0, a_end, 4)])
    r = segs("R", *[(t, t + 4) for t in range(4, r_end, 4)])
    runs = [RunFacts("A", 0, a_end * S, True, None), RunFacts("R", 4 * S, r_end * S, True, "A1")]
    out = superseded(runs, a + r)
    sides = {sid[0] for sid in out}
    assert len(sides) == 1


def _cells(ss: list[SegFacts]) -> set[int]:
    unit = S // 10
    return {c for s in ss for c in range(s.start_us // unit, s.end_us // unit)}


def _chain(run: str, start: int, pieces: list[tuple[int, int]]) -> list[SegFacts]:
    out, t = [], start
    for i, (hole, length) in enumerate(pieces, 1):
        t += hole
        out.append(SegFacts(f"{run}{i}", run, t * S // 10, (t + length) * S // 10))
        t += length
    return out


piece = st.tuples(st.sampled_from([0, 0, 0, 3]), st.integers(1, 40))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(piece, min_size=1, max_size=6).map(lambda p: [(0, p[0][1]), *p[1:]]),
    st.lists(piece, min_size=1, max_size=6).map(lambda p: [(0, p[0][1]), *p[1:]]),
)
def test_both_ended_never_spares_both_sides_and_loses_nothing(a_pieces, r_pieces):
    """Both runs ended: spares come from one run only and the kept segments cover everything."""
    a = _chain("A", 0, a_pieces)
    r = _chain("R", a[0].end_us // (S // 10), r_pieces)
    runs = [
        RunFacts("A", 0, a[-1].end_us, True, None),
        RunFacts("R", r[0].start_us, r[-1].end_us, True, a[0].id),
    ]
    out = superseded(runs, a + r)
    assert not ({s.id for s in a} & out and {s.id for s in r} & out)
    kept = [s for s in a + r if s.id not in out]
    assert _cells(kept) == _cells(a + r)


# --- lag -------------------------------------------------------------------------------------


def summary(sid: str, camera: str, nbytes: int) -> Summary:
    return Summary(sid, camera, 0, nbytes, "0" * 64)


def test_lag_is_the_worst_cameras_missing_footage_and_all_missing_bytes():
    """Durations add per camera, the worst counts, bytes sum over everything missing."""
    missing = [summary("a", "c1", 1000), summary("b", "c2", 200), summary("c", "c2", 300)]
    durations = {"a": 4 * S, "b": 4 * S, "c": 4 * S}
    peer = {"c1": PeerCamera(100 * S, True), "c2": PeerCamera(50 * S, False)}
    assert lag(peer, missing, durations, now_us=101 * S + S // 2) == (8.0, 1500)


def test_lag_counts_the_peers_open_segment():
    """A recording peer adds now - end_us of its open segment to that camera."""
    missing = [summary("a", "c1", 10), summary("b", "c2", 20)]
    durations = {"a": 4 * S, "b": 4 * S}
    peer = {"c1": PeerCamera(100 * S, True), "c2": PeerCamera(100 * S, False)}
    assert lag(peer, missing, durations, now_us=103 * S) == (7.0, 30)
    assert lag(peer, [], {}, now_us=99 * S) == (0.0, 0)  # clock behind the peer's end: no lag
    assert lag({}, [], {}, now_us=0) == (0.0, 0)


# --- pair authentication ---------------------------------------------------------------------

KEY = b"k" * 32
PATH = "/mirror/v1/feed?seg=3&run=4"


def test_signed_request_verifies_to_board_and_nonce():
    """A request signed with the pair key verifies and names its board and nonce."""
    header = sign_request(KEY, "board-b", "GET", PATH, "n1")
    assert verify_request(KEY, header, "GET", PATH) == ("board-b", "n1")


@pytest.mark.parametrize(
    ("key", "method", "path"),
    [
        (b"other key", "GET", PATH),
        (KEY, "GET", "/mirror/v1/segments/x"),
        (KEY, "GET", "/mirror/v1/feed?seg=3&run=5"),
        (KEY, "POST", PATH),
    ],
)
def test_request_with_wrong_key_path_query_or_method_is_rejected(key, method, path):
    """Anything the MAC covers, changed, makes the request fail."""
    header = sign_request(key, "board-b", method, path, "n1")
    with pytest.raises(AuthError):
        verify_request(KEY, header, "GET", PATH)


@pytest.mark.parametrize("header", [None, "", "board-b n1", "board-b n1 mac extra", "a b c"])
def test_malformed_request_header_is_rejected(header):
    """Missing, short, long or garbage headers raise AuthError."""
    with pytest.raises(AuthError):
        verify_request(KEY, header, "GET", PATH)


def test_request_claiming_another_board_or_nonce_is_rejected():
    """The board name and nonce are under the MAC too."""
    board, nonce, mac = sign_request(KEY, "board-b", "GET", PATH, "n1").split(" ")
    for forged in (f"board-c {nonce} {mac}", f"{board} n2 {mac}"):
        with pytest.raises(AuthError):
            verify_request(KEY, forged, "GET", PATH)


def test_response_is_bound_to_its_nonce_and_body():
    """A replayed answer (other nonce), a flipped byte or no MAC are rejected."""
    body = b'{"segments": []}'
    mac = sign_response(KEY, "n1", body)
    verify_response(KEY, "n1", body, mac)
    with pytest.raises(AuthError):
        verify_response(KEY, "n2", body, mac)
    flipped = bytes([body[0] ^ 1]) + body[1:]
    with pytest.raises(AuthError):
        verify_response(KEY, "n1", flipped, mac)
    with pytest.raises(AuthError):
        verify_response(KEY, "n1", body, None)


# --- receiving store ---------------------------------------------------------------------------

START = 1_700_000_000_000_000
DATA = bytes(range(256)) * 40


def peer_row(data: bytes = DATA, start_us: int = START) -> FeedSegment:
    run = Run(7, "c1", "b", START, start_us + 4 * S, None, run_uid("c1", START, "b"))
    sid = segment_id("c1", start_us, "b")
    seg = Segment(sid, "c1", 7, f"peer/{sid}.mp4", start_us, start_us + 4 * S, 0, 4 * S, 100,
                  len(data), hashlib.sha256(data).hexdigest(), "b", "h264",
                  last_frame=fp(99))  # fmt: skip
    return FeedSegment.of(seg, run)


def transfer(tmp_path, cat: Catalog, row: FeedSegment, data: bytes, cut: int) -> bool:
    """Receive data in two attempts cut at `cut` bytes, then commit."""
    path = incoming(tmp_path, row.id)
    off, h = fresh()
    receive(path, off, h, [data[:cut]])
    off, h = resume_point(path)
    n = receive(path, off, h, [data[off : off + 1000], data[off + 1000 :]])
    return commit_received(tmp_path, cat, row, path, n, h.hexdigest())


def test_resumed_transfer_commits_file_row_and_local_run(tmp_path):
    """A transfer cut in two resumes from the partial's length and commits like a recording."""
    cat = Catalog(tmp_path)
    cat.new_run("c9", "a", 0, 0)  # local ids differ from the peer's
    row = peer_row()
    path = incoming(tmp_path, row.id)
    off, h = fresh()
    receive(path, off, h, [DATA[:3000]])
    off, h = resume_point(path)
    assert off == 3000 and h.hexdigest() == hashlib.sha256(DATA[:3000]).hexdigest()
    n = receive(path, off, h, [DATA[3000:5000], DATA[5000:]])
    assert n == len(DATA)
    assert commit_received(tmp_path, cat, row, path, n, h.hexdigest()) is True
    final = tmp_path / relative_path("c1", START, row.id)
    assert final.read_bytes() == DATA and not path.exists()
    got = cat.segment(row.id)
    run = cat.run_by_uid(run_uid("c1", START, "b"))
    assert got is not None and run is not None
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()
    assert got.run_id == run.id != 7
    assert got.path == relative_path("c1", START, row.id) and got.last_frame == fp(99)


def test_second_segment_of_a_run_joins_the_same_local_run(tmp_path):
    """Runs are merged by uid: two segments of one peer run share one local run row."""
    cat = Catalog(tmp_path)
    first, second = peer_row(), peer_row(start_us=START + 4 * S)
    assert transfer(tmp_path, cat, first, DATA, 100)
    assert transfer(tmp_path, cat, second, DATA, 100)
    assert cat.segment(first.id).run_id == cat.segment(second.id).run_id
    assert [r.uid for r in cat.runs("c1")] == [run_uid("c1", START, "b")]
    assert cat.runs("c1")[0].end_us == START + 8 * S


@pytest.mark.parametrize("how", ["byte", "short"])
def test_corrupt_transfer_leaves_no_file_and_no_row(tmp_path, how):
    """A wrong byte or a short file raises Corrupt and publishes nothing."""
    cat = Catalog(tmp_path)
    row = peer_row()
    bad = DATA[:100] + bytes([DATA[100] ^ 0xFF]) + DATA[101:] if how == "byte" else DATA[:-1]
    path = incoming(tmp_path, row.id)
    off, h = fresh()
    n = receive(path, off, h, [bad])
    with pytest.raises(Corrupt):
        commit_received(tmp_path, cat, row, path, n, h.hexdigest())
    assert not path.exists()
    assert not (tmp_path / relative_path("c1", START, row.id)).exists()
    assert cat.segment(row.id) is None and cat.runs() == []


def test_committing_the_same_row_twice_returns_false(tmp_path):
    """The second copy of a segment this board has is discarded, the first left intact."""
    cat = Catalog(tmp_path)
    row = peer_row()
    assert transfer(tmp_path, cat, row, DATA, 500) is True
    assert transfer(tmp_path, cat, row, DATA, 500) is False
    assert not incoming(tmp_path, row.id).exists()
    assert (tmp_path / relative_path("c1", START, row.id)).read_bytes() == DATA
    assert len(cat.segments()) == 1


def test_receive_from_zero_starts_over_and_resume_of_nothing_is_fresh(tmp_path):
    """Offset 0 truncates a stale partial; a missing partial resumes at 0 with an empty hash."""
    path = incoming(tmp_path, "x")
    assert resume_point(path)[0] == 0
    assert resume_point(path)[1].hexdigest() == hashlib.sha256().hexdigest()
    path.write_bytes(b"stale" * 1000)
    off, h = fresh()
    assert receive(path, off, h, [b"new"]) == 3
    assert path.read_bytes() == b"new" and h.hexdigest() == hashlib.sha256(b"new").hexdigest()


# --- feed rows: one definition, decoded once -------------------------------------------------


def feed_body(page: dict) -> bytes:
    return json.dumps(page).encode()


def page_of(*segments: dict, runs: tuple[dict, ...] = ()) -> dict:
    return {"board": "b", "segments": list(segments), "runs": list(runs), "seg": 9, "run": 4,
            "more": False, "cameras": {"c1": {"end_us": START, "recording": True}}}  # fmt: skip


def test_feed_rows_keep_the_wire_format_both_boards_speak():
    """Field names, their order and the nested run are what a board of the previous release
    sends and reads; encoding then decoding gives the same rows back."""
    row = peer_row()
    sid, uid = segment_id("c1", START, "b"), run_uid("c1", START, "b")
    wire = json.dumps(row.to_json())
    assert wire == json.dumps({
        "id": sid, "camera": "c1", "start_us": START, "end_us": START + 4 * S,
        "media_start_us": 0, "media_end_us": 4 * S, "frames": 100, "bytes": len(DATA),
        "sha256": hashlib.sha256(DATA).hexdigest(), "origin": "b", "codec": "h264",
        "salvaged": False, "last_frame": fp(99),
        "run": {"uid": uid, "camera": "c1", "origin": "b", "start_us": START,
                "end_us": START + 4 * S, "end_reason": None, "continues": None},
    })  # fmt: skip
    page = FeedPage("b", (row,), (row.run,), 9, 4, False, {"c1": PeerCamera(START, True)})
    body = feed_body(page.to_json())
    assert list(json.loads(body)) == ["board", "segments", "runs", "seg", "run", "more", "cameras"]
    assert decode_page(body) == (page, [])


def test_feed_row_of_an_older_peer_without_last_frame_decodes():
    """A row without last_frame (firmware before takeover by content) reads as empty."""
    wire = peer_row().to_json()
    del wire["last_frame"]
    page, refused = decode_page(feed_body(page_of(wire)))
    assert refused == [] and page.segments[0].last_frame == ""


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"bytes": "lots"}, "bytes: Input should be a valid integer"),
        ({"sha256": None}, "sha256: Input should be a valid string"),
        ({"run": {"uid": "u"}}, "run.camera: Field required"),
        ({"start_us": None, "codec": 5}, "start_us: Input should be a valid integer"),
    ],
)
def test_malformed_feed_row_is_refused_by_name_and_the_rest_kept(change, why):
    """Each row decodes on its own: a bad one is named with what is wrong, the others stay."""
    good, other = peer_row(), peer_row(start_us=START + 4 * S)
    bad = {**other.to_json(), **change}
    run_row = good.run.to_json()
    page, refused = decode_page(
        feed_body(page_of(good.to_json(), bad, runs=(run_row, {**run_row, "end_us": "x"})))
    )
    assert page.segments == (good,) and page.runs == (good.run,)
    assert len(refused) == 2
    assert refused[0].startswith(f"segment #1 {other.id!r} refused: ") and why in refused[0]
    assert refused[1].startswith(f"run #1 {good.run.uid!r} refused: end_us:")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", feed_body({**page_of(), "seg": None}),
     feed_body({k: v for k, v in page_of().items() if k != "run"}),
     feed_body({**page_of(), "segments": {}}),
     feed_body({**page_of(), "cameras": {"c1": {"end_us": "soon"}}})],
)  # fmt: skip
def test_malformed_feed_answer_raises_feed_error(body):
    """An answer whose cursors, lists or cameras cannot be read is refused whole."""
    with pytest.raises(FeedError, match="feed answer malformed"):
        decode_page(body)


class FakeResponse:
    def __init__(self, status: int, body: bytes, mac: str | None = None) -> None:
        self.status, self._body, self._mac = status, io.BytesIO(body), mac

    def read(self, n: int = -1) -> bytes:
        return self._body.read(n)

    def getheader(self, name: str) -> str | None:
        return self._mac if name == RESPONSE_HEADER else None


class NullConn:
    def close(self) -> None:
        pass


class FakePeer:
    """The peer's side of MirrorClient._request: one feed answer, then empty ones; files."""

    def __init__(self, first: dict, files: dict[str, bytes]) -> None:
        self.first, self.files, self.feeds = first, files, 0

    def __call__(self, path_qs: str, timeout: float, headers: dict | None = None):
        nonce = f"n{self.feeds}"
        if path_qs.startswith(FEED_PATH):
            page = self.first if self.feeds == 0 else page_of()
            self.feeds += 1
            if self.feeds > 1:
                time.sleep(0.02)  # a long poll with nothing new
            body = feed_body(page)
            return FakeResponse(200, body, sign_response(KEY, nonce, body)), NullConn(), nonce
        sid = path_qs.removeprefix(SEGMENT_PATH)
        if sid not in self.files:
            return FakeResponse(404, b""), NullConn(), nonce
        return FakeResponse(200, self.files[sid]), NullConn(), nonce


def test_malformed_feed_row_is_counted_and_the_fetch_goes_on(tmp_path, caplog):
    """A bad row in an authentic answer: counted as a mirror error and logged; the good row of
    the same answer is fetched and committed, and the feed keeps following."""
    good, other = peer_row(), peer_row(start_us=START + 4 * S)
    bad = {**other.to_json(), "bytes": "lots"}
    cat = Catalog(tmp_path)
    client = MirrorClient(board="a", key=KEY, data_dir=tmp_path, catalog=cat,
                          peer={"lan": "192.0.2.12"}, port=1, order="oldest", concurrency=1,
                          path_usable=lambda p: True, now_us=lambda: START)  # fmt: skip
    peer = FakePeer(page_of(good.to_json(), bad), {good.id: DATA, other.id: DATA})
    client._request = peer  # type: ignore[method-assign]
    client.start()
    try:
        wait_until(lambda: cat.segment(good.id) is not None, 10, "the good row committed")
        wait_until(lambda: peer.feeds >= 3, 10, "the feed followed on")
    finally:
        client.stop()
    assert client.counters.errors == {"row": 1}
    assert client.counters.segments == 1 and cat.segment(other.id) is None
    assert client.connected and client.reached
    assert f"segment #1 {other.id!r} refused: bytes:" in caplog.text


# --- catalog: migration, merge, deletions, gaps -------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, camera TEXT NOT NULL, origin TEXT NOT NULL,
    start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, end_reason TEXT
);
CREATE TABLE segments (
    id TEXT PRIMARY KEY, camera TEXT NOT NULL, run_id INTEGER NOT NULL REFERENCES runs(id),
    path TEXT NOT NULL UNIQUE, start_us INTEGER NOT NULL, end_us INTEGER NOT NULL,
    media_start_us INTEGER NOT NULL, media_end_us INTEGER NOT NULL, frames INTEGER NOT NULL,
    bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, origin TEXT NOT NULL, codec TEXT NOT NULL,
    salvaged INTEGER NOT NULL DEFAULT 0
);
"""


def old_catalog(tmp_path) -> Catalog:
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO runs VALUES (1, 'c1', 'a', 1000000, 5000000, 'stopped')")
    db.execute(
        "INSERT INTO segments VALUES ('c1.1000.a', 'c1', 1, 'segments/c1/x.mp4', 1000000,"
        " 5000000, 0, 4000000, 100, 10, ?, 'a', 'h264', 0)",
        ("0" * 64,),
    )
    db.commit()
    db.close()
    return Catalog(tmp_path)


def test_old_schema_opens_and_old_runs_get_a_uid(tmp_path):
    """A data dir from the first release opens; its run gets a uid, its segment an empty frame."""
    cat = old_catalog(tmp_path)
    run = cat.run_by_id(1)
    assert run is not None and run.uid == run_uid("c1", 1_000_000, "a")
    assert run.continues is None and run.end_reason == "stopped"
    seg = cat.segment("c1.1000.a")
    assert seg is not None and seg.last_frame == "" and seg.run_id == 1
    assert Catalog(tmp_path).run_by_uid(run.uid) == run  # reopening migrates nothing twice


def test_merge_run_on_a_migrated_catalog_only_grows(tmp_path):
    """Ends only grow, a set reason stays, and a replay changes nothing (not even `changed`)."""
    cat = old_catalog(tmp_path)
    uid = run_uid("c1", 1_000_000, "a")

    def peer(end_us: int, reason: str | None) -> Run:
        return Run(0, "c1", "a", 1_000_000, end_us, reason, uid)

    assert cat.merge_run(peer(3_000_000, None)) == 1
    assert (cat.run_by_id(1).end_us, cat.run_by_id(1).end_reason) == (5_000_000, "stopped")
    assert cat.merge_run(peer(9_000_000, "power-cut")) == 1
    grown = cat.run_by_id(1)
    assert (grown.end_us, grown.end_reason) == (9_000_000, "stopped")
    assert cat.merge_run(peer(9_000_000, "power-cut")) == 1
    assert cat.run_by_id(1) == grown
    assert cat.runs_since(grown.changed, 10) == []
    assert len(cat.runs()) == 1


def seg_row(run_id: int, start_s: int, end_s: int, origin: str = "a") -> Segment:
    sid = segment_id("c1", start_s * S, origin)
    return Segment(sid, "c1", run_id, f"segments/c1/{sid}.mp4", start_s * S, end_s * S, 0,
                   (end_s - start_s) * S, 10, 10, "0" * 64, origin, "h264")  # fmt: skip


def test_deleted_segment_ids_are_remembered(tmp_path):
    """delete_segment_rows moves rows to garbage and remembers exactly the deleted ids."""
    cat = Catalog(tmp_path)
    r = cat.new_run("c1", "a", 0, 0)
    s1, s2 = seg_row(r, 0, 4), seg_row(r, 4, 8)
    cat.add_segment(s1)
    cat.add_segment(s2)
    assert cat.delete_segment_rows([s1.id, "c1.999.a"]) == [s1.path]
    assert cat.deleted([s1.id, s2.id, "c1.999.a"]) == {s1.id}
    assert cat.segment(s1.id) is None and cat.segment(s2.id) is not None
    assert cat.garbage() == [s1.path]


def peer_run(start_s: float, end_s: float, reason: str | None, continues: str | None) -> Run:
    start = round(start_s * S)
    return Run(0, "c1", "b", start, round(end_s * S), reason, run_uid("c1", start, "b"), continues)


def test_takeover_run_of_the_other_board_covers_a_run_end(tmp_path):
    """No gap where the other board's run covers the end; a gap where nothing covers its end."""
    cat = Catalog(tmp_path)
    a = cat.new_run("c1", "a", 0, 10 * S)
    cat.end_run(a, "power-cut")
    cat.merge_run(peer_run(10.0005, 20, None, segment_id("c1", 6 * S, "a")))
    assert cat.gaps() == []
    cat.merge_run(peer_run(10.0005, 30, "stopped", None))
    assert cat.gaps() == [Gap("c1", 30 * S, None, "stopped")]


def test_run_end_with_nothing_covering_it_is_a_gap(tmp_path):
    """A run end not covered by any run opens a gap to the next run's start."""
    cat = Catalog(tmp_path)
    a = cat.new_run("c1", "a", 0, 10 * S)
    cat.end_run(a, "stopped")
    cat.merge_run(peer_run(2, 9, "stopped", None))  # the other board ended before: no cover
    cat.new_run("c1", "a", 15 * S, 15 * S)
    assert cat.gaps() == [Gap("c1", 10 * S, 15 * S, "stopped")]


def test_other_board_starting_after_the_slack_leaves_a_gap(tmp_path):
    """A run starting more than the slack after the end does not cover it: a short gap."""
    cat = Catalog(tmp_path)
    a = cat.new_run("c1", "a", 0, 10 * S)
    cat.end_run(a, "power-cut")
    cat.merge_run(peer_run(10.002, 20, None, None))
    assert cat.gaps() == [Gap("c1", 10 * S, 10 * S + 2000, "power-cut")]


def test_a_dead_boards_open_run_covers_nothing_after_its_last_segment(tmp_path):
    """A peer's run left open by a power cut does not hide a later gap of this board."""
    cat = Catalog(tmp_path)
    cat.merge_run(peer_run(0, 10, None, None))  # the peer died recording: never closed
    mine = cat.new_run("c1", "a", 10 * S, 20 * S)
    cat.end_run(mine, "stall")
    assert cat.gaps() == [Gap("c1", 20 * S, None, "stall")]


# --- catching-up flag --------------------------------------------------------------------


def mirror_service(tmp_path):
    from firmware.alerts import Alerts
    from firmware.config import parse_config
    from firmware.mirror.service import CATCHING_UP, Mirror

    cfg = parse_config(f"""
[board]
name = "a"
data_dir = "{tmp_path}"

[pair]
peer_lan_address = "192.0.2.12"
peer_sync_address = "198.51.100.2"
virtual_ip = "192.0.2.100/24"
""")
    alerts = Alerts()
    m = Mirror(cfg, b"k" * 32, Catalog(tmp_path), alerts, dict, lambda p: False, lambda: WALL0)
    return m, lambda: CATCHING_UP in {a.id for a in alerts.active()}


def test_board_is_catching_up_until_its_first_exchange_with_an_active_peer(tmp_path):
    m, alerted = mirror_service(tmp_path)
    assert not m.catching_up(peer_active=False), "both boards booting: nobody to catch up from"
    m.tick("standby", peer_active=False)
    assert not alerted()
    assert m.catching_up(peer_active=True), "a returning board must not preempt unsynced"
    m.tick("standby", peer_active=True)
    assert alerted()
    m.client.synced = True
    assert not m.catching_up(peer_active=True)
    m.tick("standby", peer_active=True)
    assert not alerted(), "the alert clears itself"
