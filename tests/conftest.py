"""Shared rig for the recorder's integration tests: real RTSP camera, real `nvr` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from hil.camera import CameraSim, StreamSpec, free_port
from hil.wait import holds, wait_until

__all__ = ["holds", "wait_until"]

NVR = [sys.executable, "-m", "firmware.cli"]
ROOT = Path(__file__).resolve().parent.parent


_PYTEST_PID = os.getpid()


def _stopped(signum: int, frame: object) -> None:
    if os.getpid() != _PYTEST_PID:  # a fork (pyroute2's netns helper) stops as it expects
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped with SIGTERM (a CI limit, `timeout`) tears its rigs down as Ctrl-C
    does: namespaces, QEMU boards and camera servers do not outlive it."""
    signal.signal(signal.SIGTERM, _stopped)


def nvr(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*NVR, *args], capture_output=True, text=True, cwd=ROOT, check=check, timeout=120
    )


def catalog(data: Path) -> dict:
    return json.loads(nvr("catalog", "--data", str(data), "--json").stdout)


class Recorder:
    """`nvr record` as its own process group, so a test can cut its power (SIGKILL all)."""

    def __init__(
        self,
        data: Path,
        cameras: dict[str, str],
        segment_seconds: float = 2.0,
        extra: list[str] | None = None,
    ) -> None:
        self.data = data
        self.port = free_port()
        args = [
            "record",
            "--data",
            str(data),
            "--segment-seconds",
            str(segment_seconds),
            "--api-port",
            str(self.port),
            *(extra or []),
        ]
        for name, url in cameras.items():
            args += ["--camera", f"{name}={url}"]
        self.log = data.parent / f"{data.name}-nvr.log"
        with open(self.log, "ab") as logf:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [*NVR, *args],
                cwd=ROOT,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._ready, 30, "the recorder's API")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"nvr record exited {self.proc.returncode}:\n{self.output()}")
        return self.get("/api/v1/status") is not None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, token: bool = False, headers: dict | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        if token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=5) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    @property
    def token(self) -> str:
        return (self.data / "api.token").read_text().strip()

    def camera_errors(self) -> dict[str, str]:
        """Camera name -> the error the API shows for it, for cameras that have one."""
        cams = self.get("/api/v1/cameras", token=True)["cameras"]
        return {c["name"]: c["error"] for c in cams if c["error"]}

    def status(self) -> dict:
        return self.get("/api/v1/status")

    def segments(self) -> int:
        return len(catalog(self.data)["segments"])

    def stop(self) -> None:
        """SIGTERM: the recorder commits its open segments and closes its runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("nvr record did not stop within 30 s after SIGTERM") from None

    def kill(self) -> None:
        """Power cut: every process of the recorder dies at once."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def camera() -> Iterator[Callable[..., CameraSim]]:
    """Start camera simulators; all are stopped at teardown, also when the test fails."""
    started: list[CameraSim] = []

    def start(*specs: StreamSpec) -> CameraSim:
        sim = CameraSim(streams=list(specs), port=free_port())
        started.append(sim)
        sim.start()
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def recorder(tmp_path) -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def start(cameras: dict[str, str], data: Path | None = None, **kw) -> Recorder:
        rec = Recorder(data or tmp_path / "data", cameras, **kw)
        started.append(rec)
        return rec

    yield start
    for rec in started:
        if rec.proc.poll() is None:
            rec.kill()


@contextmanager
def mounted_tmpfs(path: Path, size: str, readonly: bool = False) -> Iterator[Path]:
    """A real small filesystem (needs root), unmounted afterwards whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def mounted_ext4(path: Path, size_mb: int = 64) -> Iterator[Path]:
    """A real small ext4 filesystem on a loop device (needs root): what tmpfs lacks, such as
    file attributes (chattr). Unmounted and detached afterwards whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    img = path.parent / f"{path.name}.img"
    with open(img, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    try:
        subprocess.run(["mkfs.ext4", "-q", "-m", "0", dev], check=True)
        subprocess.run(["mount", dev, str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)


@pytest.fixture
def lan_ns() -> Iterator[str]:
    """A network namespace of the test's own with an `eth0` that is up (one end of a veth
    pair, both ends inside: kernels without the dummy driver have veth), removed at the end."""
    name = f"lanns-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name",
                        "eth0p"], check=True)  # fmt: skip
        subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
