"""Where the recorder's worker processes come from: forked by multiprocessing's forkserver, a
process that imported PyAV and the ingest once, instead of each worker starting Python and
importing them itself (several seconds on a small board's CPU, every start and every restart
of a worker). `nvr run` starts it first thing (`prewarm`), so its imports run on another core
while the main process imports its own; by the time the recorder starts its workers they fork
ready to connect. The forkserver holds no threads and no cameras; it exits with the main process.
Stdlib only: prewarm runs before anything heavy is imported."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import select
import signal
import time
from collections.abc import Callable
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess

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


START_TRIES_S = 5.0
"""How long a worker's start tries again after the forkserver ended under it."""


def start(make: Callable[[], BaseProcess], tries_s: float = START_TRIES_S) -> BaseProcess:
    """Start the process `make` gives, from the forkserver. The forkserver can end while it
    forks (systemd's SIGTERM to the service's processes as a reload starts a camera, the OOM
    killer): the fork is then lost (EOFError, or a refused connection while the dead server is
    not yet reaped), and multiprocessing starts a new forkserver for the next try."""
    deadline = time.monotonic() + tries_s
    pause = 0.02
    while True:
        process = make()
        try:
            process.start()
            return process
        except (EOFError, ConnectionError):
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # the dead forkserver's reaping, before the next connect
        pause = min(pause * 2, 0.5)


def watch(pid: int) -> int:
    """A pidfd of the process (-1: it has ended already): readable once it ends, whoever
    its parent is."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -1


def ended(pidfd: int, timeout: float = 0.0) -> bool:
    """Whether the watched process has ended, waiting at most timeout seconds."""
    if pidfd < 0:
        return True
    readable, _, _ = select.select([pidfd], [], [], max(0.0, timeout))
    return bool(readable)


class Worker:
    """A worker process, watched through a pidfd: whether it still runs is asked of the kernel.
    multiprocessing learns a forkserver child's end from the forkserver, and takes a dead
    forkserver (a SIGTERM to the process group, the OOM killer) for the end of every worker it
    forked, while they still record; the supervisor would then salvage files still being
    written and start a second worker on the same cameras."""

    def __init__(self, process: BaseProcess) -> None:
        assert process.pid is not None
        self.process = process
        self.pid = process.pid
        self._fd = watch(self.pid)

    def alive(self) -> bool:
        return not ended(self._fd)

    def wait(self, timeout: float) -> bool:
        """True once the process has ended, waiting at most timeout seconds."""
        return ended(self._fd, timeout)

    def exitcode(self) -> int | None:
        """Of an ended worker, as the forkserver reports it (it may take a moment); None when it
        cannot tell."""
        self.process.join(1)
        return self.process.exitcode

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop watching, and let go of the process's status pipe from the forkserver once
        it has said the exit (the forkserver reaps the process)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.process.join(1)
        with contextlib.suppress(ValueError):  # not said within the second: left to the GC
            self.process.close()
