"""Where the recorder's worker processes come from: forked by multiprocessing's forkserver, a
process that imported PyAV and the ingest once, instead of each worker starting Python and
importing them itself (several seconds on a small board's CPU, every start and every restart
of a worker). `nvr run` starts it first thing (`prewarm`), so its imports run on another core
while the main process imports its own; by the time the recorder starts its workers they fork
ready to connect. The forkserver holds no threads and no cameras; it exits with the main process.
Stdlib only: prewarm runs before anything heavy is imported."""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext

PRELOAD = ["firmware.recorder.worker", "firmware.recorder.ingest"]
"""What a worker imports (worker_main and the camera ingest, PyAV with them)."""


def context() -> ForkServerContext:
    ctx = mp.get_context("forkserver")
    assert isinstance(ctx, ForkServerContext)
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def prewarm() -> None:
    """Start the forkserver now, its imports beside the caller's."""
    context()
    forkserver.ensure_running()
