"""Frame-number SEI messages: building, inserting and reading them.

Every video access unit the simulator sends carries one "user data unregistered" SEI
message (payloadType 5) whose payload is::

    SEI_UUID (16 bytes) | frame number (u64 big-endian) | sender wall clock in us (u64 BE)

so a recording can be checked for lost or duplicated frames by demuxing alone. Pure
Python on purpose: the checker must work where GStreamer is not installed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

# Fixed identifier of the simulator's SEI payload; never change it, or older recordings stop
# being readable. It is ASCII "nvrpair-hil-frn1": no zero bytes, so it never needs
# emulation prevention and can be searched for verbatim in an escaped NAL unit.
SEI_UUID = b"nvrpair-hil-frn1"
PAYLOAD_TYPE_USER_DATA_UNREGISTERED = 5
_PAYLOAD = struct.Struct(">QQ")
PAYLOAD_SIZE = len(SEI_UUID) + _PAYLOAD.size

H264_SEI = 6
H265_PREFIX_SEI = 39
START_CODE = b"\x00\x00\x00\x01"

_CODEC_ALIASES = {"h264": "h264", "avc": "h264", "h265": "h265", "hevc": "h265"}


def normalize_codec(codec: str) -> str:
    """Map the spellings used by GStreamer, FFmpeg and the CLI onto 'h264' / 'h265'."""
    try:
        return _CODEC_ALIASES[codec.lower()]
    except KeyError:
        raise ValueError(f"unsupported codec {codec!r}") from None


def nal_type(codec: str, header: int) -> int:
    """NAL unit type from the first header byte."""
    return header & 0x1F if codec == "h264" else (header >> 1) & 0x3F


def is_vcl(codec: str, header: int) -> bool:
    """Whether the NAL unit carries slice data (the SEI must precede the first of these)."""
    t = nal_type(codec, header)
    return 1 <= t <= 5 if codec == "h264" else t <= 31


def add_emulation_prevention(rbsp: bytes) -> bytes:
    """Escape 0x0000{00,01,02,03} so the payload cannot imitate a start code."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def remove_emulation_prevention(ebsp: bytes) -> bytes:
    """Undo add_emulation_prevention (drop every 0x03 that follows two zero bytes)."""
    if b"\x00\x00\x03" not in ebsp:
        return ebsp
    out = bytearray()
    zeros = 0
    for b in ebsp:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def build_sei_nal(codec: str, frame: int, sender_us: int) -> bytes:
    """One SEI NAL unit (header included, no start code) stamping `frame`."""
    codec = normalize_codec(codec)
    header = bytes([H264_SEI]) if codec == "h264" else bytes([H265_PREFIX_SEI << 1, 1])
    rbsp = (
        bytes([PAYLOAD_TYPE_USER_DATA_UNREGISTERED, PAYLOAD_SIZE])
        + SEI_UUID
        + _PAYLOAD.pack(frame, sender_us)
        + b"\x80"  # rbsp_trailing_bits
    )
    return header + add_emulation_prevention(rbsp)


def first_vcl_offset(codec: str, au: bytes) -> int:
    """Offset of the start code of the first slice NAL in an Annex B access unit.

    Returns len(au) when there is none. A four-byte start code is reported from its
    leading zero so that an insertion there leaves the previous NAL untouched.
    """
    pos = au.find(b"\x00\x00\x01")
    while pos >= 0:
        hdr = pos + 3
        if hdr < len(au) and is_vcl(codec, au[hdr]):
            return pos - 1 if pos > 0 and au[pos - 1] == 0 else pos
        pos = au.find(b"\x00\x00\x01", hdr)
    return len(au)


def insert_sei(
    codec: str, au: bytes, frame: int, sender_us: int, offset: int | None = None
) -> bytes:
    """Annex B access unit with the frame-number SEI put just before its first slice.

    `offset` (from first_vcl_offset) lets callers that send the same access unit many
    times skip the scan.
    """
    codec = normalize_codec(codec)
    if offset is None:
        offset = first_vcl_offset(codec, au)
    return au[:offset] + START_CODE + build_sei_nal(codec, frame, sender_us) + au[offset:]


def parse_sei_nal(codec: str, nal: bytes) -> tuple[int, int] | None:
    """(frame, sender_us) if `nal` is an SEI NAL unit carrying our payload, else None."""
    codec = normalize_codec(codec)
    if not nal:
        return None
    if codec == "h264":
        if nal[0] & 0x1F != H264_SEI:
            return None
        body = nal[1:]
    else:
        if len(nal) < 2 or (nal[0] >> 1) & 0x3F != H265_PREFIX_SEI:
            return None
        body = nal[2:]
    if SEI_UUID not in body:  # cheap reject before unescaping foreign SEI messages
        return None
    rbsp = remove_emulation_prevention(body)
    # Walk the sei_message()s: several may share one NAL unit.
    i = 0
    while i < len(rbsp) and rbsp[i] != 0x80:
        ptype = 0
        while i < len(rbsp) and rbsp[i] == 0xFF:
            ptype += 255
            i += 1
        if i >= len(rbsp):
            return None
        ptype += rbsp[i]
        i += 1
        psize = 0
        while i < len(rbsp) and rbsp[i] == 0xFF:
            psize += 255
            i += 1
        if i >= len(rbsp):
            return None
        psize += rbsp[i]
        i += 1
        payload = rbsp[i : i + psize]
        if len(payload) < psize:
            return None
        if (
            ptype == PAYLOAD_TYPE_USER_DATA_UNREGISTERED
            and psize >= PAYLOAD_SIZE
            and payload.startswith(SEI_UUID)
        ):
            return _PAYLOAD.unpack_from(payload, len(SEI_UUID))
        i += psize
    return None


def iter_annexb_nals(data: bytes) -> Iterator[bytes]:
    """NAL units of an Annex B byte stream (trailing zero bytes stripped)."""
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        start = pos + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        yield data[start:end].rstrip(b"\x00")
        pos = nxt


def iter_length_prefixed_nals(data: bytes, length_size: int = 4) -> Iterator[bytes]:
    """NAL units of an MP4 sample; stops quietly at a truncated unit."""
    pos = 0
    n = len(data)
    while pos + length_size <= n:
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > n:
            return
        yield data[pos : pos + size]
        pos += size


def find_stamp(codec: str, nals: Iterator[bytes]) -> tuple[int, int] | None:
    """The first frame-number stamp among the NAL units of one access unit."""
    codec = normalize_codec(codec)
    for nal in nals:
        if not nal:
            continue
        if is_vcl(codec, nal[0]):
            return None  # SEI is always placed before the first slice
        found = parse_sei_nal(codec, nal)
        if found is not None:
            return found
    return None
