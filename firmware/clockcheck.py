"""The pair's clocks checked against each other, from the signed mirror traffic they already
exchange: both boards stamp footage with their own wall clock, so a skew between them shows as a
timeline that jumps at a handover, and beyond the mirror's replay window (±30 s) each refuses
the other's requests. Sans-IO: samples and `now` in, an estimate and a verdict out.

A sample bounds the offset (peer clock minus this board's) without assuming how the delay splits
between the two ways, as NTP does: a round trip (sent here at t1, received there at t2, answered
there at t3, back here at t4) puts it in [t3 - t4, t2 - t1], whose width is the round trip
minus the time the peer held the request; a request from the peer (sent there at t, received
here at r) only shows that it is at least t - r. Samples in a short window are intersected;
samples older than the window, or stamped after `now` (this board's clock stepped back), are
dropped, so a clock set right is seen as right within the window.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

WINDOW_S = 30.0
"""Samples this recent are combined: short enough that two quartz clocks (±50 ppm) drift
apart by no more than a few milliseconds within it, long enough for a dozen feed requests."""
SAMPLES = 64
CLEAR_RATIO = 0.5
"""Hysteresis: an alert raised above the threshold clears when the skew is proven below this
fraction of it, so an offset near the threshold does not flap."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """What is known of the offset (peer minus local, µs): lo <= offset <= hi."""

    lo_us: int
    hi_us: int | None
    """None: no upper bound (a one-way sample)."""

    @property
    def offset_us(self) -> int | None:
        return None if self.hi_us is None else (self.lo_us + self.hi_us) // 2

    @property
    def uncertainty_us(self) -> int | None:
        return None if self.hi_us is None else (self.hi_us - self.lo_us + 1) // 2

    def beyond(self, limit_us: int) -> bool:
        """Proven more than limit apart, either way."""
        return self.lo_us > limit_us or (self.hi_us is not None and self.hi_us < -limit_us)

    def within(self, limit_us: int) -> bool:
        """Proven at most limit apart."""
        return self.hi_us is not None and -limit_us <= self.lo_us and self.hi_us <= limit_us


@dataclass(frozen=True, slots=True)
class Sample:
    bounds: Bounds
    at_us: int
    """This board's wall clock when the sample was taken."""


def round_trip(sent_us: int, peer_received_us: int, peer_sent_us: int, received_us: int
               ) -> Sample | None:  # fmt: skip
    """A request sent and answered; None when a clock stepped during it (negative times)."""
    if peer_sent_us < peer_received_us or received_us - sent_us < peer_sent_us - peer_received_us:
        return None
    return Sample(Bounds(peer_sent_us - received_us, peer_received_us - sent_us), received_us)


def one_way(peer_sent_us: int, received_us: int) -> Sample:
    """A request from the peer stamped with its clock: it cannot arrive before it was sent."""
    return Sample(Bounds(peer_sent_us - received_us, None), received_us)


@dataclass(frozen=True, slots=True)
class Verdict:
    estimate: Bounds | None
    """None: no sample in the window (no peer heard from)."""
    skewed: bool
    changed: bool


class ClockCheck:
    """Fed by the mirror's threads, read by its upkeep tick (hence the lock)."""

    def __init__(self, threshold_s: float, window_s: float = WINDOW_S) -> None:
        self.threshold_us = round(threshold_s * 1e6)
        self.window_us = round(window_s * 1e6)
        self.skewed = False
        self._samples: deque[Sample] = deque(maxlen=SAMPLES)
        self._lock = threading.Lock()

    def add(self, sample: Sample | None) -> None:
        if sample is not None:
            with self._lock:
                self._samples.append(sample)

    def estimate(self, now_us: int) -> Bounds | None:
        """The intersection of the window's samples; if they disagree (a clock was stepped
        within the window) the newest sample alone."""
        with self._lock:
            live = [s for s in self._samples if now_us - self.window_us <= s.at_us <= now_us]
        if not live:
            return None
        lo = max(s.bounds.lo_us for s in live)
        his = [s.bounds.hi_us for s in live if s.bounds.hi_us is not None]
        hi = min(his) if his else None
        if hi is not None and lo > hi:
            return max(live, key=lambda s: s.at_us).bounds
        return Bounds(lo, hi)

    def verdict(self, now_us: int) -> Verdict:
        """Skewed once proven beyond the threshold; clear again once proven within a fraction
        of it, once requests alone (a peer on older firmware, or one whose answers this board
        refuses) no longer show it beyond that fraction, or when no sample is left."""
        est = self.estimate(now_us)
        was = self.skewed
        near = round(self.threshold_us * CLEAR_RATIO)
        if est is None or est.within(near) or (est.hi_us is None and not est.beyond(near)):
            self.skewed = False
        elif est.beyond(self.threshold_us):
            self.skewed = True
        return Verdict(est, self.skewed, self.skewed != was)
