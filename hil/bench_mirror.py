"""Mirror benchmark: lag while recording, catch-up throughput, and what the standby's ring costs.

The twin pair records N cheap-mode cameras (1280x720, 25 fps, 4 Mbit/s) with the sync link
shaped to 1 Gbit/s (tc tbf on both ends). In one run it measures:

1. Mirror lag: board b's own `mirror.lag_seconds` (seconds of footage behind a, the open
   segment included) sampled every 0.5 s over --seconds; median and max.
2. The standby's ring: CPU seconds of b's recorder processes (they only demux into memory)
   per camera-minute over the same window, beside a's recorder processes (which write).
3. Catch-up: the mirror blocked on both paths (nftables) for --backlog seconds, then let go on
   the sync link only; fetched bytes per second until b is back within one segment. The
   reference is a plain TCP bulk transfer over the same shaped link in the same run (a Python
   socket from a's namespace to b's, the same number of bytes, into nothing).

    python -m hil.bench_mirror [--cameras 32] [--seconds 60] [--backlog 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from hil.bench_recorder import tree_cpu
from hil.rig import ADDRESSES
from hil.twin import MIRROR_PORT, TwinBoards
from hil.wait import wait_until

BULK_PORT = 5499


def main_cpu(pid: int) -> float:
    """CPU of one process alone (the board's main process: API, election, mirror)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plain_tcp(tb: TwinBoards, nbytes: int) -> float:
    """Bytes per second of one TCP stream a -> b over the sync link, sent from memory, read
    into nothing."""
    srv = tb.rig.socket("b")
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ADDRESSES["b"]["sync"], BULK_PORT))
    srv.listen(1)
    got = [0]

    def sink() -> None:
        conn, _ = srv.accept()
        with conn:
            while chunk := conn.recv(1 << 20):
                got[0] += len(chunk)

    t = threading.Thread(target=sink)
    t.start()
    cli = tb.rig.socket("a")
    cli.connect((ADDRESSES["b"]["sync"], BULK_PORT))
    block = b"\0" * (1 << 20)
    t0 = time.monotonic()
    sent = 0
    while sent < nbytes:
        sent += cli.send(block[: min(len(block), nbytes - sent)])
    cli.shutdown(socket.SHUT_WR)
    t.join()
    elapsed = time.monotonic() - t0
    cli.close()
    srv.close()
    return got[0] / elapsed


def mirror_of(tb: TwinBoards, host: str) -> dict:
    return tb.status(host, timeout=5)["mirror"]


def run(args: argparse.Namespace) -> dict:
    stream = {"width": 1280, "height": 720, "bitrate": args.bitrate, "pattern": "snow"}
    with TwinBoards(args.workdir, segment_seconds=args.segment_seconds, cameras=args.cameras,
                    stream=stream, advert_interval_ms=args.advert_ms) as tb:  # fmt: skip
        for h in ("a", "b"):
            tb.rig.shape(h, "sync", args.rate)
        tb.start("a", 150)
        wait_until(lambda: tb.role("a") == "active", 60, "a active")
        tb.start("b", 100)

        def ready() -> bool:
            a, b = tb.status("a", 5), tb.status("b", 5)
            recording = all(c["recording"] for c in a["cameras"])
            return recording and all(c["holding"] for c in b["cameras"]) and b["mirror"]["synced"]

        wait_until(ready, 120, "a recording, b holding every camera and in sync", every=1)
        time.sleep(args.warmup)  # settle before measuring (not a synchronisation)
        pid_a, pid_b = tb.pid("a"), tb.pid("b")
        assert pid_a and pid_b
        rec_a, rec_b = tb.recorder_pids("a"), tb.recorder_pids("b")
        cpu0 = (tree_cpu(rec_a), tree_cpu(rec_b), main_cpu(pid_b))
        lags: list[float] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            lag = mirror_of(tb, "b")["own_lag_seconds"]
            lags.append(lag)
            time.sleep(0.5)  # sampling period
        window = time.monotonic() - t0
        cpu1 = (tree_cpu(rec_a), tree_cpu(rec_b), main_cpu(pid_b))
        per_cam_min = [
            (c1 - c0) / (args.cameras * window / 60) for c0, c1 in zip(cpu0, cpu1, strict=True)
        ]

        # Backlog: the mirror blocked on both paths, adverts untouched.
        for link in ("sync", "lan"):
            tb.rig.block("b", link, MIRROR_PORT, True, proto="tcp")
        time.sleep(args.backlog)  # the backlog grows for this long (not a synchronisation)
        fetched0 = mirror_of(tb, "b")["fetched_bytes"]
        t1 = time.monotonic()
        tb.rig.block("b", "sync", MIRROR_PORT, False, proto="tcp")
        wait_until(lambda: mirror_of(tb, "b")["own_lag_seconds"] < args.segment_seconds + 1,
                   300, "b caught up", every=0.2)  # fmt: skip
        catch_up_s = time.monotonic() - t1
        st = mirror_of(tb, "b")
        fetched = st["fetched_bytes"] - fetched0
        path = st["path"]
        tb.rig.block("b", "lan", MIRROR_PORT, False, proto="tcp")
        mirror_bps = fetched / catch_up_s
        tcp_bps = plain_tcp(tb, max(fetched, 256 << 20))
    return {
        "cameras": args.cameras,
        "bitrate_kbit": args.bitrate,
        "segment_seconds": args.segment_seconds,
        "sync_rate": args.rate,
        "advert_interval_ms": args.advert_ms,
        "lag_samples": len(lags),
        "lag_median_s": round(statistics.median(lags), 3),
        "lag_max_s": round(max(lags), 3),
        "lag_goal_s": args.segment_seconds + 1,
        "ring_cpu_s_per_camera_minute": round(per_cam_min[1], 4),
        "recording_cpu_s_per_camera_minute": round(per_cam_min[0], 4),
        "standby_main_process_cpu_s_per_camera_minute": round(per_cam_min[2], 4),
        "catch_up_bytes": fetched,
        "catch_up_seconds": round(catch_up_s, 2),
        "catch_up_path": path,
        "mirror_mbit_s": round(mirror_bps * 8 / 1e6, 1),
        "plain_tcp_mbit_s": round(tcp_bps * 8 / 1e6, 1),
        "throughput_ratio": round(mirror_bps / tcp_bps, 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.release()}",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cameras", type=int, default=32)
    ap.add_argument("--bitrate", type=int, default=4000, help="kbit/s per camera")
    ap.add_argument("--segment-seconds", type=float, default=4.0)
    ap.add_argument("--seconds", type=float, default=60, help="lag and CPU window")
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--backlog", type=float, default=30, help="seconds the mirror is blocked")
    ap.add_argument("--rate", default="1gbit", help="tc rate of the sync link")
    ap.add_argument("--advert-ms", type=int, default=300,
                    help="advert interval (the camera simulator shares the CPU here)")  # fmt: skip
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nvr-bench-mirror"))
    args = ap.parse_args()
    result = run(args)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
