"""Reconnect pacing: doubles after each failure, resets once a session has run for a while."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    min_s: float
    max_s: float
    current: float = 0.0

    def next_delay(self) -> float:
        self.current = self.min_s if self.current == 0 else min(self.max_s, self.current * 2)
        return self.current

    def session_lasted(self, seconds: float) -> None:
        if seconds >= 2 * self.max_s:
            self.current = 0.0
