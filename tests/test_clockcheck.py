"""The pair's clocks checked against each other (firmware/clockcheck.py): the estimate always
holds the true offset whatever the delays, the alert's hysteresis, and on loopback a real
MirrorServer and MirrorClient whose clocks disagree."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mirror_parts import KEY, WALL0, mirror_service

from firmware.alert_ids import AlertId, Severity
from firmware.catalog import Catalog
from firmware.clockcheck import Bounds, ClockCheck, one_way, round_trip
from firmware.config import parse_config
from firmware.metrics import registry_for
from firmware.mirror.client import MirrorClient
from firmware.mirror.server import MirrorServer
from firmware.mirror.service import Mirror
from firmware.mirror.wire import FeedError, FeedPage, decode_page
from firmware.roles import Role
from firmware.status import BoardStatus, MirrorView
from firmware.timefmt import now_us as wall_us
from hil.wait import wait_until

S = 1_000_000
offsets = st.integers(-(10**12), 10**12)
delays = st.integers(0, 10 * S)


def exchange(t1: int, offset: int, out: int, hold: int, back: int):
    """A request sent at local t1 taking `out` µs there, held `hold`, `back` µs to return."""
    t2 = t1 + out + offset
    return round_trip(t1, t2, t2 + hold, t1 + out + hold + back)


@settings(max_examples=300, deadline=None)
@given(offset=offsets, out=delays, hold=delays, back=delays)
def test_a_round_trip_bounds_the_offset_whatever_the_delays(offset, out, hold, back):
    s = exchange(WALL0, offset, out, hold, back)
    assert s is not None
    b = s.bounds
    assert b.lo_us <= offset <= b.hi_us
    assert abs(b.offset_us - offset) <= b.uncertainty_us
    assert b.uncertainty_us <= (out + back) // 2 + 1, "as wide as the round trip, not the hold"


@settings(max_examples=200, deadline=None)
@given(
    offset=offsets,
    trips=st.lists(st.tuples(delays, delays, delays, st.integers(0, 25 * S)), max_size=12).filter(
        bool
    ),
    ways=st.lists(st.tuples(delays, st.integers(0, 25 * S)), max_size=12),
)
def test_the_windows_estimate_holds_the_true_offset(offset, trips, ways):
    c = ClockCheck(2.0, window_s=60)
    for out, hold, back, at in trips:
        c.add(exchange(WALL0 + at, offset, out, hold, back))
    for delay, at in ways:  # a request from the peer: stamped there, arrives delay later
        c.add(one_way(WALL0 + at + offset, WALL0 + at + delay))
    est = c.estimate(WALL0 + 55 * S)  # every sample taken in the last minute
    assert est is not None and est.hi_us is not None
    assert est.lo_us <= offset <= est.hi_us
    assert abs(est.offset_us - offset) <= est.uncertainty_us


@settings(max_examples=200, deadline=None)
@given(offset=offsets, delay=delays)
def test_a_request_from_the_peer_is_a_lower_bound(offset, delay):
    b = one_way(WALL0 + offset, WALL0 + delay).bounds
    assert b.lo_us <= offset and b.hi_us is None and b.offset_us is None
    assert b.beyond(2 * S) == (offset - delay > 2 * S)


def test_an_exchange_during_which_a_clock_stepped_is_no_sample():
    assert round_trip(WALL0, WALL0 + 5, WALL0 + 3, WALL0 + 10) is None  # peer stepped back
    assert round_trip(WALL0, WALL0, WALL0 + S, WALL0 + 10) is None  # we stepped back


def sample_at(c: ClockCheck, offset: int, at: int, rtt: int = 2000) -> None:
    """A round trip answered back here at `at`."""
    c.add(exchange(at - rtt - 100, offset, rtt // 2, 100, rtt // 2))


def test_skew_raises_above_the_threshold_and_clears_only_well_below_it():
    c = ClockCheck(2.0)
    assert c.verdict(WALL0) == c.verdict(WALL0) and not c.verdict(WALL0).skewed
    sample_at(c, 1_900_000, WALL0)
    assert not c.verdict(WALL0).skewed
    sample_at(c, 3 * S, WALL0 + S)
    v = c.verdict(WALL0 + S)
    assert v.skewed and v.changed and abs(v.estimate.offset_us - 3 * S) <= v.estimate.uncertainty_us
    sample_at(c, 1_500_000, WALL0 + 2 * S)  # set nearer, not near enough: still up
    assert c.verdict(WALL0 + 2 * S).skewed
    sample_at(c, 300_000, WALL0 + 3 * S)
    v = c.verdict(WALL0 + 3 * S)
    assert not v.skewed and v.changed


def test_an_uncertain_estimate_proves_nothing_either_way():
    c = ClockCheck(2.0)
    sample_at(c, 3 * S, WALL0, rtt=4 * S)  # [1 s, 5 s]: maybe within the threshold
    assert not c.verdict(WALL0).skewed


def test_samples_age_out_and_a_clock_stepped_back_drops_them():
    c = ClockCheck(2.0, window_s=30)
    sample_at(c, 5 * S, WALL0)
    assert c.verdict(WALL0 + 10 * S).skewed
    assert c.estimate(WALL0 - 1) is None, "stamped after now: this board's clock went back"
    v = c.verdict(WALL0 + 31 * S)
    assert v.estimate is None and not v.skewed, "no peer heard from: nothing to compare"


def test_a_peer_far_ahead_is_proven_by_its_requests_alone():
    c = ClockCheck(2.0)
    c.add(one_way(WALL0 + 40 * S, WALL0 + 1000))
    v = c.verdict(WALL0 + 1000)
    assert v.skewed and v.estimate == Bounds(40 * S - 1000, None)


def test_the_feed_carries_the_serving_boards_times_and_an_older_peers_feed_has_none():
    page = FeedPage("a", (), (), 0, 0, False, {}, received_us=WALL0, sent_us=WALL0 + 7)
    assert decode_page(json.dumps(page.to_json()).encode()) == (page, [])
    old = {k: v for k, v in page.to_json().items() if not k.endswith("_us")}
    got, _ = decode_page(json.dumps(old).encode())
    assert got.received_us is None and got.sent_us is None
    bad = page.to_json() | {"sent_us": -1}
    with pytest.raises(FeedError):
        decode_page(json.dumps(bad).encode())


def test_requests_alone_raise_and_clear_the_skew():
    """A peer whose answers carry no times (older firmware): its requests' lower bound alone
    raises the alert, and once its clock is set right and the old samples age out, clears it."""
    c = ClockCheck(2.0, window_s=30)
    c.add(one_way(WALL0 + 3 * S, WALL0))
    assert c.verdict(WALL0).skewed
    c.add(one_way(WALL0 + 31 * S, WALL0 + 31 * S + 500))
    v = c.verdict(WALL0 + 31 * S + 500)
    assert v.estimate is not None and v.estimate.hi_us is None
    assert not v.skewed and v.changed


# --- the alert, status and metrics on a board -----------------------------------------------


def skew_alert(m: Mirror):
    return next((a for a in m.alerts.active() if a.id == AlertId.PAIR_CLOCK_SKEW), None)


def test_the_mirror_raises_and_clears_pair_clock_skew_and_shows_the_offset(tmp_path):
    m, _ = mirror_service(tmp_path)
    m.tick("standby", peer_active=True)
    assert skew_alert(m) is None and m.status("standby")["peer_clock_offset_seconds"] is None
    sample_at(m.clock, 3 * S, WALL0 - S)
    m.tick("standby", peer_active=True)
    a = skew_alert(m)
    assert a is not None and a.severity == Severity.WARNING
    assert "+3.0 s" in a.text and "2 s" in a.text and "30 s" in a.text and "NTP" in a.text
    st_ = m.status("standby")
    assert abs(st_["peer_clock_offset_seconds"] - 3.0) <= st_["peer_clock_uncertainty_seconds"]
    sample_at(m.clock, 200_000, WALL0)
    m.tick("standby", peer_active=True)
    assert skew_alert(m) is None


def test_the_offset_is_in_the_board_status_and_metrics():
    view = MirrorView(lag_seconds=None, behind_bytes=0, fetched_segments=0, fetched_bytes=0,
                      errors={}, spares_removed=0, detail={}, clock_offset_seconds=-0.25,
                      clock_uncertainty_seconds=0.001)  # fmt: skip
    board = BoardStatus(
        board="a", role=Role.STANDBY, virtual_ip=None, version="t", hostname="h",
        uptime_seconds=1.0, data_dir="/d", disk_free_bytes=1, disk_total_bytes=2, cameras=(),
        alerts=(), alerts_raised={}, retention_deleted={}, worker_restarts=0, writes_held=False,
        pair=None, mirror=view, hardware=None,
    )  # fmt: skip
    reg = registry_for(lambda: board)
    assert reg.get_sample_value("nvr_pair_clock_offset_seconds") == -0.25
    assert reg.get_sample_value("nvr_pair_clock_uncertainty_seconds") == 0.001


# --- on loopback: a real server and client with shifted clocks ----------------------------------


@contextmanager
def serving(server: MirrorServer) -> Iterator[int]:
    """The server's app on a loopback port, in its own event loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def up() -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(server.app(), shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    runner, port = asyncio.run_coroutine_threadsafe(up(), loop).result(10)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def mirror_of(tmp_path: Path, name: str, port: int, now_us) -> Mirror:
    from firmware.alerts import Alerts

    data = tmp_path / name
    data.mkdir()
    cfg = parse_config(f"""
[board]
name = "{name}"
data_dir = "{data}"

[pair]
peer_lan_address = "127.0.0.1"
peer_sync_address = "127.0.0.1"
virtual_ip = "192.0.2.100/24"
mirror_port = {port}
""")
    return Mirror(cfg, KEY, Catalog(data), Alerts(), dict, lambda p: True, now_us)


def peer_server(tmp_path: Path, name: str, shift_us: int) -> MirrorServer:
    data = tmp_path / name
    data.mkdir()
    return MirrorServer(KEY, name, Catalog(data), data, dict,
                        now_us=lambda: wall_us() + shift_us, clock=ClockCheck(2.0))  # fmt: skip


def test_on_loopback_a_peer_clock_5_s_ahead_raises_the_alert_on_the_fetching_board(tmp_path):
    peer = peer_server(tmp_path, "a", 5 * S)
    with serving(peer) as port:
        m = mirror_of(tmp_path, "b", port, wall_us)
        m.start()
        try:

            def alerted():
                m.tick("standby", peer_active=True)
                return skew_alert(m)

            a = wait_until(alerted, 20, "pair-clock-skew on b")
            est = m.clock_offset()
            assert est is not None and abs(est.offset_us - 5 * S) <= est.uncertainty_us
            assert est.uncertainty_us < S // 2, "a loopback round trip is short"
            assert "+5.0 s" in a.text
            st_ = m.status("standby")
            assert abs(st_["peer_clock_offset_seconds"] - 5.0) < 0.5
            # the serving board sees b's requests: b at least 5 s behind minus the delay
            served = peer.clock.estimate(wall_us() + 5 * S)
            assert served is not None and served.lo_us <= -5 * S
        finally:
            m.stop()


def test_on_loopback_clocks_that_agree_raise_nothing(tmp_path):
    peer = peer_server(tmp_path, "a", 0)
    with serving(peer) as port:
        m = mirror_of(tmp_path, "b", port, wall_us)
        m.start()
        try:
            est = wait_until(m.clock_offset, 20, "an estimate on b")
            assert abs(est.offset_us) <= est.uncertainty_us < S // 2
            m.tick("standby", peer_active=True)
            assert skew_alert(m) is None
        finally:
            m.stop()


def test_on_loopback_a_peer_40_s_ahead_is_refused_yet_the_serving_board_raises_the_alert(
    tmp_path,
):
    """Beyond the mirror's ±30 s window the requests are refused, so no round trip: the
    board whose clock is behind still proves the skew from the peer's refused requests."""
    m = mirror_of(tmp_path, "a", 1, wall_us)  # its own client is not started
    with serving(m.server) as port:
        data = tmp_path / "b"
        data.mkdir()
        client = MirrorClient(board="b", key=KEY, data_dir=data, catalog=Catalog(data),
                              peer={"sync": "127.0.0.1"}, port=port, order="oldest",
                              concurrency=1, path_usable=lambda p: True,
                              now_us=lambda: wall_us() + 40 * S,
                              clock=ClockCheck(2.0))  # fmt: skip
        client.start()
        try:

            def alerted():
                m.tick("standby", peer_active=True)
                return skew_alert(m)

            a = wait_until(alerted, 20, "pair-clock-skew on a")
            assert "at least +" in a.text and "30 s" in a.text
            assert m.server.served["rejected"] >= 1 and not client.reached
            assert client.clock is not None and client.clock.estimate(wall_us()) is None
        finally:
            client.stop()
