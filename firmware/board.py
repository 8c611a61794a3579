"""The board: config in, recorder + API + alerts running, status out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from firmware import __version__
from firmware.alert_ids import AlertId, Severity
from firmware.alerts import Alerts
from firmware.api import ApiContext, make_app
from firmware.audit import AUDIT_FILE, AuditLog
from firmware.catalog import Catalog
from firmware.config import Config, ConfigError, load_config
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
    Fact,
    Link,
    MirrorProgress,
    WriteErrors,
    WriteSpace,
)
from firmware.datadir import api_token, prepare, unpaired
from firmware.httpedge import Served
from firmware.httpedge import serve as serve_http
from firmware.hw.monitor import BoardHooks, Hardware
from firmware.hw.panelrun import PanelHooks, interface_addresses
from firmware.hw.power import clip
from firmware.hw.profile import BOARD_FILE, installed_profile
from firmware.netchange import NetChange
from firmware.netwatch import NetWatch
from firmware.pairing import CODE_TTL_S
from firmware.pairing_http import PairingError, PairingService, PeerAddress
from firmware.recorder.supervisor import Recorder, ring_seconds
from firmware.roles import RecorderMode, Role
from firmware.setupfiles import Layout
from firmware.status import BoardStatus, CameraView, MirrorView, PairView, PathCounts
from firmware.supervise import keep_running_async
from firmware.timefmt import now_us
from hal.linux.nic import LinuxNic
from hal.nic import Nic

if TYPE_CHECKING:
    from firmware.archive.uploader import Uploader
    from firmware.evidence.service import EvidenceService
    from firmware.failover.daemon import Failover
    from firmware.mirror.service import Mirror
    from firmware.pairsync import PairSync

log = logging.getLogger(__name__)

SAMPLE_PERIOD_S = 0.25
"""How often the recorder, the mirror and the election are sampled for the board core."""
ALONE_SAMPLE_PERIOD_S = 1.0
"""The same for a board without a pair: its facts are the recorder's, which the workers
report once a second, so sampling them faster finds nothing new (and costs the main process
a wake-up each time: docs/BENCHMARKS.md)."""
PAIRED_RESTART_S = 1.0
"""After a pairing, time for the API to answer `nvr pair` before the firmware restarts."""
UNPAIRED_TEXT = ("[pair] is configured but this board holds no pair key: it records alone and "
                 "takes no floating IP; pair it: `nvr pair code` on one board, `nvr pair join "
                 "CODE` on the other")  # fmt: skip


class Reload(StrEnum):
    """What a reload of the config file did (logged, and audited when it changed anything)."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    """Nothing the running firmware applies changed (what needs a restart is an alert)."""
    REFUSED = "refused"
    """The file is bad: the last good config runs on, with the config-invalid alert."""
    STOPPING = "stopping"
    """The firmware is stopping: its recorder is not started again."""


class Board:
    def __init__(
        self,
        cfg: Config,
        serve_api: bool = True,
        nic: Nic | None = None,
        config_path: Path | None = None,
        board_file: Path = BOARD_FILE,
    ) -> None:
        self.cfg = cfg
        self.data_dir = cfg.board.data_dir
        self.identity = prepare(self.data_dir, cfg.board.name, now_us())
        self.unpaired = unpaired(cfg)
        """[pair] but no key yet: a single recorder until `nvr pair` gives it one."""
        self.api_token = api_token(cfg)
        self.serve_api = serve_api
        self.audit = AuditLog(self.data_dir / AUDIT_FILE)
        self.alerts = Alerts()
        self.alerts.listener = lambda change, a, t: self.audit.append(
            t, f"alert-{change}", id=a.id, severity=a.severity, text=a.text
        )
        self.shutdown_reason: str | None = None
        self.restart_reason: str | None = None
        """Set when the firmware stops to start again at once (`restart`: a pairing wrote the
        key, or SIGUSR1 after the installer's setup changed what needs a restart)."""
        self._reload_lock = threading.Lock()
        self._recorder_stopped = False
        """Set (under the reload lock) once `serve` stops the recorder: a reload after it, or
        one that was waiting for the lock, starts no recorder nobody would stop."""
        self._stop: asyncio.Event | None = None
        self.catalog = Catalog(self.data_dir)
        self._loop: asyncio.AbstractEventLoop | None = None
        mode = RecorderMode.RECORD if cfg.pair is None or self.unpaired else RecorderMode.RING
        self.recorder = self._make_recorder(cfg, mode)
        self.started = time.monotonic()
        self.api_port: int | None = None
        self.failover: Failover | None = None
        self.mirror: Mirror | None = None
        pair = None if self.unpaired else cfg.pair
        self.core = BoardCore(CoreSettings(
            paired=pair is not None,
            hold_down=pair.fault_hold_down_seconds if pair else 0.0,
            camera_stale=pair.camera_stale_seconds if pair else 5.0,
            camera_confirm=pair.camera_confirm_seconds if pair else 0.0,
            dwell=pair.takeover_dwell_seconds if pair else 0.0,
            camera_startup=max(30.0, 3 * cfg.recorder.open_timeout_seconds),
            battery_handover_after=cfg.ups.handover_after_seconds,
            ring_seconds=ring_seconds(cfg.recorder),
        ))  # fmt: skip
        if pair is not None:
            # The pair's own parts are imported by a board that has a pair, so a single board
            # starts without them (tests/test_start_imports.py).
            from firmware.failover.daemon import Failover
            from firmware.mirror.service import Mirror

            self.failover = Failover(cfg, nic or LinuxNic(), self.alerts, now_us,
                                     on_role=self._role_changed,
                                     on_carrier=self._carrier)  # fmt: skip
            self.mirror = Mirror(cfg, self.failover.key, self.catalog, self.alerts,
                                 self._recording, self.failover.path_fresh, now_us)  # fmt: skip
        self.pairsync: PairSync | None = None
        """The pair-wide settings kept the same on both boards; needs the config file's path."""
        if self.mirror is not None and self.failover is not None and config_path is not None:
            from firmware.pairsync import PairSync

            self.pairsync = PairSync(
                board=cfg.board.name, key=self.failover.key, config_path=config_path, cfg=cfg,
                token=self.api_token if cfg.api.token_file is not None else None,
                alerts=self.alerts, audit=self.audit, request=self.mirror.client.request,
                now_us=now_us, failed=self.alerts.task_failed,
            )  # fmt: skip
            self.mirror.server.routes += self.pairsync.routes()
        self.evidence = self._make_evidence()
        self.pairing: PairingService | None = None
        if cfg.pair is not None:
            from firmware.pairsync import adopt_on_join

            self.pairing = PairingService(
                cfg.pair.key_file,
                PeerAddress(str(cfg.pair.peer_sync_address), cfg.api.listen_port),
                self._paired,
                on_joined=lambda: adopt_on_join(cfg.board.data_dir),
            )
        fingerprint = self.pairing.current_fingerprint() if self.pairing else None
        ev = self.evidence
        if ev is not None and fingerprint is not None and ev.log.bind_pair(fingerprint):
            log.info("evidence: a new pair; the old peer's log key is forgotten")
        self.archive = self._make_archive()
        if self.unpaired:
            self.alerts.raise_(AlertId.UNPAIRED, Severity.WARNING, UNPAIRED_TEXT, now_us())
        try:
            installed_profile(board_file)
        except ConfigError as e:  # nvr firstboot said it too, and left the config as it was
            self.alerts.raise_(AlertId.BOARD_PROFILE_DAMAGED, Severity.CRITICAL, clip(
                "the image's board profile is damaged; the config keeps the hardware it has "
                f"(update the image or boot the other slot): {e}"), now_us())  # fmt: skip
        fo = self.failover
        self.netwatch = NetWatch(
            NetChange(Layout()),
            self.alerts,
            lambda: fo is not None and fo.path_fresh("lan"),
            lambda: fo is not None and (fo.vip.held() or fo.peer_active()),
        )
        """A pending network change: confirmed by the pair's facts, or rolled back in time."""
        self.hw: Hardware | None = None
        if serve_api:
            self.hw = Hardware(cfg, self.identity["id"], self.alerts, BoardHooks(
                apply=self._apply,
                fact=self._fact,
                status=self.status,
                recorder_beat=lambda: self.recorder.beat,
                panel=self._panel_hooks(nic or LinuxNic()),
            ))  # fmt: skip

    def _panel_hooks(self, nic: Nic) -> PanelHooks:
        """The front panel's menu: this board's status and addresses, its planned handover,
        a pairing code as `nvr pair code` gets one, the pending network change."""
        pairing, nc = self.pairing, self.netwatch.nc

        def pair_code() -> tuple[str, float]:
            assert pairing is not None
            try:
                return pairing.show_code().shown, CODE_TTL_S
            except PairingError:  # the console's long text does not fit a panel's row
                raise PairingError(f"paired: {pairing.current_fingerprint() or '?'}") from None

        vip = str(self.cfg.pair.virtual_ip) if self.cfg.pair else None
        ifaces = {"lan": self.cfg.network.lan_interface, "sync": self.cfg.network.sync_interface}
        return PanelHooks(
            snapshot=self.snapshot,
            addresses=lambda: interface_addresses(nic, ifaces, vip),
            handover=self.failover.handover if self.failover is not None else None,
            pair_code=pair_code if pairing is not None else None,
            network_seconds_left=nc.seconds_left,
            confirm_network=nc.confirm,
        )

    def _paired(self, fingerprint: str) -> None:
        """A pairing wrote the key: restart into the pair once the API has answered, so the
        election, the mirror and the token start from the key."""
        self.audit.append(now_us(), "paired", fingerprint=fingerprint)
        log.warning("paired (fingerprint %s): restarting the firmware to form the pair",
                    fingerprint)  # fmt: skip
        if self._loop is not None:
            self._loop.call_later(PAIRED_RESTART_S, self.restart, "paired")

    def restart(self, reason: str) -> None:
        """Stop as for a shutdown (the VIP first, open segments committed), then `nvr run`
        starts a new board on the config file in this same process: its imports and the
        workers' forkserver are kept, so it is recording again in a fraction of a cold start.
        On the event loop's thread."""
        log.warning("restarting the firmware in its process: %s", reason)
        self.restart_reason = reason
        if self.hw is not None:
            self.hw.restarting = True
        if self._stop is not None:
            self._stop.set()

    def terminate(self) -> None:
        """SIGTERM, SIGINT: stop and stay stopped, also when a restart is under way."""
        self.restart_reason = None
        if self.hw is not None:
            self.hw.restarting = False
        if self._stop is not None:
            self._stop.set()

    def _make_recorder(self, cfg: Config, mode: RecorderMode) -> Recorder:
        from firmware.recorder.retention import tiering_of

        days = cfg.recorder.retention_days
        tiering = None if cfg.archive is None else tiering_of(cfg.archive.local_days, days)
        return Recorder(self.data_dir, cfg.board.name, cfg.recorder, cfg.camera, self.alerts,
                        mode=mode, on_change=self._catalog_changed, tiering=tiering)  # fmt: skip

    # --- the board core: facts in, actions carried out (all on the event loop) ----------------

    def _fact(self, fact: Fact) -> None:
        self._apply(self.core.handle(fact, time.monotonic()))

    def _carrier(self, link: Link, up: bool) -> None:
        self._fact(Carrier(link, up))

    def _role_changed(self, role: Role) -> None:
        """The recorder follows the role at once: active records, anything else holds the
        cameras in memory only, ready to take over."""
        reason = self.failover.state_reason if self.failover is not None else "single board"
        self.audit.append(now_us(), "role", role=role, reason=reason)
        if self.failover is not None:
            self._fact(self.failover.view())

    def _sample(self) -> None:
        failed = self.alerts.get(AlertId.DISK_WRITE_FAILED)
        facts: list[Fact] = [
            self._cameras(),
            WriteSpace(self._disk_exhausted()),
            WriteErrors(failed is not None, failed.text if failed else ""),
        ]
        if self.failover is not None:
            facts += [self.failover.view(), self.failover.drops()]
            if self.mirror is not None:
                facts.append(MirrorProgress(self.mirror.catching_up(self.failover.peer_active())))
        self._apply(self.core.handle_all(facts, time.monotonic()))

    def _cameras(self) -> Cameras:
        wall = now_us()
        enabled = frozenset(c.name for c in self.cfg.camera if c.enabled)
        seen = tuple(
            CameraSeen(
                st.name,
                st.connected,
                None if st.reported_us is None else (wall - st.reported_us) / 1e6,
            )
            for st in self.recorder.status.values()
        )
        return Cameras(enabled, seen)

    def _disk_exhausted(self) -> bool:
        """The recorder's critical disk-full (a write failed), not retention's warning."""
        alert = self.alerts.get(AlertId.DISK_FULL)
        return alert is not None and alert.severity == Severity.CRITICAL

    def _apply(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, RaiseAlert):
                self.alerts.raise_(a.id, a.severity, a.text, now_us())
            elif isinstance(a, ClearAlert):
                self.alerts.clear(a.id)
            elif isinstance(a, SetHealth):
                if self.failover is not None:
                    self.failover.set_health(a.flags, a.cameras)
            elif isinstance(a, SetRecorderMode):
                self.recorder.set_mode(a.mode)
            elif isinstance(a, HoldWrites):
                if self.mirror is not None:
                    self.mirror.client.hold(a.hold)
                if self.failover is not None:
                    self.failover.state_held = a.hold
                self.audit.append(now_us(), "holdwrites", reason=a.reason)
                log.warning("%s writes: %s", "holding" if a.hold else "resuming", a.reason)
            elif isinstance(a, HandOver):
                self.audit.append(now_us(), "handover", reason=a.reason)
                log.warning("handing over: %s", a.reason)
                if self.failover is not None:
                    self.failover.handover()
            elif isinstance(a, ShutDown):
                self.audit.append(now_us(), "shutdown", reason=a.reason)
                log.warning("shutting down: %s", a.reason)
                self.shutdown_reason = a.reason
                if self._stop is not None:
                    self._stop.set()

    async def _decide(self, stop: asyncio.Event) -> None:
        """Sample what the core needs every SAMPLE_PERIOD_S, or ALONE_SAMPLE_PERIOD_S without
        a pair (under keep_running)."""
        period = SAMPLE_PERIOD_S if self.failover is not None else ALONE_SAMPLE_PERIOD_S
        while not stop.is_set():
            self._sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)

    def _catalog_changed(self) -> None:
        """From the recorder's thread: a segment was committed or a run ended."""
        if self.archive is not None:
            self.archive.wake()
        if self.mirror is not None:
            self.mirror.changed()
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.mirror.server.notify)

    def _recording(self) -> dict[str, bool]:
        return {st.name: st.recording for st in self.recorder.status.values()}

    def reload(self, path: Path) -> Reload:
        """SIGHUP or an edit of the file (firmware.configwatch): apply a changed config; a bad
        one is refused and the running one kept. One reload at a time, whoever asks."""
        with self._reload_lock:
            result = Reload.STOPPING if self._recorder_stopped else self._reload(path)
        if result in (Reload.APPLIED, Reload.REFUSED):
            self.audit.append(now_us(), f"config-{result}", path=str(path))
        return result

    def _stop_recorder(self) -> None:
        """After a reload under way (it may be starting a new recorder), and for good."""
        with self._reload_lock:
            self._recorder_stopped = True
        self.recorder.stop()

    def _reload(self, path: Path) -> Reload:
        try:
            new = load_config(path)
        except ConfigError as e:
            self.alerts.raise_(AlertId.CONFIG_INVALID, Severity.CRITICAL,
                               f"{e} (still running the last good config)", now_us())  # fmt: skip
            return Reload.REFUSED
        self.alerts.clear(AlertId.CONFIG_INVALID)
        if self.pairsync is not None:
            self.pairsync.local(new)
        fixed = (new.board, new.api, new.network, new.pair, new.archive)
        if fixed != (self.cfg.board, self.cfg.api, self.cfg.network, self.cfg.pair,
                     self.cfg.archive):  # fmt: skip
            self.alerts.raise_(
                "restart-needed",
                "warning",
                f"{path}: [board], [network], [pair], [api] or [archive] changed; restart the "
                "firmware to apply them",
                now_us(),
            )
        if (new.recorder, new.camera) == (self.cfg.recorder, self.cfg.camera):
            self.cfg = new
            return Reload.UNCHANGED
        log.info("config reloaded: restarting the recorder with %d cameras", len(new.camera))
        mode = self.recorder.mode
        self.recorder.stop()
        self.recorder = self._make_recorder(new, mode)
        self.recorder.start()
        self.cfg = self.cfg.model_copy(update={"recorder": new.recorder, "camera": new.camera})
        return Reload.APPLIED

    @property
    def role(self) -> Role:
        if self.failover is not None:
            return Role(self.failover.role)
        return Role.UNPAIRED if self.unpaired else Role.SINGLE

    def camera_names(self) -> set[str]:
        return set(self.recorder.status) | set(self.catalog.cameras())

    def snapshot(self) -> BoardStatus:
        """The only place that reads the board's parts for status; everything else reads this."""
        free, total = self.recorder.disk()
        role = self.role
        pair = None
        if self.failover is not None:
            fo = self.failover
            peer = fo.peer_status()
            pair = PairView(
                role=role,
                epoch=fo.epoch,
                effective_priority=fo.election.effective_priority,
                vip_held=fo.vip.held(),
                role_changes=dict(fo.transitions),
                paths=tuple(
                    PathCounts(p.name, p.stats.tx, p.stats.rx, p.stats.tx_errors) for p in fo.paths
                ),
                dropped=fo.drop_counts(),
                peer_heard_seconds=peer["heard_seconds_ago"] if peer else None,
                peer=peer,
                detail=fo.status(),
            )
        mirror = None
        if self.mirror is not None:
            m = self.mirror.status(role)
            mirror = MirrorView(
                lag_seconds=self.mirror.lag_seconds(role),
                behind_bytes=m["behind_bytes"],
                fetched_segments=m["fetched_segments"],
                fetched_bytes=m["fetched_bytes"],
                errors=dict(m["errors"]),
                spares_removed=m["superseded_removed"],
                detail=m,
                clock_offset_seconds=m["peer_clock_offset_seconds"],
                clock_uncertainty_seconds=m["peer_clock_uncertainty_seconds"],
            )
        rec = self.recorder
        return BoardStatus(
            board=self.cfg.board.name,
            role=role,
            virtual_ip=str(self.cfg.pair.virtual_ip) if self.cfg.pair else None,
            version=__version__,
            hostname=socket.gethostname(),
            uptime_seconds=round(time.monotonic() - self.started, 1),
            data_dir=str(self.data_dir),
            disk_free_bytes=free,
            disk_total_bytes=total,
            cameras=tuple(
                CameraView(
                    name=st.name,
                    url=st.url,
                    recording=st.recording,
                    holding=st.holding,
                    ring_seconds=st.ring_seconds,
                    codec=st.codec,
                    last_frame_wall_us=st.last_frame_wall_us,
                    ingest_lag_seconds=st.lag_seconds,
                    error=st.error,
                    segments=st.segments,
                    bytes=st.bytes,
                    frames=st.frames,
                    reconnects=st.reconnects,
                    gaps=dict(st.gaps),
                )
                for st in rec.status.values()
            ),
            alerts=tuple(self.alerts.active()),
            alerts_raised=dict(self.alerts.raised_total),
            retention_deleted=dict(rec.retention_deleted),
            worker_restarts=rec.worker_restarts,
            writes_held=self.core.holding,
            pair=pair,
            mirror=mirror,
            hardware=self.hw.status() if self.hw else None,
            pair_fingerprint=self.pairing.current_fingerprint() if self.pairing else None,
            pair_settings=self.pairsync.status() if self.pairsync else None,
            capacity=None
            if rec.capacity is None
            else {**rec.capacity.to_json(), "retention_days": self.cfg.recorder.retention_days},
            locks=rec.retention.held.to_json(),
            evidence=self.evidence.status() if self.evidence is not None else None,
            archive=self.archive.status() if self.archive is not None else None,
        )

    def status(self) -> dict:
        return self.snapshot().to_json()

    def _make_evidence(self) -> EvidenceService | None:
        """The transparency log (firmware/evidence/); a board whose log cannot open records on,
        with the critical alert that says so."""
        from firmware.evidence.log import EvidenceLog, LogDamaged
        from firmware.evidence.note import KeyFileError
        from firmware.evidence.service import EvidenceService

        try:
            evlog = EvidenceLog(self.data_dir, self.cfg.board.name)
        except (LogDamaged, KeyFileError, OSError, sqlite3.Error) as e:
            self.alerts.raise_(AlertId.EVIDENCE_LOG_DAMAGED, Severity.CRITICAL,
                               f"evidence log: cannot open: {e}; footage is recorded without "
                               "it: run nvr verify", now_us())  # fmt: skip
            return None
        svc = EvidenceService(evlog, self.catalog, self.alerts, self.alerts.task_failed)
        if self.mirror is not None and self.failover is not None:
            svc.key, svc.request = self.failover.key, self.mirror.client.request
            self.mirror.server.routes += svc.routes()
        return svc

    def _make_archive(self) -> Uploader | None:
        """The archive uploader ([archive], firmware/archive/); it uploads while this board
        records. Bad credentials leave the board recording, with the alert that says why."""
        acfg = self.cfg.archive
        if acfg is None:
            return None
        from firmware.archive.store import default_prefix, load_credentials
        from firmware.archive.uploader import Uploader

        try:
            creds = load_credentials(acfg.credentials_file)
        except ConfigError as e:
            self.alerts.raise_(AlertId.ARCHIVE_CREDENTIALS, Severity.CRITICAL,
                               f"{e}; nothing is archived until it is fixed (restart after)",
                               now_us())  # fmt: skip
            return None
        fingerprint = None if self.pairing is None else self.pairing.current_fingerprint()
        evidence = self.evidence
        return Uploader(
            acfg, creds, acfg.prefix or default_prefix(self.cfg.board.name, fingerprint),
            self.cfg.board.name, self.catalog, self.data_dir, self.alerts,
            self.alerts.task_failed, recording=lambda: self.recorder.mode == RecorderMode.RECORD,
            evidence=lambda: evidence.log if evidence is not None else None,
        )  # fmt: skip

    def api_context(self) -> ApiContext:
        return ApiContext(
            snapshot=self.snapshot,
            catalog=self.catalog,
            data_dir=self.data_dir,
            token=self.api_token,
            camera_names=self.camera_names,
            handover=self.failover.handover if self.failover is not None else None,
            pairing=self.pairing,
            audit=self.audit,
            archive=self.archive.store if self.archive is not None else None,
            alerts=self.alerts,
        )

    async def serve(self, stop: asyncio.Event) -> None:
        """Record, elect and serve until stop is set. On the way out the VIP goes first (a
        planned handover), then the recorder commits its open segments."""
        self._loop = asyncio.get_running_loop()
        self._stop = stop
        self.recorder.start()
        api_http: Served | None = None
        failover_stop = asyncio.Event()
        failover = None
        mirror_http: Served | None = None
        ticker = None
        self._loop.set_exception_handler(self._loop_error)
        if self.evidence is not None:
            self.evidence.start()
        if self.archive is not None:
            self.archive.start()
        if self.failover is not None:
            failover = asyncio.create_task(self.failover.run(failover_stop))
            failover.add_done_callback(self._failover_ended)
        if self.mirror is not None:
            from firmware.mirror.auth import REQUEST_HEADER as MIRROR_AUTH_HEADER

            mirror_http = await serve_http(self.mirror.server.app(), self.cfg.api.listen_address,
                                           self.mirror.port, "mirror",
                                           credential_headers=(MIRROR_AUTH_HEADER,))  # fmt: skip
            self.mirror.start()
            if self.pairsync is not None:
                self.pairsync.start()
            ticker = self._keep("mirror upkeep", self._mirror_ticks, failover_stop)
        hw = None
        if self.hw is not None:
            hw = asyncio.create_task(self.hw.run(failover_stop))
        decide = self._keep("board decisions", self._decide, failover_stop)
        netwatch = self._keep("network change", self._netwatch, failover_stop)
        try:
            if self.serve_api:
                api_http = await serve_http(
                    make_app(self.api_context()),
                    self.cfg.api.listen_address,
                    self.cfg.api.listen_port,
                    "API",
                )
                self.api_port = api_http.port
                log.info("API listening on %s:%s", self.cfg.api.listen_address, self.api_port)
            await stop.wait()
        finally:
            failover_stop.set()
            if failover is not None:
                await failover
            for t in (ticker, hw, decide, netwatch):
                if t is not None:
                    await t
            log.info("stopping: committing open segments")
            await asyncio.get_running_loop().run_in_executor(None, self._stop_recorder)
            if self.archive is not None:
                await asyncio.to_thread(self.archive.stop)
            if self.mirror is not None:
                await asyncio.to_thread(self.mirror.stop)
            if self.pairsync is not None:
                await asyncio.to_thread(self.pairsync.stop)
            for served in (api_http, mirror_http):
                if served is not None:
                    await served.close()
            if self.evidence is not None:  # after the mirror's routes that read it are gone
                await asyncio.to_thread(self.evidence.stop)
            log.info("stopped")

    def close(self) -> None:
        """After `serve`, on the thread that made the board: what the process would only let
        go of at its exit (a restart in the process makes a new board beside it)."""
        self.recorder.catalog.close()
        self.catalog.close()
        self.audit.close()

    def _keep(
        self, what: str, body: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
    ) -> asyncio.Task:
        return asyncio.create_task(
            keep_running_async(what, lambda: body(stop), stop, self.alerts.task_failed)
        )

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """A callback on the event loop failed (a NIC event, a timer): said, not swallowed."""
        loop.default_exception_handler(context)
        e = context.get("exception")
        self.alerts.task_failed(
            str(context.get("message", "an event-loop callback")),
            e if isinstance(e, Exception) else RuntimeError(str(context.get("message"))),
        )

    def _failover_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and (e := task.exception()) is not None:
            self.alerts.task_failed("the election", e if isinstance(e, Exception) else
                                    RuntimeError(repr(e)))  # fmt: skip

    async def _netwatch(self, stop: asyncio.Event) -> None:
        """On the loop's thread (the election's facts are read there); files only while a
        network change is pending."""
        self.netwatch.start()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            self.netwatch.step()

    async def _mirror_ticks(self, stop: asyncio.Event) -> None:
        assert self.mirror is not None
        while not stop.is_set():
            peer_active = self.failover is not None and self.failover.peer_active()
            await asyncio.to_thread(self.mirror.tick, self.role, peer_active)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
