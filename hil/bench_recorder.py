"""Recording cost: `nvr record` against `ffmpeg -c copy -f segment` (one process per camera, as
other open NVRs record), on the same simulated cameras in the same run.

For each N it records N cheap-mode cameras with nvr, then with ffmpeg. After a warm-up it measures
a window of --seconds: CPU seconds per camera-minute of each recorder's whole process tree in that
window (what a camera-hour costs; start-up is reported apart, as the CPU of the whole run), their
ratio, and what each recording lost: frames missing or duplicated in the files (read back from the
camera's frame numbers), plus the worst ingest lag nvr reported. The camera simulator's own CPU is
counted for neither.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from hil.camera import CameraSim, StreamSpec, free_port
from hil.framecheck import frame_numbers

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    tool: str
    n: int
    seconds: float
    cpu: float
    """CPU seconds of the measured window."""
    total_cpu: float
    """CPU seconds of the whole run, start-up and shutdown included."""
    frames: int
    missing: int
    duplicated: int
    max_lag: float | None = None

    @property
    def cpu_per_camera_minute(self) -> float:
        return self.cpu / (self.n * self.seconds / 60)


def children_cpu() -> float:
    """CPU of every child this process has waited for (their waited children included)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def tree_cpu(pids: list[int]) -> float:
    """CPU of these processes and their living descendants."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # it may have exited meanwhile
            total += _cpu_of(pid) + tree_cpu(_children(pid))
    return total


def count_frames(files_by_camera: dict[str, list[Path]]) -> tuple[int, int, int]:
    """(frames kept, missing inside each camera's kept span, duplicates) over all cameras."""
    kept = missing = dup = 0
    for files in files_by_camera.values():
        nums: list[int] = []
        for f in files:
            try:
                nums.extend(frame_numbers(f))
            except Exception:
                continue  # an unreadable file counts through the frames missing from it
        if not nums:
            continue
        kept += len(nums)
        dup += len(nums) - len(set(nums))
        missing += max(nums) - min(nums) + 1 - len(set(nums))
    return kept, missing, dup


def run_nvr(
    urls: dict[str, str], seconds: float, warmup: float, workdir: Path, workers: int
) -> Result:
    data = workdir / "nvr"
    port = free_port()
    args = [sys.executable, "-m", "firmware.cli", "--log-level", "warning", "record",
            "--data", str(data), "--segment-seconds", "4", "--api-port", str(port),
            "--workers", str(workers), "--min-free-mb", "64"]  # fmt: skip
    for name, url in urls.items():
        args += ["--camera", f"{name}={url}"]
    before = children_cpu()
    with open(workdir / "nvr.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    time.sleep(warmup)
    w0 = tree_cpu([proc.pid])
    max_lag = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(1)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("nvr_ingest_lag_seconds{"):
                        max_lag = max(max_lag, float(line.rsplit(" ", 1)[1]))
        except OSError:
            pass
    window = tree_cpu([proc.pid]) - w0
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    total = children_cpu() - before
    files = {n: sorted((data / "segments" / n).rglob("*.mp4")) for n in urls}
    kept, missing, dup = count_frames(files)
    label = f"nvr record, workers={workers or min(len(urls), os.cpu_count() or 1)}"
    return Result(label, len(urls), seconds, window, total, kept, missing, dup, max_lag)


def run_ffmpeg(urls: dict[str, str], seconds: float, warmup: float, workdir: Path) -> Result:
    procs = []
    before = children_cpu()
    for name, url in urls.items():
        out = workdir / "ffmpeg" / name
        out.mkdir(parents=True)
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url,
               "-c", "copy", "-f", "segment", "-segment_time", "4", "-reset_timestamps", "1",
               "-segment_format", "mp4", str(out / "%05d.mp4")]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(warmup)
    w0 = tree_cpu([p.pid for p in procs])
    time.sleep(seconds)
    window = tree_cpu([p.pid for p in procs]) - w0
    for p in procs:
        p.send_signal(signal.SIGINT)  # ffmpeg finishes the file it is writing
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    total = children_cpu() - before
    files = {n: sorted((workdir / "ffmpeg" / n).glob("*.mp4")) for n in urls}
    kept, missing, dup = count_frames(files)
    return Result("ffmpeg -c copy -f segment", len(urls), seconds, window, total, kept, missing,
                  dup)  # fmt: skip


def row(r: Result, ref: Result | None) -> str:
    ratio = f"{r.cpu_per_camera_minute / ref.cpu_per_camera_minute:.2f}" if ref else ""
    lag = f"{r.max_lag:.2f}" if r.max_lag is not None else "n/a"
    return (
        f"| {r.n} | {r.tool} | {r.cpu:.1f} | {r.cpu_per_camera_minute:.3f} | {ratio} | "
        f"{r.total_cpu:.1f} | {r.frames} | {r.missing} | {r.duplicated} | {lag} |"
    )


def report(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; "
        f"{args.warmup:g} s warm-up, then a {args.seconds:g} s window per run; cheap-mode "
        f"cameras 1280x720 25 fps at {args.bitrate} kbit/s, 4 s segments.",
        "",
        "| N | recorder | CPU s in window | CPU s per camera-minute | ratio to ffmpeg | "
        "CPU s whole run | frames kept | missing | duplicated | max ingest lag s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r.n for r in results}):
        group = [r for r in results if r.n == n]
        ref = next((r for r in group if r.tool.startswith("ffmpeg")), None)
        lines += [row(r, ref) for r in group]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", default="8,32,64", help="camera counts, comma separated")
    ap.add_argument("--seconds", type=float, default=60, help="measured window")
    ap.add_argument("--warmup", type=float, default=10, help="seconds before the window")
    ap.add_argument("--bitrate", type=int, default=4000, help="kbit/s per camera")
    ap.add_argument("--workers", default="0",
                    help="nvr worker counts to try, e.g. 0,1,32 (0 = one per core)")  # fmt: skip
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not shutil.which("ffmpeg"):
        print("ffmpeg is missing (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    results: list[Result] = []
    for n in (int(x) for x in args.n.split(",")):
        specs = [
            StreamSpec(
                f"c{i:02d}",
                width=1280,
                height=720,
                fps=25,
                bitrate=args.bitrate,
                gop=25,
                cheap=True,
                pattern="snow",
            )
            for i in range(n)
        ]
        cam = CameraSim(streams=specs, port=free_port())
        cam.start()
        try:
            urls = {s.name: cam.url(s.name) for s in specs}
            for workers in (int(w) for w in args.workers.split(",")):
                with tempfile.TemporaryDirectory(prefix="bench-nvr-") as d:
                    results.append(run_nvr(urls, args.seconds, args.warmup, Path(d), workers))
                    print(row(results[-1], None), flush=True)
            with tempfile.TemporaryDirectory(prefix="bench-ffmpeg-") as d:
                results.append(run_ffmpeg(urls, args.seconds, args.warmup, Path(d)))
                print(row(results[-1], None), flush=True)
        finally:
            cam.stop()
    print()
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
