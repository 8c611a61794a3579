"""The board core with a jumped clock: the rule of which faults move the pair, hold-down, and two
cores plus two elections in one in-memory pair with scripted faults (a hypothesis property)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.alert_ids import AlertId
from firmware.core.actions import (
    Action,
    ClearAlert,
    HandOver,
    HoldWrites,
    RaiseAlert,
    SetHealth,
    SetRecorderMode,
    ShutDown,
)
from firmware.core.board import BoardCore, CoreSettings
from firmware.core.facts import (
    Cameras,
    CameraSeen,
    Carrier,
    DiskFault,
    Drops,
    ElectionView,
    Link,
    PeerView,
    Power,
    Storage,
    WriteErrors,
    WriteSpace,
)
from firmware.failover.advert import Advert, Health, decode, encode
from firmware.failover.election import Election, ReleaseVIP, SendAdvert, TakeVIP
from firmware.roles import RecorderMode, Role

CAMS = frozenset({"c1", "c2", "c3"})
RECORDER_STALL_S = 5.0
S = CoreSettings(paired=True, hold_down=10.0, camera_stale=5.0, camera_confirm=1.0,
                 battery_handover_after=5.0, ring_seconds=8.0, dwell=30.0,
                 camera_startup=0.5)  # fmt: skip


def cams(live: set[str], age: float = 0.1) -> Cameras:
    return Cameras(CAMS, tuple(CameraSeen(c, c in live, age) for c in CAMS))


def peer(role: Role = Role.STANDBY, health: Health = Health.NONE, cameras: int = 3) -> ElectionView:
    p = PeerView("b", role, 100, health, cameras, True, {"lan": 0.05, "sync": 0.05})
    return ElectionView(Role.ACTIVE, p, 0.36)


def of(kind, actions: list[Action]) -> list:
    return [a for a in actions if isinstance(a, kind)]


def active_core() -> BoardCore:
    """Active since -S.dwell, so the minimum dwell is over at 0."""
    core = BoardCore(S)
    core.handle(ElectionView(Role.STANDBY, None, 0.36), -S.dwell - 1)
    core.handle(cams(set(CAMS)), -S.dwell)
    core.handle(peer(), -S.dwell)
    return core


def test_lan_cable_out_hands_over_at_once_and_is_held_down_after():
    core = active_core()
    acts = core.handle(Carrier(Link.LAN, False), 1.0)
    assert of(HandOver, acts) and "LAN" in of(HandOver, acts)[0].reason
    assert of(SetHealth, acts)[-1].flags & Health.LAN_DOWN
    core.handle(ElectionView(Role.STANDBY, peer().peer and PeerView(
        "b", Role.ACTIVE, 100, Health.NONE, 3, True), 0.36), 1.1)  # fmt: skip
    core.handle(Carrier(Link.LAN, True), 2.0)
    assert core.health(5.0) & Health.LAN_DOWN, "still held down 3 s after the cable is back"
    assert not core.health(12.1) & Health.LAN_DOWN


def test_no_handover_without_a_ready_peer_or_to_a_peer_with_the_same_fault():
    core = BoardCore(S)
    core.handle(cams(set(CAMS)), 0.0)
    core.handle(ElectionView(Role.ACTIVE, None, 0.36), 0.0)
    assert not of(HandOver, core.handle(Carrier(Link.LAN, False), 1.0))
    core = active_core()
    core.handle(peer(health=Health.LAN_DOWN), 0.5)
    assert not of(HandOver, core.handle(Carrier(Link.LAN, False), 1.0))


def test_more_cameras_on_the_standby_moves_the_pair_after_the_confirm_time():
    core = active_core()
    assert not of(HandOver, core.handle(cams({"c1", "c2"}), 1.0))
    assert not of(HandOver, core.tick(1.5))
    acts = core.tick(2.05)
    assert of(HandOver, acts) and "3 cameras live" in of(HandOver, acts)[0].reason
    # The same cameras down for both: nothing moves.
    core = active_core()
    core.handle(peer(cameras=2), 0.5)
    core.handle(cams({"c1", "c2"}), 1.0)
    assert not of(HandOver, core.tick(5.0))


def test_a_flapping_camera_counts_as_lost_until_it_has_been_back_the_hold_down():
    core = BoardCore(S)
    core.handle(ElectionView(Role.STANDBY, None, 0.36), 0.0)
    core.handle(cams(set(CAMS)), 0.0)
    assert core.cameras_live(0.0) == 3
    for t in range(1, 10):
        core.handle(cams({"c1", "c2"} if t % 2 else set(CAMS)), float(t))
    core.handle(cams(set(CAMS)), 10.0)
    assert core.cameras_live(19.5) == 2
    assert core.cameras_live(20.1) == 3


def test_disk_faults_hold_writes_and_hand_over():
    core = active_core()
    acts = core.handle(Storage(DiskFault.MISSING, "the data directory is gone"), 1.0)
    assert of(HoldWrites, acts)[0].hold and of(HandOver, acts)
    assert of(SetRecorderMode, acts)[-1].mode is RecorderMode.RING
    assert of(HandOver, acts)[0].reason == "the data directory is gone"
    back = core.handle(Storage(None), 30.0)
    assert not of(HoldWrites, back)[0].hold
    core = active_core()
    assert of(HandOver, core.handle(WriteSpace(True), 1.0))


def test_a_write_error_is_a_disk_fault_that_hands_over_and_holds_down():
    """An I/O error is not a full disk, and the kernel may still call the disk writable: the
    recorder's failed write alone says the board cannot record."""
    core = active_core()
    acts = core.handle(WriteErrors(True, "camera c1: Input/output error"), 1.0)
    assert of(HandOver, acts)[0].reason == "camera c1: Input/output error"
    assert not of(HoldWrites, acts)  # the recorder holds its own frames and retries
    assert core.health(1.0) & Health.DISK_FAILED
    core.handle(WriteErrors(False), 2.0)
    assert core.health(2.0) & Health.DISK_FAILED  # a failing disk counts until 10 s clean
    assert not core.health(12.5) & Health.DISK_FAILED


def test_battery_hands_over_after_the_delay_and_low_battery_shuts_down():
    core = active_core()
    assert not of(HandOver, core.handle(Power(True, False), 1.0))
    assert of(HandOver, core.tick(6.1))
    core = active_core()
    core.handle(peer(health=Health.UPS_ON_BATTERY), 0.5)
    core.handle(Power(True, False), 1.0)
    assert not of(HandOver, core.tick(20.0)), "both on battery: stay"
    core = active_core()
    acts = core.handle(Power(True, True), 1.0)
    assert [type(a) for a in acts if isinstance(a, HandOver | ShutDown)] == [HandOver, ShutDown]
    assert not of(ShutDown, core.tick(2.0))


def test_a_standby_with_faults_only_changes_what_it_advertises():
    core = BoardCore(S)
    core.handle(cams(set(CAMS)), 0.0)
    view = ElectionView(Role.STANDBY, PeerView("a", Role.ACTIVE, 150, Health.NONE, 3, True), 0.36)
    core.handle(view, 0.0)
    acts = core.handle(Carrier(Link.LAN, False), 1.0) + core.handle(Power(True, True), 1.0)
    assert not of(HandOver, acts)
    assert of(SetHealth, acts)[-1].flags & Health.LAN_DOWN


def test_pair_alerts_dual_active_no_standby_key_mismatch_silent_path():
    core = active_core()
    raised = {a.id for a in core.handle(peer(role=Role.ACTIVE), 1.0) if isinstance(a, RaiseAlert)}
    assert AlertId.DUAL_ACTIVE in raised
    core.handle(ElectionView(Role.ACTIVE, None, 0.36), 2.0)
    assert AlertId.NO_STANDBY not in {a.id for a in of(RaiseAlert, core.tick(9.0))}
    assert AlertId.NO_STANDBY in {a.id for a in of(RaiseAlert, core.tick(10.1))}
    assert AlertId.NO_STANDBY in {a.id for a in of(ClearAlert, core.handle(peer(), 11.0))}
    assert AlertId.PEER_KEY_MISMATCH in {a.id for a in of(RaiseAlert, core.handle(Drops(1, 0), 12))}
    assert AlertId.PEER_KEY_MISMATCH in {a.id for a in of(ClearAlert, core.tick(42.1))}
    silent = ElectionView(Role.ACTIVE, PeerView("b", Role.STANDBY, 100, Health.NONE, 3, True,
                                                {"lan": 0.05, "sync": 3.0}), 0.36)  # fmt: skip
    assert AlertId.HEARTBEAT_SILENT_SYNC in {a.id for a in of(RaiseAlert, core.handle(silent, 43))}
    cleared = of(ClearAlert, core.handle(Carrier(Link.SYNC, False), 44.0))
    assert AlertId.HEARTBEAT_SILENT_SYNC in {a.id for a in cleared}


def test_a_takeover_on_the_peers_last_fresh_advert_is_no_dual_active():
    """The sync carrier drops with the active board's power: the standby takes over at once,
    while that board's last advert (active) is still fresh. Only an advert heard after the
    takeover makes two active boards."""
    core = BoardCore(S)
    core.handle(cams(set(CAMS)), 0.0)
    last = PeerView("b", Role.ACTIVE, 100, Health.NONE, 3, True, {"lan": 0.2, "sync": 0.3})
    core.handle(ElectionView(Role.STANDBY, last, 0.36), 9.9)
    acts = core.handle(ElectionView(Role.ACTIVE, last, 0.36), 10.0)
    assert AlertId.DUAL_ACTIVE not in {a.id for a in of(RaiseAlert, acts + core.tick(10.1))}
    again = PeerView("b", Role.ACTIVE, 100, Health.NONE, 3, True, {"lan": 0.05, "sync": 0.3})
    acts = core.handle(ElectionView(Role.ACTIVE, again, 0.36), 10.5)
    assert AlertId.DUAL_ACTIVE in {a.id for a in of(RaiseAlert, acts)}


# --- two boards: cores and elections in one in-memory pair -----------------------------------

KEY = b"k" * 32
IV = 0.1
SAMPLE = 0.25
STEP = 0.01
FAULTS = ("lan", "cameras-all", "cameras-some", "stall", "disk-missing", "disk-read-only",
          "disk-full", "on-battery", "battery-low")  # fmt: skip


@dataclass
class Board:
    name: str
    priority: int
    election: Election
    core: BoardCore
    alive: bool = True
    lan: bool = True
    sync: bool = True
    reach: set[str] = field(default_factory=lambda: set(CAMS))
    stalled: bool = False
    disk: DiskFault | None = None
    full: bool = False
    power: Power = field(default_factory=lambda: Power(False, False))
    lost_at: dict[str, float] = field(default_factory=dict)

    def can_record(self) -> set[str]:
        if not self.alive or not self.lan or self.stalled:
            return set()
        return set(self.reach)

    def can_work(self) -> bool:
        return (
            self.alive
            and self.lan
            and self.disk is None
            and not self.full
            and not (self.power.on_battery and self.power.low)
        )


@dataclass
class SimPair:
    now: float = 0.0
    boards: dict[str, Board] = field(default_factory=dict)
    queue: list[tuple[float, str, bytes, str]] = field(default_factory=list)
    actives: list[tuple[float, set[str]]] = field(default_factory=list)

    def add(self, name: str, priority: int) -> None:
        e = Election(name, "pair", priority, IV, preempt=False, seq_start=int(self.now * 1e6))
        self.boards[name] = Board(name, priority, e, BoardCore(S))
        self.election_actions(name, e.start(self.now))

    def other(self, name: str) -> Board:
        return next(b for n, b in self.boards.items() if n != name)

    def election_actions(self, name: str, actions: list) -> None:
        b = self.boards[name]
        changed = False
        for a in actions:
            if isinstance(a, SendAdvert):
                self.send(name, a.advert)
            elif isinstance(a, TakeVIP | ReleaseVIP):
                changed = True
        if changed or actions:
            self.core_actions(name, b.core.handle(self.view(name), self.now))

    def core_actions(self, name: str, actions: list[Action]) -> None:
        b = self.boards[name]
        for a in actions:
            if isinstance(a, SetHealth):
                b.election.set_cameras(a.cameras)
                self.election_actions(name, b.election.set_health(a.flags, self.now))
            elif isinstance(a, HandOver):
                self.election_actions(name, b.election.step_down(self.now))
            elif isinstance(a, ShutDown):
                self.election_actions(name, b.election.shutdown(self.now))
                b.alive = False

    def send(self, src: str, advert: Advert) -> None:
        if len(self.boards) < 2:
            return
        a, o = self.boards[src], self.other(src)
        wire = encode(advert, KEY)
        if a.lan and o.lan and o.alive:
            self.queue.append((self.now + 0.002, o.name, wire, "lan"))
        if a.sync and o.sync and o.alive:
            self.queue.append((self.now + 0.001, o.name, wire, "sync"))

    def view(self, name: str) -> ElectionView:
        e = self.boards[name].election
        peers = list(e.peers.values())
        if not peers:
            return ElectionView(Role(e.state), None, e.master_down)
        p = peers[0]
        fresh = self.now - p.last_heard <= e.master_down
        pv = PeerView(p.board_id, Role(p.advert.state), p.advert.priority, p.advert.health,
                      p.advert.cameras, fresh,
                      {k: self.now - t for k, t in p.paths.items()})  # fmt: skip
        return ElectionView(Role(e.state), pv, e.master_down)

    def sample(self, name: str) -> None:
        b = self.boards[name]
        rec = b.can_record()
        for c in CAMS:
            if c in rec:
                b.lost_at.pop(c, None)
            else:
                b.lost_at.setdefault(c, self.now)

        def seen(c: str) -> CameraSeen:
            if c in rec:
                return CameraSeen(c, True, 0.05)
            lost_for = self.now - b.lost_at[c]
            if b.stalled:  # a hung worker reports nothing more
                return CameraSeen(c, True, lost_for + 0.05)
            return CameraSeen(c, lost_for < RECORDER_STALL_S, 0.05)  # the recorder's stall limit

        seen = tuple(seen(c) for c in CAMS)  # fmt: skip
        for fact in (Cameras(CAMS, seen), Storage(b.disk), WriteSpace(b.full), b.power,
                     self.view(name)):  # fmt: skip
            self.core_actions(name, b.core.handle(fact, self.now))

    def set_link(self, name: str, link: Link, up: bool, both_ends: bool = True) -> None:
        """both_ends=False: only `name` notices the carrier change (a PHY that polls late)."""
        b = self.boards[name]
        setattr(b, link.value, up)
        for n in self.boards:  # both ends of a cable see its carrier
            if (link is Link.LAN or not both_ends) and n != name:
                continue
            if self.boards[n].alive:
                self.core_actions(n, self.boards[n].core.handle(Carrier(link, up), self.now))
                if link is Link.SYNC:
                    self.election_actions(n, self.boards[n].election.sync_carrier(up, self.now))

    def run_until(self, t_end: float) -> None:
        next_sample = self.now
        while self.now < t_end:
            self.now = round(self.now + STEP, 6)
            due = [m for m in self.queue if m[0] <= self.now]
            self.queue = [m for m in self.queue if m[0] > self.now]
            for _, dst, wire, path in due:
                b = self.boards[dst]
                if b.alive:
                    acts = b.election.receive(decode(wire, KEY), self.now, path)
                    self.election_actions(dst, acts)
            for name, b in self.boards.items():
                d = b.election.deadline
                if b.alive and d is not None and d <= self.now:
                    self.election_actions(name, b.election.tick(self.now))
            if self.now >= next_sample:
                next_sample = self.now + SAMPLE
                for name, b in self.boards.items():
                    if b.alive:
                        self.sample(name)
            self.actives.append((self.now, self.active()))

    def active(self) -> set[str]:
        return {n for n, b in self.boards.items() if b.alive and b.election.state == "active"}


def steady_pair() -> SimPair:
    sim = SimPair()
    sim.add("a", 150)
    sim.run_until(1.0)
    sim.add("b", 100)
    sim.run_until(1.0 + S.hold_down + 1.0)  # past a's minimum dwell as the active board
    assert sim.active() == {"a"}
    return sim


def inject(sim: SimPair, board: str, fault: str) -> None:
    b = sim.boards[board]
    if fault == "lan":
        sim.set_link(board, Link.LAN, False)
    elif fault == "cameras-all":
        b.reach = set()
    elif fault == "cameras-some":
        b.reach = {"c1"}
    elif fault == "stall":
        b.stalled = True
    elif fault == "disk-missing":
        b.disk = DiskFault.MISSING
    elif fault == "disk-read-only":
        b.disk = DiskFault.READ_ONLY
    elif fault == "disk-full":
        b.full = True
    elif fault == "on-battery":
        b.power = Power(True, False)
    elif fault == "battery-low":
        b.power = Power(True, True)


def records_best(sim: SimPair, name: str) -> bool:
    b, o = sim.boards[name], sim.other(name)
    if not b.can_work():
        return False
    return not o.can_work() or len(b.can_record()) >= len(o.can_record())


@pytest.mark.parametrize("fault", FAULTS)
def test_every_fault_on_the_active_moves_the_pair_to_the_standby(fault):
    sim = steady_pair()
    inject(sim, "a", fault)
    sim.run_until(sim.now + 8.0)
    assert sim.active() == {"b"}, fault


@settings(max_examples=60, deadline=None)
@given(
    fault=st.sampled_from(FAULTS),
    on=st.sampled_from(["a", "b"]),
    at=st.floats(0.0, 2.0),
)
def test_any_single_fault_leaves_one_active_board_that_can_record(fault, on, at):
    """Within a bounded time exactly one board is active and it is one that can record the
    cameras; a fault on the standby never moves the VIP."""
    sim = steady_pair()
    sim.run_until(sim.now + at)
    t_fault = sim.now
    inject(sim, on, fault)
    sim.run_until(sim.now + 10.0)
    final = sim.active()
    assert len(final) == 1, (fault, on, final)
    (who,) = final
    assert records_best(sim, who), (fault, on, who)
    if on == "b":
        assert all(act == {"a"} for t, act in sim.actives if t >= t_fault), "the VIP moved"


def test_a_flapping_lan_cable_moves_the_pair_once():
    sim = steady_pair()
    t0 = sim.now
    for i in range(10):
        sim.set_link("a", Link.LAN, i % 2 == 1)
        sim.run_until(sim.now + 1.0)
    sim.set_link("a", Link.LAN, True)
    sim.run_until(sim.now + 15.0)
    seen = [act for t, act in sim.actives if t >= t0]
    changes = sum(1 for x, y in itertools.pairwise(seen) if x != y)
    assert sim.active() == {"b"} and changes <= 2  # a -> (none, a moment) -> b


def test_the_same_fault_on_both_boards_moves_nothing():
    sim = steady_pair()
    t0 = sim.now
    for name in ("a", "b"):
        sim.boards[name].reach = {"c1"}
    sim.run_until(sim.now + 10.0)
    assert all(act == {"a"} for t, act in sim.actives if t >= t0)


def test_power_cut_is_taken_over_on_the_sync_carrier_before_master_down():
    sim = steady_pair()
    a = sim.boards["a"]
    a.alive = False
    t_cut = sim.now
    sim.set_link("a", Link.SYNC, False)  # b sees its sync port lose carrier
    sim.boards["a"].lan = False
    sim.run_until(sim.now + 1.0)
    took = next(t for t, act in sim.actives if t > t_cut and act == {"b"})
    master_down = sim.boards["b"].election.master_down
    assert took - t_cut < 0.6 * master_down
    assert sim.boards["b"].election.stats.get("sync_carrier_takeover") == 1


def test_pulling_only_the_sync_cable_takes_nothing_over():
    sim = steady_pair()
    t0 = sim.now
    for _ in range(20):
        sim.set_link("a", Link.SYNC, False)
        sim.run_until(sim.now + 1.0)
        sim.set_link("a", Link.SYNC, True)
        sim.run_until(sim.now + 1.0)
    assert all(act == {"a"} for t, act in sim.actives if t >= t0)
    assert sim.boards["b"].election.stats.get("sync_pull_confirmed", 0) == 20


def test_a_sync_pull_the_active_board_notices_late_takes_nothing_over():
    """The standby's port reports the drop, the active board's does not (yet): the active board
    answers the standby's sync-down over the LAN, so the standby knows it is alive."""
    sim = steady_pair()
    t0 = sim.now
    sim.set_link("b", Link.SYNC, False, both_ends=False)
    sim.run_until(sim.now + 2.0)
    assert all(act == {"a"} for t, act in sim.actives if t >= t0)
    assert sim.boards["b"].election.stats.get("sync_pull_confirmed") == 1


def test_a_board_that_just_took_over_keeps_the_pair_against_the_camera_rule():
    """The burst of a takeover can make cameras look stale on the new active board for a few
    seconds; within the minimum dwell only a board that cannot work at all hands on."""
    core = BoardCore(S)
    core.handle(cams(set(CAMS)), 0.0)
    standby = ElectionView(
        Role.STANDBY, PeerView("b", Role.ACTIVE, 100, Health.NONE, 3, True), 0.36
    )
    core.handle(standby, 0.0)
    core.handle(peer(), 0.0)  # took over from b at 0
    core.handle(cams({"c1"}), 1.0)
    assert not of(HandOver, core.tick(S.dwell - 1)), "within the dwell: stays"
    assert not of(HandOver, core.tick(S.dwell + 0.5))
    assert of(HandOver, core.tick(S.dwell + 1.6)), "after the dwell (and the confirm) it applies"
    core = BoardCore(S)
    core.handle(cams(set(CAMS)), 0.0)
    core.handle(peer(), 0.0)
    assert of(HandOver, core.handle(Carrier(Link.LAN, False), 1.0)), "rule 1 is never held"


def test_cameras_still_coming_up_at_start_do_not_move_the_pair():
    """A board opening its sessions and files at start is slower than a standby filling its
    ring: a camera never yet live in the first seconds counts as coming up, not as lost."""
    slow = CoreSettings(**{**S.__dict__, "camera_startup": 30.0})
    core = BoardCore(slow)
    core.handle(cams({"c1"}), 0.0)  # c2, c3 not up yet
    core.handle(peer(), 0.0)
    assert not of(HandOver, core.tick(5.0)) and not of(HandOver, core.tick(20.0))
    assert of(HandOver, core.tick(31.0) + core.tick(32.1)), "past the start-up: they count"
