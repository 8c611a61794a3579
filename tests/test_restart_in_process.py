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


def _threads(pid: int) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            out[Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()] += 1
    return out


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
        seen: list[tuple[collections.Counter[str], collections.Counter[str]]] = []
        for n in range(1, RESTARTS + 1):
            name = f"r{n}"
            _config(cfg, name, data, port, cam.url("cam1"))  # [board] needs a restart
            said.clear()
            os.kill(proc.pid, signal.SIGUSR1)
            wait_until(lambda name=name: recording_as(name), 60, f"board {name} recording")
            wait_until(lambda: heard("READY=1"), 10, "READY=1 again")
            assert said.index("RELOADING=1") < said.index("READY=1"), said
            assert "STOPPING=1" not in said
            assert proc.poll() is None and forkserver(proc.pid) == server
            seen.append((_descriptors(proc.pid), _threads(proc.pid)))
        # Each board leaves no descriptor and no thread behind: after the last restart the
        # process holds no more of each kind than after the first (one may come and go).
        for i, (what, now) in enumerate((("descriptors", _descriptors), ("threads", _threads))):
            first = seen[0][i]
            try:
                wait_until(lambda now=now, first=first: now(proc.pid) <= first, 20,
                           f"the {what} of the first restart again")  # fmt: skip
            except AssertionError:
                last = now(proc.pid)
                raise AssertionError(
                    f"{what}: more {last - first}; after each restart: {[s[i] for s in seen]}"
                ) from None
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
