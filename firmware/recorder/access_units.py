"""Join video packets that belong to one access unit.

FFmpeg's RTP depacketizer can hand out one frame as several packets with the same timestamp
(cameras that repeat SPS/PPS between the slices of an IDR frame do this), and the first packet of
a session may have no timestamp at all. MP4 needs one sample per frame with rising timestamps, so
packets are merged until a packet with a new timestamp arrives. Costs one frame of latency.
"""

from __future__ import annotations

import av


def _merge(first: av.Packet, second: av.Packet) -> av.Packet:
    merged = av.Packet(bytes(first) + bytes(second))
    merged.time_base = second.time_base
    merged.pts = second.pts if first.pts is None else first.pts
    merged.dts = second.dts if first.dts is None else first.dts
    merged.is_keyframe = bool(first.is_keyframe or second.is_keyframe)
    merged.stream = second.stream
    return merged


class AccessUnitJoiner:
    def __init__(self) -> None:
        self.pending: av.Packet | None = None

    def push(self, pkt: av.Packet) -> av.Packet | None:
        """Feed one video packet; returns a complete access unit when one is known to be done."""
        held = self.pending
        if held is None:
            self.pending = pkt
            return None
        if held.pts is None or pkt.pts is None or pkt.pts == held.pts:
            self.pending = _merge(held, pkt)
            return None
        self.pending = pkt
        return held

    def flush(self) -> av.Packet | None:
        held, self.pending = self.pending, None
        return held if held is not None and held.pts is not None else None
