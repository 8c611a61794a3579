"""The muxer's stream parameters for a camera read by the built-in RTSP client.

A segment's output streams are made from template streams (`add_stream_from_template`), as
when FFmpeg's RTSP demuxer reads the camera. Here the templates come from FFmpeg itself: the
session's first keyframe and first audio frame are wrapped in a few MPEG-TS packets held in
memory and opened with PyAV, whose stream probe fills in what the muxer needs (width, height,
profile, pixel format, the video's parameter sets) exactly as it would for the camera. What
MPEG-TS cannot carry, AAC's AudioSpecificConfig, is set on each output stream (see
`apply_overrides`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av

TS_PACKET = 188
PAT_PID, PMT_PID, VIDEO_PID, AUDIO_PID = 0x0000, 0x1000, 0x0100, 0x0101
STREAM_TYPE = {"h264": 0x1B, "hevc": 0x24, "aac": 0x0F}
ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
              7350)  # fmt: skip


def _crc32_mpeg(data: bytes) -> int:
    """CRC-32/MPEG-2 (not zlib's reflected CRC-32): FFmpeg drops a PSI section that fails it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _section(table_id: int, ident: int, body: bytes) -> bytes:
    head = bytes([table_id]) + (0xB000 | (len(body) + 9)).to_bytes(2, "big")
    head += ident.to_bytes(2, "big") + b"\xc1\x00\x00"
    sec = head + body
    return b"\x00" + sec + _crc32_mpeg(sec).to_bytes(4, "big")  # pointer field first


def _packets(pid: int, payload: bytes) -> list[bytes]:
    """A PES or PSI payload in 188-byte packets; the last is padded by an adaptation field."""
    out = []
    pos, cc = 0, 0
    room = TS_PACKET - 4
    while True:
        head = bytes([0x47]) + ((0x4000 if pos == 0 else 0) | pid).to_bytes(2, "big")
        chunk = payload[pos : pos + room]
        if len(chunk) == room:
            out.append(head + bytes([0x10 | cc]) + chunk)
        else:
            pad = room - len(chunk)  # the adaptation field: its length byte, flags, stuffing
            field = bytes([pad - 1]) + (b"\x00" + b"\xff" * (pad - 2) if pad > 1 else b"")
            out.append(head + bytes([0x30 | cc]) + field + chunk)
        pos += len(chunk)
        cc = (cc + 1) & 0x0F
        if pos >= len(payload):
            return out


def _pts(value: int) -> bytes:
    v = value & ((1 << 33) - 1)
    return bytes([0x21 | ((v >> 29) & 0x0E), (v >> 22) & 0xFF, 0x01 | ((v >> 14) & 0xFE),
                  (v >> 7) & 0xFF, 0x01 | ((v << 1) & 0xFE)])  # fmt: skip


def _pes(stream_id: int, pts: int, data: bytes) -> bytes:
    length = len(data) + 8
    size = length.to_bytes(2, "big") if length <= 0xFFFF else b"\x00\x00"
    return b"\x00\x00\x01" + bytes([stream_id]) + size + b"\x80\x80\x05" + _pts(pts) + data


def adts(config: bytes, frame: bytes) -> bytes:
    """One raw AAC frame with the ADTS header its AudioSpecificConfig gives (the core object
    type for HE-AAC: the config itself is set on the output stream)."""
    if len(config) < 2:
        raise ValueError("AudioSpecificConfig too short")
    aot = config[0] >> 3
    rate_index = ((config[0] & 0x07) << 1) | (config[1] >> 7)
    channels = (config[1] >> 3) & 0x0F
    profile = (aot - 1) if 1 <= aot <= 4 else 1  # AAC LC as the core of SBR/PS
    size = len(frame) + 7
    if rate_index > 12 or size >= 1 << 13:
        raise ValueError("AAC frame cannot be put in ADTS")
    return bytes([0xFF, 0xF1, (profile << 6) | (rate_index << 2) | (channels >> 2),
                  ((channels & 3) << 6) | (size >> 11), (size >> 3) & 0xFF,
                  ((size & 7) << 5) | 0x1F, 0xFC]) + frame  # fmt: skip


def mpegts(codec: str, keyframe: bytes, audio: tuple[bytes, bytes] | None) -> bytes:
    """A transport stream holding one video keyframe (Annex B) and, if given, one AAC frame
    (AudioSpecificConfig, raw frame): enough for FFmpeg to probe both streams."""
    streams = [(STREAM_TYPE[codec], VIDEO_PID)]
    if audio is not None:
        streams.append((STREAM_TYPE["aac"], AUDIO_PID))
    pmt_body = (0xE000 | VIDEO_PID).to_bytes(2, "big") + b"\xf0\x00"
    for kind, pid in streams:
        pmt_body += bytes([kind]) + (0xE000 | pid).to_bytes(2, "big") + b"\xf0\x00"
    out = _packets(PAT_PID, _section(0x00, 1, (1).to_bytes(2, "big") +
                                     (0xE000 | PMT_PID).to_bytes(2, "big")))  # fmt: skip
    out += _packets(PMT_PID, _section(0x02, 1, pmt_body))
    out += _packets(VIDEO_PID, _pes(0xE0, 0, keyframe))
    if audio is not None:
        frame = adts(*audio)
        for k in range(2):  # the probe wants more than one frame to trust the parser
            out += _packets(AUDIO_PID, _pes(0xC0, k * 1024, frame))
    # A second copy of the keyframe ends the first PES: FFmpeg hands a PES out at the next one.
    out += _packets(VIDEO_PID, _pes(0xE0, 3600, keyframe))
    return b"".join(out)


@dataclass
class Templates:
    """The session's template streams (the container must outlive them) and what each output
    stream is given on top of what it copies."""

    container: av.container.InputContainer
    video: av.VideoStream
    audio: av.AudioStream | None
    overrides: dict[int, tuple[bytes, int]]
    """Per template stream index: (extradata, sample rate) set on each output stream."""


def make_templates(codec: str, keyframe: bytes, video_clock: int,
                   audio: tuple[bytes, bytes, int] | None) -> Templates:  # fmt: skip
    """From the first keyframe (Annex B, parameter sets included) and the first AAC frame
    (AudioSpecificConfig, frame, clock rate). Raises av.error.FFmpegError or ValueError if
    FFmpeg cannot make sense of them."""
    data = mpegts(codec, keyframe, None if audio is None else (audio[0], audio[1]))
    container = av.open(io.BytesIO(data), format="mpegts")
    videos = container.streams.video
    if not videos or videos[0].codec_context.width <= 0:
        container.close()
        raise ValueError("the first keyframe does not say the picture's size")
    video = videos[0]
    video.time_base = Fraction(1, video_clock)
    found = container.streams.audio
    a = found[0] if audio is not None and found else None
    overrides = {}
    if a is not None and audio is not None:
        a.time_base = Fraction(1, audio[2])
        overrides[a.index] = (audio[0], audio[2])
    return Templates(container, video, a, overrides)


def apply_overrides(template: av.stream.Stream, out: av.stream.Stream,
                    overrides: dict[int, tuple[bytes, int]]) -> None:  # fmt: skip
    """Before the segment's first packet: PyAV hands these to the muxer when it starts."""
    o = overrides.get(template.index)
    if o is not None:
        extradata, rate = o
        out.codec_context.extradata = extradata
        out.codec_context.sample_rate = rate
