"""Start time of the `nvr` command: how long each command takes from process start, beside the
interpreter's own start (`python -c pass`), in the same run.

Measured, each --runs times, round-robin (one of each per round, so a busy moment of the machine
falls on every command alike), after one untimed warm-up round:

- `python -c pass`: the interpreter with the same site-packages, the floor of every command;
- `nvr --help`;
- `nvr status --config CFG`: the config read for the API port, then GET /api/v1/status from a
  running firmware (an `nvr run` of its own on loopback, started before the rounds);
- `nvr catalog --data DIR` on a small catalog (2 cameras, 4 runs, 60 segments; rows only);
- `nvr run --config CFG` of a single board (no [pair]) with one simulated camera on loopback
  (GStreamer RTSP simulator, hil/camera), from process start to READY=1 on a NOTIFY_SOCKET this
  benchmark listens on, to the API's first answer (GET /api/v1/status), and to its camera
  reported recording (the session up; the API is polled every 10 ms). Then SIGTERM, and the
  next round starts from the same data directory, as a restarted board does.

Byte-code: the image ships every module compiled (image/build.py), so by default the commands
run with a byte-code cache of their own (PYTHONPYCACHEPREFIX in the temporary directory, written
by the warm-up round): no start compiles a module, as on a board. --no-bytecode runs them with
PYTHONDONTWRITEBYTECODE=1 and no cache instead: every module without a .pyc beside it (in a
source tree, the firmware's own) is compiled at every start.

Run: `.venv/bin/python -m hil.bench_start [--runs 10] [--json FILE] [--no-bytecode]`. Prints a
Markdown table: median and max seconds of each, and the median's ratio to the interpreter's start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hil.camera import CameraSim, StreamSpec, free_port
from hil.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
NVR = str(Path(PYTHON).parent / "nvr")
"""The installed console script, as the service and an installer run it."""
RUN_TIMEOUT_S = 60.0
POLL_S = 0.01

PASS = "python -c pass"
HELP = "nvr --help"
STATUS = "nvr status"
CATALOG = "nvr catalog"
RUN_READY = "nvr run: READY=1"
RUN_API = "nvr run: API answers"
RUN_CAMERA = "nvr run: camera recording"
ORDER = (PASS, HELP, STATUS, CATALOG, RUN_READY, RUN_API, RUN_CAMERA)


@dataclass
class Series:
    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


@dataclass(frozen=True)
class RunTimes:
    """One `nvr run`: seconds from process start to each point."""

    ready: float
    api: float
    camera: float


def board_config(path: Path, data: Path, port: int, camera_url: str, name: str) -> Path:
    """A single board (no [pair]) recording one camera, its API on loopback only."""
    path.write_text(
        f'[board]\nname = "{name}"\ndata_dir = "{data}"\n'
        "[recorder]\nsegment_seconds = 2\nmin_free_mb = 64\n"
        f'[api]\nlisten_port = {port}\nlisten_address = "127.0.0.1"\n'
        f'[[camera]]\nname = "cam1"\nurl = "{camera_url}"\n'
    )
    return path


def small_catalog(data: Path) -> Path:
    """Rows only (no segment files): `nvr catalog` reads the catalog, not the footage."""
    from firmware.catalog import Catalog, Segment, segment_id

    data.mkdir(parents=True, exist_ok=True)
    cat = Catalog(data)
    t0 = 1_700_000_000_000_000
    for cam in ("cam1", "cam2"):
        for r in range(2):
            start = t0 + r * 3_600_000_000
            run = cat.new_run(cam, "bench", start, start)
            for i in range(15):
                s = start + i * 4_000_000
                cat.add_segment(Segment(
                    id=segment_id(cam, s, "bench"), camera=cam, run_id=run,
                    path=f"segments/{cam}/x/{s}.mp4", start_us=s, end_us=s + 4_000_000,
                    media_start_us=s, media_end_us=s + 4_000_000, frames=100, bytes=500_000,
                    sha256="0" * 64, origin="bench", codec="h264",
                ))  # fmt: skip
            cat.end_run(run, "stopped")
    cat.close()
    return data


def command_env(tmp: Path, bytecode: bool) -> dict[str, str]:
    """The environment every measured command runs in (see the module's note on byte-code)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "NOTIFY_SOCKET",
                        "WATCHDOG_USEC", "WATCHDOG_PID")}  # fmt: skip
    if bytecode:
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def timed(
    argv: list[str], ok: Callable[[subprocess.CompletedProcess], bool], env: dict[str, str]
) -> float:
    """Wall seconds of one command to its exit; a failed command stops the benchmark."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - t0
    if not ok(done):
        raise SystemExit(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return took


def _status(port: int) -> dict | None:
    """The API's status, or None while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=1) as r:
            return json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return None


@contextlib.contextmanager
def notify_socket(path: Path) -> Iterator[socket.socket]:
    """The service manager's end of sd_notify: a datagram socket at NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _drain(sock: socket.socket) -> list[str]:
    out = []
    while select.select([sock], [], [], 0)[0]:
        out.append(sock.recv(4096).decode(errors="replace"))
    return out


def _stop(proc: subprocess.Popen, what: str) -> None:
    """SIGTERM to the firmware's process group (its recorder workers too), as systemd does."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise SystemExit(f"{what} did not stop within 45 s of SIGTERM") from None


def run_board(cfg: Path, port: int, notify: Path, log: Path, env: dict[str, str]) -> RunTimes:
    """One `nvr run` from process start to READY=1, the API's answer and the camera recording;
    then stopped."""
    env = {**env, "NOTIFY_SOCKET": str(notify)}
    with notify_socket(notify) as sock, open(log, "ab") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen([NVR, "run", "--config", str(cfg)], cwd=ROOT, env=env,
                                stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        ready = api = cam = None
        try:
            deadline = t0 + RUN_TIMEOUT_S
            while None in (ready, api, cam):
                now = time.perf_counter()
                if now > deadline:
                    raise SystemExit(f"nvr run: not up within {RUN_TIMEOUT_S} s; see {log}")
                if proc.poll() is not None:
                    raise SystemExit(f"nvr run exited {proc.returncode}; see {log}")
                if ready is None:
                    if select.select([sock], [], [], POLL_S)[0]:
                        got = _drain(sock)
                        if any("READY=1" in m.split("\n") for m in got):
                            ready = time.perf_counter() - t0
                else:
                    time.sleep(POLL_S)
                if api is None or cam is None:
                    st = _status(port)
                    at = time.perf_counter() - t0
                    if st is not None:
                        api = at if api is None else api
                        if cam is None and any(c["recording"] for c in st["cameras"]):
                            cam = at
        finally:
            _stop(proc, "nvr run")
    if proc.returncode != 0:
        raise SystemExit(f"nvr run exited {proc.returncode} after SIGTERM; see {log}")
    return RunTimes(ready, api, cam)


def table(series: dict[str, Series], runs: int) -> str:
    base = series[PASS].median
    lines = [
        f"| command ({runs} runs each) | median s | max s | median / `python -c pass` |",
        "|---|---:|---:|---:|",
    ]
    for name in ORDER:
        s = series[name]
        lines.append(f"| {name} | {s.median:.3f} | {s.max:.3f} | {s.median / base:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10, help="repetitions of each command")
    p.add_argument("--json", type=Path, help="also write the samples and figures here")
    p.add_argument(
        "--no-bytecode",
        action="store_true",
        help="no byte-code cache: every start compiles the modules without a .pyc",
    )
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    series = {name: Series(name) for name in ORDER}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp_name:
        tmp = Path(tmp_name)
        env = command_env(tmp, bytecode=not args.no_bytecode)
        catalog_dir = small_catalog(tmp / "catalog")
        with CameraSim([StreamSpec("cam1", cheap=True)], port=free_port()) as cam:
            url = cam.url("cam1")
            # The firmware `nvr status` asks: running for the whole benchmark.
            status_port, run_port = free_port(), free_port()
            status_cfg = board_config(tmp / "status.toml", tmp / "status-data", status_port,
                                      url, "status")  # fmt: skip
            run_cfg = board_config(tmp / "run.toml", tmp / "run-data", run_port, url, "bench")
            with open(tmp / "status-nvr.log", "ab") as logf:
                target = subprocess.Popen([NVR, "run", "--config", str(status_cfg)], cwd=ROOT,
                                          env=env, stdout=logf, stderr=subprocess.STDOUT,
                                          start_new_session=True)  # fmt: skip
            try:
                wait_until(lambda: _status(status_port), 60, "the status target's API")
                commands: dict[str, tuple[list[str], Callable]] = {
                    PASS: ([PYTHON, "-c", "pass"], lambda d: d.returncode == 0),
                    HELP: ([NVR, "--help"], lambda d: d.returncode == 0 and "usage" in d.stdout),
                    STATUS: ([NVR, "status", "--config", str(status_cfg)],
                             lambda d: d.returncode == 0 and "camera cam1" in d.stdout),
                    CATALOG: ([NVR, "catalog", "--data", str(catalog_dir)],
                              lambda d: d.returncode == 0 and "camera cam2: 30" in d.stdout),
                }  # fmt: skip
                for round_ in range(args.runs + 1):  # round 0: warm-up, not counted
                    for name, (cmd, ok) in commands.items():
                        took = timed(cmd, ok, env)
                        if round_:
                            series[name].samples.append(took)
                    rt = run_board(run_cfg, run_port, tmp / "notify.sock", tmp / "run-nvr.log",
                                   env)  # fmt: skip
                    if round_:
                        series[RUN_READY].samples.append(rt.ready)
                        series[RUN_API].samples.append(rt.api)
                        series[RUN_CAMERA].samples.append(rt.camera)
            finally:
                _stop(target, "the status target")
    load_after = os.getloadavg()
    bytecode = "none (PYTHONDONTWRITEBYTECODE=1)" if args.no_bytecode else "cached"
    out = table(series, args.runs)
    print(out)
    print(f"\nbyte-code: {bytecode}; `nvr status` against a running `nvr run` on loopback; "
          f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({
            "runs": args.runs,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "status_against": "a running `nvr run` on loopback (its API answering)",
            "bytecode": bytecode,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "results": {
                name: {**asdict(s), "median": s.median, "max": s.max,
                       "ratio_to_python": s.median / series[PASS].median}
                for name, s in series.items()
            },
        }, indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
