"""Python handle on a camera simulator process, for tests, the demo and benchmarks.

Importing this module does not import GStreamer: the simulator runs in its own process
(optionally inside a network namespace) and is steered over a unix socket.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from hil.camera.spec import StreamSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


# Processes started and not yet reaped: killed at interpreter exit so that a test run that
# forgot (or crashed before) stop() leaves no camera behind.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _LIVE.discard(proc)


class CameraError(RuntimeError):
    """The simulator process failed or refused a request."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class CameraSim:
    """Runs `python -m hil.camera` and talks to its control socket.

    The frame clock's epoch is fixed at the first start() and reused by restart(), so a
    restarted camera continues numbering where the wall clock says it should be.
    """

    def __init__(
        self,
        streams: Sequence[StreamSpec],
        port: int | None = None,
        bind: str = "127.0.0.1",
        netns: str | None = None,
        epoch: float | None = None,
        control: str | Path | None = None,
        python: str = sys.executable,
        start_timeout: float = 60.0,
        env: dict[str, str] | None = None,
        raw_mounts: dict[str, str] | None = None,
        auth: str | None = None,
        wsd: tuple[str, str] | None = None,
        digest: bool = False,
    ) -> None:
        if not streams and not raw_mounts:
            raise ValueError("a camera needs at least one stream")
        self.raw_mounts = dict(raw_mounts or {})
        """Extra streams from raw GStreamer launch lines (odd codecs), without frame numbers."""
        self.auth = auth
        """USER:PASSWORD the camera asks for, or None."""
        self.digest = digest
        """Ask for them by Digest authentication instead of Basic."""
        self.wsd = wsd
        """(name, hardware): answer ONVIF WS-Discovery probes with these scopes; None: off."""
        self.streams = list(streams)
        self.port = port if port is not None else free_port(bind if netns is None else "127.0.0.1")
        self.bind = bind
        self.netns = netns
        self.epoch = epoch
        self.python = python
        self.start_timeout = start_timeout
        self.env = env
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if control is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="camsim-")
            control = Path(self._tmpdir.name) / "ctl.sock"
        self.control = Path(control)
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def command(self) -> list[str]:
        """The command line start() runs."""
        cmd = [
            self.python,
            "-m",
            "hil.camera",
            "--port",
            str(self.port),
            "--bind",
            self.bind,
            "--control",
            str(self.control),
        ]
        if self.epoch is not None:
            cmd += ["--epoch", repr(self.epoch)]
        for spec in self.streams:
            cmd += ["--stream", spec.to_arg()]
        for name, launch in self.raw_mounts.items():
            cmd += ["--mount", f"{name}={launch}"]
        if self.auth:
            cmd += ["--auth", self.auth]
            if self.digest:
                cmd += ["--digest"]
        if self.wsd:
            cmd += ["--wsd", "--wsd-name", self.wsd[0], "--wsd-hardware", self.wsd[1]]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self) -> CameraSim:
        """Spawn the process and return once RTSP and control both answer."""
        if self.running:
            return self
        if self.epoch is None:
            self.epoch = time.time()
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()
        if self._stderr is not None:
            self._stderr.close()
        # A file, not a pipe: nobody drains it while the camera runs.
        self._stderr = tempfile.TemporaryFile(prefix="camsim-stderr-")  # noqa: SIM115
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
            start_new_session=True,
        )
        _LIVE.add(self.proc)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._check_alive()
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise CameraError(
                    f"camera did not become ready within {self.start_timeout}s\n{self.stderr()}"
                )
            # Poll: readiness has no event to wait on across processes.
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert self.proc is not None
                self.proc.wait(timeout=0.05)

    def _answers(self) -> bool:
        if not self.control.exists():
            return False
        try:
            self.request({"cmd": "ping"}, timeout=2.0)
        except (OSError, CameraError):
            return False
        if self.netns is not None:
            return True  # the port lives in the other namespace; control is the signal
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        try:
            with socket.create_connection((host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self.proc is None:
            raise CameraError("camera not started")
        rc = self.proc.poll()
        if rc is not None:
            raise CameraError(f"camera process exited with {rc}\n{self.stderr()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps. Returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait()
        _LIVE.discard(proc)
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()
        return proc.returncode

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
        # The process leads its own session; `ip netns exec` execs, so this is the camera.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    def restart(self, down_seconds: float = 0.0) -> CameraSim:
        """Stop, stay down for `down_seconds` (the outage being simulated), start again."""
        self.stop()
        if down_seconds > 0:
            time.sleep(down_seconds)
        return self.start()

    def close(self) -> None:
        """Stop the process and remove the temporary control directory."""
        self.stop()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> CameraSim:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- control -------------------------------------------------------------------------
    def request(self, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send one JSON request and return the reply; CameraError if refused."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.control))
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise CameraError(f"control connection closed during {req}")
                buf += chunk
        reply: dict[str, Any] = json.loads(buf)
        if not reply.get("ok"):
            raise CameraError(f"{req}: {reply.get('error')}")
        return reply

    def url(self, name: str, host: str | None = None, credentials: str | None = None) -> str:
        """rtsp:// URL of a stream (host defaults to the bind address; credentials to the
        camera's own, when it asks for any)."""
        if name not in {s.name for s in self.streams} | set(self.raw_mounts):
            raise KeyError(name)
        if host is None:
            host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        cred = credentials if credentials is not None else self.auth
        return f"rtsp://{cred + '@' if cred else ''}{host}:{self.port}/{name}"

    def ping(self) -> dict[str, Any]:
        return self.request({"cmd": "ping"})

    def stall(self, name: str, on: bool = True) -> None:
        """Keep connections but send no frames (the frame clock keeps running)."""
        self.request({"cmd": "stall", "stream": name, "on": on})

    def drop(self, name: str) -> int:
        """Close every client connection of a stream; returns how many were closed."""
        return int(self.request({"cmd": "drop", "stream": name})["dropped"])

    def corrupt(self, name: str, on: bool = True) -> None:
        """Garble the picture data of every frame sent (the frame numbers stay readable)."""
        self.request({"cmd": "corrupt", "stream": name, "on": on})

    def jump(self, name: str, seconds: float) -> None:
        """Move the stream's media timestamps `seconds` forward from now on."""
        self.request({"cmd": "jump", "stream": name, "seconds": seconds})

    def frame(self, name: str) -> int | None:
        """Number of the last frame sent to a client (None before the first)."""
        value = self.request({"cmd": "frame", "stream": name})["frame"]
        return None if value is None else int(value)

    def clock(self, name: str) -> int:
        """Current value of the stream's frame clock, sent or not."""
        return int(self.request({"cmd": "frame", "stream": name})["clock"])

    def clients(self, name: str) -> int:
        """Number of RTSP clients connected to a stream."""
        return int(self.request({"cmd": "clients", "stream": name})["clients"])

    def status(self, name: str) -> dict[str, Any]:
        return self.request({"cmd": "status", "stream": name})
