"""A worker's start from the forkserver when the forkserver ends under it (systemd's SIGTERM to
the service's processes while a config reload starts a camera, the OOM killer): the start is
made again from a new forkserver, not lost as an EOFError that fails the reload."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
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


def _owner(port: int) -> int | None:
    """The process holding the client end of a loopback TCP connection from `port`."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        if "pid=" in line:
            return int(line.split("pid=", 1)[1].split(",", 1)[0])
    return None


def test_a_start_lost_after_the_fork_leaves_no_second_worker_on_the_cameras(tmp_path, monkeypatch):
    """The forkserver forked the worker but ended before it said the pid: the supervisor
    starts another, and the first, which it never learns of, ends without touching a camera
    (it would otherwise record the same cameras beside the second)."""
    from firmware.alerts import Alerts
    from firmware.config import CameraConfig, RecorderConfig
    from firmware.recorder.supervisor import Recorder

    camera = socket.create_server(("127.0.0.1", 0))  # answers nothing: a session stays open
    port = camera.getsockname()[1]
    owners: list[int | None] = []
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, (_, peer) = camera.accept()
                held.append(conn)
                owners.append(_owner(peer))

    threading.Thread(target=accept, daemon=True).start()
    lost: list = []

    def start_losing_the_first(make, tries_s: float = procs.START_TRIES_S):
        first = make()
        first.start()  # forked; as far as the supervisor knows, the start failed
        lost.append(first)
        second = make()
        second.start()
        return second

    monkeypatch.setattr(procs, "start", start_losing_the_first)
    cam = CameraConfig(name="cam1", url=f"rtsp://127.0.0.1:{port}/x")
    rec = Recorder(tmp_path, "a", RecorderConfig(), [cam], Alerts())
    worker = None
    try:
        worker = rec._spawn([(cam.name, cam.url)])
        [first] = lost
        gone = procs.watch(first.pid)
        assert procs.ended(gone, 20), "the lost worker is still running"
        os.close(gone)
        wait_until(lambda: worker.pid in owners, 30, "the worker connecting its camera")
        assert first.pid not in owners, owners
    finally:
        for p in lost:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.join(5)
        if worker is not None:
            worker.kill()
            worker.wait(10)
            worker.close()
        camera.close()
        for conn in held:
            conn.close()
        rec.catalog.close()
