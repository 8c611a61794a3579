"""The board's audit log: one JSON line per event (alerts raised and cleared, handovers,
shutdowns) in the data directory, appended and synced so it survives a power cut.

The file is opened once: when the data disk is pulled, the lines go to the disk they belong to
(or fail), never into whatever directory the mount left behind."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from firmware.timefmt import iso

log = logging.getLogger("nvr.audit")

AUDIT_FILE = "audit.log"


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def append(self, now_us: int, event: str, **fields: object) -> None:
        """Never raises: a full or failed disk must not take the alert path down with it."""
        line = json.dumps({"time": iso(now_us), "event": event, **fields}, sort_keys=True) + "\n"
        try:
            with self._lock:
                if self._fd < 0:
                    raise OSError(f"closed before {event!r}")
                os.write(self._fd, line.encode())
                os.fsync(self._fd)
        except OSError as e:
            log.error("audit log %s: %s", self.path, e)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def open_audit(data_dir: Path) -> AuditLog:
    """The data directory's audit log, as the firmware opens it (lines appended, synced)."""
    return AuditLog(Path(data_dir) / AUDIT_FILE)


def append_event(data_dir: Path, now_us: int, event: str, **fields: object) -> None:
    """One event from a process that holds no AuditLog (a recorder worker, the mirror's
    pruning). The file must exist (the board made it): a pulled disk's empty mount point
    does not get one. Never raises, as AuditLog.append."""
    line = json.dumps({"time": iso(now_us), "event": event, **fields}, sort_keys=True) + "\n"
    try:
        fd = os.open(data_dir / AUDIT_FILE, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        log.error("audit log %s: %s", data_dir / AUDIT_FILE, e)
