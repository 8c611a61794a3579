"""Waiting for a condition with a deadline: the one way tests, the demo and benchmarks wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class WaitTimeout(AssertionError):
    """A condition never came true (an assertion failure in tests)."""


def wait_until(cond: Callable[[], object], timeout: float, what: str, every: float = 0.1):
    """Poll cond until it returns something truthy; fail naming what we waited for. An
    exception from cond counts as 'not yet' (the thing may not exist yet)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as e:
            last_exc = e
        time.sleep(every)
    raise WaitTimeout(f"timed out after {timeout} s waiting for {what} (last error: {last_exc})")


async def wait_until_async(
    cond: Callable[[], object], timeout: float, what: str, every: float = 0.05
):
    """wait_until on an event loop: the loop runs between polls (a thread may be waiting
    on it to answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        await asyncio.sleep(every)
    raise WaitTimeout(f"timed out after {timeout} s waiting for {what}")


def holds(cond: Callable[[], object], seconds: float, what: str, every: float = 0.05) -> int:
    """Check that cond stays true for a whole observation window (for 'nothing happens'
    claims); returns how many times it was checked, so a caller can see it really looked."""
    deadline = time.monotonic() + seconds
    checks = 0
    while time.monotonic() < deadline:
        value = cond()
        checks += 1
        if not value:
            raise AssertionError(f"{what} stopped holding after {checks} checks")
        time.sleep(every)
    return checks
