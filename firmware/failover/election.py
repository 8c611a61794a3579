"""Sans-IO election of the active board of a hot-standby pair (VRRP-like, RFC 9568 timers).

The caller owns sockets, the clock and the VIP. It feeds inputs (`start`, `tick`, `receive`,
`set_health`, `set_reachable`, `shutdown`) with the current time, carries out the returned
actions in order, and calls `tick` again no later than `deadline`.

Differences from plain VRRP, all chosen for a two-or-three board recorder pair:
- standby boards also advertise every interval, so peers can rank live candidates and the
  active board sees its standby's health;
- an `epoch` rises with every takeover; when a healed partition leaves two boards active, the
  one with the lower (epoch, effective priority, board_id) releases at once;
- with every path silent, a standby only claims the VIP if it can reach the cameras/gateway;
- the direct sync cable is evidence keepalived lacks: when its carrier drops, a dead peer
  sends nothing more, while a live one says at once (health SYNC_DOWN) that it saw the drop
  too. A standby that hears no such word within `sync_grace` takes over without waiting out
  the master-down interval. The active board also answers a standby's SYNC_DOWN at once with
  SYNC_DOWN of its own, so a live board is heard even before its own port notices the drop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from firmware.failover.advert import MAX_SEGMENT_BYTES, U64_MAX, VERSION, Advert, Health

PATHS: Final = ("lan", "sync", "serial")
LATE_WINDOW: Final = 16
"""Adverts at most this many sequence numbers behind the newest are counted as late, not
as replays (both are dropped)."""

FLOOR_AHEAD_SECONDS: Final = 1.0
"""The anti-replay floor a board persists for a peer runs this far (in the peer's own advert
intervals) ahead of the last sequence number accepted from it, so it is written about once a
second and still covers every advert accepted before a crash. A board restarted after a crash
takes longer than that to listen again (systemd waits 2 s), so a live peer is past it by then;
a clean stop writes the exact numbers."""

PRIORITY_MIN: Final = 1
PRIORITY_MAX: Final = 254
"""Configurable priorities; 0 on the wire means "leaving" and 255 is VRRP's address owner."""

DEFAULT_WEIGHTS: Final[dict[Health, int]] = {
    Health.RECORDER_UNHEALTHY: 50,
    Health.DISK_FAILED: 100,
    Health.DISK_FULL: 30,
    Health.LAN_DOWN: 80,
    Health.UPS_ON_BATTERY: 20,
    Health.UPS_LOW: 60,
    Health.MIRROR_BEHIND: 100,
    Health.SYNC_DOWN: 0,
}
"""How much each flag lowers the effective priority; `[pair.health_weights]` defaults."""


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send this advert on every path (LAN, sync link, serial)."""

    advert: Advert


@dataclass(frozen=True, slots=True)
class TakeVIP:
    """Add the floating IP and announce it (gratuitous ARP / unsolicited NA)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class ReleaseVIP:
    """Remove the floating IP now; always first in its action list."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    """Role change, for logs, alerts and `nvr status`."""

    old: str
    new: str
    reason: str


Action = SendAdvert | TakeVIP | ReleaseVIP | StateChanged


@dataclass(slots=True)
class Peer:
    """What we last heard from another board, and over which paths."""

    board_id: str
    advert: Advert
    last_heard: float
    paths: dict[str, float] = field(default_factory=dict)


def skew_time(priority: int, interval: float) -> float:
    """RFC 9568 Skew_Time: better boards wait less, so they win races for the VIP."""
    return ((256 - priority) * interval) / 256


def master_down_interval(priority: int, interval: float) -> float:
    """RFC 9568 Master_Down_Interval: three missed adverts plus the skew."""
    return 3 * interval + skew_time(priority, interval)


class Election:
    """One board's view of the election; holds no IO and reads no clock."""

    def __init__(
        self,
        board_id: str,
        pair_id: str,
        priority: int,
        interval: float,
        preempt: bool = True,
        preempt_delay: float = 0.0,
        weights: dict[Health, int] | None = None,
        seq_start: int = 0,
        sync_grace: float | None = None,
        seen: Mapping[str, int] | None = None,
    ) -> None:
        """`seq_start` lets the caller keep seq rising across restarts (e.g. wall-clock
        microseconds or a persisted counter); peers drop adverts whose seq goes backwards.
        `seen`: the floors persisted by an earlier run (`floors_due`, `seen`), so adverts
        captured before this board restarted are still dropped as replays after it.
        `sync_grace`: after the sync carrier drops, how long a live peer has to say it saw
        the drop too (default one advert interval); 0 turns the sync-carrier path off."""
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise ValueError(f"priority must be {PRIORITY_MIN}..{PRIORITY_MAX}")
        if interval <= 0:
            raise ValueError("interval must be positive")
        if preempt_delay < 0:
            raise ValueError("preempt_delay must not be negative")
        self.board_id = board_id
        self.pair_id = pair_id
        self.priority = priority
        self.interval = float(interval)
        self.preempt = preempt
        self.preempt_delay = float(preempt_delay)
        self.weights: dict[Health, int] = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.sync_grace = self.interval if sync_grace is None else float(sync_grace)
        if self.sync_grace < 0:
            raise ValueError("sync_grace must not be negative")
        self.state = "init"
        self.cameras = 0
        self.epoch = 0
        self.max_epoch = 0
        self.health = Health.NONE
        self.reachable = True
        self.newest_segment = ""
        self.peers: dict[str, Peer] = {}
        self.stats: dict[str, int] = {}
        self._seq = seq_start
        self._last_seq: dict[str, int] = dict(seen or {})
        self._floors: dict[str, int] = dict(self._last_seq)
        self._floors_changed = False
        self._learned_interval = self.interval
        self._advert_at: float | None = None
        self._master_down_at: float | None = None
        self._preempt_at: float | None = None
        self._handover = False
        self._handover_from: str | None = None
        self._yielded = False
        self._sync_up = True
        self._sync_down_at: float | None = None
        self._sync_suspect: str | None = None
        self._echo = Health.NONE
        # Validate now so a bad board_id fails at construction, not at the first send.
        self._advert("init", self.priority)

    # ----------------------------------------------------------------- derived values

    @property
    def effective_priority(self) -> int:
        """Configured priority minus a weight per health flag, never below 1."""
        penalty = sum(w for flag, w in self.weights.items() if flag & self.health)
        return max(1, self.priority - penalty)

    @property
    def deadline(self) -> float | None:
        """Next time `tick` must run, or None when stopped."""
        if self.state == "init":
            return None
        timers = (self._advert_at, self._master_down_at, self._preempt_at, self._sync_down_at)
        times = [t for t in timers if t is not None]
        return min(times) if times else None

    @property
    def master_down(self) -> float:
        """Silence tolerated before claiming the VIP, using the active peer's interval."""
        return master_down_interval(self.effective_priority, self._learned_interval)

    def _rank(self) -> tuple[int, str]:
        return (self.effective_priority, self.board_id)

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _advert(self, state: str, priority: int) -> Advert:
        return Advert(
            version=VERSION,
            pair_id=self.pair_id,
            board_id=self.board_id,
            priority=priority,
            state=state,
            epoch=self.epoch if state == "active" else self.max_epoch,
            seq=self._seq,
            interval_ms=max(1, round(self.interval * 1000)),
            health=self.health | self._echo,
            newest_segment=self.newest_segment,
            cameras=min(255, self.cameras),
        )

    def _send(self, state: str | None = None, priority: int | None = None) -> SendAdvert:
        self._seq += 1
        prio = self.effective_priority if priority is None else priority
        return SendAdvert(self._advert(state or self.state, prio))

    def _raise_floor(self, advert: Advert) -> None:
        floor = self._floors.get(advert.board_id)
        if floor is None or advert.seq > floor:
            step = max(1, math.ceil(FLOOR_AHEAD_SECONDS * 1000 / advert.interval_ms))
            self._floors[advert.board_id] = min(U64_MAX, advert.seq + step)
            self._floors_changed = True

    def floors_due(self) -> dict[str, int] | None:
        """Anti-replay floors for the caller to persist now (and pass as `seen` at the next
        start), or None when the last ones still cover every accepted advert."""
        if not self._floors_changed:
            return None
        self._floors_changed = False
        return dict(self._floors)

    @property
    def seen(self) -> dict[str, int]:
        """The last sequence number accepted from each peer: what a clean stop persists, exact
        so that a quick restart hears the live peer at once."""
        return dict(self._last_seq)

    def live_peers(self, now: float) -> list[Peer]:
        horizon = now - self.master_down
        return [p for p in self.peers.values() if p.last_heard >= horizon and p.advert.priority > 0]

    def current_active(self, now: float) -> Peer | None:
        """The peer that is active by the freshest knowledge (highest epoch wins)."""
        actives = [p for p in self.live_peers(now) if p.advert.state == "active"]
        if not actives:
            return None
        return max(actives, key=lambda p: (p.advert.epoch, p.advert.priority, p.board_id))

    # ----------------------------------------------------------------- transitions

    def _become_active(self, now: float, reason: str) -> list[Action]:
        old = self.state
        self.max_epoch += 1
        self.epoch = self.max_epoch
        self.state = "active"
        self._master_down_at = None
        self._preempt_at = None
        self._sync_down_at = None
        self._sync_suspect = None
        self._handover = False
        self._handover_from = None
        self._yielded = False
        self._advert_at = now + self.interval
        # Announce before taking the VIP so peers learn the new epoch as early as possible.
        return [self._send(), TakeVIP(self.epoch), StateChanged(old, "active", reason)]

    def _become_standby(self, now: float, reason: str) -> list[Action]:
        actions: list[Action] = []
        self._echo = Health.NONE
        old = self.state
        if old == "active":
            actions.append(ReleaseVIP())
        self.state = "standby"
        actions.append(StateChanged(old, "standby", reason))
        self._preempt_at = None
        self._master_down_at = now + self.master_down
        self._advert_at = now + self.interval
        actions.append(self._send())
        return actions

    # ----------------------------------------------------------------- inputs

    def start(self, now: float) -> list[Action]:
        """Begin as standby: a rebooted board must first listen for a running active peer."""
        if self.state != "init":
            return []
        self._learned_interval = self.interval
        return self._become_standby(now, "start")

    def shutdown(self, now: float) -> list[Action]:
        """Planned handover: release, then tell peers (priority 0) to take over after skew."""
        if self.state == "init":
            return []
        actions: list[Action] = []
        old = self.state
        if old == "active":
            actions.append(ReleaseVIP())
        self.state = "init"
        self._advert_at = self._master_down_at = self._preempt_at = self._sync_down_at = None
        actions.append(StateChanged(old, "init", "shutdown"))
        actions.append(self._send(state="init", priority=0))
        return actions

    def step_down(self, now: float) -> list[Action]:
        """Planned handover while staying up (drills, maintenance): release, advertise
        priority 0 so the best standby takes over after its skew, and do not preempt back.
        If nobody takes over, the usual master-down timer makes this board claim again."""
        if self.state != "active":
            return []
        self.state = "standby"
        self._echo = Health.NONE
        self._yielded = True
        self._preempt_at = None
        self._master_down_at = now + self.master_down
        self._advert_at = now + self.interval
        return [
            ReleaseVIP(),
            StateChanged("active", "standby", "handover"),
            self._send(priority=0),
        ]

    def set_reachable(self, reachable: bool) -> None:
        """Tie-breaker input: can this board reach the cameras/gateway?"""
        self.reachable = reachable

    def set_newest_segment(self, name: str) -> None:
        """Advertised so the peer can tell how far its mirror lags; checked here so a bad
        name fails at the caller instead of at the next timer."""
        if len(name.encode("utf-8")) > MAX_SEGMENT_BYTES or "\x00" in name:
            raise ValueError("newest_segment must be at most 96 bytes utf-8 without NUL")
        self.newest_segment = name

    def sync_carrier(self, up: bool, now: float) -> list[Action]:
        """The sync cable's carrier, as the NIC reports it. A drop while a peer is active
        arms the fast takeover: unless that peer says within `sync_grace` that it saw the
        drop too (an advert with SYNC_DOWN), it is taken for dead."""
        was, self._sync_up = self._sync_up, up
        if up or not was:
            self._sync_down_at = self._sync_suspect = None
            return []
        top = self.current_active(now)
        if self.state != "standby" or top is None or self.sync_grace <= 0:
            return []
        if top.advert.health & Health.SYNC_DOWN:
            return []  # its sync was already down: the drop says nothing about it
        self._sync_suspect = top.board_id
        self._sync_down_at = now + self.sync_grace
        self._count("sync_carrier_lost")
        return []

    def set_cameras(self, live: int) -> None:
        """Advertised with the next advert: the pair belongs where more cameras are live."""
        if live < 0:
            raise ValueError("cameras must not be negative")
        self.cameras = live

    def set_health(self, flags: Health, now: float) -> list[Action]:
        """Health lowers effective priority; tell peers at once so they can preempt."""
        if flags == self.health:
            return []
        self.health = Health(flags)
        if self.state == "active":
            self._advert_at = now + self.interval
            return [self._send()]
        if self.state == "standby":
            actions: list[Action] = [self._send()]
            self._advert_at = now + self.interval
            actions += self._check_preempt(now)
            return actions
        return []

    def receive(self, advert: Advert, now: float, path: str) -> list[Action]:
        """Handle an authenticated advert from one of the paths."""
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}")
        self._count(f"rx_{path}")
        if self.state == "init":
            self._count("ignored_stopped")
            return []
        if advert.pair_id != self.pair_id:
            self._count("foreign_pair")
            return []
        if advert.board_id == self.board_id:
            self._count("own")
            return []
        last = self._last_seq.get(advert.board_id)
        if last is not None and advert.seq <= last:
            if advert.seq == last:
                self._count("duplicate")
                peer = self.peers.get(advert.board_id)
                if peer is not None:
                    peer.paths[path] = now
            elif last - advert.seq <= LATE_WINDOW:
                # The same adverts on several paths can arrive out of order when a busy
                # board drains one socket before the other: dropped, but not an attack.
                self._count("late")
            else:
                self._count("replay")
            return []
        self._last_seq[advert.board_id] = advert.seq
        self._raise_floor(advert)
        self._count("accepted")
        previous = self.peers.get(advert.board_id)
        peer = Peer(advert.board_id, advert, now, dict(previous.paths) if previous else {})
        peer.paths[path] = now
        was_active_peer = previous is not None and previous.advert.state == "active"
        self.peers[advert.board_id] = peer
        self.max_epoch = max(self.max_epoch, advert.epoch)
        if advert.board_id == self._sync_suspect and (
            advert.health & Health.SYNC_DOWN or advert.state != "active"
        ):
            # Alive, and it saw the drop as well (or it is no longer active): a cable pull.
            self._sync_down_at = self._sync_suspect = None
            self._count("sync_pull_confirmed")

        if self.state == "active":
            return self._receive_as_active(advert, now)
        return self._receive_as_standby(advert, now, was_active_peer)

    def _receive_as_active(self, advert: Advert, now: float) -> list[Action]:
        echo = advert.health & Health.SYNC_DOWN
        if advert.state != "active" and echo != self._echo:
            # The standby lost its sync carrier: say at once, over the paths left, that this
            # board is alive and knows, so the standby does not take the drop for its death
            # (whether or not this board's own port has noticed yet).
            self._echo = echo
            if echo:
                self._advert_at = now + self.interval
                return [self._send()]
        if advert.state != "active" or advert.priority == 0:
            return []
        theirs = (advert.epoch, advert.priority, advert.board_id)
        ours = (self.epoch, self.effective_priority, self.board_id)
        if theirs > ours:
            self._count("released_dual_active")
            self._learned_interval = advert.interval_ms / 1000
            actions = self._become_standby(now, f"dual active, {advert.board_id} wins")
            if self.preempt and self.effective_priority > advert.priority:
                # Preempt later via tick, never in the same action list as the release.
                self._preempt_at = now + self.preempt_delay
            return actions
        # We win: advertise right away so the loser releases without waiting an interval.
        self._advert_at = now + self.interval
        return [self._send()]

    def _receive_as_standby(self, advert: Advert, now: float, was_active: bool) -> list[Action]:
        if advert.priority == 0:
            if was_active or advert.state == "active":
                # Planned handover: take over after skew only.
                self._handover = True
                self._handover_from = advert.board_id
                self._preempt_at = None
                self._master_down_at = now + skew_time(
                    self.effective_priority, self._learned_interval
                )
            return []
        if advert.state != "active":
            return []
        top = self.current_active(now)
        if top is None or top.board_id != advert.board_id:
            return []  # stale: a newer epoch is active, this one will release
        self._handover = False
        self._learned_interval = advert.interval_ms / 1000
        self._master_down_at = now + self.master_down
        return self._check_preempt(now)

    def _check_preempt(self, now: float) -> list[Action]:
        top = self.current_active(now)
        if (
            not self.preempt
            or self._yielded
            or top is None
            or top.advert.priority >= self.effective_priority
        ):
            self._preempt_at = None
            return []
        if self._preempt_at is None:
            self._preempt_at = now + self.preempt_delay
        if now >= self._preempt_at:
            return self._become_active(now, f"preempt {top.board_id}")
        return []

    def tick(self, now: float) -> list[Action]:
        """Run whatever timers are due; calling early is harmless."""
        if self.state == "init":
            return []
        actions: list[Action] = []
        if self.state == "standby" and self._preempt_at is not None and now >= self._preempt_at:
            actions += self._check_preempt(now)
        if self.state == "standby" and self._sync_down_at is not None and now >= self._sync_down_at:
            self._sync_down_at = None
            actions += self._sync_silence(now)
        if (
            self.state == "standby"
            and self._master_down_at is not None
            and now >= self._master_down_at
        ):
            actions += self._master_down_expired(now)
        if self._advert_at is not None and now >= self._advert_at:
            if not any(isinstance(a, SendAdvert) for a in actions):
                actions.append(self._send())
            self._advert_at = now + self.interval
        return actions

    def _sync_silence(self, now: float) -> list[Action]:
        """The sync carrier dropped and the active peer did not say it saw it: dead. Claim as
        on master-down, with the same tie-breakers, unless a newer active has appeared."""
        suspect, self._sync_suspect = self._sync_suspect, None
        top = self.current_active(now)
        if top is None or top.board_id != suspect:
            return []
        self._count("sync_carrier_takeover")
        actions = self._master_down_expired(now, ignore=suspect, reason="sync carrier lost")
        return actions

    def _master_down_expired(
        self, now: float, ignore: str | None = None, reason: str = "master down"
    ) -> list[Action]:
        # Any active left is either silent or one with a stale epoch; claiming with a newer
        # epoch makes the stale one release, so only standby peers are ranked here.
        live = [
            p
            for p in self.live_peers(now)
            if p.advert.state != "active" and p.board_id not in (self._handover_from, ignore)
        ]
        if live:
            best = max(live, key=lambda p: (p.advert.priority, p.board_id))
            if (best.advert.priority, best.board_id) > self._rank():
                self._count("deferred_to_peer")
                self._master_down_at = now + self.master_down
                return []
            return self._become_active(now, "handover" if self._handover else reason)
        if self._handover:
            return self._become_active(now, "handover")
        if not self.reachable:
            self._count("withheld_unreachable")
            self._master_down_at = now + self.master_down
            return []
        return self._become_active(now, reason)
