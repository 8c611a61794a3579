"""Join video packets that belong to one access unit, and time the ones that come untimed.

FFmpeg's RTSP demuxer can hand out one frame as several packets with the same timestamp (cameras
that repeat SPS/PPS between the slices of an IDR frame do this), and the first packet of a session
may carry no timestamp at all: it may be a whole frame or the first part of one. MP4 needs one
sample per frame with rising timestamps. Equal timestamps mean one frame; for an untimed packet
the slice header of what follows decides (first_mb_in_slice == 0 in H.264,
first_slice_segment_in_pic_flag in H.265 start a new picture). Costs one frame of latency.
"""

from __future__ import annotations

import av


def _vcl_starts_picture(codec: str, data: bytes) -> bool | None:
    """Whether the first slice in this Annex B data begins a new picture; None if no slice."""
    pos = 0
    n = len(data)
    while True:
        i = data.find(b"\x00\x00\x01", pos)
        if i < 0 or i + 3 >= n:
            return None
        h = i + 3
        if codec == "h264":
            kind = data[h] & 0x1F
            if 1 <= kind <= 5 and h + 1 < n:
                return bool(data[h + 1] & 0x80)  # ue(v) first_mb_in_slice == 0 is a single 1
        else:
            kind = (data[h] >> 1) & 0x3F
            if kind <= 31 and h + 2 < n:
                return bool(data[h + 2] & 0x80)  # first_slice_segment_in_pic_flag
        pos = h


def _merge(first: av.Packet, second: av.Packet) -> av.Packet:
    merged = av.Packet(bytes(first) + bytes(second))
    merged.time_base = second.time_base
    merged.pts = second.pts if first.pts is None else first.pts
    merged.dts = second.dts if first.dts is None else first.dts
    merged.is_keyframe = bool(first.is_keyframe or second.is_keyframe)
    merged.stream = second.stream
    return merged


class AccessUnitJoiner:
    def __init__(self, codec: str, frame_ticks: int | None) -> None:
        self.codec = codec
        self.frame_ticks = frame_ticks
        """One frame period in the stream's time base, to time an untimed whole frame."""
        self.pending: av.Packet | None = None

    def push(self, pkt: av.Packet) -> av.Packet | None:
        """Feed one video packet; returns a complete access unit once one is known to be done."""
        held = self.pending
        if held is None:
            self.pending = pkt
            return None
        if pkt.pts is not None and pkt.pts == held.pts:
            self.pending = _merge(held, pkt)
            return None
        if held.pts is None or pkt.pts is None:
            if _vcl_starts_picture(self.codec, bytes(pkt)) is False:
                self.pending = _merge(held, pkt)
                return None
            if held.pts is None:
                if pkt.pts is None or not self.frame_ticks:
                    self.pending = pkt
                    return None  # cannot be timed: dropped
                held.pts = held.dts = pkt.pts - self.frame_ticks
        self.pending = pkt
        return held

    def flush(self) -> av.Packet | None:
        held, self.pending = self.pending, None
        return held if held is not None and held.pts is not None else None
