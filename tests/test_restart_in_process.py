"""`nvr run` restarts in its own process (SIGUSR1, and a pairing): a new board on the edited
config file, the same process and the same workers' forkserver, and nothing of the old board
left behind. A real firmware process on loopback with a real camera and a real sd_notify
socket; no [pair], so nothing touches an address outside loopback."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

from conftest import NVR, ROOT, catalog, free_port, wait_until

from hil.camera import StreamSpec
from hil.proctree import forkserver

RESTARTS = 3


def _config(path: Path, name: str, data: Path, port: int, url: str) -> None:
    path.write_text(
        f'[board]\nname = "{name}"\ndata_dir = "{data}"\n[recorder]\nsegment_seconds = 1\n'
        f'[api]\nlisten_port = {port}\nlisten_address = "127.0.0.1"\n'
        f'[[camera]]\nname = "cam1"\nurl = "{url}"\n'
    )


def _kind(target: str) -> str:
    """What a descriptor is, without what differs between two equal ones (inode numbers)."""
    return target.split(":[")[0] if ":[" in target else target


def _descriptors(pid: int) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed while listed
            out[_kind(os.readlink(f"/proc/{pid}/fd/{fd}"))] += 1
    return out


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _threads_started_before(pid: int, uptime: float) -> list[int]:
    """The process's threads, its main one aside, that began before `uptime` (the kernel's
    start time of each, /proc/PID/task/TID/stat field 22). A restarted board's own threads
    (its event loop's executor grows as it needs) all began after the restart."""
    tick = os.sysconf("SC_CLK_TCK")
    old = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            began = int(stat.rsplit(")", 1)[1].split()[19]) / tick
            if int(tid) != pid and began < uptime:
                old.append(int(tid))
    return old


def test_sigusr1_restarts_the_firmware_in_its_process_and_leaves_nothing_behind(camera, tmp_path):
    cam = camera(StreamSpec("cam1", gop=10))
    port = free_port()
    data = tmp_path / "data"
    cfg = tmp_path / "nvr.toml"
    _config(cfg, "a", data, port, cam.url("cam1"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    said: list[str] = []

    def heard(message: str) -> bool:
        while True:
            try:
                said.extend(notify.recv(4096).decode().splitlines())
            except TimeoutError:
                return message in said

    def status() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=2) as r:
            return json.load(r)

    def recording_as(name: str) -> bool:
        try:
            st = status()
        except OSError:
            return False  # between two boards
        return st["board"] == name and all(c["recording"] for c in st["cameras"])

    log = tmp_path / "nvr.log"
    env = os.environ | {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    with open(log, "wb") as logf:
        proc = subprocess.Popen([*NVR, "run", "--config", str(cfg)], cwd=ROOT, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)  # fmt: skip
    try:
        wait_until(lambda: recording_as("a"), 60, "board a recording")
        wait_until(lambda: heard("READY=1"), 10, "READY=1")
        server = forkserver(proc.pid)
        assert server is not None
        seen: list[collections.Counter[str]] = []
        signalled = 0.0
        for n in range(1, RESTARTS + 1):
            name = f"r{n}"
            _config(cfg, name, data, port, cam.url("cam1"))  # [board] needs a restart
            said.clear()
            signalled = _uptime()
            os.kill(proc.pid, signal.SIGUSR1)
            wait_until(lambda name=name: recording_as(name), 60, f"board {name} recording")
            wait_until(lambda: heard("READY=1"), 10, "READY=1 again")
            assert said.index("RELOADING=1") < said.index("READY=1"), said
            assert "STOPPING=1" not in said
            assert proc.poll() is None and forkserver(proc.pid) == server
            seen.append(_descriptors(proc.pid))
        # Each board leaves no descriptor behind: after the last restart the process holds
        # no more of each kind than after the first (one may come and go).
        first = seen[0]
        try:
            wait_until(lambda: _descriptors(proc.pid) <= first, 20,
                       "the descriptors of the first restart again")  # fmt: skip
        except AssertionError:
            raise AssertionError(
                f"descriptors: more {_descriptors(proc.pid) - first}; after each restart: {seen}"
            ) from None
        # ...and no thread: every thread but the main one began after the last restart.
        try:
            wait_until(lambda: not _threads_started_before(proc.pid, signalled), 20,
                       "no thread of an old board")  # fmt: skip
        except AssertionError:
            old = _threads_started_before(proc.pid, signalled)
            raise AssertionError(f"threads of an old board still run: {old}") from None
        assert not [a for a in status()["alerts"] if a["id"] == "task-failed"]
        said.clear()
        os.kill(proc.pid, signal.SIGTERM)  # after restarts, a stop is still the end
        assert proc.wait(30) == 0
        assert heard("STOPPING=1") and "RELOADING=1" not in said, said
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        notify.close()
    text = log.read_text(errors="replace")
    assert "restart (SIGUSR1): starting again" in text, text[-3000:]  # repeats: held back
    for n in range(1, RESTARTS + 1):
        assert f"nvr: board 'r{n}' recording 1 camera(s)" in text, text[-3000:]
    # Every restart is a run that ends and one that begins, its gap explained.
    cat = catalog(data)
    reasons = [g["reason"] for g in cat["gaps"]]
    assert len(reasons) >= RESTARTS and all(r == "recorder-stopped" for r in reasons), reasons
    assert {s["camera"] for s in cat["segments"]} == {"cam1"}
