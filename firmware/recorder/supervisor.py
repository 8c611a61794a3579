"""The recorder as the board sees it: worker processes, per-camera status, counters and alerts.

Runs in the main process. Spreads cameras over workers, restarts a worker that dies, turns the
workers' events into status, metrics and alerts, and runs retention by age in the background.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.connection as mp_connection
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path

from firmware.alert_ids import AlertId, Severity
from firmware.alerts import Alerts
from firmware.capacity import Capacity, Rate, estimate, judge
from firmware.catalog import Catalog, set_aside_copies
from firmware.config import CameraConfig, RecorderConfig
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.recorder import procs
from firmware.recorder.events import (
    CameraEvent,
    CameraProgress,
    Progress,
    Reconnecting,
    RetentionDeleted,
    RunEnded,
    SegmentCommitted,
    SessionChanged,
    WorkerEvent,
    WorkerExited,
    no_space,
    redact,
)
from firmware.recorder.recovery import CRASH, recover, salvage_camera
from firmware.recorder.retention import FREE_SPACE, Retention, Tiering, disk_usage, watermarks
from firmware.recorder.worker import GO, worker_main
from firmware.roles import RecorderMode
from firmware.supervise import keep_running
from firmware.timefmt import now_us

log = logging.getLogger(__name__)

MAINTENANCE_PERIOD_S = 2.0
AGE_RETENTION_PERIOD_S = 10.0  # one indexed query of the oldest segments
CAPACITY_PERIOD_S = 60.0
CAPACITY_WINDOW_S = 3600.0
"""The cameras' rates are measured over the footage of the last hour."""
TAKEOVER_POINTS = 4
"""Newest segments per camera a takeover may continue after (see StandbyRing.takeover)."""


@dataclass
class CameraStatus:
    name: str
    url: str
    recording: bool = False
    last_frame_wall_us: int | None = None
    last_frame_seen_us: int | None = None
    reported_us: int | None = None
    """When the worker last reported on this camera (it does every second while it runs)."""
    connected: bool = False
    """Its session is up (recording, or held in a standby's ring)."""
    error: str | None = None
    codec: str | None = None
    segments: int = 0
    bytes: int = 0
    frames: int = 0
    reconnects: int = 0
    holding: bool = False
    """A hot standby: the session is up and the last seconds are held in memory."""
    ring_seconds: float = 0.0
    gaps: dict[str, int] = field(default_factory=dict)
    """Run ends by reason."""

    @property
    def lag_seconds(self) -> float | None:
        if self.last_frame_wall_us is None or self.last_frame_seen_us is None:
            return None
        return max(0.0, (self.last_frame_seen_us - self.last_frame_wall_us) / 1e6)


def ring_seconds(cfg: RecorderConfig) -> float:
    """What a standby holds per camera: the peer's open segment, one more in transfer, the
    time to detect the failure, and a margin (0 in the config = this)."""
    return cfg.standby_ring_seconds or 2 * cfg.segment_seconds + 10.0


def _close(tries: list[tuple[mp_connection.Connection, ...]]) -> None:
    for ends in tries:
        for end in ends:
            end.close()


def worker_count(requested: int, cameras: int) -> int:
    """0 = one process per CPU core (never more than cameras): one process alone cannot remux
    dozens of cameras, and a process per camera costs more CPU and memory than it saves in GIL
    contention (docs/BENCHMARKS.md)."""
    n = requested or (os.cpu_count() or 1)
    return max(1, min(n, cameras))


class Recorder:
    def __init__(
        self,
        data_dir: Path,
        origin: str,
        cfg: RecorderConfig,
        cameras: list[CameraConfig],
        alerts: Alerts,
        mode: str = RecorderMode.RECORD,
        on_change: Callable[[], None] = lambda: None,
        tiering: Tiering | None = None,
    ) -> None:
        """mode: record, or ring for a board that starts as a hot standby. on_change is called
        (from a thread) when a segment is committed or a run ends: the mirror's cue. tiering:
        the archive tier's hold on retention ([archive]; retention.Tiering)."""
        self.tiering = tiering
        self.data_dir = Path(data_dir)
        self.mode = mode
        self.on_change = on_change
        self.origin = origin
        self.cfg = cfg
        self.cameras = [c for c in cameras if c.enabled]
        self.alerts = alerts
        self.status = {c.name: CameraStatus(c.name, redact(c.url)) for c in self.cameras}
        self.retention_deleted: dict[str, int] = {}
        self.retention_bytes: dict[str, int] = {}
        self.worker_restarts = 0
        self._ctx = procs.context()
        self._conns: list = []
        """One pipe per worker: a worker killed mid-send only breaks its own pipe."""
        self._conns_lock = threading.Lock()
        self._stopping = False
        self._halt = threading.Event()
        self._workers: list[tuple[procs.Worker, list[tuple[str, str]]]] = []
        self._commands: dict[int, mp_connection.Connection] = {}
        """Per worker pid: the pipe that carries mode switches to it."""
        self._threads: list[threading.Thread] = []
        self._last_space_deletion = 0.0
        self._crashed_before: int | None = None
        """Set when start-up recovery could not close the runs a crash left open (the disk
        was full): this board's runs that started before it are closed once it takes writes."""
        self.beat = time.monotonic()
        """Last pass of the upkeep thread: the watchdog keeper's sign that the recorder lives."""
        self.capacity: Capacity | None = None
        """The days of footage the storage holds at the measured rates (firmware/capacity.py)."""
        self.catalog = Catalog(self.data_dir)
        self.retention = Retention(self.data_dir, cfg, self.catalog, self._on_delete, self._apply,
                                   tiering=tiering)  # fmt: skip

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._recover()
        except (OSError, sqlite3.Error) as e:
            # A full or failing disk must not keep the board from starting: the workers hold
            # their cameras in memory until it takes writes; recovery runs at the next start.
            log.error("recovery could not finish: %s", e)
            self._disk_failed("start-up recovery", e)
            self._crashed_before = now_us()  # runs left open before now: closed later
        n = worker_count(self.cfg.workers, len(self.cameras))
        shares: list[list[tuple[str, str]]] = [[] for _ in range(n)]
        for i, cam in enumerate(self.cameras):
            shares[i % n].append((cam.name, cam.url))
        for share in shares:
            if share:
                self._workers.append((self._spawn(share), share))
        log.info(
            "recording %d cameras in %d worker processes into %s",
            len(self.cameras),
            len(self._workers),
            self.data_dir,
        )
        for what, target in (("recorder event pump", self._consume),
                             ("recorder upkeep", self._maintain)):  # fmt: skip
            args = (what, target, self._halt, self.alerts.task_failed)
            t = threading.Thread(target=keep_running, args=args, name=target.__name__, daemon=True)
            t.start()
            self._threads.append(t)

    def _recover(self) -> None:
        report = recover(self.data_dir, self.catalog, self.origin)
        if report.quarantined or report.missing_files:
            self.alerts.raise_("recovery", "warning", report.summary(), now_us())
        if report.from_names:
            aside = set_aside_copies(self.data_dir)
            self.alerts.raise_(
                AlertId.CATALOG_REBUILT, Severity.WARNING,
                f"{len(report.from_names)} segment files were cataloged from their names "
                "(the catalog was rebuilt; run end reasons before it are not known)"
                + (f"; the corrupt catalog is kept as {aside[-1].name}" if aside else ""),
                now_us(),
            )  # fmt: skip
        self.retention.run(now_us())

    def _disk_failed(self, what: str, e: Exception) -> None:
        """A catalog or file write of the supervisor's failed: the same alerts as a camera's."""
        if no_space(e):
            self.alerts.raise_(AlertId.DISK_FULL, Severity.CRITICAL,
                               f"data disk full: {what} failed: {e}"
                               + self.retention.held.freeing_note(), now_us())  # fmt: skip
        else:
            self.alerts.raise_(AlertId.RECOVERY, Severity.WARNING, f"{what} failed: {e}",
                               now_us())  # fmt: skip

    def _spawn(self, share: list[tuple[str, str]]) -> procs.Worker:
        """A worker for these cameras, told to go once its pid is known here. Each try of the
        start has pipes of its own: a try whose forkserver ended after forking but before
        saying the pid leaves a process this supervisor never learns of; its pipes close here,
        it reads the end of its command pipe instead of `go`, and exits before it connects a
        camera (firmware/recorder/worker.py), so two workers never record one camera."""
        tries: list[tuple[mp_connection.Connection, ...]] = []

        def make() -> BaseProcess:
            receiver, sender = self._ctx.Pipe(duplex=False)
            cmd_in, cmd_out = self._ctx.Pipe(duplex=False)
            tries.append((receiver, sender, cmd_in, cmd_out))
            return self._ctx.Process(
                target=worker_main,
                args=(
                    str(self.data_dir),
                    self.origin,
                    self.cfg.model_dump_json(),
                    share,
                    sender,
                    logging.getLogger().level,
                    self.mode,
                    ring_seconds(self.cfg),
                    cmd_in,
                    None if self.tiering is None else self.tiering.local_days,
                    os.getpid(),
                ),
                name="nvr-rec-" + ",".join(n for n, _ in share)[:40],
                daemon=False,
            )

        try:
            p = procs.start(make)
        except BaseException:
            _close(tries)
            raise
        *lost, (receiver, sender, cmd_in, cmd_out) = tries
        _close(lost)
        sender.close()
        cmd_in.close()
        assert p.pid is not None
        with contextlib.suppress(OSError):  # it died already: the upkeep starts another
            cmd_out.send(GO)
        with self._conns_lock:
            self._conns.append(receiver)
        self._commands[p.pid] = cmd_out
        return procs.Worker(p)

    def set_mode(self, mode: str) -> None:
        """record (this board is active) or ring (standby). Taking over, each camera goes on
        from the frame after the newest one this board holds, found in its ring by content."""
        if mode not in (RecorderMode.RECORD, RecorderMode.RING) or mode == self.mode:
            return
        self.mode = mode
        cont: dict[str, list[dict]] = {}
        if mode == RecorderMode.RECORD:
            for cam in self.cameras:
                cont[cam.name] = [
                    {"id": s.id, "last_frame": s.last_frame, "end_us": s.end_us}
                    for s in self.catalog.latest_segments(cam.name, TAKEOVER_POINTS)
                    if s.last_frame
                ]
        log.info(
            "recorder: %s", "recording" if mode == RecorderMode.RECORD else "standby (ring only)"
        )
        for conn in list(self._commands.values()):
            # A worker that died misses it; its replacement starts in the new mode.
            with contextlib.suppress(OSError):
                conn.send(("mode", {"mode": mode, "cont": cont}))

    def stop(self, timeout: float | None = None) -> None:
        """Commit open segments, close runs as stopped, wait for workers. Once: a board that
        stopped and then closes, or a test's clean-up after it, asks again."""
        if self._halt.is_set():
            return
        # SIGTERM, not a shared Event: a worker killed while holding a shared lock would
        # deadlock every other worker on it.
        self._stopping = True
        for w, _ in self._workers:
            if w.alive():
                w.terminate()
        deadline = time.monotonic() + (timeout or self.cfg.stall_seconds + 10)
        for w, _ in self._workers:
            w.wait(max(0.1, deadline - time.monotonic()))
        for w, _ in self._workers:
            if w.alive():
                log.error("worker %s did not stop in time; killing it", w.process.name)
                w.kill()
                w.wait(2)
            w.close()
        self._halt.set()
        self._drain()
        for t in self._threads:
            t.join(2)
        # The pipes to the workers, each end once: a firmware that restarts in its process
        # (Board.restart) would otherwise keep three descriptors per worker per restart.
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in [*conns, *self._commands.values()]:
            conn.close()
        self._commands.clear()

    # --- events --------------------------------------------------------------------------------

    def _consume(self) -> None:
        while not self._halt.is_set():
            self._receive(0.5)

    def _receive(self, timeout: float) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        if not conns:
            self._halt.wait(timeout)
            return
        for conn in mp_connection.wait(conns, timeout):
            try:
                event = conn.recv()
            except (EOFError, OSError):
                with self._conns_lock:  # that worker is gone; its replacement has a new pipe
                    # The pump and a stopping recorder's drain may both see the same end.
                    if conn in self._conns:
                        self._conns.remove(conn)
                conn.close()
                continue
            self._apply(event)

    def _drain(self) -> None:
        while True:
            with self._conns_lock:
                if not self._conns:
                    return
            self._receive(0)
            with self._conns_lock:
                ready = mp_connection.wait(self._conns, 0)
            if not ready:
                return

    def _apply(self, event: WorkerEvent) -> None:
        """One worker event into status, counters and alerts. An event about a camera this
        recorder does not record (its config changed meanwhile) is dropped."""
        match event:
            case RetentionDeleted():
                self._count_deletion(event)
            case RaiseAlert(id=alert_id, severity=severity, text=text):
                if alert_id == AlertId.DISK_FULL and "evidence locks" not in text:
                    text += self.retention.held.freeing_note()  # a worker's write failed
                self.alerts.raise_(alert_id, severity, text, now_us())
            case ClearAlert(id=alert_id):
                self.alerts.clear(alert_id)
            case Progress(cameras=each):
                for progress in each:
                    self._apply(progress)
            case (
                CameraProgress()
                | SessionChanged()
                | SegmentCommitted()
                | RunEnded()
                | Reconnecting()
            ):
                st = self.status.get(event.camera)
                if st is not None:
                    self._apply_camera(st, event)
            case WorkerExited():
                pass  # the maintenance thread sees the process go

    def _apply_camera(self, st: CameraStatus, event: CameraEvent) -> None:
        match event:
            case CameraProgress():
                st.reported_us = now_us()
                st.last_frame_wall_us = event.last_frame_wall_us
                st.last_frame_seen_us = event.last_frame_seen_us
                st.recording = event.recording
                st.holding = event.holding
                st.ring_seconds = event.ring_seconds
            case SessionChanged():
                st.connected = event.up
                st.recording = event.recording
                st.error = event.error
                if event.codec is not None:
                    st.codec = event.codec
                if event.recording:
                    self.alerts.clear(f"camera-{st.name}")
            case SegmentCommitted():
                st.segments += 1
                st.bytes += event.bytes
                st.frames += event.frames
                self.on_change()
            case RunEnded(reason=reason):
                st.gaps[reason] = st.gaps.get(reason, 0) + 1
                self.on_change()
            case Reconnecting():
                st.reconnects += 1

    def _count_deletion(self, event: RetentionDeleted) -> None:
        why = event.reason
        self.retention_deleted[why] = self.retention_deleted.get(why, 0) + event.segments
        self.retention_bytes[why] = self.retention_bytes.get(why, 0) + event.bytes
        if why == FREE_SPACE:
            self._last_space_deletion = time.monotonic()
            self.alerts.raise_(
                AlertId.DISK_FULL,
                Severity.WARNING,
                f"data disk at its free-space watermark: oldest footage is being deleted "
                f"to keep recording ({self.retention_deleted[why]} segments so far)"
                + self.retention.held.freeing_note(),
                now_us(),
            )

    def _on_delete(self, why: str, n: int, nbytes: int) -> None:
        self._apply(RetentionDeleted(why, n, nbytes))

    # --- maintenance ---------------------------------------------------------------------------

    def _maintain(self) -> None:
        """Restarts dead workers, checks the cameras, runs retention; under keep_running, so a
        failing disk cannot end it (workers would no longer restart, the watchdog's beat
        would stop)."""
        last_age = time.monotonic()
        last_capacity = -CAPACITY_PERIOD_S
        while not self._halt.wait(MAINTENANCE_PERIOD_S):
            self.beat = time.monotonic()
            self._check_workers()
            self._check_cameras()
            quiet = time.monotonic() - self._last_space_deletion
            if (
                quiet > max(30.0, 5 * self.cfg.segment_seconds)
                and not self.retention.below_watermark()
            ):
                self.alerts.clear(AlertId.DISK_FULL)
            if time.monotonic() - last_age > AGE_RETENTION_PERIOD_S:
                last_age = time.monotonic()
                try:
                    self._close_crashed_runs()
                    self.retention.run(now_us())
                except (OSError, sqlite3.Error) as e:
                    log.error("retention: %s", e)
                    self._disk_failed("retention", e)
            if time.monotonic() - last_capacity > CAPACITY_PERIOD_S:
                last_capacity = time.monotonic()
                try:
                    self.plan_capacity(now_us())
                except (OSError, sqlite3.Error) as e:
                    log.error("capacity: %s", e)

    def plan_capacity(self, now: int) -> Capacity:
        """The storage's days at the last hour's rates of the cameras recorded here (a
        standby's are the mirrored footage), and retention-short raised or cleared."""
        measured = self.catalog.rates(now - int(CAPACITY_WINDOW_S * 1e6))
        rates = {}
        for cam in self.cameras:
            b, d = measured.get(cam.name, (0, 0))
            rates[cam.name] = Rate(b, d / 1e6)
        total, free = self.disk()
        footage = sum(b for _, b in self.catalog.totals().values())
        cap = estimate(total, free, footage, watermarks(total, self.cfg).low, rates)
        self.capacity = cap
        raised = any(a.id == AlertId.RETENTION_SHORT for a in self.alerts.active())
        action = judge(cap, self.cfg.retention_days, raised)
        if action is not None:
            self._apply(action)
        return cap

    def _close_crashed_runs(self) -> None:
        if self._crashed_before is None:
            return
        for run in self.catalog.runs():
            if (run.end_reason is None and run.origin == self.origin
                    and run.start_us < self._crashed_before):  # fmt: skip
                self.catalog.end_run(run.id, CRASH)
        self._crashed_before = None

    def _check_workers(self) -> None:
        if self._stopping:
            return
        for i, (w, share) in enumerate(self._workers):
            if w.alive():
                continue
            self.worker_restarts += 1
            code = w.exitcode()
            w.close()
            names = ", ".join(n for n, _ in share)
            log.error("worker for %s exited (code %s); restarting it", names, code)
            for name, _ in share:
                self.status[name].recording = self.status[name].connected = False
                self.status[name].error = f"worker process died (exit code {code})"
            # Its open runs were cut short: close them so the gap is explicit, then go on.
            for name, _ in share:
                salvage_camera(self.data_dir, self.catalog, name)
                self.catalog.close_open_runs(CRASH, self.origin, camera=name)
            old = self._commands.pop(w.pid, None)
            if old is not None:
                old.close()
            self._workers[i] = (self._spawn(share), share)

    def _check_cameras(self) -> None:
        now = now_us()
        for st in self.status.values():
            fresh = st.last_frame_seen_us is not None and (
                now - st.last_frame_seen_us < self.cfg.stall_seconds * 1e6 * 2
            )
            if (st.recording or st.holding) and fresh:
                self.alerts.clear(f"camera-{st.name}")
            elif st.error:
                self.alerts.raise_(
                    f"camera-{st.name}",
                    "warning",
                    f"camera {st.name} is not recording: {st.error}",
                    now,
                )

    def disk(self) -> tuple[int, int]:
        return disk_usage(self.data_dir)
