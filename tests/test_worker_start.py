"""A worker's start from the forkserver when the forkserver ends under it (systemd's SIGTERM to
the service's processes while a config reload starts a camera, the OOM killer): the start is
made again from a new forkserver, not lost as an EOFError that fails the reload."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

from firmware.recorder import procs
from hil.proctree import forkserver
from hil.wait import wait_until


def waiting_connections(server: int) -> int:
    """Connections queued at the forkserver's listening socket, not yet accepted."""
    out = subprocess.run(["ss", "-xlpH"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if f"pid={server}," in line:
            return int(line.split()[2])  # Netid State Recv-Q ...
    return 0


def test_a_worker_start_is_made_again_when_the_forkserver_ends_during_it():
    ctx = procs.context()
    procs.prewarm()
    server = forkserver(os.getpid())
    assert server is not None
    os.kill(server, signal.SIGSTOP)  # it takes the start's connection but answers nothing
    started: list = []
    failed: list[BaseException] = []

    def start() -> None:
        try:
            started.append(procs.start(lambda: ctx.Process(target=os._exit, args=(7,))))
        except BaseException as e:
            failed.append(e)

    t = threading.Thread(target=start, daemon=True)
    t.start()
    try:
        wait_until(lambda: waiting_connections(server) >= 1, 20, "the start waiting on the server")
        os.kill(server, signal.SIGKILL)
        t.join(60)
        assert not t.is_alive()
        assert not failed, failed
        [p] = started
        p.join(20)
        assert p.exitcode == 7  # it ran: forked by a new forkserver
        again = forkserver(os.getpid())
        assert again is not None and again != server
    finally:
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(server, sig)
            except ProcessLookupError:
                break
