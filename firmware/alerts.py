"""One alert model for the whole board: raised, cleared, listed in status and counted in metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from firmware.timefmt import iso, now_us

log = logging.getLogger("nvr.alerts")

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Alert:
    id: str
    severity: str
    text: str
    since_us: int

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "severity": self.severity,
            "text": self.text,
            "since": iso(self.since_us),
        }


class Alerts:
    """Thread-safe; raising an active alert again updates its text but keeps its start time."""

    def __init__(self) -> None:
        self.listener: Callable[[str, Alert, int], None] | None = None
        """Told ("raised" or "cleared", alert, now_us) on every change, e.g. the audit log."""
        self._lock = threading.Lock()
        self._active: dict[str, Alert] = {}
        self.raised_total: dict[str, int] = {}

    def raise_(self, alert_id: str, severity: str, text: str, now_us: int) -> bool:
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        with self._lock:
            old = self._active.get(alert_id)
            since = old.since_us if old else now_us
            self._active[alert_id] = Alert(alert_id, severity, text, since)
            if old is None:
                self.raised_total[alert_id] = self.raised_total.get(alert_id, 0) + 1
        if old is None:
            log.warning("alert raised: %s (%s): %s", alert_id, severity, text)
            if self.listener is not None:
                self.listener("raised", self._active[alert_id], now_us)
        return old is None

    def clear(self, alert_id: str) -> bool:
        with self._lock:
            gone = self._active.pop(alert_id, None)
        if gone is not None:
            log.info("alert cleared: %s", alert_id)
            if self.listener is not None:
                self.listener("cleared", gone, now_us())
        return gone is not None

    def active(self) -> list[Alert]:
        with self._lock:
            order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
            return sorted(self._active.values(), key=lambda a: (order[a.severity], a.since_us))

    def task_failed(self, what: str, e: Exception) -> None:
        """A thread or task of the firmware failed and was started again (firmware.supervise)."""
        text = f"{what} failed ({type(e).__name__}: {e}) and was started again"
        self.raise_("task-failed", "critical", text, now_us())

    def get(self, alert_id: str) -> Alert | None:
        with self._lock:
            return self._active.get(alert_id)

    def is_active(self, alert_id: str) -> bool:
        with self._lock:
            return alert_id in self._active
