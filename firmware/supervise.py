"""Long-running parts of the firmware (threads and asyncio tasks) run under `keep_running`: one
that fails is reported and started again, never gone unseen. A board whose NIC watch, event
pump or UPS poll ended silently would go on advertising that all is well."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger("nvr.supervise")

RETRY_S = 1.0

Failure = Callable[[str, Exception], None]
"""on_failure(what, error): raise an alert (or count an error) for the part that failed."""


def keep_running(
    what: str, body: Callable[[], None], stop: threading.Event, on_failure: Failure,
    retry_s: float = RETRY_S,
) -> None:  # fmt: skip
    """Run body until it returns or stop is set; after an exception, report it and run body
    again retry_s later. The thread's target."""
    while not stop.is_set():
        try:
            body()
            return
        except Exception as e:
            log.error("%s failed (%s); starting it again in %.0f s", what, type(e).__name__,
                      retry_s, exc_info=not isinstance(e, OSError))  # fmt: skip
            on_failure(what, e)
            stop.wait(retry_s)


async def keep_running_async(
    what: str, body: Callable[[], Awaitable[None]], stop: asyncio.Event, on_failure: Failure,
    retry_s: float = RETRY_S,
) -> None:  # fmt: skip
    """The same for a coroutine on the board's event loop."""
    while not stop.is_set():
        try:
            await body()
            return
        except Exception as e:
            log.error("%s failed (%s); starting it again in %.0f s", what, type(e).__name__,
                      retry_s, exc_info=not isinstance(e, OSError))  # fmt: skip
            on_failure(what, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)
