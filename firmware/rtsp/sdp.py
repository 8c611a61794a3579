"""SDP (RFC 8866) as cameras write it for RTSP DESCRIBE: just what setting up tracks needs.

Lenient where cameras differ harmlessly (unknown lines, missing rtpmap for a stream nobody
sets up), strict where the text cannot be an SDP at all, so a camera's garbage is a clear
failure and not a half-parsed session.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

_LINE = re.compile(r"[a-zA-Z]=")
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://")

_STATIC: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, 1),
    18: ("G729", 8000, 1),
    26: ("JPEG", 90000, None),
    31: ("H261", 90000, None),
    32: ("MPV", 90000, None),
    33: ("MP2T", 90000, None),
    34: ("H263", 90000, None),
}
"""RFC 3551's static payload types, which cameras often send without an rtpmap."""


class SdpError(ValueError):
    """The camera's session description cannot be used."""


class MediaKind(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"
    OTHER = "other"


@dataclass(frozen=True)
class MediaDesc:
    """One m= section, reduced to its first (preferred) payload format."""

    kind: MediaKind
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None
    fmtp: dict[str, str] = field(hash=False)
    control: str


@dataclass(frozen=True)
class SessionDesc:
    control: str | None
    media: tuple[MediaDesc, ...]


@dataclass
class _Draft:
    kind: MediaKind
    payload_type: int
    line_no: int
    rtpmap: str | None = None
    fmtp: str | None = None
    control: str | None = None


def parse_sdp(text: str) -> SessionDesc:
    """Parse a DESCRIBE answer's body; raise SdpError on anything that is not an SDP."""
    session_control: str | None = None
    drafts: list[_Draft] = []
    seen = False
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not _LINE.match(line):
            raise SdpError(f"SDP line {no} is not of the form x=value: {_shorten(line)!r}")
        seen = True
        kind, value = line[0], line[2:]
        if kind == "m":
            drafts.append(_media_line(value, no))
        elif kind == "a":
            name, _, arg = value.partition(":")
            name = name.strip().lower()
            if name == "control":
                if drafts:
                    drafts[-1].control = arg.strip()
                else:
                    session_control = arg.strip()
            elif drafts and name in ("rtpmap", "fmtp"):
                pt_text, _, rest = arg.strip().partition(" ")
                if pt_text.strip().isdigit() and int(pt_text) == drafts[-1].payload_type:
                    setattr(drafts[-1], name, rest.strip())
    if not seen:
        raise SdpError("the session description is empty")
    return SessionDesc(session_control, tuple(_finish(d) for d in drafts))


def _media_line(value: str, no: int) -> _Draft:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"SDP line {no}: media line needs media, port, proto and a format")
    media, _port, proto, fmt = parts[0], parts[1], parts[2], parts[3]
    kind = {"video": MediaKind.VIDEO, "audio": MediaKind.AUDIO}.get(media.lower(), MediaKind.OTHER)
    if fmt.isdigit() and int(fmt) < 128:
        return _Draft(kind, int(fmt), no)
    if kind is MediaKind.OTHER or "RTP" not in proto.upper():
        return _Draft(kind, -1, no)
    raise SdpError(f"SDP line {no}: {media} format {_shorten(fmt)!r} is not an RTP payload type")


def _finish(d: _Draft) -> MediaDesc:
    encoding, clock, channels = _STATIC.get(d.payload_type, ("", 0, None))
    if d.rtpmap is not None:
        name, slash, rest = d.rtpmap.partition("/")
        clock_text, _, chan_text = rest.partition("/")
        if not name.strip() or not slash or not clock_text.strip().isdigit():
            raise SdpError(f"SDP line {d.line_no}+: bad rtpmap {_shorten(d.rtpmap)!r}")
        encoding, clock = name.strip().upper(), int(clock_text)
        channels = int(chan_text) if chan_text.strip().isdigit() else None
    fmtp: dict[str, str] = {}
    for item in (d.fmtp or "").split(";"):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            fmtp[key.strip().lower()] = val.strip()
    control = d.control if d.control is not None else "*"
    return MediaDesc(d.kind, d.payload_type, encoding, clock, channels, fmtp, control)


def resolve_control(base: str, control: str) -> str:
    """A control attribute as a request URL (RFC 2326 C.1.1), the way FFmpeg and cameras do it.

    "*" and "" mean the base itself. A relative control is appended to the base with one "/"
    between, not resolved as RFC 3986 would: cameras send a Content-Base without the trailing
    slash (or with a query, e.g. Dahua's `...?channel=1&subtype=0/`) and expect exactly that.
    A control starting with "/" replaces the base's path.
    """
    control = control.strip()
    if control in ("", "*"):
        return base
    if _SCHEME.match(control):
        return control
    if control.startswith("/"):
        m = _SCHEME.match(base)
        if m:
            slash = base.find("/", m.end())
            origin = base if slash < 0 else base[:slash]
            return origin + control
    return base + control if base.endswith("/") else f"{base}/{control}"


def _shorten(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
