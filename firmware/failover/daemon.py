"""The failover daemon: the election core wired to sockets, the clock, the VIP and health.

Everything runs on the board's asyncio loop; `now` is the loop's monotonic clock. The core
decides, this module only carries out its actions and feeds it what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from firmware.alert_ids import AlertId, Severity
from firmware.alerts import Alerts
from firmware.config import Config
from firmware.core.facts import Drops, ElectionView, Link, PeerView
from firmware.failover.advert import U64_MAX, Advert, AdvertError, Health, decode, encode
from firmware.failover.election import (
    Action,
    Election,
    ReleaseVIP,
    SendAdvert,
    StateChanged,
    TakeVIP,
)
from firmware.failover.health import health_names, health_weights
from firmware.failover.reach import Reachability, camera_hosts
from firmware.failover.transport import SerialPath, UdpPath
from firmware.failover.vip import FloatingIP
from firmware.pairkey import load_pair_key
from firmware.roles import Role
from firmware.supervise import keep_running, keep_running_async
from hal.nic import AddressEvent, LinkEvent, Nic, NicEvent

log = logging.getLogger("nvr.failover")

STATE_FILE = "failover.json"
SEEN_FILE = "advert-seen.json"
"""The anti-replay floors: per peer, the sequence number its next advert must pass."""
MAX_SEEN_PEERS = 8


def next_seq_start(data_dir: Path, wall_s: float) -> int:
    """Peers drop adverts whose sequence number goes back, so every start must begin above
    anything sent before: a boot number (persisted, and never below the wall clock's
    seconds) in the high 32 bits, the advert count in the low 32 bits."""
    path = data_dir / STATE_FILE
    try:
        boot = int(json.loads(path.read_text())["boot"])
    except (OSError, ValueError, KeyError, TypeError):
        boot = 0
    boot = max(boot + 1, int(wall_s))
    _write_json(path, {"boot": boot})
    return boot << 32


def _write_json(path: Path, data: object) -> None:
    """Whole or not at all, and on disk before it returns (a power cut may follow). The
    directory is not made: a data disk that is not mounted is not written under."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _device_of(path: Path) -> int | None:
    """The filesystem a directory is on (None: it is not there)."""
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def load_seen(data_dir: Path) -> dict[str, int]:
    """The anti-replay floors an earlier run persisted; none (with a warning when the file is
    there but unreadable) means the first advert of each peer is taken as it comes."""
    path = data_dir / SEEN_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("%s unreadable (%s): adverts are checked from the first one heard", path, e)
        return {}
    if not isinstance(raw, dict):
        log.warning("%s is not a table of sequence numbers: ignored", path)
        return {}
    return {
        board: seq
        for board, seq in list(raw.items())[:MAX_SEEN_PEERS]
        if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= U64_MAX
    }


def save_seen(data_dir: Path, floors: Mapping[str, int]) -> None:
    _write_json(data_dir / SEEN_FILE, dict(floors))


class Failover:
    def __init__(
        self,
        cfg: Config,
        nic: Nic,
        alerts: Alerts,
        now_us: Callable[[], int],
        on_role: Callable[[Role], None] = lambda role: None,
        on_carrier: Callable[[Link, bool], None] = lambda link, up: None,
    ) -> None:
        """on_role(new role) runs on the loop at every role change: the recorder follows.
        on_carrier(link, up) runs on the loop at every carrier change of the LAN or sync
        port, before the election hears of it, so the health it sets goes out first."""
        assert cfg.pair is not None
        self.on_role, self.on_carrier = on_role, on_carrier
        pair = cfg.pair
        self.cfg, self.pair, self.nic, self.alerts = cfg, pair, nic, alerts
        self.now_us = now_us
        self.key = load_pair_key(pair.key_file)
        self.lan_if, self.sync_if = cfg.network.lan_interface, cfg.network.sync_interface
        self.election = Election(
            board_id=cfg.board.name,
            pair_id=str(pair.virtual_ip),
            priority=pair.priority,
            interval=pair.advert_interval_ms / 1000,
            preempt=pair.preempt,
            preempt_delay=pair.preempt_delay_seconds,
            weights=health_weights(pair.health_weights),
            seq_start=next_seq_start(cfg.board.data_dir, time.time()),
            seen=load_seen(cfg.board.data_dir),
            sync_grace=None
            if pair.sync_carrier_grace_ms is None
            else pair.sync_carrier_grace_ms / 1000,
        )
        self.vip = FloatingIP(
            nic,
            self.lan_if,
            str(pair.virtual_ip),
            count=pair.garp_count,
            spacing=pair.garp_spacing_ms / 1000,
            refresh=pair.garp_refresh_seconds,
        )
        targets = camera_hosts([c.url for c in cfg.camera if c.enabled])
        if pair.gateway is not None:
            targets.insert(0, str(pair.gateway))
        self.reach = Reachability(targets)
        self.paths: list[UdpPath | SerialPath] = [
            UdpPath("lan", self.lan_if, str(pair.peer_lan_address), pair.advert_port, self._rx),
            UdpPath("sync", self.sync_if, str(pair.peer_sync_address), pair.advert_port, self._rx),
        ]
        if pair.serial_port:
            self.paths.append(SerialPath(pair.serial_port, pair.serial_baud, self._rx,
                                         self._valid, self._serial_failed))  # fmt: skip
        self.dropped: dict[str, int] = {}
        self.transitions: dict[str, int] = {}
        self.state_since = time.monotonic()
        self.state_reason = "starting"
        self.carrier = {Link.LAN: True, Link.SYNC: True}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self.timer_lateness_max = 0.0
        self._watch_stop = threading.Event()
        self._floors: dict[str, int] | None = None
        """Floors waiting for the writer thread; only the newest is written."""
        self._floors_lock = threading.Lock()
        self._writing = threading.Lock()
        self.floor_save_errors = 0
        self._floors_failing = False
        self._held = False
        self._data_dev = _device_of(self.cfg.board.data_dir)

    @property
    def state_held(self) -> bool:
        """The data disk is not this board's (missing, swapped): its mount point is not
        written under, so the floors wait until it is back."""
        return self._held

    @state_held.setter
    def state_held(self, held: bool) -> None:
        if not held:  # the disk the board judged its own again: its filesystem from now on
            self._data_dev = _device_of(self.cfg.board.data_dir)
        self._held = held

    def _on_its_disk(self) -> bool:
        """The data directory is on the filesystem it had: a disk pulled before the hardware
        monitor has said so (state_held) leaves the bare mount point, never written under."""
        return self._data_dev is None or _device_of(self.cfg.board.data_dir) == self._data_dev

    # --- inputs --------------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _serial_failed(self, what: str, e: Exception) -> None:
        self.alerts.raise_(AlertId.ADVERT_PATH_SERIAL, Severity.CRITICAL,
                           f"{what} failed ({e}); opening it again", self.now_us())  # fmt: skip

    def _valid(self, frame: bytes) -> bool:
        try:
            decode(frame, self.key)
        except AdvertError:
            return False
        return True

    def _rx(self, data: bytes, path: str) -> None:
        try:
            advert = decode(data, self.key)
        except AdvertError as e:
            self._drop(e.reason, path)
            return
        self._apply(self.election.receive(advert, self._now(), path))
        floors = self.election.floors_due()
        if floors is not None and self._loop is not None:
            with self._floors_lock:
                self._floors = floors
            self._loop.run_in_executor(None, self._write_floors)

    def _write_floors(self, final: Mapping[str, int] | None = None) -> None:
        """Persist the newest floors, off the loop (the fsync may wait behind the recorder's
        writes); `final`: the exact ones at a clean stop, which supersede any waiting."""
        with self._writing:
            with self._floors_lock:
                floors, self._floors = self._floors, None
            floors = final if final is not None else floors
            if floors is None or self.state_held or not self._on_its_disk():
                return
            try:
                save_seen(self.cfg.board.data_dir, floors)
            except OSError as e:
                self.floor_save_errors += 1
                if not self._floors_failing or final is not None:
                    log.warning("cannot keep the advert floors (retried): %s", e)
                self._floors_failing = True
            else:
                if self._floors_failing:
                    log.warning("the advert floors are kept again")
                self._floors_failing = False

    def _drop(self, reason: str, path: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        log.debug("dropped an advert on %s: %s", path, reason)

    def _tick(self) -> None:
        self._timer = None
        now = self._now()
        if self._deadline is not None:
            # How late the loop ran the election's timer: the takeover is late by as much.
            self.timer_lateness_max = max(self.timer_lateness_max, now - self._deadline)
        self.election.set_reachable(self.carrier[Link.LAN] and self.reach.ok(now))
        self._apply(self.election.tick(now))

    def _nic_event(self, event: NicEvent) -> None:
        if isinstance(event, AddressEvent):
            self.vip.on_event(event)
            return
        if not isinstance(event, LinkEvent) or event.ifname not in (self.lan_if, self.sync_if):
            return
        link = Link.LAN if event.ifname == self.lan_if else Link.SYNC
        carrier = event.up and event.carrier
        if carrier != self.carrier[link]:
            log.warning("%s %s: carrier %s", link, event.ifname, "back" if carrier else "lost")
        self.carrier[link] = carrier
        self.on_carrier(link, carrier)
        if link is Link.SYNC:
            self._apply(self.election.sync_carrier(carrier, self._now()))

    def set_health(self, flags: Health, cameras: int) -> None:
        """From the board core: what this board advertises; a change goes out at once."""
        self.election.set_cameras(cameras)
        if flags != self.election.health:
            log.info("health: %s", ", ".join(health_names(flags)) or "ok")
            self._apply(self.election.set_health(flags, self._now()))

    def handover(self) -> bool:
        """Planned handover (drills, maintenance): True if this board was active."""
        actions = self.election.step_down(self._now())
        self._apply(actions)
        return bool(actions)

    # --- actions -------------------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        """Carry the election's actions out; its next timer is set whatever fails (an error
        goes to the loop's handler, which raises an alert), or the election would stop."""
        try:
            for action in actions:
                if isinstance(action, ReleaseVIP):
                    self.vip.release()
                elif isinstance(action, SendAdvert):
                    self._send(action.advert)
                elif isinstance(action, TakeVIP):
                    self.vip.take()
                elif isinstance(action, StateChanged):
                    self._state_changed(action)
        finally:
            self._schedule()

    def _send(self, advert: Advert) -> None:
        data = encode(advert, self.key)
        for path in self.paths:
            path.send(data)

    def _state_changed(self, change: StateChanged) -> None:
        self.state_since = time.monotonic()
        self.state_reason = change.reason
        self.transitions[change.new] = self.transitions.get(change.new, 0) + 1
        log.warning(
            "role %s -> %s (%s), epoch %d", change.old, change.new, change.reason,
            self.election.epoch,
        )  # fmt: skip
        self.on_role(Role(change.new))

    def path_fresh(self, name: str) -> bool:
        """The peer's adverts arrive on this path (within a master-down interval or so)."""
        if self._loop is None:
            return False
        now = self._now()
        window = 4 * self.election.interval + 0.1
        return any(now - p.paths.get(name, -1e9) < window for p in self.election.peers.values())

    def view(self) -> ElectionView:
        """The election as the board core sees it (from the event loop's thread)."""
        e = self.election
        role = Role(e.state)
        if self._loop is None or not e.peers:
            return ElectionView(role, None, e.master_down)
        now = self._now()
        p = max(e.peers.values(), key=lambda p: p.last_heard)
        a = p.advert
        peer = PeerView(
            board=p.board_id,
            role=Role(a.state),
            priority=a.priority,
            health=Health(a.health),
            cameras=a.cameras,
            fresh=now - p.last_heard <= e.master_down,
            path_ages={name: now - t for name, t in p.paths.items()},
        )
        return ElectionView(role, peer, e.master_down)

    def drops(self) -> Drops:
        return Drops(hmac=self.dropped.get("hmac", 0), version=self.dropped.get("version", 0))

    def peer_active(self) -> bool:
        """A peer is active by what we heard lately (from the event loop's thread)."""
        return self._loop is not None and self.election.current_active(self._now()) is not None

    def _schedule(self) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._deadline = self.election.deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._tick)

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Elect until stop is set, then hand over: release the VIP and tell the peer."""
        self._loop = asyncio.get_running_loop()
        # A previous run that crashed may have left the VIP behind; a starting board is standby.
        self.vip.release()
        for path in self.paths:
            try:
                await path.open()
            except (OSError, ValueError) as e:
                path.stats.last_error = str(e)
                self.alerts.raise_(
                    AlertId(f"advert-path-{path.name}"),
                    Severity.CRITICAL,
                    f"advert path {path.name} cannot be opened: {e}; the others carry on",
                    self.now_us(),
                )
        watcher = threading.Thread(target=keep_running, name="nvr-nic-watch", daemon=True,
                                   args=("the NIC watch", self._watch, self._watch_stop,
                                         self.alerts.task_failed))  # fmt: skip
        watcher.start()
        reach = asyncio.create_task(keep_running_async(
            "the reachability probe", lambda: self.reach.run(stop), stop, self.alerts.task_failed
        ))  # fmt: skip
        self._apply(self.election.start(self._now()))
        try:
            await stop.wait()
        finally:
            self._apply(self.election.shutdown(self._now()))
            self._write_floors(final=self.election.seen)
            if self._timer is not None:
                self._timer.cancel()
            self._watch_stop.set()
            reach.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reach
            for path in self.paths:
                path.close()
            watcher.join(2)

    def _watch(self) -> None:
        """Link and address events onto the loop; restarted if it fails (a new watch begins
        with the current state of every link, so nothing stays missed)."""
        loop = self._loop
        assert loop is not None
        for event in self.nic.watch(self._watch_stop):
            loop.call_soon_threadsafe(self._nic_event, event)

    # --- status --------------------------------------------------------------------------------

    @property
    def role(self) -> str:
        return self.election.state

    @property
    def epoch(self) -> int:
        """The pair's current term: our own while active, else the newest we have heard of."""
        e = self.election
        return e.epoch if e.state == "active" else e.max_epoch

    def peer_status(self) -> dict | None:
        if not self.election.peers or self._loop is None:
            return None
        now = self._now()
        peer = max(self.election.peers.values(), key=lambda p: p.last_heard)
        a = peer.advert
        return {
            "board": peer.board_id,
            "role": a.state,
            "priority": a.priority,
            "epoch": a.epoch,
            "health": health_names(a.health),
            "newest_segment": a.newest_segment or None,
            "heard_seconds_ago": round(now - peer.last_heard, 3),
            "paths": {name: round(now - t, 3) for name, t in sorted(peer.paths.items())},
        }

    def drop_counts(self) -> dict[str, int]:
        """Adverts ignored, by reason: undecodable or unauthenticated ones from the codec,
        late, replayed and other pairs' adverts from the core."""
        counts = dict(self.dropped)
        for reason in ("late", "replay", "foreign_pair"):
            counts[reason] = self.election.stats.get(reason, 0)
        return counts

    def status(self) -> dict:
        e = self.election
        return {
            "priority": e.priority,
            "effective_priority": e.effective_priority,
            "health": health_names(e.health),
            "reachable": e.reachable,
            "lan_carrier": self.carrier[Link.LAN],
            "sync_carrier": self.carrier[Link.SYNC],
            "role_since_seconds": round(time.monotonic() - self.state_since, 3),
            "role_reason": self.state_reason,
            "vip_held": self.vip.held(),
            "vip_announcements": self.vip.announcements,
            "paths": {p.name: p.stats.to_json(p.is_open) for p in self.paths},
            "dropped": self.drop_counts(),
            "election": dict(e.stats),
            "timer_lateness_max_seconds": round(self.timer_lateness_max, 4),
            "floor_save_errors": self.floor_save_errors,
        }
