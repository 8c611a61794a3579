"""Repeated log lines are let through once per interval, with a count of the ones held back.

A fault that repeats many times a second (a refused accept, a peer that keeps sending garbage)
must be seen in the log, but must not fill the journal on the data disk and push out everything
else. The first line of its kind is written at once; the same line again within the interval is
counted, not written; the next one after the interval says how many were held back."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

INTERVAL_S = 10.0
MAX_KINDS = 1024
"""Lines remembered at most; beyond that the oldest windows are forgotten (never more memory
for a flood of distinct lines)."""


class RepeatFilter(logging.Filter):
    """On a handler: the same message from the same place at most once per interval."""

    def __init__(self, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._seen: dict[tuple, list] = {}
        """kind -> [time it was last written, lines held back since]"""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the handler's to report
            return True
        kind = (record.name, record.levelno, record.pathname, record.lineno, message)
        now = self.clock()
        seen = self._seen.get(kind)
        if seen is not None and now - seen[0] < self.interval_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.msg = f"{message} ({seen[1]} more like it in the last {now - seen[0]:.0f} s)"
            record.args = None
        self._seen.pop(kind, None)
        self._seen[kind] = [now, 0]
        if len(self._seen) > MAX_KINDS:
            self._forget(now)
        return True

    def _forget(self, now: float) -> None:
        for kind in [k for k, (t, _n) in self._seen.items() if now - t >= self.interval_s]:
            del self._seen[kind]
        while len(self._seen) > MAX_KINDS:
            del self._seen[next(iter(self._seen))]


def setup_logging(level: int) -> None:
    """The firmware's log format on stderr (the journal), repeats limited: every process of
    the firmware (the main one and each recorder worker) starts its logging here."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)  # fmt: skip
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
