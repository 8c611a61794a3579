"""The board core: facts and `now` in, actions out. Pure, so every fault sequence is tested
with a jumped clock and two cores plus two elections run in one test. Time-driven changes
(hold-downs, confirm times, alert delays) happen at `tick`, which the board runs with every
sample of its parts (0.25 s).

The rule (docs/FAILOVER.md): the active board hands the pair over when the standby can do the
job better, and only then:
1. a board that cannot work at all (LAN cable out, data disk missing, read-only or full,
   battery low) yields to one that can;
2. else the board with more cameras live records (a camera is live where its session is up and
   its recorder reported on it within `camera_stale_seconds`), once the standby has had more for
   `camera_confirm_seconds` (a camera not yet live in the board's first 30 s is coming up,
   not lost);
3. else a board on battery for `handover_after_seconds` yields to one on mains.
Hysteresis: a fault counts until it has been gone for `fault_hold_down_seconds`, and a lost
camera counts as lost until it has been back that long, so a flapping cable or camera keeps
the board that has it from being handed the role back; and a board that took the pair over
from a live peer keeps it against rules 2 and 3 for `takeover_dwell_seconds` (minimum dwell),
so a deficiency that follows the role (load: whichever board records falls behind) moves the
pair at most once per dwell instead of bouncing it. A fault on the standby only changes
what it advertises; the same fault on both boards moves nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from firmware.alert_ids import AlertId, Severity
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
from firmware.core.facts import (
    Cameras,
    Carrier,
    DiskFault,
    Drops,
    ElectionView,
    Fact,
    Link,
    MirrorProgress,
    PeerView,
    Power,
    Storage,
    WriteErrors,
    WriteSpace,
)
from firmware.failover.advert import Health
from firmware.roles import RecorderMode, Role

CANNOT_WORK = Health.LAN_DOWN | Health.DISK_FAILED | Health.DISK_FULL | Health.UPS_LOW
"""A board with any of these cannot record and serve: the peer does it if it can."""
KEY_ALERT_QUIET_S = 30.0
"""A mis-keyed peer's alert clears after this long without a bad advert."""
HANDOVER_RETRY_S = 3.0
"""A handover nobody took (the peer claimed nothing) is asked again after this long."""


@dataclass(frozen=True)
class CoreSettings:
    paired: bool
    hold_down: float = 10.0
    camera_stale: float = 5.0
    camera_confirm: float = 1.0
    battery_handover_after: float = 5.0
    dwell: float = 300.0
    """After taking the pair over from a live peer, rules 2 and 3 wait this long."""
    camera_startup: float = 30.0
    """A camera not yet live this long after the board started is coming up, not lost: a
    board opening 32 sessions and files is slower than a standby filling its ring."""
    ring_seconds: float = 12.0
    """How long the standby's ring reaches back: the pair may run without a standby this long
    before it is an alert."""


class _Held:
    """A flag that is raised at once and lowered only after it has been clear `hold` s."""

    def __init__(self) -> None:
        self.present = False
        self.cleared_at: float | None = None

    def set(self, present: bool, now: float) -> None:
        if present:
            self.cleared_at = None
        elif self.present:
            self.cleared_at = now
        self.present = present

    def on(self, now: float, hold: float) -> bool:
        return self.present or (self.cleared_at is not None and now - self.cleared_at < hold)


class BoardCore:
    def __init__(self, settings: CoreSettings) -> None:
        self.s = settings
        self.role = Role.STANDBY if settings.paired else Role.SINGLE
        self.peer: PeerView | None = None
        self.master_down = 0.4
        self.carrier = {Link.LAN: True, Link.SYNC: True}
        self.disk: DiskFault | None = None
        self.disk_detail = ""
        self.disk_full = False
        self.power = Power(False, False)
        self.on_battery_since: float | None = None
        self.mirror_behind = False
        self.write_error: str | None = None
        self._flags = {flag: _Held() for flag in Health if flag}
        self._enabled: frozenset[str] = frozenset()
        self._live: set[str] = set()
        self._ever_live: set[str] = set()
        self._started_at: float | None = None
        self._lost: set[str] = set()
        """Cameras lost at least once: when one comes back it is held down."""
        self._back_at: dict[str, float] = {}
        self._ahead_since: float | None = None
        self._role_since = -math.inf
        self._active_at = -math.inf
        """When this board last became active."""
        self._peer_at = -math.inf
        """When the peer view (its path ages) was last handed in."""
        self._handed_over_at: float | None = None
        self._shutting_down = False
        self._hmac_seen = 0
        self._hmac_at: float | None = None
        self._version_seen = 0
        self._version_at: float | None = None
        self._alone_since: float | None = None
        self._peer_since: float | None = None
        self._advertised: SetHealth | None = None
        self._mode: RecorderMode | None = None
        self._holding = False
        self._alerts: dict[AlertId, RaiseAlert] = {}

    # --- facts ------------------------------------------------------------------------------

    def handle(self, fact: Fact, now: float) -> list[Action]:
        """One fact that must be acted on at once (carrier, role change, a reading)."""
        return self.handle_all((fact,), now)

    def handle_all(self, facts: Iterable[Fact], now: float) -> list[Action]:
        """A sample of the board's parts: every fact noted first, then one decision, so no
        fact read before a handover can undo it."""
        for fact in facts:
            self._note(fact, now)
        return self.tick(now)

    def _note(self, fact: Fact, now: float) -> None:
        if isinstance(fact, Carrier):
            self.carrier[fact.link] = fact.up
        elif isinstance(fact, Cameras):
            self._cameras(fact, now)
        elif isinstance(fact, Storage):
            self.disk, self.disk_detail = fact.fault, fact.detail
        elif isinstance(fact, WriteSpace):
            self.disk_full = fact.exhausted
        elif isinstance(fact, WriteErrors):
            self.write_error = (
                (fact.detail or "writes to the data disk fail") if fact.failing else None
            )
        elif isinstance(fact, Power):
            self.power = fact
            if not fact.on_battery:
                self.on_battery_since = None
            elif self.on_battery_since is None:
                self.on_battery_since = now
        elif isinstance(fact, MirrorProgress):
            self.mirror_behind = fact.behind
        elif isinstance(fact, ElectionView):
            if fact.role != self.role:
                self._ahead_since = None
                # The dwell follows a takeover from a known peer, not a board's first start.
                took_over = fact.role is Role.ACTIVE and self.peer is not None and self.peer.fresh
                self._role_since = now if took_over else -math.inf
                self._active_at = now
            self.role, self.peer, self.master_down = fact.role, fact.peer, fact.master_down
            self._peer_at = now
            fresh = fact.peer is not None and fact.peer.fresh
            if not fresh:
                self._peer_since = None
            elif self._peer_since is None:
                self._peer_since = now
        elif isinstance(fact, Drops):
            self._drops(fact, now)

    def _cameras(self, fact: Cameras, now: float) -> None:
        self._enabled = fact.enabled
        if self._started_at is None:
            self._started_at = now
        live = {
            c.name
            for c in fact.seen
            if c.name in fact.enabled
            and c.session
            and c.report_age is not None
            and c.report_age < self.s.camera_stale
        }
        for name in fact.enabled:
            if name in self._live and name not in live:
                self._lost.add(name)
                self._back_at.pop(name, None)
            elif name in live and name not in self._live and name in self._lost:
                self._back_at[name] = now
        self._live = live
        self._ever_live |= live

    def _drops(self, fact: Drops, now: float) -> None:
        if fact.hmac > self._hmac_seen:
            self._hmac_at = now
        if fact.version > self._version_seen:
            self._version_at = now
        self._hmac_seen, self._version_seen = fact.hmac, fact.version

    # --- derived ----------------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        """Writes (and the mirror's fetches) are held: the data disk is not ours."""
        return self._holding

    def cameras_live(self, now: float) -> int:
        """Live cameras, not counting one lost lately: it counts again after the hold-down."""

        def steady(name: str) -> bool:
            if name not in self._live:
                return False
            back = self._back_at.get(name)
            return back is None or now - back >= self.s.hold_down

        return sum(1 for name in self._enabled if steady(name))

    def _present(self, now: float) -> Health:
        flags = Health.NONE
        if not self.carrier[Link.LAN]:
            flags |= Health.LAN_DOWN
        if not self.carrier[Link.SYNC]:
            flags |= Health.SYNC_DOWN
        if self.disk is not None or self.write_error is not None:
            flags |= Health.DISK_FAILED
        if self.disk_full:
            flags |= Health.DISK_FULL
        if self.power.on_battery:
            flags |= Health.UPS_ON_BATTERY
        if self.power.on_battery and self.power.low:
            flags |= Health.UPS_LOW
        if self.cameras_live(now) < len(self._enabled):
            flags |= Health.RECORDER_UNHEALTHY
        if self.mirror_behind:
            flags |= Health.MIRROR_BEHIND
        return flags

    def health(self, now: float) -> Health:
        """What this board advertises: faults held down; progress, the sync carrier and the
        camera count (held per camera) not."""
        present = self._present(now)
        flags = Health.NONE
        for flag, held in self._flags.items():
            held.set(bool(present & flag), now)
            # Lost cameras are held down one by one (cameras_live), not as a flag, so a
            # board whose cameras come up at start is not held unhealthy.
            immediate = flag in (Health.MIRROR_BEHIND, Health.SYNC_DOWN, Health.RECORDER_UNHEALTHY)
            if held.present or (not immediate and held.on(now, self.s.hold_down)):
                flags |= flag
        return flags

    def _ready_peer(self) -> PeerView | None:
        p = self.peer
        if p is None or not p.fresh or p.role is not Role.STANDBY or p.priority == 0:
            return None
        return p

    def _why_hand_over(self, now: float, flags: Health) -> str | None:
        peer = self._ready_peer()
        if self.role is not Role.ACTIVE or peer is None:
            self._ahead_since = None
            return None
        mine, theirs = flags & CANNOT_WORK, peer.health & CANNOT_WORK
        if mine and not theirs:
            return _fault_text(mine, self.disk_detail or self.write_error or "")
        if theirs or now - self._role_since < self.s.dwell:
            # Minimum dwell: a takeover's own burst (32 cameras switching from the ring to
            # disk) can make cameras look stale for seconds; only a board that cannot work at
            # all hands a pair on this soon.
            self._ahead_since = None
            return None
        live = self.cameras_live(now)
        starting = self._started_at is not None and now - self._started_at < self.s.camera_startup
        if starting:
            live += len(self._enabled - self._ever_live)  # still coming up
        if peer.cameras > live:
            if self._ahead_since is None:
                self._ahead_since = now
            if now - self._ahead_since >= self.s.camera_confirm:
                return f"{peer.board} has {peer.cameras} cameras live, this board {live}"
            return None
        self._ahead_since = None
        on_battery_due = (
            self.on_battery_since is not None
            and now - self.on_battery_since >= self.s.battery_handover_after
        )
        if on_battery_due and not peer.health & Health.UPS_ON_BATTERY and peer.cameras >= live:
            return "on battery; the peer is on mains"
        return None

    # --- decisions --------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        for name, back in list(self._back_at.items()):
            if now - back >= self.s.hold_down:
                del self._back_at[name]
        flags = self.health(now) if self.s.paired else Health.NONE
        if self.s.paired:
            adv = SetHealth(flags, self.cameras_live(now))
            if adv != self._advertised:
                self._advertised = adv
                out.append(adv)
            why = self._why_hand_over(now, flags)
            retry = self._handed_over_at is None or now - self._handed_over_at >= HANDOVER_RETRY_S
            if why is not None and retry:
                self._handed_over_at = now
                out.append(HandOver(why))
        if self.power.on_battery and self.power.low and not self._shutting_down:
            self._shutting_down = True
            if (
                self.role is Role.ACTIVE
                and self._ready_peer()
                and not any(isinstance(a, HandOver) for a in out)
            ):
                out.append(HandOver("UPS battery low"))
            out.append(ShutDown("UPS battery low"))
        holding = self.disk is not None
        if holding != self._holding:
            self._holding = holding
            why = (self.disk_detail or str(self.disk)) if holding else "the data disk is back"
            out.append(HoldWrites(holding, why))
        records = self.role in (Role.ACTIVE, Role.SINGLE) and not holding
        mode = RecorderMode.RECORD if records else RecorderMode.RING
        if mode != self._mode:
            self._mode = mode
            out.append(SetRecorderMode(mode))
        if self.s.paired:
            out += self._alert_changes(self._pair_alerts(now))
        return out

    def _alert_changes(self, wanted: list[RaiseAlert]) -> list[Action]:
        """Only what changed: raised, re-worded, or no longer wanted."""
        now_up = {a.id: a for a in wanted}
        out: list[Action] = [a for i, a in now_up.items() if self._alerts.get(i) != a]
        out += [ClearAlert(i) for i in self._alerts if i not in now_up]
        self._alerts = now_up
        return out

    def _heard_since_active(self, peer: PeerView) -> bool:
        """The peer said it is active after this board became active. Its last advert from
        before (a board taking over the moment the sync carrier drops, while that advert is
        still fresh) is no second active board."""
        if not peer.path_ages:
            return True
        return self._peer_at - min(peer.path_ages.values()) >= self._active_at

    def _pair_alerts(self, now: float) -> list[RaiseAlert]:
        """The pair's alerts that should be up now."""
        up: list[RaiseAlert] = []
        peer = self.peer if self.peer is not None and self.peer.fresh else None
        if (
            self.role is Role.ACTIVE
            and peer is not None
            and peer.role is Role.ACTIVE
            and self._heard_since_active(peer)
        ):
            up.append(RaiseAlert(AlertId.DUAL_ACTIVE, Severity.CRITICAL,
                                 f"both boards are active: {peer.board} advertises active too; "
                                 "the newer term stays"))  # fmt: skip
        alone = self.role is Role.ACTIVE and (peer is None or peer.role is not Role.STANDBY)
        if not alone:
            self._alone_since = None
        elif self._alone_since is None:
            self._alone_since = now
        if self._alone_since is not None and now - self._alone_since > self.s.ring_seconds:
            up.append(RaiseAlert(AlertId.NO_STANDBY, Severity.WARNING,
                                 f"no standby for longer than the standby ring "
                                 f"({self.s.ring_seconds:.0f} s): another failure now loses "
                                 "footage"))  # fmt: skip
        for link, alert_id, severity in (
            (Link.LAN, AlertId.NIC_DOWN_LAN, Severity.CRITICAL),
            (Link.SYNC, AlertId.NIC_DOWN_SYNC, Severity.WARNING),
        ):
            if not self.carrier[link]:
                up.append(RaiseAlert(alert_id, severity, f"the {link.value} port has no carrier "
                                     "(cable out or switch down)"))  # fmt: skip
        for alert_id, at, text in (
            (AlertId.PEER_KEY_MISMATCH, self._hmac_at,
             "adverts from the peer fail the pair key's check: the boards hold different keys"),
            (AlertId.PEER_VERSION_MISMATCH, self._version_at,
             "adverts of another firmware version are dropped: update both boards"),
        ):  # fmt: skip
            if at is not None and now - at < KEY_ALERT_QUIET_S:
                up.append(RaiseAlert(alert_id, Severity.CRITICAL, text))
        if peer is None:
            return up
        limit = 3 * self.master_down + 1.0
        known_for = 0.0 if self._peer_since is None else now - self._peer_since
        for link, alert_id in ((Link.LAN, AlertId.HEARTBEAT_SILENT_LAN),
                               (Link.SYNC, AlertId.HEARTBEAT_SILENT_SYNC)):  # fmt: skip
            age = peer.path_ages.get(link.value)
            if self.carrier[link] and (age > limit if age is not None else known_for > limit):
                up.append(
                    RaiseAlert(
                        alert_id,
                        Severity.WARNING,
                        f"no adverts from {peer.board} on the {link.value} link "
                        "although it has carrier (firewall, VLAN or address?)",
                    )
                )
        return up


def _fault_text(flags: Health, disk_detail: str) -> str:
    if flags & Health.LAN_DOWN:
        return "LAN cable out (no carrier)"
    if flags & (Health.DISK_FAILED | Health.DISK_FULL):
        return disk_detail or "the data disk cannot be written"
    return "UPS battery low"
