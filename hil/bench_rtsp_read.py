"""What reading a camera costs, before any muxing: FFmpeg's RTSP demuxer (through PyAV, as the
recorder and the standby's ring read today) against reading the same RTSP/TCP stream in large
chunks and taking the RTP packets apart in Python, on the same simulated cameras in one run.

FFmpeg's demuxer reads an interleaved RTSP stream in three small reads per RTP packet (the '$',
the channel and length, the packet), each a poll and a recv: about 500 RTP packets a second per
4 Mbit/s camera. The bulk reader here reads into a 64 KiB buffer, each recv taking what has
arrived. Rows:

- `pyav-demux`: `av.open(url, rtsp_transport=tcp)` and `demux()` of the video, nothing done with
  the packets (the recorder's read path without its Python per packet);
- `bulk-recv`: recv_into a 64 KiB buffer, nothing parsed (what a standby's ring
  holding the raw stream, taken apart only at a takeover, would pay);
- `bulk-read`: the same, the interleaved frames and RTP headers parsed;
- `bulk-depay`: the same, and H.264 access units put together from the RTP payloads (single
  NAL units, STAP-A, FU-A; RFC 6184) as bytes, one per frame: what a muxer would be handed.

Each row runs in a fresh process, one thread per camera, and is measured as CPU seconds per
camera-minute over the window after a warm-up. A measurement of the read path only, not a
client: no authentication, H.264 only, no RTCP, no keep-alive. Figures: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from hil.camera import CameraSim, StreamSpec, free_port

KINDS = ("pyav-demux", "bulk-recv", "bulk-read", "bulk-depay")
CHUNK = 1 << 16


@dataclass
class Counts:
    rtp: int = 0
    frames: int = 0


def _request(sock: socket.socket, f, method: str, url: str, cseq: int, headers: str = "") -> dict:
    sock.sendall(f"{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{headers}\r\n".encode())
    status = f.readline().decode()
    if " 200 " not in status:
        raise RuntimeError(f"{method}: {status.strip()}")
    head: dict[str, str] = {}
    while line := f.readline().decode().strip():
        k, _, v = line.partition(":")
        head[k.strip().lower()] = v.strip()
    head["body"] = f.read(int(head["content-length"])).decode() if "content-length" in head else ""
    return head


def _play(url: str) -> socket.socket:
    """DESCRIBE, SETUP of every track interleaved on this connection, PLAY."""
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port or 554), timeout=10)
    f = sock.makefile("rb", buffering=0)
    sdp = _request(sock, f, "DESCRIBE", url, 1, "Accept: application/sdp\r\n")["body"]
    controls = [ln.split(":", 1)[1].strip() for ln in sdp.splitlines()
                if ln.startswith("a=control:") and ln.strip() != "a=control:*"]  # fmt: skip
    session = ""
    for i, c in enumerate(controls):
        track = c if c.startswith("rtsp") else url.rstrip("/") + "/" + c
        extra = f"Transport: RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}\r\n"
        if session:
            extra += f"Session: {session}\r\n"
        session = _request(sock, f, "SETUP", track, 2 + i, extra)["session"].split(";")[0]
    _request(sock, f, "PLAY", url, 9, f"Session: {session}\r\nRange: npt=0-\r\n")
    return sock


def recv_only(url: str, stop: threading.Event, counts: Counts) -> None:
    sock = _play(url)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while not stop.is_set():
            if not sock.recv_into(view):
                return
    finally:
        sock.close()


def bulk(url: str, stop: threading.Event, depay: bool, counts: Counts) -> None:
    sock = _play(url)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    have = 0
    parts: list[bytes] = []
    try:
        while not stop.is_set():
            n = sock.recv_into(view[have:])
            if not n:
                return
            have += n
            pos = 0
            while have - pos >= 4:
                if buf[pos] != 0x24:  # '$': an RTSP reply would come here; none is asked for
                    raise RuntimeError("interleaved stream out of step")
                size = (buf[pos + 2] << 8) | buf[pos + 3]
                end = pos + 4 + size
                if end > have:
                    break
                if buf[pos + 1] == 0:  # channel 0: the video's RTP
                    p = pos + 4
                    head = 12 + 4 * (buf[p] & 0x0F)
                    if buf[p] & 0x10:  # header extension
                        head += 4 + 4 * ((buf[p + head + 2] << 8) | buf[p + head + 3])
                    counts.rtp += 1
                    if depay:
                        _depay(buf, view, p + head, end, parts)
                        if buf[p + 1] & 0x80:  # marker: the frame's last packet
                            frame = b"".join(parts)  # what a muxer would be handed
                            parts.clear()
                            if frame:
                                counts.frames += 1
                pos = end
            if pos:
                buf[: have - pos] = buf[pos:have]
                have -= pos
    finally:
        sock.close()


def _depay(buf: bytearray, view: memoryview, pay: int, end: int, parts: list[bytes]) -> None:
    """One H.264 RTP payload's NAL units, Annex B, onto parts (RFC 6184)."""
    kind = buf[pay] & 0x1F
    if kind == 28:  # FU-A
        fu = buf[pay + 1]
        if fu & 0x80:
            parts.append(b"\0\0\1" + bytes(((buf[pay] & 0xE0) | (fu & 0x1F),)))
        parts.append(view[pay + 2 : end].tobytes())
    elif kind == 24:  # STAP-A
        q = pay + 1
        while q + 2 <= end:
            size = (buf[q] << 8) | buf[q + 1]
            parts.append(b"\0\0\1")
            parts.append(view[q + 2 : q + 2 + size].tobytes())
            q += 2 + size
    else:
        parts.append(b"\0\0\1")
        parts.append(view[pay:end].tobytes())


def pyav(url: str, stop: threading.Event, counts: Counts) -> None:
    import av

    container = av.open(url, options={"rtsp_transport": "tcp", "timeout": "10000000"})
    try:
        for _ in container.demux(container.streams.video[0]):
            counts.frames += 1
            if stop.is_set():
                return
    finally:
        container.close()


def measure(kind: str, urls: list[str], seconds: float, warmup: float) -> str:
    """One row, in this process: CPU s per camera-minute, RTP packets and frames per second."""
    stop = threading.Event()
    counts = [Counts() for _ in urls]
    if kind == "pyav-demux":
        import av  # loaded before the window, as a worker has it

        del av
        targets = [(pyav, (u, stop, c)) for u, c in zip(urls, counts, strict=True)]
    elif kind == "bulk-recv":
        targets = [(recv_only, (u, stop, c)) for u, c in zip(urls, counts, strict=True)]
    else:
        depay = kind == "bulk-depay"
        targets = [(bulk, (u, stop, depay, c)) for u, c in zip(urls, counts, strict=True)]
    threads = [threading.Thread(target=t, args=a, daemon=True) for t, a in targets]
    for t in threads:
        t.start()
    time.sleep(warmup)  # a benchmark's warm-up, not a synchronisation
    before = [(c.rtp, c.frames) for c in counts]
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    time.sleep(seconds)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    after = [(c.rtp, c.frames) for c in counts]
    stop.set()
    for t in threads:
        t.join(10)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    window = t1 - t0
    per_min = cpu / len(urls) / (window / 60)
    rtp = sum(a[0] - b[0] for a, b in zip(after, before, strict=True)) / len(urls) / window
    frames = sum(a[1] - b[1] for a, b in zip(after, before, strict=True)) / len(urls) / window
    rtp_text = f"{rtp:.0f}" if kind in ("bulk-read", "bulk-depay") else "-"
    frames_text = f"{frames:.1f}" if kind in ("pyav-demux", "bulk-depay") else "-"
    return f"| {len(urls)} | {kind} | {per_min:.3f} | {rtp_text} | {frames_text} |"


def main() -> int:
    if sys.argv[1:2] == ["--row"]:
        _, _, kind, seconds, warmup, *urls = sys.argv
        print(measure(kind, urls, float(seconds), float(warmup)), flush=True)
        return 0
    ap = argparse.ArgumentParser(prog="bash hil/bench.sh rtsp-read", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--n", default="8,32", help="camera counts, comma separated")
    ap.add_argument("--seconds", type=float, default=30, help="measured window")
    ap.add_argument("--warmup", type=float, default=5, help="seconds before the window")
    ap.add_argument("--bitrate", type=int, default=4000, help="kbit/s per camera")
    args = ap.parse_args()
    py = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"machine: {platform.machine()}, {py}; {args.bitrate} kbit/s 1280x720 25 fps a camera")
    print("| N | read path | CPU s per camera-minute | RTP packets/s per camera | frames/s per "
          "camera |\n|---|---|---|---|---|")  # fmt: skip
    for n in (int(x) for x in args.n.split(",")):
        specs = [StreamSpec(name=f"cam{i}", codec="h264", width=1280, height=720, fps=25,
                            bitrate=args.bitrate, gop=25, cheap=True, pattern="snow")
                 for i in range(n)]  # fmt: skip
        cam = CameraSim(streams=specs, port=free_port())
        cam.start()
        try:
            urls = [cam.url(s.name) for s in specs]
            for kind in KINDS:
                done = subprocess.run([sys.executable, "-m", "hil.bench_rtsp_read", "--row", kind,
                                       str(args.seconds), str(args.warmup), *urls],
                                      capture_output=True, text=True,
                                      timeout=args.seconds + args.warmup + 120)  # fmt: skip
                print(done.stdout.strip() or f"| {n} | {kind} | failed: {done.stderr[-300:]} |",
                      flush=True)  # fmt: skip
        finally:
            cam.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
