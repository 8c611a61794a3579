"""Watchdogs: the hardware timer that reboots a hung board, and the service manager's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class WatchdogState:
    device: str
    armed: bool
    timeout_seconds: int | None
    """As the driver applied it (read back), not as asked."""
    identity: str | None = None
    pings: int = 0


class Watchdog(Protocol):
    """Opening arms it; ping() before the timeout or the board resets; close() writes the
    magic 'V' first so a clean stop does not reset the board."""

    def open(self, timeout_seconds: int) -> int:
        """Arm with this timeout; returns the timeout the driver applied."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...

    def state(self) -> WatchdogState: ...


class ServiceNotifier(Protocol):
    """The service manager's side (systemd sd_notify): READY=1, WATCHDOG=1, STOPPING=1."""

    def notify(self, message: str) -> bool:
        """False when no service manager listens (started by hand)."""
        ...

    def watchdog_interval(self) -> float | None:
        """How often to send WATCHDOG=1 (half of WATCHDOG_USEC), None if not asked to."""
        ...
