"""What a camera URL delivers, measured before the camera is saved: codec, resolution, frame
rate and bitrate (from the packets read in a short window, as RTSP rarely states it)."""

from __future__ import annotations

from dataclasses import dataclass

import av

OPEN_TIMEOUT_S = 10.0
WINDOW_S = 2.0
"""Seconds of stream time read to measure the bitrate."""


class ProbeError(Exception):
    """The camera could not be read; the message never holds the credentials."""


@dataclass(frozen=True)
class Probe:
    codec: str
    width: int
    height: int
    fps: float | None
    kbit_s: int | None

    def line(self) -> str:
        fps = f"{self.fps:.0f} fps" if self.fps else "fps unknown"
        rate = f"{self.kbit_s} kbit/s" if self.kbit_s else "bitrate unknown"
        return f"{self.codec} {self.width}x{self.height} {fps} {rate}"


def probe(url: str, timeout: float = OPEN_TIMEOUT_S) -> Probe:
    """`url` may hold credentials; they never reach the error."""
    try:
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=timeout) as c:
            if not c.streams.video:
                raise ProbeError("the stream has no video")
            v = c.streams.video[0]
            size, first, last = 0, None, None
            for pkt in c.demux(v):
                if pkt.size == 0 or pkt.pts is None:
                    continue
                t = float(pkt.pts * pkt.time_base)
                first = t if first is None else first
                last, size = t, size + pkt.size
                if last - first >= WINDOW_S:
                    break
            rate = v.average_rate or v.guessed_rate
            kbit = None
            if first is not None and last is not None and last > first:
                kbit = round(size * 8 / (last - first) / 1000)
            return Probe(v.codec_context.name, v.codec_context.width, v.codec_context.height,
                         float(rate) if rate else None, kbit)  # fmt: skip
    except av.FFmpegError as e:
        raise ProbeError(f"cannot read the camera: {e.strerror or type(e).__name__}") from None
    except OSError as e:
        raise ProbeError(f"cannot read the camera: {e.strerror or e}") from None
