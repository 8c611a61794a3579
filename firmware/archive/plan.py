"""The uploader's decisions, sans-IO: what to upload next, how far behind the archive is,
which alerts stand, and when to try again after a failure.

The caller (firmware/archive/uploader.py) feeds the oldest segment not yet archived, whether
this board may upload now (it records: the active board of a pair, or a single board), the
clocks, and the outcome of each upload; it carries out the returned actions and calls `step`
again no later than `deadline`."""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.alert_ids import AlertId, Severity
from firmware.catalog import Segment
from firmware.core.actions import ClearAlert, RaiseAlert

Action = RaiseAlert | ClearAlert

IDLE_S = 5.0
"""With nothing to upload, look again this often (a committed segment also wakes the loop)."""
UNREACHABLE_AFTER = 3
"""Consecutive failed uploads before `archive-unreachable` is raised."""
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0


@dataclass(frozen=True)
class PlanSettings:
    lag_alert_s: float
    unreachable_after: int = UNREACHABLE_AFTER
    backoff_min_s: float = BACKOFF_MIN_S
    backoff_max_s: float = BACKOFF_MAX_S


@dataclass(frozen=True)
class Step:
    """What to do now: upload `upload` (or nothing), then step again by `deadline`."""

    upload: Segment | None
    deadline: float
    lag_s: float | None
    """Seconds since the oldest segment not yet archived started; None while not uploading."""
    actions: tuple[Action, ...] = ()


@dataclass
class ArchivePlan:
    settings: PlanSettings
    failures: int = 0
    """Consecutive failed uploads."""
    retry_at: float = 0.0
    raised: set[AlertId] = field(default_factory=set)
    """The plan's alerts now up: each raised once, cleared once."""

    def lag_s(self, now_us: int, oldest: Segment | None) -> float:
        return 0.0 if oldest is None else max(0.0, (now_us - oldest.start_us) / 1e6)

    def backoff_s(self, failures: int) -> float:
        """1 s, 2 s, 4 s ... up to backoff_max_s; never more, never less than the minimum."""
        if failures <= 0:
            return 0.0
        s = self.settings
        return min(s.backoff_max_s, s.backoff_min_s * 2 ** min(failures - 1, 30))

    def step(self, now: float, now_us: int, oldest: Segment | None, allowed: bool) -> Step:
        """now: a monotonic clock (backoff); now_us: the wall clock (lag)."""
        actions: list[Action] = []
        if not allowed:
            # A standby (or a board in the ring) uploads nothing: the active board does.
            actions += self._set_behind(False, 0.0) + self._set_unreachable(False, "")
            self.failures = 0
            return Step(None, now + IDLE_S, None, tuple(actions))
        lag = self.lag_s(now_us, oldest)
        actions += self._set_behind(lag > self.settings.lag_alert_s, lag)
        if oldest is None:
            return Step(None, now + IDLE_S, lag, tuple(actions))
        if now < self.retry_at:
            return Step(None, self.retry_at, lag, tuple(actions))
        return Step(oldest, now, lag, tuple(actions))

    def succeeded(self) -> list[Action]:
        self.failures = 0
        self.retry_at = 0.0
        return self._set_unreachable(False, "")

    def failed(self, now: float, error_class: str) -> list[Action]:
        """An upload failed with an error of this class (never its text: it may quote the
        endpoint); the next try waits until `retry_at`."""
        self.failures += 1
        self.retry_at = now + self.backoff_s(self.failures)
        if self.failures >= self.settings.unreachable_after:
            return self._set_unreachable(True, error_class)
        return []

    def _set_behind(self, behind: bool, lag: float) -> list[Action]:
        return self._alert(AlertId.ARCHIVE_BEHIND, behind,
                           f"the archive is {lag / 60:.0f} min behind (alert above "
                           f"{self.settings.lag_alert_s / 60:g} min)")  # fmt: skip

    def _set_unreachable(self, down: bool, error_class: str) -> list[Action]:
        return self._alert(AlertId.ARCHIVE_UNREACHABLE, down,
                           f"archive uploads failed {self.failures} times in a row "
                           f"({error_class}); retrying")  # fmt: skip

    def _alert(self, alert_id: AlertId, up: bool, text: str) -> list[Action]:
        """Raise (again, with the new text) while up; clear once when it comes down."""
        if up:
            self.raised.add(alert_id)
            return [RaiseAlert(alert_id, Severity.WARNING, text)]
        if alert_id in self.raised:
            self.raised.discard(alert_id)
            return [ClearAlert(alert_id)]
        return []
