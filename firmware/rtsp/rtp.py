"""RTP packets in, whole access units out: the recorder's own depacketizers (sans-IO).

They replace FFmpeg's RTSP demuxer between the interleaved RTSP stream and the muxer: H.264
(RFC 6184, packetization modes 0 and 1), H.265 (RFC 7798, no DONL) and AAC in MPEG4-GENERIC
(RFC 3640, AAC-hbr and AAC-lbr). Video comes out in Annex B with four-byte start codes, as
FFmpeg's demuxer hands it out; audio as raw AAC frames.

Nothing here raises on what the camera sends: a packet that cannot be taken apart is counted
(`malformed`) and the access unit it belonged to is dropped (`dropped`), since a unit missing
part of its data must not reach the muxer as if whole. TCP interleaving does not reorder, so
there is no jitter buffer: a packet behind the last one is a duplicate or a restart.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "MAX_AU_SIZE",
    "AacDepacketizer",
    "AacParams",
    "AccessUnit",
    "ChannelUnit",
    "Depacketizer",
    "H264Depacketizer",
    "H265Depacketizer",
    "RtpPacket",
    "TimestampUnwrapper",
    "UnsupportedStream",
    "aac_config",
    "aac_params",
    "annexb",
    "depacketizer_for",
    "h264_parameter_sets",
    "h265_parameter_sets",
    "parse_rtp",
]

MAX_AU_SIZE = 8 << 20
"""An access unit larger than this is dropped: what a hostile camera can make us hold."""

MAX_MISORDER = 100
"""A packet further behind than this is taken as a possible restart of the numbering (RFC 3550
A.1): two in a row that follow each other resynchronise, rather than being ignored for 2^15
packets."""

START = b"\x00\x00\x00\x01"
_START_1 = [START + bytes((b,)) for b in range(256)]  # start code and a one-byte NAL header
_HEAD = struct.Struct("!BBHII")
_PLAIN = struct.Struct("!xBHII")
"""The header after its first octet, for a packet whose first octet is 0x80: version 2, no
padding, extension or CSRC, as cameras send nearly every packet."""
_FRAGMENT = struct.Struct("!BBHIIBBB")
"""An RTP header and the three octets after it: an H.264 FU-A's indicator, header and first
data octet, or an H.265 FU's payload header and FU header."""
_ANY_SSRC = -1  # expect_seq() was called: adopt the first packet's SSRC without a restart


class UnsupportedStream(ValueError):
    """A known encoding whose SDP parameters ask for what these depacketizers do not do."""


# --- RTP ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes  # without padding, CSRCs or header extension


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket | None:
    """One RTP packet (RFC 3550 5.1), or None if it is not version 2 or its lengths disagree."""
    n = len(data)
    if n < 12:
        return None
    b0, b1, seq, ts, ssrc = _HEAD.unpack_from(data)
    if b0 & 0xC0 != 0x80:
        return None
    head = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if n < head + 4:
            return None
        head += 4 + 4 * ((data[head + 2] << 8) | data[head + 3])
    end = n
    if b0 & 0x20:  # padding: the last octet counts the padding, itself included
        pad = data[n - 1]
        if not pad:
            return None
        end -= pad
    if end < head:
        return None
    return RtpPacket(b1 & 0x7F, b1 >= 0x80, seq, ts, ssrc, bytes(data[head:end]))


class TimestampUnwrapper:
    """32-bit RTP timestamps onto a 64-bit count: each step is the shortest way round the
    32-bit circle, so a wrap forwards adds 2^32 and a slightly older timestamp after a wrap
    stays older. The first timestamp is returned as it is; later ones may go below it (and
    below zero), which the caller handles as it handles any older timestamp."""

    __slots__ = ("_last", "_value")

    def __init__(self) -> None:
        self._last: int | None = None
        self._value = 0

    def unwrap(self, ts: int) -> int:
        ts &= 0xFFFFFFFF
        last = self._last
        self._last = ts
        if last is None:
            self._value = ts
            return ts
        d = (ts - last) & 0xFFFFFFFF
        if d >= 0x80000000:
            d -= 0x100000000
        self._value += d
        return self._value


# --- access units ------------------------------------------------------------------------------


@dataclass(slots=True)
class AccessUnit:
    data: bytes  # video: Annex B, 00 00 00 01 before each NAL unit; audio: one raw AAC frame
    timestamp: int  # unwrapped RTP timestamp, in the stream's clock rate
    keyframe: bool  # H.264: an IDR slice; H.265: an IRAP picture (16-21); audio: always
    after_loss: bool = False
    """Packets were lost, or access units dropped, since the previous unit came out. The data is
    whole from this unit's first received packet on, but if the loss was just before it, its
    leading NAL units (an AUD, parameter sets, SEI) may be missing; and a lost picture breaks
    the references of those after it. A recorder typically waits for a keyframe after this."""


@dataclass(frozen=True, slots=True)
class ChannelUnit:
    """An access unit from `take_frames`, with the interleaved channel its packets came on."""

    channel: int
    unit: AccessUnit


class Depacketizer(Protocol):
    lost: int  # packets known lost (sequence gaps), once per missing packet
    dropped: int  # access units discarded: damaged by a loss, malformed, oversized
    malformed: int  # packets that could not be taken apart (or of an unsupported kind)
    clock_rate: int

    def expect_seq(self, seq: int) -> None: ...
    def push(self, pkt: RtpPacket) -> list[AccessUnit]: ...
    def push_rtp(self, data: bytes) -> list[AccessUnit]: ...
    def take_frames(self, buf: bytes, pos: int, n: int, out: list[Any]) -> int: ...
    def flush(self) -> list[AccessUnit]: ...


class _Sequenced:
    """Sequence-number bookkeeping shared by the depacketizers: gaps, duplicates, restarts."""

    __slots__ = ("_probe", "_seq", "_ssrc", "_unwrapper", "clock_rate", "dropped", "lost")

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.lost = 0
        self.dropped = 0
        self._seq = 0
        self._ssrc: int | None = None  # None until the first packet
        self._probe: int | None = None
        self._unwrapper = TimestampUnwrapper()

    def expect_seq(self, seq: int) -> None:
        """The first packet's sequence number, when known (the PLAY reply's RTP-Info seq=):
        packets missing before the first one to arrive then count as lost, and the unit they
        began is dropped or flagged instead of passing as whole. Call before the first push."""
        if self._ssrc is None:
            self._seq = (seq - 1) & 0xFFFF
            self._ssrc = _ANY_SSRC

    def _accept(self, pkt: RtpPacket) -> bool:
        """Whether to take the packet (the slow path: not simply the next one of this SSRC)."""
        seq = pkt.seq
        if self._ssrc is None:
            self._ssrc = pkt.ssrc
            return True
        if self._ssrc == _ANY_SSRC:
            self._ssrc = pkt.ssrc
        elif pkt.ssrc != self._ssrc:  # a new source: the camera restarted its stream
            self._ssrc = pkt.ssrc
            self._probe = None
            self._gap()
            return True
        d = (seq - self._seq) & 0xFFFF
        if d == 1:
            return True
        if d == 0:
            return False  # duplicate
        if d < 0x8000:
            self.lost += d - 1
            self._gap()
            return True
        if 0x10000 - d <= MAX_MISORDER:
            return False  # old
        if seq == self._probe:  # the second in a row far behind: numbering restarted
            self._probe = None
            self.lost += 1  # the first of the two, ignored
            self._gap()
            return True
        self._probe = (seq + 1) & 0xFFFF
        return False

    def _gap(self) -> None:
        raise NotImplementedError

    def push(self, pkt: RtpPacket) -> list[AccessUnit]:
        raise NotImplementedError

    def push_rtp(self, data: bytes) -> list[AccessUnit]:
        """`push(parse_rtp(data))`; a malformed packet is dropped, counted as lost by the
        sequence gap it leaves."""
        pkt = parse_rtp(data)
        return [] if pkt is None else self.push(pkt)

    def take_frames(self, buf: bytes, pos: int, n: int, out: list[Any]) -> int:
        """The RTSP parser's sink for this track's channel (messages.FrameSink): the complete
        `$` frames (RFC 2326 10.12) of the channel of the one at `pos`, each through
        `push_rtp`, their units appended to `out` as ChannelUnit. Returns where it stopped: at
        an incomplete frame, another channel's, or a message."""
        ch = buf[pos + 1]
        while n - pos >= 4 and buf[pos] == 0x24 and buf[pos + 1] == ch:
            end = pos + 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
            if end > n:
                break
            for au in self.push_rtp(buf[pos + 4 : end]):
                out.append(ChannelUnit(ch, au))
            pos = end
        return pos


# --- H.264 / H.265 -----------------------------------------------------------------------------


class _NalDepacketizer(_Sequenced):
    """Access units of NAL units: the marker bit or a timestamp change ends one.

    A unit is emitted when it ends and holds a picture (a VCL NAL unit). One that holds only
    parameter sets or SEI (a camera that sends them as a "frame" of their own, marker and all)
    is kept and goes out in front of the next picture, as FFmpeg's parser would join them.
    A unit some packet of which was lost or malformed is dropped; one that begins right after
    a loss goes out flagged (`after_loss`), since its first packets may be what was lost.
    """

    __slots__ = (
        "_after_loss",
        "_damaged",
        "_in_fu",
        "_key",
        "_markers",
        "_parts",
        "_size",
        "_skip_fu",
        "_ts",
        "_uts",
        "_vcl",
        "malformed",
    )

    def __init__(self, clock_rate: int = 90000) -> None:
        super().__init__(clock_rate)
        self.malformed = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._ts: int | None = None  # RTP timestamp of the unit held, None if none
        self._uts = 0
        self._damaged = False
        self._in_fu = False  # a fragmented NAL unit is open (its end not yet seen)
        self._skip_fu = True  # fragments whose start was not seen are skipped, not malformed
        self._vcl = False
        self._key = False
        self._after_loss = False
        self._markers = False  # the stream sets the marker bit: a unit without it is short

    _FU_MASK = 0
    _FU_TYPE = 1
    """A fragmentation unit's payload header: first octet & _FU_MASK == _FU_TYPE."""
    _FU_AT = 0
    """Where the FU header is in the payload, and where the fragment starts after it."""

    def take_frames(self, buf: bytes, pos: int, n: int, out: list[Any]) -> int:
        """As _Sequenced.take_frames, with the packet most frames are made of taken in place:
        the next one (plain header, same source and timestamp, no marker) holding a fragment
        of a NAL unit, which adds its NAL header if it is the first and a view of its bytes,
        and nothing else. The rest (a unit's first and last packets, aggregates, single NAL
        units, anything unusual) go through push_rtp. `buf` must not change while a unit is
        open: bytes, not a bytearray. The state the in-place packets touch is held in locals
        and written back around each push_rtp and at the end (some 450 packets a second)."""
        ch = buf[pos + 1]
        view = memoryview(buf)
        mask, kind = self._FU_MASK, self._FU_TYPE
        h265 = self._FU_AT == 2  # the FU header is the payload's third octet, not its second
        head = 17 + self._FU_AT  # `$` frame, RTP and payload headers, the FU header: the data
        unpack = _FRAGMENT.unpack_from
        last, open_ts, ssrc, in_fu = self._seq, self._ts, self._ssrc, self._in_fu
        parts, size, damaged = self._parts, self._size, self._damaged
        while n - pos >= 4 and buf[pos] == 0x24 and buf[pos + 1] == ch:
            end = pos + 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
            if end > n:
                break
            if end - pos > head and not damaged:
                b0, b1, seq, ts, src, p0, p1, p2 = unpack(buf, pos + 4)
                fu = p2 if h265 else p1
                if (
                    b0 == 0x80
                    and b1 < 0x80
                    and ts == open_ts
                    and src == ssrc
                    and (seq - last) & 0xFFFF == 1
                    and p0 & mask == kind
                    and (not fu & 0x80) is in_fu  # a start only outside a unit
                    and fu & 0xC0 != 0xC0
                    and (not h265 or p1 & 7)  # H.265: TemporalId 0 is malformed
                ):
                    last = seq
                    if fu & 0x80:
                        self._open_fu(p0, p1, fu)
                        in_fu = True
                    elif fu & 0x40:
                        in_fu = False
                    parts.append(view[pos + head : end])
                    size += end - pos - 16
                    if size > MAX_AU_SIZE:
                        self._parts = parts = []
                        self._damaged = damaged = True
                    pos = end
                    continue
            self._seq, self._in_fu, self._size = last, in_fu, size
            for au in self.push_rtp(buf[pos + 4 : end]):
                out.append(ChannelUnit(ch, au))
            last, open_ts, ssrc, in_fu = self._seq, self._ts, self._ssrc, self._in_fu
            parts, size, damaged = self._parts, self._size, self._damaged
            pos = end
        self._seq, self._in_fu, self._size = last, in_fu, size
        return pos

    def _open_fu(self, b0: int, b1: int, fu: int) -> None:
        """A fragmented NAL unit starts: its reconstructed header, and what it tells."""
        raise NotImplementedError

    def push(self, pkt: RtpPacket) -> list[AccessUnit]:
        seq = pkt.seq
        # the next packet of the same source: the only check on the common path
        if (pkt.ssrc != self._ssrc or (seq - self._seq) & 0xFFFF != 1) and not self._accept(pkt):
            return []
        return self._take(seq, pkt.timestamp, pkt.marker, pkt.payload)

    def push_rtp(self, data: bytes) -> list[AccessUnit]:
        """`push(parse_rtp(data))`, without the packet object for the common packet (a plain
        header, the next of this source): some 520 a second per camera at 4 Mbit/s."""
        if len(data) > 12 and data[0] == 0x80:
            b1, seq, ts, ssrc = _PLAIN.unpack_from(data)
            if ssrc == self._ssrc and (seq - self._seq) & 0xFFFF == 1:
                return self._take(seq, ts, b1 >= 0x80, data[12:])
        pkt = parse_rtp(data)
        return [] if pkt is None else self.push(pkt)

    def _take(self, seq: int, ts: int, marker: bool, payload: bytes) -> list[AccessUnit]:
        self._seq = seq
        out: list[AccessUnit] = []
        if ts != self._ts:
            if self._ts is not None:
                self._end(out)
            self._ts = ts
            self._uts = self._unwrapper.unwrap(ts)
        if not self._damaged:
            self._add(payload)
            if self._size > MAX_AU_SIZE:
                self._parts = []
                self._damaged = True
        if marker:
            self._markers = True
            self._end(out)
            if not self._parts:
                self._ts = None
        return out

    def flush(self) -> list[AccessUnit]:
        """The unit held, if whole as far as can be told: it holds a picture and the stream
        does not mark its units' ends (where it does, the marker packet of this one is
        missing). What else is held (parameter sets without a picture) is dropped."""
        out: list[AccessUnit] = []
        if self._ts is not None:
            if self._markers and (self._parts or self._damaged):
                self._drop()
            else:
                self._end(out)
                if self._parts:
                    self._drop()
        self._ts = None
        return out

    def _end(self, out: list[AccessUnit]) -> None:
        """The held unit ends: out if whole, dropped if damaged, kept if it has no picture."""
        if self._damaged or self._in_fu:
            self._drop()
        elif self._vcl:
            out.append(AccessUnit(b"".join(self._parts), self._uts, self._key, self._after_loss))
            self._after_loss = False
            self._reset()
        elif self._after_loss and self._parts:  # may be the tail of a unit that lost its head
            self._drop()
        # else: parameter sets, SEI: kept for the next picture

    def _drop(self) -> None:
        self.dropped += 1
        self._after_loss = True
        self._reset()

    def _reset(self) -> None:
        self._parts = []
        self._size = 0
        self._damaged = self._in_fu = self._vcl = self._key = False

    def _gap(self) -> None:
        if self._ts is not None:
            self._damaged = True
        self._in_fu = False
        self._skip_fu = True
        self._after_loss = True

    def _bad(self) -> None:
        self.malformed += 1
        self._damaged = True
        self._parts = []

    def _add(self, p: bytes) -> None:
        raise NotImplementedError


class H264Depacketizer(_NalDepacketizer):
    """RFC 6184, packetization modes 0 and 1: single NAL units (1-23), STAP-A (24), FU-A (28).
    All three are taken whatever mode the SDP declares, as cameras declaring mode 0 send FU-A.
    STAP-B, MTAP and FU-B (interleaved mode) are counted as malformed; so is an FU-A whose start
    comes while another is open. An FU-A with both start and end bits (forbidden) is taken as
    a whole NAL unit."""

    __slots__ = ()
    _FU_MASK, _FU_TYPE, _FU_AT = 0x1F, 28, 1

    def _open_fu(self, b0: int, b1: int, fu: int) -> None:
        nt = fu & 0x1F
        self._parts.append(_START_1[(b0 & 0xE0) | nt])
        self._in_fu = not fu & 0x40
        self._skip_fu = False
        if 1 <= nt <= 5:
            self._vcl = True
            if nt == 5:
                self._key = True

    def _add(self, p: bytes) -> None:
        n = len(p)
        if not n:
            return self._bad()
        b0 = p[0]
        t = b0 & 0x1F
        if t == 28:  # FU-A
            if n < 2:
                return self._bad()
            fu = p[1]
            if fu & 0x80:  # start
                if self._in_fu:
                    return self._bad()
                self._open_fu(b0, fu, fu)
                self._parts.append(p[2:])
            elif self._in_fu:
                self._parts.append(p[2:])
                if fu & 0x40:
                    self._in_fu = False
            elif self._skip_fu:  # the start was lost
                self._damaged = True
                self._parts = []
                return
            else:
                return self._bad()
            self._size += n
        elif 1 <= t <= 23:
            if self._in_fu:
                return self._bad()
            self._parts += (START, p)
            self._size += n + 4
            self._skip_fu = False
            if t <= 5:
                self._vcl = True
                if t == 5:
                    self._key = True
        elif t == 24:  # STAP-A: 16-bit size before each NAL unit
            if self._in_fu:
                return self._bad()
            parts: list[bytes] = []
            q = 1
            while n - q > 2:  # as FFmpeg: one or two octets left over are ignored
                size = (p[q] << 8) | p[q + 1]
                q += 2
                if q + size > n:
                    return self._bad()
                if size:
                    nt = p[q] & 0x1F
                    if 1 <= nt <= 5:
                        self._vcl = True
                        if nt == 5:
                            self._key = True
                    parts += (START, p[q : q + size])
                q += size
            self._parts += parts
            self._size += n + 2 * len(parts)
            self._skip_fu = False
        else:  # 0, 30, 31 undefined; 25-27, 29 interleaved mode only
            return self._bad()


class H265Depacketizer(_NalDepacketizer):
    """RFC 7798 without DONL: single NAL units (0-47), aggregation packets (48),
    fragmentation units (49). PACI (50) and the undefined types are counted as malformed, as
    is a payload header with TemporalId 0 (forbidden; FFmpeg refuses it too)."""

    __slots__ = ()
    _FU_MASK, _FU_TYPE, _FU_AT = 0x7E, 49 << 1, 2

    def _open_fu(self, b0: int, b1: int, fu: int) -> None:
        nt = fu & 0x3F
        self._parts.append(START + bytes(((b0 & 0x81) | (nt << 1), b1)))
        self._in_fu = not fu & 0x40
        self._skip_fu = False
        if nt < 32:
            self._vcl = True
            if 16 <= nt <= 21:
                self._key = True

    def _add(self, p: bytes) -> None:
        n = len(p)
        if n < 2 or not p[1] & 7:
            return self._bad()
        b0 = p[0]
        t = (b0 >> 1) & 0x3F
        if t == 49:  # FU: payload header, FU header (S, E, type)
            if n < 3:
                return self._bad()
            fu = p[2]
            if fu & 0x80:
                if self._in_fu:
                    return self._bad()
                self._open_fu(b0, p[1], fu)
                self._parts.append(p[3:])
            elif self._in_fu:
                self._parts.append(p[3:])
                if fu & 0x40:
                    self._in_fu = False
            elif self._skip_fu:
                self._damaged = True
                self._parts = []
                return
            else:
                return self._bad()
            self._size += n
        elif t < 48:
            if self._in_fu:
                return self._bad()
            self._parts += (START, p)
            self._size += n + 4
            self._skip_fu = False
            if t < 32:
                self._vcl = True
                if 16 <= t <= 21:
                    self._key = True
        elif t == 48:  # AP: 16-bit size before each NAL unit (no DONL, no DOND)
            if self._in_fu:
                return self._bad()
            parts: list[bytes] = []
            q = 2
            while n - q > 2:
                size = (p[q] << 8) | p[q + 1]
                q += 2
                if size < 2 or q + size > n:
                    return self._bad()
                nt = (p[q] >> 1) & 0x3F
                if nt < 32:
                    self._vcl = True
                    if 16 <= nt <= 21:
                        self._key = True
                parts += (START, p[q : q + size])
                q += size
            self._parts += parts
            self._size += n + 2 * len(parts)
            self._skip_fu = False
        else:  # 50 PACI, 51-63 undefined
            return self._bad()


# --- AAC (RFC 3640) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AacParams:
    """The AU-header layout and frame duration of an MPEG4-GENERIC stream (RFC 3640 4.1)."""

    size_length: int = 13
    index_length: int = 3
    index_delta_length: int = 3
    cts_delta_length: int = 0
    dts_delta_length: int = 0
    random_access_indication: bool = False
    stream_state_indication: int = 0
    auxiliary_data_size_length: int = 0
    frame_samples: int = 1024  # RTP clock ticks per AU: constantDuration, else 1024


_AAC_MODES = {"aac-hbr": (13, 3, 3), "aac-lbr": (6, 2, 2)}


def aac_params(fmtp: dict[str, str]) -> AacParams:
    """The layout from fmtp; the mode's defaults where sizeLength etc. are missing (RFC 3640
    requires them, a few cameras leave them out). UnsupportedStream for another mode or
    values out of range."""
    f = {k.lower(): v.strip() for k, v in fmtp.items()}
    mode = f.get("mode", "").lower()
    if mode not in _AAC_MODES:
        raise UnsupportedStream(f"MPEG4-GENERIC mode {f.get('mode')!r}: only AAC-hbr, AAC-lbr")
    size_d, index_d, delta_d = _AAC_MODES[mode]

    def num(key: str, default: int, low: int, high: int) -> int:
        raw = f.get(key, "")
        try:
            v = int(raw) if raw else default
        except ValueError:
            raise UnsupportedStream(f"{key}={raw!r}: not a number") from None
        if not low <= v <= high:
            raise UnsupportedStream(f"{key}={v}: outside {low}-{high}")
        return v

    return AacParams(
        size_length=num("sizelength", size_d, 1, 32),
        index_length=num("indexlength", index_d, 0, 32),
        index_delta_length=num("indexdeltalength", delta_d, 0, 32),
        cts_delta_length=num("ctsdeltalength", 0, 0, 32),
        dts_delta_length=num("dtsdeltalength", 0, 0, 32),
        random_access_indication=bool(num("randomaccessindication", 0, 0, 1)),
        stream_state_indication=num("streamstateindication", 0, 0, 32),
        auxiliary_data_size_length=num("auxiliarydatasizelength", 0, 0, 32),
        frame_samples=num("constantduration", 1024, 1, 1 << 20),
    )


class AacDepacketizer(_Sequenced):
    """RFC 3640 AAC-hbr / AAC-lbr: the AU-header section (AU-headers-length in bits, then per
    AU its size and index or index delta, and the optional CTS, DTS, RAP and stream-state
    fields), an optional auxiliary section, then the AUs back to back. Several AUs in a packet
    come out as several units, the n-th at the packet's timestamp + n * frame_samples (index
    deltas counted, interleaving not undone). One AU larger than its packet is a fragment: the
    fragments are joined until the size its header announces is reached; one that falls short
    at the marker, a timestamp change or a loss is dropped."""

    __slots__ = (
        "_after_loss",
        "_frag",
        "_frag_bad",
        "_frag_got",
        "_frag_total",
        "_frag_ts",
        "_frag_uts",
        "_hbr",
        "malformed",
        "params",
    )

    def __init__(self, clock_rate: int, params: AacParams | None = None) -> None:
        super().__init__(clock_rate)
        self.params = params or AacParams()
        self._hbr = self.params == AacParams(frame_samples=self.params.frame_samples)
        self.malformed = 0
        self._after_loss = False
        self._frag: list[bytes] | None = None  # an AU being joined from fragments
        self._frag_bad = False
        self._frag_got = 0
        self._frag_total = 0
        self._frag_ts = 0
        self._frag_uts = 0

    def push(self, pkt: RtpPacket) -> list[AccessUnit]:
        seq = pkt.seq
        # the next packet of the same source: the only check on the common path
        if (pkt.ssrc != self._ssrc or (seq - self._seq) & 0xFFFF != 1) and not self._accept(pkt):
            return []
        self._seq = seq
        p = pkt.payload
        parsed = self._headers(p)
        if parsed is None:
            self.malformed += 1
            self._frag_bad = True
            self._after_loss = True
            if pkt.marker:
                self._end_frag()
            return []
        aus, pos = parsed
        ts = pkt.timestamp
        avail = len(p) - pos
        if len(aus) == 1 and aus[0][1] > avail:
            return self._fragment(p, pos, aus[0][1], ts, pkt.marker)
        out: list[AccessUnit] = []
        if self._frag is not None:  # a fragmented AU that never reached its size
            self._end_frag()
        if sum(size for _, size in aus) > avail:
            self.malformed += 1
            self._after_loss = True
            return out
        base = self._unwrapper.unwrap(ts)
        step = self.params.frame_samples
        for serial, size in aus:
            if size:
                after, self._after_loss = self._after_loss, False
                out.append(AccessUnit(p[pos : pos + size], base + serial * step, True, after))
                pos += size
        return out

    def flush(self) -> list[AccessUnit]:
        """Nothing is held but an unfinished fragmented AU, which is dropped."""
        if self._frag is not None:
            self._end_frag()
        return []

    def _fragment(self, p: bytes, pos: int, total: int, ts: int, marker: bool) -> list[AccessUnit]:
        if self._frag is not None and (ts != self._frag_ts or total != self._frag_total):
            self._end_frag()
        if self._frag is None:
            self._frag = []
            self._frag_total = total
            self._frag_got = 0
            self._frag_ts = ts
            self._frag_uts = self._unwrapper.unwrap(ts)
            self._frag_bad = total > MAX_AU_SIZE
        got = self._frag_got + len(p) - pos
        self._frag_got = got
        if not self._frag_bad:
            self._frag.append(p[pos:])
        if got < total:
            if marker:
                self._end_frag()
            return []
        if got > total or self._frag_bad:
            self._end_frag()
            return []
        after, self._after_loss = self._after_loss, False
        au = AccessUnit(b"".join(self._frag), self._frag_uts, True, after)
        self._frag = None
        return [au]

    def _end_frag(self) -> None:
        """The fragmented AU ends short (or damaged): dropped."""
        if self._frag is not None:
            self.dropped += 1
            self._after_loss = True
        self._frag = None
        self._frag_bad = False

    def _gap(self) -> None:
        self._frag_bad = True
        self._after_loss = True

    def _headers(self, p: bytes) -> tuple[list[tuple[int, int]], int] | None:
        """(serial, size) of each AU and where the AUs begin; None if the sections overrun."""
        n = len(p)
        if n < 2:
            return None
        hbits = (p[0] << 8) | p[1]
        hbytes = (hbits + 7) >> 3
        pos = 2 + hbytes
        if not hbits or pos > n:
            return None
        pr = self.params
        if self._hbr and not hbits & 15:  # AAC-hbr's 16-bit headers, the common case
            aus = []
            serial = -1
            for q in range(2, pos, 2):
                v = (p[q] << 8) | p[q + 1]
                serial += 1 if q == 2 else (v & 7) + 1
                aus.append((serial, v >> 3))
        else:
            left = hbits
            bits = int.from_bytes(p[2:pos], "big") >> (hbytes * 8 - hbits)

            def take(width: int) -> int:
                nonlocal left
                if width > left:
                    raise IndexError
                left -= width
                return (bits >> left) & ((1 << width) - 1)

            aus = []
            serial = 0
            try:
                while left:
                    size = take(pr.size_length)
                    if aus:
                        serial += take(pr.index_delta_length) + 1
                    else:
                        take(pr.index_length)
                    if pr.cts_delta_length and take(1):
                        take(pr.cts_delta_length)
                    if pr.dts_delta_length and take(1):
                        take(pr.dts_delta_length)
                    if pr.random_access_indication:
                        take(1)
                    take(pr.stream_state_indication)
                    aus.append((serial, size))
            except IndexError:
                return None
        if pr.auxiliary_data_size_length:
            width = pr.auxiliary_data_size_length
            nb = (width + 7) >> 3
            if pos + nb > n:
                return None
            aux = int.from_bytes(p[pos : pos + nb], "big") >> (nb * 8 - width)
            pos += (width + aux + 7) >> 3
            if pos > n:
                return None
        return aus, pos


# --- SDP ---------------------------------------------------------------------------------------


def depacketizer_for(encoding: str, fmtp: dict[str, str], clock_rate: int) -> Depacketizer | None:
    """A depacketizer for an SDP media's rtpmap encoding and fmtp parameters.

    None for an encoding not handled here (the track is left alone); UnsupportedStream (a
    ValueError), with the reason, for a handled encoding whose parameters ask for what is not
    done: H.264 interleaved mode (packetization-mode=2), H.265 with DONL, an MPEG4-GENERIC mode
    other than AAC-hbr/AAC-lbr, a bad number or clock rate.
    """
    f = {k.lower(): v.strip() for k, v in fmtp.items()}
    enc = encoding.upper()
    if enc not in ("H264", "H265", "MPEG4-GENERIC"):
        return None
    if clock_rate <= 0:
        raise UnsupportedStream(f"{encoding}: clock rate {clock_rate}")
    if enc == "H264":
        mode = f.get("packetization-mode", "0") or "0"
        if mode not in ("0", "1"):
            raise UnsupportedStream(f"H264 packetization-mode={mode}: only 0 and 1")
        return H264Depacketizer(clock_rate)
    if enc == "H265":
        for key in ("sprop-max-don-diff", "sprop-depack-buf-nalus"):
            raw = f.get(key, "0") or "0"
            try:
                value = int(raw)
            except ValueError:
                raise UnsupportedStream(f"H265 {key}={raw!r}: not a number") from None
            if value:
                raise UnsupportedStream(f"H265 {key}={value}: DONL is not supported")
        return H265Depacketizer(clock_rate)
    return AacDepacketizer(clock_rate, aac_params(f))


def _b64_list(value: str) -> list[bytes] | None:
    out = []
    for item in value.split(","):
        item = "".join(item.split())
        if not item:
            continue
        item = item.rstrip("=")
        try:
            nal = base64.b64decode(item + "=" * (-len(item) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
        if nal:
            out.append(nal)
    return out


def h264_parameter_sets(fmtp: dict[str, str]) -> list[bytes]:
    """The NAL units of sprop-parameter-sets (base64, comma-separated; missing padding
    forgiven); [] if any of them is not base64."""
    return _b64_list(fmtp.get("sprop-parameter-sets", "")) or []


def h265_parameter_sets(fmtp: dict[str, str]) -> list[bytes]:
    """sprop-vps, sprop-sps, sprop-pps, in that order (each may list several); [] if any of
    them is not base64."""
    out: list[bytes] = []
    for key in ("sprop-vps", "sprop-sps", "sprop-pps"):
        nals = _b64_list(fmtp.get(key, ""))
        if nals is None:
            return []
        out += nals
    return out


def aac_config(fmtp: dict[str, str]) -> bytes:
    """The AudioSpecificConfig from config= (hex); ValueError if missing, empty or not hex."""
    raw = "".join(fmtp.get("config", "").split())
    if not raw:
        raise ValueError("no config= in the fmtp")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise ValueError(f"config={raw!r}: not hex") from None


def annexb(nals: list[bytes]) -> bytes:
    """NAL units in Annex B, 00 00 00 01 before each (the form FFmpeg's demuxer hands out)."""
    return b"".join(b for nal in nals for b in (START, nal))
