"""A worker process: records a share of the cameras, one thread each.

Cameras are spread over several processes because one Python process cannot remux dozens of
streams (PyAV's interrupt callback takes the GIL on every poll); threads inside a process keep
each camera isolated from another camera's stalls. Events (firmware/recorder/events.py) go to
the supervisor over this worker's own pipe.

The supervisor names worker_main as the spawn target, so this module is imported by the board's
main process too: PyAV and the ingest are imported inside worker_main, in the worker.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.alert_ids import AlertId, Severity
from firmware.catalog import Catalog
from firmware.config import RecorderConfig
from firmware.core.actions import RaiseAlert
from firmware.lograte import setup_logging
from firmware.recorder.events import (
    CameraProgress,
    Progress,
    RetentionDeleted,
    WorkerEvent,
    WorkerExited,
)
from firmware.recorder.procs import ended, watch
from firmware.recorder.retention import Retention, Tiering
from firmware.roles import RecorderMode
from firmware.supervise import keep_running

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from firmware.recorder.ingest import CameraIngest

STATUS_PERIOD_S = 1.0
GO = ("go", None)
"""The supervisor's first command: it knows this worker's pid (firmware/recorder/supervisor.py
`_spawn`). A worker whose command pipe ends before it exits without touching a camera."""


def _name_process(name: str) -> None:
    """Show which cameras a worker records in ps/top (the kernel keeps 15 characters)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def worker_main(
    data_dir: str,
    origin: str,
    cfg_json: str,
    cameras: list[tuple[str, str]],
    events,  # multiprocessing.connection.Connection, this worker's own
    log_level: int,
    mode: str = RecorderMode.RECORD,
    ring_seconds: float = 10.0,
    commands=None,  # Connection from the supervisor: ("mode", {"mode", "cont": {camera: ...}})
    tiering_days: float | None = None,  # [archive] local_days: retention waits for the archive
    supervisor_pid: int | None = None,  # the board's main process; default: the parent
) -> None:
    import av.logging

    from firmware.recorder import read_guard
    from firmware.recorder.ingest import CameraIngest

    setup_logging(log_level)
    av.logging.set_level(None)  # FFmpeg logging from threads is unsafe (PyAV #751)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    local_stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: local_stop.set())

    _name_process("nvr-" + ",".join(name for name, _ in cameras))
    if commands is not None and not _told_to_go(commands):
        log.warning("worker for %s: the supervisor never learned of it (its start was lost); "
                    "ending before it records", ",".join(n for n, _ in cameras))  # fmt: skip
        return
    cfg = RecorderConfig.model_validate_json(cfg_json)
    root = Path(data_dir)
    catalog = Catalog(root)

    send_lock = threading.Lock()

    def report(event: WorkerEvent) -> None:
        with send_lock:  # a Connection is not thread-safe
            try:
                events.send(event)
            except OSError:
                local_stop.set()  # the supervisor is gone: stop cleanly

    retention = Retention(
        root,
        cfg,
        catalog,
        on_delete=lambda why, n, b: report(RetentionDeleted(why, n, b)),
        report=report,
        tiering=None if tiering_days is None else Tiering(tiering_days),
    )

    def make_room() -> None:
        if retention.below_watermark():
            retention.run(time.time_ns() // 1000)

    ingests = [
        CameraIngest(name, url, root, origin, cfg, catalog, report, local_stop, make_room,
                     lambda: not retention.below_watermark(), mode=mode,
                     ring_seconds=ring_seconds)
        for name, url in cameras
    ]  # fmt: skip

    def failed(what: str, e: Exception) -> None:
        # The type only: a camera's error text may quote its URL (the session's own texts
        # are scrubbed on their way out).
        report(RaiseAlert(AlertId.TASK_FAILED, Severity.CRITICAL,
                          f"{what} failed ({type(e).__name__}) and was started again"))  # fmt: skip

    read_guard.report_failures(failed)

    def kept(what: str, body: Callable[[], None], name: str) -> threading.Thread:
        args = (what, body, local_stop, failed)
        return threading.Thread(target=keep_running, args=args, name=name, daemon=True)

    threads = [kept(f"camera {i.name}'s recorder", i.run_forever, f"cam-{i.name}")
               for i in ingests]  # fmt: skip
    if commands is not None:
        threads.append(kept("the recorder's command pipe",
                            lambda: _obey(commands, ingests, local_stop), "commands"))  # fmt: skip
    for t in threads:
        t.start()
    # The supervisor, not the parent: a worker's parent is the forkserver (procs.py), whose end
    # ends no recording.
    supervisor = watch(os.getppid() if supervisor_pid is None else supervisor_pid)
    while not local_stop.wait(STATUS_PERIOD_S):
        if ended(supervisor):
            local_stop.set()  # the supervisor died without stopping us
        report(Progress(tuple(
            CameraProgress(
                ing.name,
                last_frame_wall_us=ing.last_frame_wall_us,
                last_frame_seen_us=ing.last_frame_seen_us,
                recording=ing.recording,
                holding=ing.holding,
                ring_seconds=round(ing.ring.seconds, 1),
            )
            for ing in ingests
        )))  # fmt: skip
    deadline = time.monotonic() + cfg.stall_seconds + 5
    for t in threads[: len(ingests)]:
        t.join(max(0.1, deadline - time.monotonic()))
    report(WorkerExited(tuple(n for n, _ in cameras)))
    events.close()


def _told_to_go(commands) -> bool:
    try:
        return commands.recv() == GO
    except (EOFError, OSError):
        return False


def _obey(commands, ingests: list[CameraIngest], stop: threading.Event) -> None:
    """The supervisor's mode switches (takeover, standby), applied by each camera's thread at
    its next packet."""
    while not stop.is_set():
        try:
            # Blocks: the supervisor closes the pipe when it stops, and a daemon thread left
            # waiting ends with the process. (A poll with a timeout woke it twice a second.)
            kind, payload = commands.recv()
        except (EOFError, OSError):
            return
        if kind == "mode":
            for ing in ingests:
                ing.request_mode(payload["mode"], payload["cont"].get(ing.name))
