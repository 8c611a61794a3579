"""The mirror on a board: serving side, fetching side, spare copies after a takeover, lag and
its alerts. The board runs `tick` once a second and reads `status`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from firmware.alert_ids import AlertId, Severity
from firmware.alerts import Alerts
from firmware.audit import append_event
from firmware.catalog import Catalog
from firmware.clockcheck import Bounds, ClockCheck
from firmware.config import Config
from firmware.mirror.auth import REPLAY_WINDOW_S
from firmware.mirror.client import MirrorClient
from firmware.mirror.plan import RunFacts, SegFacts, superseded
from firmware.mirror.server import MirrorServer, Recording
from firmware.recorder.retention import unlink_files
from firmware.roles import Role
from firmware.timefmt import now_us as wall_now_us

log = logging.getLogger("nvr.mirror")

PEER_REPORT_FRESH_S = 10.0
LAG_ALERT = AlertId.MIRROR_LAG
CATCHING_UP = AlertId.MIRROR_CATCHING_UP
REFUSED = AlertId.MIRROR_PEER_REFUSED
REFUSED_ALERT_S = 60.0
"""The peer-refused alert stays up this long after the last refusal."""
CLOCK_SKEW = AlertId.PAIR_CLOCK_SKEW


def prune_superseded(catalog: Catalog) -> list[str]:
    """Delete this board's spare copies of footage a takeover recorded twice."""
    runs: dict[str, RunFacts] = {}
    segs: list[SegFacts] = []
    seen: set[int] = set()
    for r in catalog.takeover_runs():
        point = catalog.segment(r.continues or "")
        base = catalog.run_by_id(point.run_id) if point else None
        if base is None:
            continue
        for run in (r, base):
            runs[run.uid] = RunFacts(run.uid, run.start_us, run.end_us,
                                     run.end_reason is not None, run.continues)  # fmt: skip
            if run.id not in seen:
                seen.add(run.id)
                segs += [SegFacts(s.id, run.uid, s.start_us, s.end_us)
                         for s in catalog.run_segments(run.id)]  # fmt: skip
    spare = superseded(runs.values(), segs)
    spare -= catalog.held_ids(sorted(spare))  # an evidence lock keeps even a second copy
    if not spare:
        return []
    # Audited before the rows go, as retention does (firmware/recorder/retention.py `_delete`).
    append_event(catalog.data_dir, wall_now_us(), "spare-copies-deleted", segments=sorted(spare))
    paths = catalog.delete_segment_rows(sorted(spare))
    unlink_files(catalog.data_dir, paths)
    catalog.forget_garbage(paths)
    log.info("mirror: removed %d segments recorded by both boards: %s", len(spare),
             ", ".join(sorted(spare)[:4]))  # fmt: skip
    return sorted(spare)


class Mirror:
    def __init__(
        self,
        cfg: Config,
        key: bytes,
        catalog: Catalog,
        alerts: Alerts,
        recording: Recording,
        path_usable: Callable[[str], bool],
        now_us: Callable[[], int],
    ) -> None:
        pair = cfg.pair
        assert pair is not None
        self.alerts, self.catalog, self.now_us = alerts, catalog, now_us
        self.threshold = pair.mirror_lag_alert_seconds or 2 * cfg.recorder.segment_seconds + 5
        self.port = pair.mirror_port
        self._dirty = threading.Event()
        self._dirty.set()
        self.superseded = 0
        self.clock = ClockCheck(pair.clock_skew_alert_seconds)
        self.server = MirrorServer(
            key, cfg.board.name, catalog, cfg.board.data_dir, recording, now_us, self.clock
        )
        self.client = MirrorClient(
            board=cfg.board.name,
            key=key,
            data_dir=cfg.board.data_dir,
            catalog=catalog,
            peer={"sync": str(pair.peer_sync_address), "lan": str(pair.peer_lan_address)},
            port=pair.mirror_port,
            order=pair.mirror_order,
            concurrency=pair.mirror_transfers,
            path_usable=path_usable,
            now_us=now_us,
            on_commit=self.changed,
            failed=alerts.task_failed,
            clock=self.clock,
        )

    def changed(self) -> None:
        """A segment or run changed here (any thread): spare copies may have appeared."""
        self._dirty.set()

    def start(self) -> None:
        self.client.start()

    def stop(self) -> None:
        self.client.stop()

    def peer_lag(self) -> tuple[float, int] | None:
        """What the peer last said it lacks of ours, if it said so lately."""
        rep = self.server.peer_lag
        if rep is None or time.monotonic() - rep[2] > PEER_REPORT_FRESH_S:
            return None
        return rep[0], rep[1]

    def lag_seconds(self, role: Role) -> float | None:
        """The pair's mirror lag as this board sees it: the standby's own, or on the active
        board what the standby reports."""
        if role == Role.ACTIVE:
            rep = self.peer_lag()
            return None if rep is None else rep[0]
        return round(self.client.lag()[0], 3)

    def catching_up(self, peer_active: bool) -> bool:
        """Not the board to take the pair from an active peer: it has not yet exchanged
        with it (so it cannot know what it lacks), or it still has a backlog of the peer's
        footage. Cheap: asked at every health sample."""
        c = self.client
        return (peer_active and not c.synced) or c.backlog_seconds() > self.threshold

    def tick(self, role: Role, peer_active: bool) -> None:
        """Once a second, off the event loop: spare copies, alerts."""
        if self._dirty.is_set():
            self._dirty.clear()
            self.superseded += len(prune_superseded(self.catalog))
        now = self.now_us()
        lag = self.lag_seconds(role)
        if role == Role.ACTIVE and lag is None:
            self.alerts.raise_(LAG_ALERT, Severity.WARNING,
                               "no standby is fetching this board's footage: new recordings "
                               "exist on this board only", now)  # fmt: skip
        elif lag is not None and lag > self.threshold:
            self.alerts.raise_(LAG_ALERT, Severity.WARNING,
                               f"the standby's copy is {lag:.1f} s of footage behind "
                               f"(alert above {self.threshold:g} s)", now)  # fmt: skip
        else:
            self.alerts.clear(LAG_ALERT)
        refused = self.client.refused
        if refused is not None and now - refused[0] < REFUSED_ALERT_S * 1e6:
            self.alerts.raise_(REFUSED, Severity.WARNING,
                               f"the peer sent data this board refused and did not keep "
                               f"({refused[1]}): {refused[2]}", now)  # fmt: skip
        else:
            self.alerts.clear(REFUSED)
        self._check_clock(now)
        if self.catching_up(peer_active):
            self.alerts.raise_(CATCHING_UP, Severity.INFO,
                               "fetching footage the peer recorded while this board was away; "
                               "this board does not take over by preemption until done",
                               now)  # fmt: skip
        else:
            self.alerts.clear(CATCHING_UP)

    def _check_clock(self, now: int) -> None:
        v = self.clock.verdict(now)
        if not v.skewed:
            self.alerts.clear(CLOCK_SKEW)
            return
        assert v.estimate is not None
        self.alerts.raise_(CLOCK_SKEW, Severity.WARNING,
                           f"the peer's clock is {skew_text(v.estimate)} from this board's (alert "
                           f"above {self.clock.threshold_us / 1e6:g} s): the boards' recordings "
                           f"do not line up, and beyond {REPLAY_WINDOW_S:g} s they refuse each "
                           "other's mirror requests; check NTP on both boards", now)  # fmt: skip

    def clock_offset(self) -> Bounds | None:
        return self.clock.estimate(self.now_us())

    def status(self, role: Role) -> dict:
        c = self.client
        clock = self.clock_offset()
        offset, spread = (None, None) if clock is None else (clock.offset_us, clock.uncertainty_us)
        lag, behind = c.lag()
        rep = self.peer_lag()
        return {
            "lag_seconds": self.lag_seconds(role),
            "own_lag_seconds": round(lag, 3),
            "behind_bytes": behind,
            "peer_lag_seconds": None if rep is None else rep[0],
            "peer_behind_bytes": None if rep is None else rep[1],
            "path": c.path,
            "connected": c.connected,
            "synced": c.synced,
            "last_error": c.last_error,
            "fetched_segments": c.counters.segments,
            "fetched_bytes": c.counters.bytes,
            "errors": dict(c.counters.errors),
            "conflicts": c.counters.conflicts,
            "served": dict(self.server.served),
            "superseded_removed": self.superseded,
            "peer_clock_offset_seconds": None if offset is None else round(offset / 1e6, 3),
            "peer_clock_uncertainty_seconds": None if spread is None else round(spread / 1e6, 3),
        }


def skew_text(b: Bounds) -> str:
    """How far the peer's clock is from this board's, as far as it is known."""
    if b.offset_us is None:
        return f"at least {b.lo_us / 1e6:+.1f} s"
    return f"{b.offset_us / 1e6:+.1f} s (±{max(b.uncertainty_us or 0, 1000) / 1e6:.3f})"
