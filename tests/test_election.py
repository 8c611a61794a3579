"""Election rules, driven through a small simulated network with jumping time."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.failover.advert import Advert, Health, decode, encode
from firmware.failover.election import (
    LATE_WINDOW,
    PATHS,
    Action,
    Election,
    ReleaseVIP,
    SendAdvert,
    StateChanged,
    TakeVIP,
    master_down_interval,
    skew_time,
)

KEY = b"pair-secret"
PAIR = "pair-1"
IV = 0.1
DELAYS = {"lan": 0.002, "sync": 0.001, "serial": 0.02}
MAX_DELAY = max(DELAYS.values())

LinkRule = Callable[[str, str, str, float], bool]


def check_order(board: str, actions: list[Action]) -> None:
    """Release first; never take the VIP without first announcing active with that epoch."""
    for i, action in enumerate(actions):
        if isinstance(action, ReleaseVIP):
            assert i == 0, f"{board}: ReleaseVIP not first in {actions}"
        if isinstance(action, TakeVIP):
            announced = [
                a.advert
                for a in actions[:i]
                if isinstance(a, SendAdvert)
                and a.advert.state == "active"
                and a.advert.epoch == action.epoch
                and a.advert.board_id == board
            ]
            assert announced, f"{board}: TakeVIP without announcing first in {actions}"


@dataclass
class Net:
    """In-memory network: per-path delay, scripted loss/partition, crashes and restarts."""

    specs: dict[str, dict[str, Any]]
    blocked: LinkRule = lambda src, dst, path, t: False
    delay: Callable[[str, str, str, float], float] = lambda src, dst, path, t: DELAYS[path]
    now: float = 0.0
    boards: dict[str, Election | None] = field(default_factory=dict)
    vip: dict[str, bool] = field(default_factory=dict)
    log: list[tuple[float, str, Action]] = field(default_factory=list)
    queue: list[tuple[float, int, str, bytes, str]] = field(default_factory=list)
    check_from: float | None = None
    violations: list[tuple[float, list[str]]] = field(default_factory=list)
    _counter: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        for name in self.specs:
            self.boards[name] = None
            self.vip[name] = False

    def make(self, name: str) -> Election:
        kw = {"priority": 100, "interval": IV, **self.specs[name]}
        return Election(name, PAIR, seq_start=int(self.now * 1e6), **kw)

    def start(self, *names: str) -> None:
        for name in names:
            board = self.make(name)
            self.boards[name] = board
            self.apply(name, board.start(self.now))

    def crash(self, name: str) -> None:
        self.boards[name] = None
        self.vip[name] = False  # power cut: the address goes with the board

    def restart(self, name: str) -> None:
        self.crash(name)
        self.start(name)

    def board(self, name: str) -> Election:
        board = self.boards[name]
        assert board is not None
        return board

    def apply(self, name: str, actions: list[Action]) -> None:
        check_order(name, actions)
        for action in actions:
            self.log.append((self.now, name, action))
            if isinstance(action, TakeVIP):
                assert not self.vip[name], f"{name} took the VIP twice"
                self.vip[name] = True
            elif isinstance(action, ReleaseVIP):
                self.vip[name] = False
            elif isinstance(action, SendAdvert):
                self.send(name, action.advert)
        board = self.boards[name]
        if board is not None:
            assert self.vip[name] == (board.state == "active"), name

    def send(self, src: str, advert: Advert) -> None:
        wire = encode(advert, KEY)
        for dst in self.specs:
            if dst == src:
                continue
            for path in PATHS:
                if self.blocked(src, dst, path, self.now):
                    continue
                at = self.now + self.delay(src, dst, path, self.now)
                heapq.heappush(self.queue, (at, next(self._counter), dst, wire, path))

    def run_until(self, t_end: float) -> None:
        for _ in range(1_000_000):
            deadlines = [
                (b.deadline, n)
                for n, b in self.boards.items()
                if b is not None and b.deadline is not None
            ]
            nxt_tick = min(deadlines) if deadlines else None
            nxt_msg = self.queue[0][0] if self.queue else None
            times = [t for t in (nxt_msg, nxt_tick[0] if nxt_tick else None) if t is not None]
            if not times or min(times) > t_end:
                self.now = max(self.now, t_end)
                self.check()
                return
            self.now = max(self.now, min(times))
            if nxt_msg is not None and nxt_msg <= self.now:
                _, _, dst, wire, path = heapq.heappop(self.queue)
                board = self.boards[dst]
                if board is not None:
                    self.apply(dst, board.receive(decode(wire, KEY), self.now, path))
            else:
                assert nxt_tick is not None
                self.apply(nxt_tick[1], self.board(nxt_tick[1]).tick(self.now))
            self.check()
        raise AssertionError("simulation did not settle")

    def check(self) -> None:
        if self.check_from is not None and self.now >= self.check_from:
            active = self.actives()
            if len(active) != 1:
                self.violations.append((self.now, active))

    def actives(self) -> list[str]:
        return sorted(n for n, b in self.boards.items() if b is not None and b.state == "active")

    def changes(self, name: str | None = None) -> list[tuple[float, str, StateChanged]]:
        return [
            (t, n, a)
            for t, n, a in self.log
            if isinstance(a, StateChanged) and (name is None or n == name)
        ]

    def takes(self) -> list[tuple[float, str, int]]:
        return [(t, n, a.epoch) for t, n, a in self.log if isinstance(a, TakeVIP)]


def adv(board: str = "b", state: str = "active", seq: int = 1, **kw: Any) -> Advert:
    fields: dict[str, Any] = {
        "pair_id": PAIR,
        "board_id": board,
        "priority": 100,
        "state": state,
        "epoch": 1,
        "seq": seq,
        "interval_ms": 100,
    }
    fields.update(kw)
    return Advert(**fields)


# ----------------------------------------------------------------------------- timers


def test_rfc_9568_timers() -> None:
    assert skew_time(100, 1.0) == pytest.approx(156 / 256)
    assert master_down_interval(100, 1.0) == pytest.approx(3 + 156 / 256)
    assert skew_time(255, 0.1) == pytest.approx(0.1 / 256)


def test_not_started_board_does_nothing() -> None:
    e = Election("a", PAIR, 100, IV)
    assert e.state == "init"
    assert e.deadline is None
    assert e.tick(10.0) == []
    assert e.receive(adv(), 10.0, "lan") == []


def test_lone_board_takes_over_after_master_down_announcing_first() -> None:
    e = Election("a", PAIR, 100, IV)
    start = e.start(0.0)
    assert start[0] == StateChanged("init", "standby", "start")
    assert isinstance(start[1], SendAdvert) and start[1].advert.state == "standby"
    md = master_down_interval(100, IV)
    t = 0.0
    while e.state == "standby":
        assert e.deadline is not None and e.deadline > t
        t = e.deadline
        actions = e.tick(t)
    assert t == pytest.approx(md)
    assert [type(a) for a in actions] == [SendAdvert, TakeVIP, StateChanged]
    assert isinstance(actions[0], SendAdvert)
    assert actions[0].advert.state == "active" and actions[0].advert.epoch == 1
    assert actions[1] == TakeVIP(1)


def test_active_sends_an_advert_every_interval() -> None:
    net = Net({"a": {"priority": 200}})
    net.start("a")
    net.run_until(1.0)
    assert net.actives() == ["a"]
    took = net.takes()[0][0]
    sent = [t for t, _, a in net.log if isinstance(a, SendAdvert) and a.advert.state == "active"]
    assert sent[0] == pytest.approx(took)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps and all(g == pytest.approx(IV) for g in gaps)


def test_invalid_construction() -> None:
    with pytest.raises(ValueError):
        Election("a", PAIR, 0, IV)
    with pytest.raises(ValueError):
        Election("a", PAIR, 100, 0)
    with pytest.raises(ValueError):
        Election("x" * 40, PAIR, 100, IV)
    e = Election("a", PAIR, 100, IV)
    e.start(0.0)
    with pytest.raises(ValueError):
        e.receive(adv(), 0.0, "wifi")
    with pytest.raises(ValueError):
        e.set_newest_segment("s" * 97)
    e.set_newest_segment("cam1/0001.mp4")
    e.tick(1.0)
    assert e.state == "active"
    assert e.tick(e.deadline or 0.0)[0] == SendAdvert(
        adv("a", seq=3, priority=100, newest_segment="cam1/0001.mp4")
    )


# ----------------------------------------------------------------------------- two boards


def test_higher_priority_wins_and_standby_takes_over_when_active_dies() -> None:
    net = Net({"a": {"priority": 200}, "b": {"priority": 100}})
    net.start("a", "b")
    net.run_until(2.0)
    assert net.actives() == ["a"]
    epoch = net.board("a").epoch
    net.crash("a")
    died = net.now
    net.run_until(5.0)
    assert net.actives() == ["b"]
    t, name, new_epoch = net.takes()[-1]
    assert name == "b" and new_epoch == epoch + 1
    # the last advert from a was sent at most one interval before it died
    md = master_down_interval(100, IV)
    assert died - IV + md <= t <= died + md + MAX_DELAY


def test_standby_learns_interval_from_active() -> None:
    net = Net({"a": {"priority": 200, "interval": 1.0}, "b": {"priority": 100}})
    net.start("a", "b")
    net.run_until(5.0)
    assert net.actives() == ["a"]
    b = net.board("b")
    assert b.master_down == pytest.approx(master_down_interval(100, 1.0))
    net.crash("a")
    died = net.now
    net.run_until(died + 2.0)
    assert net.actives() == []  # would have fired after 0.36 s with its own interval
    net.run_until(died + 5.0)
    assert net.actives() == ["b"]


def test_priority_zero_hands_over_after_skew_only() -> None:
    net = Net({"a": {"priority": 200}, "b": {"priority": 100}})
    net.start("a", "b")
    net.run_until(2.0)
    net.apply("a", net.board("a").shutdown(net.now))
    stop = net.now
    assert net.board("a").state == "init"
    assert net.board("a").deadline is None
    first = [a for t, n, a in net.log if n == "a" and t == stop]
    assert isinstance(first[0], ReleaseVIP)
    sent = [a.advert for a in first if isinstance(a, SendAdvert)]
    assert sent and sent[-1].priority == 0
    net.run_until(3.0)
    t, name, _ = net.takes()[-1]
    assert name == "b"
    assert t == pytest.approx(stop + min(DELAYS.values()) + skew_time(100, IV))
    assert t - stop < master_down_interval(100, IV) / 2


def test_equal_priority_broken_by_board_id() -> None:
    net = Net({"alpha": {}, "beta": {}})
    net.start("alpha", "beta")  # same priority, same start: both time out together
    net.run_until(3.0)
    assert net.actives() == ["beta"]


def test_preemption_by_higher_priority() -> None:
    net = Net({"a": {"priority": 100}, "b": {"priority": 200}})
    net.start("a")
    net.run_until(2.0)
    assert net.actives() == ["a"]
    net.start("b")
    net.run_until(3.0)
    assert net.actives() == ["b"]
    assert net.board("b").epoch == net.board("a").epoch + 1
    assert any(c.reason.startswith("preempt") for _, _, c in net.changes("b"))


def test_no_preemption_when_disabled() -> None:
    net = Net({"a": {"priority": 100}, "b": {"priority": 200, "preempt": False}})
    net.start("a")
    net.run_until(2.0)
    net.start("b")
    net.run_until(5.0)
    assert net.actives() == ["a"]


def test_preempt_delay_is_respected() -> None:
    net = Net({"a": {"priority": 100}, "b": {"priority": 200, "preempt_delay": 1.5}})
    net.start("a")
    net.run_until(2.0)
    net.start("b")
    net.run_until(3.4)
    assert net.actives() == ["a"]
    net.run_until(4.0)
    assert net.actives() == ["b"]
    t = net.takes()[-1][0]
    assert 3.5 <= t <= 3.5 + IV + MAX_DELAY


def test_healed_partition_lower_epoch_releases_first_in_list() -> None:
    cut = {"on": True}
    net = Net(
        {"a": {"priority": 200}, "b": {"priority": 100}},
        blocked=lambda src, dst, path, t: cut["on"],
    )
    net.start("a", "b")
    net.run_until(2.0)
    assert net.actives() == ["a", "b"]  # split brain while every path is cut
    cut["on"] = False
    net.run_until(2.5)
    assert net.actives() == ["a"]
    released = [(t, a) for t, n, a in net.log if n == "b" and isinstance(a, ReleaseVIP)]
    assert released and 2.0 <= released[0][0] <= 2.0 + IV + MAX_DELAY


def test_dual_active_compares_epoch_before_priority() -> None:
    e = Election("a", PAIR, 200, IV)
    e.start(0.0)
    e.tick(1.0)
    assert e.state == "active" and e.epoch == 1
    actions = e.receive(adv("b", priority=50, epoch=5, seq=10), 1.01, "lan")
    assert isinstance(actions[0], ReleaseVIP)
    assert actions[1] == StateChanged("active", "standby", "dual active, b wins")
    assert e.state == "standby"
    # it still outranks b, so it preempts back with a newer epoch on the next tick
    assert e.deadline == pytest.approx(1.01)
    again = e.tick(1.01)
    assert [type(a) for a in again] == [SendAdvert, TakeVIP, StateChanged]
    assert e.epoch == 6


def test_dual_active_winner_answers_at_once() -> None:
    e = Election("b", PAIR, 100, IV)
    e.start(0.0)
    e.tick(1.0)
    actions = e.receive(adv("a", priority=100, epoch=1, seq=3), 1.01, "sync")
    assert [type(a) for a in actions] == [SendAdvert]  # same epoch and priority, "b" > "a"
    assert e.state == "active"


# ----------------------------------------------------------------------------- dedupe


def test_step_down_hands_over_and_does_not_preempt_back() -> None:
    net = Net({"a": {"priority": 200, "preempt": True}, "b": {"priority": 100}})
    net.start("a", "b")
    net.run_until(2.0)
    assert net.actives() == ["a"]
    assert net.board("b").step_down(net.now) == []  # only the active board can hand over
    net.apply("a", net.board("a").step_down(net.now))
    stop = net.now
    first = [a for t, n, a in net.log if n == "a" and t == stop]
    assert isinstance(first[0], ReleaseVIP)
    assert [a.advert.priority for a in first if isinstance(a, SendAdvert)] == [0]
    net.run_until(6.0)
    t, name, _ = net.takes()[-1]
    assert name == "b" and net.actives() == ["b"]
    assert t - stop < master_down_interval(100, IV) / 2  # skew only, not master down
    assert net.board("a").state == "standby"  # stays up, and does not take the VIP back
    assert [c.reason for _, _, c in net.changes("b")][-1] == "handover"


def test_step_down_with_nobody_to_take_over_claims_again() -> None:
    net = Net({"a": {"priority": 200}})
    net.start("a")
    net.run_until(1.0)
    net.apply("a", net.board("a").step_down(net.now))
    assert net.actives() == []
    net.run_until(2.0)
    assert net.actives() == ["a"]


def test_same_advert_over_three_paths_counted_once() -> None:
    e = Election("a", PAIR, 100, IV)
    e.start(0.0)
    a = adv("b", priority=200, seq=100)
    for path in PATHS:
        e.receive(a, 0.01, path)
    assert e.stats["accepted"] == 1
    assert e.stats["duplicate"] == 2
    assert set(e.peers["b"].paths) == set(PATHS)
    assert e.receive(adv("b", priority=200, seq=99), 0.02, "lan") == []
    assert e.stats["late"] == 1 and "replay" not in e.stats
    assert e.receive(adv("b", priority=200, seq=100 - LATE_WINDOW - 1), 0.03, "lan") == []
    assert e.stats["replay"] == 1
    assert e.stats["rx_lan"] == 3


def test_foreign_pair_and_own_adverts_ignored() -> None:
    e = Election("a", PAIR, 100, IV)
    e.start(0.0)
    e.receive(adv("b", pair_id="other", priority=200), 0.01, "lan")
    e.receive(adv("a", seq=99), 0.01, "lan")
    assert e.stats["foreign_pair"] == 1 and e.stats["own"] == 1
    assert e.peers == {}


def test_restart_needs_rising_seq() -> None:
    """A restarted peer whose seq starts again at 0 looks like a replay and is dropped."""
    e = Election("a", PAIR, 100, IV)
    e.start(0.0)
    e.receive(adv("b", seq=1000), 0.01, "lan")
    assert e.receive(adv("b", seq=1), 0.02, "lan") == []
    assert e.stats["replay"] == 1
    net = Net({"a": {"priority": 100}, "b": {"priority": 200}})
    net.start("a", "b")
    net.run_until(2.0)
    net.restart("b")  # the rig passes seq_start from the clock
    net.run_until(4.0)
    assert net.actives() == ["b"]
    assert net.board("a").stats.get("replay", 0) == 0


def replay_after_restart(floors: dict[str, int] | None) -> float:
    """b is active, then dies; a restarts (with `floors` persisted, or none) and hears a
    recording of b's last two seconds of adverts. How long until a takes over."""
    net = Net({"a": {"priority": 100}, "b": {"priority": 200}})
    net.start("a", "b")
    net.run_until(2.0)
    assert net.actives() == ["b"]
    a = net.board("a")
    captured = [(t, act.advert) for t, n, act in net.log
                if n == "b" and isinstance(act, SendAdvert) and t >= 0.5]  # fmt: skip
    persisted = {"ahead": a.floors_due(), "exact": a.seen, None: None}[floors]  # type: ignore[index]
    net.crash("b")
    net.crash("a")
    net.run_until(4.5)  # systemd restarts the board 2 s later, at the earliest
    net.specs["a"]["seen"] = persisted
    net.start("a")
    restarted = net.now
    base = captured[0][0]
    for t, advert in captured:
        for path in PATHS:
            heapq.heappush(net.queue, (restarted + 0.05 + t - base, next(net._counter), "a",
                                       encode(advert, KEY), path))  # fmt: skip
    net.run_until(restarted + 3.0)
    took = [t for t, _, c in net.changes("a") if c.new == "active" and t >= restarted]
    assert took, "a never took over"
    if floors is not None:
        assert net.board("a").stats.get("accepted", 0) == 0
    return took[0] - restarted


@pytest.mark.parametrize("floors", ["ahead", "exact"])
def test_adverts_captured_before_a_restart_are_refused_after_it(floors: str) -> None:
    """With the floors a board persisted (ahead, as written while running, so after a crash;
    or exact, as written at a clean stop), a recording of a dead peer's adverts does not hold
    the restarted board in standby: it takes over after master-down as if nothing came."""
    assert replay_after_restart(floors) < master_down_interval(100, IV) + 0.01
    assert replay_after_restart(None) > 1.4  # without them, for as long as the recording lasts


def test_floors_are_written_about_once_a_second_and_cover_every_accepted_advert() -> None:
    e = Election("a", PAIR, 100, IV)
    e.start(0.0)
    writes = []
    for seq in range(1000, 1100):  # ten seconds of adverts every 100 ms
        e.receive(adv("b", seq=seq, interval_ms=100), seq / 1000, "lan")
        floors = e.floors_due()
        if floors is not None:
            writes.append(floors["b"])
        assert writes[-1] >= seq
    assert len(writes) == 10 and e.floors_due() is None
    assert e.seen == {"b": 1099}
    slow = Election("a", PAIR, 100, IV)
    slow.start(0.0)
    slow.receive(adv("b", seq=5, interval_ms=2000), 0.0, "lan")
    assert slow.floors_due() == {"b": 6}


def test_a_live_peer_is_heard_at_once_after_a_restart_with_floors() -> None:
    """The floors never hide a live peer from a board that restarted (after a crash, 2 s at
    least; after a clean stop, at once): no second active board."""
    for crash in (True, False):
        net = Net({"a": {"priority": 100}, "b": {"priority": 200}})
        net.start("a", "b")
        net.run_until(2.0)
        a = net.board("a")
        floors = a.floors_due() if crash else a.seen
        net.crash("a")
        net.run_until(4.0 if crash else 2.0)
        net.specs["a"]["seen"] = floors
        net.start("a")
        net.check_from = net.now
        net.run_until(net.now + 3.0)
        assert net.violations == [] and net.actives() == ["b"]
        assert net.board("a").stats.get("replay", 0) + net.board("a").stats.get("late", 0) == 0


# ----------------------------------------------------------------------------- health


def test_effective_priority_weights_and_floor() -> None:
    e = Election("a", PAIR, 150, IV)
    assert e.effective_priority == 150
    e.set_health(Health.DISK_FULL, 0.0)
    assert e.effective_priority == 120
    e.set_health(Health.DISK_FAILED | Health.LAN_DOWN | Health.UPS_LOW, 0.0)
    assert e.effective_priority == 1
    custom = Election("c", PAIR, 150, IV, weights={Health.UPS_ON_BATTERY: 7})
    custom.set_health(Health.UPS_ON_BATTERY | Health.DISK_FAILED, 0.0)
    assert custom.effective_priority == 143


def test_sick_active_hands_over_to_healthier_standby() -> None:
    net = Net({"a": {"priority": 200}, "b": {"priority": 150}})
    net.start("a", "b")
    net.run_until(2.0)
    assert net.actives() == ["a"]
    actions = net.board("a").set_health(Health.DISK_FAILED, net.now)
    assert isinstance(actions[0], SendAdvert) and actions[0].advert.priority == 100
    assert actions[0].advert.health == Health.DISK_FAILED
    net.apply("a", actions)
    sick = net.now
    net.run_until(2.5)
    assert net.actives() == ["b"]
    assert net.takes()[-1][0] <= sick + 2 * MAX_DELAY


def test_recovered_standby_preempts_via_set_health() -> None:
    net = Net({"a": {"priority": 150}, "b": {"priority": 200}})
    net.start("b")
    net.apply("b", net.board("b").set_health(Health.DISK_FAILED, net.now))
    net.start("a")
    net.run_until(2.0)
    assert net.actives() == ["a"]
    net.apply("b", net.board("b").set_health(Health.NONE, net.now))
    net.run_until(2.5)
    assert net.actives() == ["b"]


# ----------------------------------------------------------------------------- reachability


def test_unreachable_standby_does_not_claim_with_all_paths_silent() -> None:
    net = Net({"a": {"priority": 200}, "b": {"priority": 100}})
    net.start("a", "b")
    net.run_until(2.0)
    net.board("b").set_reachable(False)
    net.crash("a")
    net.run_until(5.0)
    assert net.actives() == []
    assert net.board("b").stats["withheld_unreachable"] >= 1
    net.board("b").set_reachable(True)
    net.run_until(6.0)
    assert net.actives() == ["b"]


def test_unreachable_board_may_take_over_when_a_peer_is_heard() -> None:
    """Paths are not silent: a standby peer is alive, so the better standby proceeds."""
    net = Net({"a": {"priority": 200}, "b": {"priority": 150}, "c": {"priority": 100}})
    net.start("a", "b", "c")
    net.run_until(2.0)
    net.board("b").set_reachable(False)
    net.crash("a")
    net.run_until(4.0)
    assert net.actives() == ["b"]


# ----------------------------------------------------------------------------- three boards


def test_three_boards_only_the_best_standby_takes_over() -> None:
    net = Net({"a": {"priority": 200}, "b": {"priority": 150}, "c": {"priority": 100}})
    net.start("a", "b", "c")
    net.run_until(2.0)
    assert net.actives() == ["a"]
    before = len(net.takes())
    net.crash("a")
    net.run_until(4.0)
    assert net.actives() == ["b"]
    assert [n for _, n, _ in net.takes()[before:]] == ["b"]
    net.start("a")
    net.run_until(6.0)
    assert net.actives() == ["a"]


def test_three_boards_handover_goes_to_best_standby() -> None:
    net = Net({"a": {"priority": 200}, "b": {"priority": 100}, "c": {"priority": 150}})
    net.start("a", "b", "c")
    net.run_until(2.0)
    net.apply("a", net.board("a").shutdown(net.now))
    net.run_until(3.0)
    assert net.actives() == ["c"]


def test_stale_active_advert_does_not_trigger_preempt() -> None:
    e = Election("s", PAIR, 150, IV)
    e.start(0.0)
    assert e.receive(adv("hi", priority=200, epoch=6, seq=1), 0.01, "lan") == []
    # an advert from a lower-priority board still claiming active with an older epoch
    assert e.receive(adv("lo", priority=100, epoch=5, seq=1), 0.02, "lan") == []
    assert e.state == "standby"


# ----------------------------------------------------------------------------- property


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(2, 3))
    names = ["a", "b", "c"][:n]
    prios = {name: draw(st.integers(1, 254)) for name in names}
    preempt = {name: draw(st.booleans()) for name in names}
    heal = draw(st.floats(0.5, 4.0))
    windows = draw(
        st.lists(
            st.tuples(
                st.floats(0.0, 4.0),  # start
                st.floats(0.0, 2.0),  # length
                st.sampled_from([*names, "*"]),  # src
                st.sampled_from([*names, "*"]),  # dst
                st.sets(st.sampled_from(PATHS), min_size=1),
                st.floats(0.0, 1.0),  # loss probability in the window
            ),
            max_size=5,
        )
    )
    restarts = draw(
        st.lists(
            st.tuples(st.sampled_from(names), st.floats(0.0, 4.0), st.floats(0.0, 1.0)),
            max_size=3,
        )
    )
    starts = {name: draw(st.floats(0.0, 1.0)) for name in names}
    seed = draw(st.integers(0, 2**32 - 1))
    return {
        "names": names,
        "prios": prios,
        "preempt": preempt,
        "heal": heal,
        "windows": windows,
        "restarts": restarts,
        "starts": starts,
        "seed": seed,
    }


@settings(max_examples=100, deadline=None)
@given(schedules())
def test_converges_to_exactly_one_active_after_faults_heal(s: dict[str, Any]) -> None:
    rng = random.Random(s["seed"])
    # every board is up by T: faults end and late starters have started
    heal: float = max(s["heal"], *s["starts"].values())

    def blocked(src: str, dst: str, path: str, t: float) -> bool:
        if t >= heal:
            return False
        for start, length, wsrc, wdst, paths, loss in s["windows"]:
            if (
                start <= t < start + length
                and wsrc in ("*", src)
                and wdst in ("*", dst)
                and path in paths
                and rng.random() < loss
            ):
                return True
        return False

    def delay(src: str, dst: str, path: str, t: float) -> float:
        if t < heal:
            return rng.uniform(0.0, MAX_DELAY)
        return DELAYS[path]

    specs = {n: {"priority": s["prios"][n], "preempt": s["preempt"][n]} for n in s["names"]}
    net = Net(specs, blocked=blocked, delay=delay)
    events: list[tuple[float, str, str]] = [(t, "start", n) for n, t in s["starts"].items()]
    for name, at, down in s["restarts"]:
        at = min(at, heal)
        events.append((at, "crash", name))
        events.append((min(at + down, heal), "start", name))
    for at, kind, name in sorted(events, key=lambda e: (e[0], e[1] == "start")):
        net.run_until(at)
        if kind == "crash":
            net.crash(name)
        elif net.boards[name] is None:
            net.start(name)
    bound = master_down_interval(min(s["prios"].values()), IV) + MAX_DELAY
    net.check_from = heal + bound + 1e-9
    net.run_until(heal + bound + 20 * IV)
    assert net.violations == []
    # nobody holds the VIP unless its board says active (and announced it; see check_order)
    assert [n for n, held in net.vip.items() if held] == net.actives()
