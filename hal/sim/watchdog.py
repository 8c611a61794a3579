"""A simulated hardware watchdog with the kernel's semantics on an injected clock, and a
notifier that records what the service manager would have been told."""

from __future__ import annotations

from collections.abc import Callable

from hal.errors import Unavailable
from hal.watchdog import WatchdogState


class SimWatchdog:
    """Open arms; the timeout is clamped to the driver's range and read back; a ping restarts
    the countdown; close() writes the magic 'V' and disarms unless nowayout. Once the countdown
    runs out the board counts as reset (resets += 1) until reboot()."""

    def __init__(
        self,
        clock: Callable[[], float],
        min_timeout: int = 1,
        max_timeout: int = 600,
        default_timeout: int = 60,
        identity: str = "sim watchdog",
        nowayout: bool = False,
        held_by: str | None = None,
    ) -> None:
        """held_by: the device is busy (another process holds it), so open() fails."""
        self.clock = clock
        self.min_timeout, self.max_timeout = min_timeout, max_timeout
        self.default_timeout = default_timeout
        self.identity = identity
        self.nowayout = nowayout
        self.held_by = held_by
        self.resets = 0
        self._open = False
        self._armed = False
        self._fired = False
        self._timeout = default_timeout
        self._last_ping = 0.0
        self._pings = 0

    def _settle(self) -> None:
        if self._armed and not self._fired and self.clock() >= self._last_ping + self._timeout:
            self._fired = True
            self.resets += 1

    def open(self, timeout_seconds: int) -> int:
        if timeout_seconds < 1:
            raise ValueError("a watchdog timeout is at least 1 s")
        self._settle()
        if self.held_by is not None and not self._open:
            raise Unavailable(f"sim watchdog: busy, already held by {self.held_by}")
        self._open = self._armed = True
        self._timeout = max(self.min_timeout, min(self.max_timeout, timeout_seconds))
        self._last_ping = self.clock()
        return self._timeout

    def ping(self) -> None:
        self._settle()
        if not self._open:
            raise Unavailable("sim watchdog: not open")
        if self._fired:
            return  # too late: the board has already been reset
        self._last_ping = self.clock()
        self._pings += 1

    def close(self) -> None:
        self._settle()
        if self._open and not self._fired and not self.nowayout:
            self._armed = False
        self._open = False

    def crash(self) -> None:
        """The holder dies without writing 'V': the device closes, the timer keeps running."""
        self._settle()
        self._open = False

    def expired(self) -> bool:
        """Whether the timer ran out: armed and not pinged within the timeout."""
        self._settle()
        return self._fired

    def reboot(self) -> None:
        """The board came back up: a fresh, disarmed watchdog (resets is kept)."""
        self._open = self._armed = self._fired = False
        self._timeout = self.default_timeout
        self._pings = 0

    def state(self) -> WatchdogState:
        self._settle()
        timeout = self._timeout if self._armed else None
        return WatchdogState("sim", self._armed, timeout, self.identity, self._pings)


class SimNotifier:
    def __init__(self, listening: bool = True, watchdog_usec: int | None = None) -> None:
        """listening=False: started by hand, no service manager to tell."""
        self.listening = listening
        self.watchdog_usec = watchdog_usec
        self.messages: list[str] = []

    def notify(self, message: str) -> bool:
        if not self.listening:
            return False
        self.messages.append(message)
        return True

    def watchdog_interval(self) -> float | None:
        return self.watchdog_usec / 2 / 1e6 if self.watchdog_usec else None
