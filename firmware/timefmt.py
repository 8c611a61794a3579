"""Times in the catalog are integer microseconds since the Unix epoch (UTC); the outside world
sees ISO 8601 UTC with milliseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    dt = datetime.fromtimestamp(us / 1e6, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> int:
    """Accepts ISO 8601 with or without zone (naive = UTC) and 'Z'; returns microseconds."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1_000_000)


def now_us() -> int:
    """Wall clock in microseconds, the unit of every timestamp we store."""
    return time.time_ns() // 1000
