"""Recording cost: `nvr record` against `ffmpeg -c copy -f segment` (one process per camera, as
other open NVRs record), on the same simulated cameras in the same run.

For each N it records N cheap-mode cameras with nvr, then holds them in the standby's ring (the
recorder in ring mode: demux into memory, no writes), then records them with ffmpeg. After a
warm-up it measures a window of --seconds: CPU seconds per camera-minute of each recorder's whole
process tree in that window (what a camera-hour costs; start-up is reported apart, as the CPU of
the whole run), their ratio, and what each recording lost: frames missing or duplicated in the
files (read back from the camera's frame numbers), plus the worst ingest lag nvr reported. At the
window's end it reads the resident memory of each process tree (RSS, and PSS and private memory
from /proc/PID/smaps_rollup), per camera. The camera simulator's own CPU is counted for none.

--rounds R repeats each N's runs R times in turn (nvr, its ring, ffmpeg, then again): one
run's CPU moves by 10-20 % with a shared host, so the table shows each recorder's median run
(R odd: a real run), and a line per N gives each round's ratio of nvr to ffmpeg.

--soak-seconds S then records the first N for S seconds more and samples the recorder's memory
every --soak-period seconds: the slope of a least-squares line through the samples (MB per hour)
says whether memory grows while recording.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from hil.camera import CameraSim, StreamSpec, free_port
from hil.framecheck import frame_numbers
from hil.proctree import children, descendants

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
    memory: Memory | None = None
    """Of the whole process tree, at the end of the window."""
    reader: str = ""
    """nvr's RTSP reader ([recorder] rtsp_reader); empty for ffmpeg."""
    round: int = 0
    """Which of --rounds it was run in."""

    @property
    def cpu_per_camera_minute(self) -> float:
        return self.cpu / (self.n * self.seconds / 60)


@dataclass(frozen=True)
class Memory:
    """Resident memory of a process tree, MB (10^6 bytes), and how many processes it has."""

    rss: float
    pss: float
    """Proportional: shared pages split among the processes sharing them."""
    private: float
    processes: int


def tree_memory(pids: list[int]) -> Memory:
    """RSS, PSS and private memory of these processes and their descendants (smaps_rollup)."""
    rss = pss = private = 0
    seen = 0
    for pid in pids + [d for p in pids for d in descendants(p)]:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                text = f.read()
        except OSError:
            continue  # it exited meanwhile
        seen += 1
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key == "Rss":
                rss += int(value.split()[0])
            elif key == "Pss":
                pss += int(value.split()[0])
            elif key in ("Private_Clean", "Private_Dirty"):
                private += int(value.split()[0])
    mb = 1024 / 1e6  # /proc counts in KiB
    return Memory(rss * mb, pss * mb, private * mb, seen)


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    my = sum(y for _, y in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    return 3600 * sum((t - mt) * (y - my) for t, y in samples) / den if den else 0.0


def children_cpu() -> float:
    """CPU of every child this process has waited for (their waited children included)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pids: list[int]) -> float:
    """CPU of these processes and their living descendants."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # it may have exited meanwhile
            total += _cpu_of(pid) + tree_cpu(children(pid))
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


SOAK_RETENTION_DAYS = 10 / 1440
"""Ten minutes of footage: a 30-minute soak of 32 cameras would otherwise write 29 GB."""


def _nvr_args(
    urls: dict[str, str],
    data: Path,
    workers: int,
    port: int,
    ring: bool,
    retention_days: float,
    reader: str,
) -> list[str]:
    if ring:  # the recorder as a standby board runs it, without the board around it
        args = [sys.executable, "-m", "hil.bench_recorder", "--ring-driver", str(data),
                "--workers", str(workers), "--rtsp-reader", reader]  # fmt: skip
    else:
        args = [sys.executable, "-m", "firmware.cli", "--log-level", "warning", "record",
                "--data", str(data), "--segment-seconds", "4", "--api-port", str(port),
                "--workers", str(workers), "--min-free-mb", "64",
                "--rtsp-reader", reader]  # fmt: skip
        if retention_days:
            args += ["--retention-days", str(retention_days)]
    for name, url in urls.items():
        args += ["--camera", f"{name}={url}"]
    return args


def _max_lag(port: int, lag: float) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("nvr_ingest_lag_seconds{"):
                    lag = max(lag, float(line.rsplit(" ", 1)[1]))
    except OSError:
        pass
    return lag


def run_nvr(
    urls: dict[str, str],
    seconds: float,
    warmup: float,
    workdir: Path,
    workers: int,
    ring: bool = False,
    soak: list[tuple[float, Memory]] | None = None,
    soak_period: float = 10.0,
    reader: str = "ffmpeg",
    scrape_s: float = 15.0,
) -> Result:
    """nvr recording (or, ring=True, holding the cameras in the standby's ring), its /metrics
    read every scrape_s seconds as a Prometheus server would (and at the window's end) for the
    worst ingest lag: one read costs the board about 2 ms of CPU at N = 8, so reading it every
    second would add 7 % to what is measured (docs/BENCHMARKS.md). With `soak`,
    the window is a soak: a memory sample every soak_period seconds is appended to it, and
    retention keeps SOAK_RETENTION_DAYS of footage, so that the disk holds a long soak and the
    soak covers retention's deletions too (frames are then not counted: retention took some)."""
    data = workdir / "nvr"
    port = free_port()
    before = children_cpu()
    with open(workdir / "nvr.log", "wb") as log:
        keep = SOAK_RETENTION_DAYS if soak is not None else 0.0
        proc = subprocess.Popen(_nvr_args(urls, data, workers, port, ring, keep, reader), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    time.sleep(warmup)
    w0 = tree_cpu([proc.pid])
    max_lag = 0.0
    start = time.monotonic()
    end = start + seconds
    next_sample = start
    next_scrape = start + scrape_s
    while time.monotonic() < end:
        if soak is not None and time.monotonic() >= next_sample:
            soak.append((time.monotonic() - start, tree_memory([proc.pid])))
            next_sample += soak_period
        time.sleep(1)
        if not ring and time.monotonic() >= next_scrape:
            next_scrape += scrape_s
            max_lag = _max_lag(port, max_lag)
    if not ring:
        max_lag = _max_lag(port, max_lag)
    window = tree_cpu([proc.pid]) - w0
    memory = tree_memory([proc.pid])
    if soak is not None:
        soak.append((time.monotonic() - start, memory))
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    total = children_cpu() - before
    files = {n: sorted((data / "segments" / n).rglob("*.mp4")) for n in urls}
    kept, missing, dup = count_frames(files) if soak is None else (0, 0, 0)
    n = workers or min(len(urls), os.cpu_count() or 1)
    label = f"nvr ring (standby, {reader} reader)" if ring else f"nvr record ({reader} reader)"
    return Result(f"{label}, workers={n}", len(urls), seconds, window, total, kept, missing, dup,
                  None if ring else max_lag, memory, reader)  # fmt: skip


def ring_driver(argv: list[str]) -> int:
    """The recorder in ring mode until SIGTERM: what a standby board runs for its cameras."""
    ap = argparse.ArgumentParser(prog="bench_recorder --ring-driver")
    ap.add_argument("data", type=Path)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--camera", action="append", default=[])
    ap.add_argument("--rtsp-reader", default="ffmpeg")
    args = ap.parse_args(argv)

    from firmware.alerts import Alerts
    from firmware.config import validate_config
    from firmware.lograte import setup_logging
    from firmware.recorder.supervisor import Recorder
    from firmware.roles import RecorderMode

    setup_logging(logging.WARNING)
    cameras = [dict(zip(("name", "url"), c.split("=", 1), strict=True)) for c in args.camera]
    raw = {
        "board": {"name": "bench", "data_dir": str(args.data)},
        "recorder": {
            "segment_seconds": 4,
            "workers": args.workers,
            "min_free_mb": 64,
            "rtsp_reader": args.rtsp_reader,
        },
        "camera": cameras,
    }
    cfg = validate_config(raw, "bench")
    args.data.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rec = Recorder(
        args.data, cfg.board.name, cfg.recorder, cfg.camera, Alerts(), mode=RecorderMode.RING
    )
    rec.start()
    stop.wait()
    rec.stop()
    return 0


def run_ffmpeg(urls: dict[str, str], seconds: float, warmup: float, workdir: Path) -> Result:
    """One ffmpeg per camera, as other open NVRs record."""
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
    memory = tree_memory([p.pid for p in procs])
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
                  dup, None, memory)  # fmt: skip


def row(r: Result, ref: Result | None, rec: Result | None = None) -> str:
    """One table row; ref is ffmpeg's result at this N, rec nvr's recording (for the ring)."""
    ratio = f"{r.cpu_per_camera_minute / ref.cpu_per_camera_minute:.2f}" if ref else ""
    to_rec = ""
    if rec is not None and rec is not r and r.tool.startswith("nvr ring"):
        to_rec = f"{r.cpu_per_camera_minute / rec.cpu_per_camera_minute:.2f}"
    lag = f"{r.max_lag:.2f}" if r.max_lag is not None else "n/a"
    m = r.memory
    mem = (
        f"{m.rss / r.n:.1f} | {m.pss / r.n:.1f} | {m.private / r.n:.1f} | {m.processes}"
        if m
        else "| | |"
    )
    return (
        f"| {r.n} | {r.tool} | {r.cpu:.1f} | {r.cpu_per_camera_minute:.3f} | {ratio} | "
        f"{to_rec} | {r.total_cpu:.1f} | {r.frames} | {r.missing} | {r.duplicated} | {lag} | "
        f"{mem} |"
    )


def report(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; "
        f"{args.warmup:g} s warm-up, then a {args.seconds:g} s window per run; cheap-mode "
        f"cameras 1280x720 25 fps at {args.bitrate} kbit/s, 4 s segments; nvr's /metrics "
        f"read every {args.scrape_seconds:g} s. Memory: MB "
        "(10^6 bytes) per camera of the whole process tree at the window's end.",
        "",
        "| N | recorder | CPU s in window | CPU s per camera-minute | ratio to ffmpeg | "
        "ratio to nvr record | CPU s whole run | frames kept | missing | duplicated | "
        "max ingest lag s | RSS MB per camera | PSS MB per camera | private MB per camera | "
        "processes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r.n for r in results}):
        group = [r for r in results if r.n == n]
        ref = next((r for r in group if r.tool.startswith("ffmpeg")), None)
        recs = {r.reader: r for r in group if r.tool.startswith("nvr record")}
        lines += [row(r, ref, recs.get(r.reader)) for r in group]
    return "\n".join(lines)


def medians(results: list[Result]) -> list[Result]:
    """Of each recorder at each N, the run with the median CPU per camera-minute (the lower
    middle one of an even count), in the order they first ran."""
    groups: dict[tuple[int, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.n, r.tool), []).append(r)
    return [sorted(g, key=lambda r: r.cpu_per_camera_minute)[(len(g) - 1) // 2]
            for g in groups.values()]  # fmt: skip


def round_ratios(results: list[Result]) -> list[str]:
    """Per N and nvr recorder, its ratio to ffmpeg in each round (runs minutes apart)."""
    lines = []
    for n in sorted({r.n for r in results}):
        ref = {r.round: r for r in results if r.n == n and r.tool.startswith("ffmpeg")}
        tools = dict.fromkeys(r.tool for r in results if r.n == n and r.tool.startswith("nvr"))
        for tool in tools:
            runs = [r for r in results if r.n == n and r.tool == tool and r.round in ref]
            ratios = [f"{r.cpu_per_camera_minute / ref[r.round].cpu_per_camera_minute:.2f}"
                      for r in runs]  # fmt: skip
            if ratios:
                lines.append(f"N = {n}, {tool}: ratio to ffmpeg by round {' '.join(ratios)}")
    return lines


def soak_report(samples: list[tuple[float, Memory]], n: int) -> str:
    """The samples and the least-squares slopes of RSS, PSS and private memory (MB per hour)."""
    lines = [
        f"Soak: {n} cameras recorded for {samples[-1][0]:.0f} s, the recorder's process tree",
        "",
        "| s | RSS MB | PSS MB | private MB | processes |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {t:.0f} | {m.rss:.1f} | {m.pss:.1f} | {m.private:.1f} | {m.processes} |"
              for t, m in samples]  # fmt: skip
    rss = slope_per_hour([(t, m.rss) for t, m in samples])
    pss = slope_per_hour([(t, m.pss) for t, m in samples])
    private = slope_per_hour([(t, m.private) for t, m in samples])
    lines += ["", f"Slope (least squares): RSS {rss:+.1f} MB/h, PSS {pss:+.1f} MB/h, private "
              f"{private:+.1f} MB/h ({rss / n:+.2f}, {pss / n:+.2f} and {private / n:+.2f} MB/h "
              "per camera). PSS moves with what other processes share; private memory does "
              "not."]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:2] == ["--ring-driver"]:
        return ring_driver(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", default="8,32,64", help="camera counts, comma separated")
    ap.add_argument("--seconds", type=float, default=60, help="measured window")
    ap.add_argument("--warmup", type=float, default=10, help="seconds before the window")
    ap.add_argument("--bitrate", type=int, default=4000, help="kbit/s per camera")
    ap.add_argument("--workers", default="0",
                    help="nvr worker counts to try, e.g. 0,1,32 (0 = one per core)")  # fmt: skip
    ap.add_argument("--no-ring", action="store_true",
                    help="leave out the standby's ring (the recorder in ring mode)")  # fmt: skip
    ap.add_argument("--no-ffmpeg", action="store_true", help="leave out ffmpeg")
    ap.add_argument(
        "--scrape-seconds",
        type=float,
        default=15.0,
        help="read nvr's /metrics this often (a Prometheus server's interval)",
    )
    ap.add_argument("--readers", default="ffmpeg,builtin",
                    help="nvr's RTSP readers to run, comma separated")  # fmt: skip
    ap.add_argument("--soak-seconds", type=float, default=0,
                    help="then record the first N this long, sampling memory")  # fmt: skip
    ap.add_argument("--soak-period", type=float, default=10, help="seconds between samples")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each recorder, in turn; the table shows medians")  # fmt: skip
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not shutil.which("ffmpeg"):
        print("ffmpeg is missing (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    results: list[Result] = []
    soak: list[tuple[float, Memory]] = []
    counts = [int(x) for x in args.n.split(",")]
    for n in counts:
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
            for turn in range(args.rounds):
                run_round(urls, args, results, turn)
            if args.soak_seconds and n == counts[0]:
                with tempfile.TemporaryDirectory(prefix="bench-soak-") as d:
                    run_nvr(urls, args.soak_seconds, args.warmup, Path(d), 0, soak=soak,
                            soak_period=args.soak_period)  # fmt: skip
        finally:
            cam.stop()
    print()
    print(report(medians(results), args))
    if args.rounds > 1:
        print(f"\nAbove: each recorder's median run of {args.rounds} rounds. Each round:")
        print("\n".join(round_ratios(results)))
    if soak:
        print()
        print(soak_report(soak, counts[0]))
    if args.json:
        out = {"results": [asdict(r) for r in results],
               "soak": [{"s": t, **asdict(m)} for t, m in soak]}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1))
    return 0


def run_round(
    urls: dict[str, str], args: argparse.Namespace, results: list[Result], turn: int
) -> None:
    """Each recorder once on these cameras: nvr with each reader and worker count, its ring,
    then ffmpeg."""

    def ran(r: Result) -> None:
        r.round = turn
        results.append(r)
        print(row(r, None), flush=True)

    for reader in args.readers.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            with tempfile.TemporaryDirectory(prefix="bench-nvr-") as d:
                ran(run_nvr(urls, args.seconds, args.warmup, Path(d), workers, reader=reader,
                            scrape_s=args.scrape_seconds))  # fmt: skip
        if not args.no_ring:
            with tempfile.TemporaryDirectory(prefix="bench-ring-") as d:
                ran(run_nvr(urls, args.seconds, args.warmup, Path(d), 0, True, reader=reader))
    if not args.no_ffmpeg:
        with tempfile.TemporaryDirectory(prefix="bench-ffmpeg-") as d:
            ran(run_ffmpeg(urls, args.seconds, args.warmup, Path(d)))


if __name__ == "__main__":
    sys.exit(main())
