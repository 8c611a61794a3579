"""Archive benchmark: the board's uploader against a plain bulk copy of the same bytes to the
same store, in one run; and the CPU the archive costs a board that records 32 cameras.

1. Throughput: `--files` segment-sized files of random bytes (a real catalog, as the recorder
   leaves them) are uploaded to a real SeaweedFS on loopback (hil/seaweed.py) twice, into two
   buckets: first as `aws s3 cp --recursive` does it (s3transfer's TransferManager, 10
   concurrent transfers, the AWS CLI's default), then by the firmware's Uploader (one segment
   at a time, HEAD first, SHA-256 checked, its row and the index written too). Wall time and
   this process's CPU time for each; the store's own processes are counted for neither.
2. CPU while recording: `nvr run` with N simulated cameras, once without [archive] and once
   with it, each for a warm-up and a measured window; the process tree's CPU in the window.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hil.bench_recorder import ROOT, tree_cpu
from hil.camera import CameraSim, StreamSpec, free_port
from hil.seaweed import SeaweedStore

MB = 1_000_000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass(frozen=True)
class Copy:
    label: str
    seconds: float
    cpu: float
    nbytes: int

    def row(self) -> str:
        mbs = self.nbytes / MB / self.seconds
        return (f"| {self.label} | {self.nbytes / MB:.0f} | {self.seconds:.2f} | {mbs:.1f} | "
                f"{self.cpu:.2f} | {self.cpu / (self.nbytes / 1e9):.2f} |")  # fmt: skip


def make_files(data: Path, n: int, size: int):
    """n segments of one camera, as the recorder commits them (files and catalog rows)."""
    import hashlib

    from firmware.catalog import Catalog, Segment, segment_id

    data.mkdir(parents=True, exist_ok=True)
    cat = Catalog(data)
    t0 = int(time.time() * 1e6) - n * 4_000_000
    run = cat.new_run("cam", "a", t0, t0)
    for i in range(n):
        start = t0 + i * 4_000_000
        body = os.urandom(size)
        rel = f"segments/cam/{start}.mp4"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(body)
        cat.add_segment(Segment(segment_id("cam", start, "a"), "cam", run, rel, start,
                                start + 4_000_000, 0, 4_000_000, 100, size,
                                hashlib.sha256(body).hexdigest(), "a", "h264"))  # fmt: skip
    return cat


def bulk_copy(store: SeaweedStore, bucket: str, data: Path, cat) -> Copy:
    """What `aws s3 cp --recursive` does: s3transfer, 10 concurrent transfers."""
    from boto3.s3.transfer import TransferConfig
    from s3transfer.manager import TransferManager

    client = store.client()
    client.create_bucket(Bucket=bucket)
    segs = cat.segments()
    t, c = time.monotonic(), _cpu()
    with TransferManager(client, TransferConfig(max_concurrency=10)) as tm:
        futures = [tm.upload(str(data / s.path), bucket, s.path) for s in segs]
        for f in futures:
            f.result()
    return Copy("bulk copy (aws s3 cp style, 10 concurrent)", time.monotonic() - t,
                _cpu() - c, sum(s.bytes for s in segs))  # fmt: skip


def uploader_copy(store: SeaweedStore, bucket: str, data: Path, cat, creds: Path) -> Copy:
    from firmware.alerts import Alerts
    from firmware.archive.store import load_credentials
    from firmware.archive.uploader import Uploader
    from firmware.config import ArchiveConfig

    store.client().create_bucket(Bucket=bucket)
    cfg = ArchiveConfig(endpoint=store.endpoint, bucket=bucket, credentials_file=creds)
    up = Uploader(cfg, load_credentials(creds), "bench", "a", cat, data, Alerts(),
                  lambda what, e: print(f"uploader: {what}: {e}"),
                  recording=lambda: True)  # fmt: skip
    segs = cat.segments()
    t, c = time.monotonic(), _cpu()
    for _ in range(len(segs) * 4):
        if not cat.not_archived(1):
            break
        up.step()
    else:
        raise SystemExit(f"the uploader did not finish: {up.status()}")
    return Copy("nvr uploader (one at a time, verified)", time.monotonic() - t, _cpu() - c,
                sum(s.bytes for s in segs))  # fmt: skip


def board_config(data: Path, urls: dict[str, str], port: int, archive: str) -> str:
    cams = "".join(f'[[camera]]\nname = "{n}"\nurl = "{u}"\n\n' for n, u in urls.items())
    return (f'[board]\nname = "a"\ndata_dir = "{data}"\n\n[recorder]\nsegment_seconds = 4\n'
            f'min_free_mb = 64\n\n[api]\nlisten_address = "127.0.0.1"\nlisten_port = {port}\n\n'
            f"{archive}{cams}")  # fmt: skip


def recording_cpu(urls: dict[str, str], workdir: Path, archive: str, warmup: float,
                  seconds: float) -> tuple[float, int]:  # fmt: skip
    """CPU seconds per minute of the whole `nvr run` tree in the window, and the segments it
    committed in all."""
    data = workdir / "data"
    cfg = workdir / "nvr.toml"
    cfg.write_text(board_config(data, urls, free_port(), archive))
    with open(workdir / "nvr.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "firmware.cli", "--log-level", "warning",
                                 "run", "--config", str(cfg)], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        time.sleep(warmup)  # a warm-up of the running firmware, not a synchronisation
        c0 = tree_cpu([proc.pid])
        time.sleep(seconds)
        cpu = (tree_cpu([proc.pid]) - c0) * 60 / seconds
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    return cpu, sum(1 for _ in (data / "segments").rglob("*.mp4"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=96, help="segments to upload")
    ap.add_argument("--size-mb", type=float, default=2.0, help="bytes of each (4 Mbit/s x 4 s)")
    ap.add_argument("--cameras", type=int, default=32, help="cameras for the CPU part (0: skip)")
    ap.add_argument("--seconds", type=float, default=60, help="measured window of the CPU part")
    ap.add_argument("--warmup", type=float, default=20)
    args = ap.parse_args()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
          f"Python {platform.python_version()}")  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="bench-archive-") as d,
        SeaweedStore(max_volumes=64) as store,
    ):
        tmp = Path(d)
        creds = tmp / "archive.cred"
        creds.write_text(f'access_key = "{store.access_key}"\nsecret_key = "{store.secret_key}"\n')
        creds.chmod(0o600)
        cat = make_files(tmp / "data", args.files, int(args.size_mb * MB))
        results = [bulk_copy(store, "bulk", tmp / "data", cat),
                   uploader_copy(store, "nvr", tmp / "data", cat, creds)]  # fmt: skip
        print()
        print("| copy | MB | s | MB/s | CPU s | CPU s per GB |")
        print("|---|---|---|---|---|---|")
        for r in results:
            print(r.row())
        ratio = (results[1].nbytes / results[1].seconds) / (results[0].nbytes / results[0].seconds)
        print(f"\nthroughput nvr / bulk copy: {ratio:.2f}")
        if args.cameras:
            specs = [StreamSpec(f"c{i:02d}", width=1280, height=720, fps=25, bitrate=4000,
                                gop=25, cheap=True, pattern="snow")
                     for i in range(args.cameras)]  # fmt: skip
            cam = CameraSim(streams=specs, port=free_port())
            cam.start()
            try:
                urls = {s.name: cam.url(s.name) for s in specs}
                archive = (f'[archive]\nendpoint = "{store.endpoint}"\nbucket = "live"\n'
                           f'credentials_file = "{creds}"\n\n')  # fmt: skip
                store.client().create_bucket(Bucket="live")
                figures: dict[str, float] = {}
                committed = 0
                for label, section in (("without [archive]", ""), ("with [archive]", archive)):
                    work = tmp / label.replace(" ", "-").strip("[]")
                    work.mkdir()
                    cpu, committed = recording_cpu(urls, work, section, args.warmup,
                                                   args.seconds)  # fmt: skip
                    figures[label] = cpu
            finally:
                cam.stop()
            print(f"\nRecording {args.cameras} cameras (4 Mbit/s), CPU s per minute of the "
                  "nvr run tree:")  # fmt: skip
            for label, v in figures.items():
                print(f"- {label}: {v:.2f} ({v / args.cameras:.3f} per camera)")
            pages = (
                store.client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket="live", Prefix="board-a/segments/")
            )
            uploaded = sum(page.get("KeyCount", 0) for page in pages)
            print(f"- segments the board with [archive] committed: {committed}, uploaded: "
                  f"{uploaded} (the rest were recorded in its last seconds)")  # fmt: skip
            if not uploaded:
                raise SystemExit("the board with [archive] uploaded nothing: no figure")
            extra = figures["with [archive]"] - figures["without [archive]"]
            print(f"- the archive costs {extra:.2f} CPU s per minute "
                  f"({extra / 60 * 100:.1f} % of one core)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
