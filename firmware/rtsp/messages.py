"""RTSP/1.0 framing: requests out; an incremental parser for what a camera sends back.

A camera's stream over TCP mixes responses, requests of its own and `$`-interleaved RTP/RTCP
frames in any order and split anywhere. The parser walks what it is fed with index arithmetic,
because during PLAY it sees some 500 frames a second per camera: a channel with a sink (the
track's depacketizer) has its frames taken apart in place, in one call per run of them; other
frames are copied out as events. What it is fed is kept as immutable bytes, so a sink may hold
views of it.

Everything it buffers is bounded (MAX_HEAD, MAX_BODY, one frame of at most 64 KiB), and
anything that cannot start a message or frame fails the stream: there is no resynchronising
on a TCP stream that is out of step.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

MAX_HEAD: Final = 16 * 1024
MAX_BODY: Final = 64 * 1024
MAX_HEADER_LINES: Final = 100
MAX_FRAME: Final = 4 + 0xFFFF

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_LINES = re.compile(r"\r?\n")
_PLAUSIBLE_START = re.compile(rb"RTSP/|[A-Z][A-Z0-9_\-]{0,31}(?: |\Z)")
"""What may begin a message (a status line or a request line), also when cut short."""
_STATUS = re.compile(r"RTSP/(\d)\.(\d) (\d{3})(?: (.*))?")
_REQUEST = re.compile(r"([A-Z][A-Z0-9_\-]*) (\S+) RTSP/\d\.\d")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


class Method(enum.Enum):
    OPTIONS = "OPTIONS"
    DESCRIBE = "DESCRIBE"
    SETUP = "SETUP"
    PLAY = "PLAY"
    GET_PARAMETER = "GET_PARAMETER"
    TEARDOWN = "TEARDOWN"


@dataclass(frozen=True, slots=True)
class Interleaved:
    """One `$` frame: an RTP or RTCP packet on an interleaved channel."""

    channel: int
    data: bytes

    def __repr__(self) -> str:
        return f"Interleaved(channel={self.channel}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class Headers:
    """Header fields in the order received; names compared case-insensitively."""

    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.fields:
            if key.lower() == name:
                return value
        return None

    def get_all(self, name: str) -> tuple[str, ...]:
        name = name.lower()
        return tuple(value for key, value in self.fields if key.lower() == name)


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes

    @property
    def cseq(self) -> int | None:
        return _cseq(self.headers)


@dataclass(frozen=True)
class ServerRequest:
    """A request the camera sends us (ANNOUNCE, SET_PARAMETER, OPTIONS, TEARDOWN...)."""

    method: str
    uri: str
    headers: Headers
    body: bytes


@dataclass(frozen=True)
class ParseFailure:
    """The stream cannot be read further; text for humans."""

    text: str


Event = Interleaved | Response | ServerRequest | ParseFailure


class FrameSink(Protocol):
    def take_frames(self, buf: bytes, pos: int, n: int, out: list[Any]) -> int:
        """Take the complete `$` frames of the channel of the one at `pos` (there are at least
        its four header octets), appending what they make to `out`; return the position after
        the last one taken, `pos` if the first is incomplete."""
        ...


def _cseq(headers: Headers) -> int | None:
    text = headers.get("CSeq")
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() and len(text) <= 18 else None


def check_token(text: str, what: str) -> str:
    """Refuse CR, LF and other control characters: no header or line injection."""
    if _UNSAFE.search(text):
        raise ValueError(f"{what} contains a control character")
    return text


def build_request(
    method: Method, uri: str, cseq: int, headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """One request without a body, CSeq first, as every RTSP server expects."""
    if not uri or " " in uri:
        raise ValueError("request URI is empty or contains a space")
    check_token(uri, "request URI")
    lines = [f"{method.value} {uri} RTSP/1.0", f"CSeq: {cseq}"]
    for name, value in headers:
        lines.append(f"{check_token(name, 'header name')}: {check_token(value, name)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def build_response(status: int, reason: str, cseq: str | None) -> bytes:
    """An answer to a camera's own request, echoing its CSeq."""
    lines = [f"RTSP/1.0 {status} {reason}"]
    if cseq is not None:
        lines.append(f"CSeq: {check_token(cseq.strip(), 'CSeq')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii", "replace")


class Parser:
    """Incremental: `feed` any split of the stream, get the same events in the same order."""

    __slots__ = ("_failed", "_rest", "sinks")

    def __init__(self) -> None:
        self._rest = b""
        self._failed = False
        self.sinks: dict[int, FrameSink] = {}
        """Per interleaved channel: who takes its frames instead of an Interleaved event."""

    @property
    def buffered(self) -> int:
        return len(self._rest)

    @property
    def failed(self) -> bool:
        return self._failed

    def feed(self, data: bytes, out: list[Any]) -> int:
        """Append the events `data` completes to `out`; return how many are messages.

        The count lets a caller in PLAY pass `out` through untouched when it holds only media.
        """
        if self._failed:
            return 0
        rest = self._rest
        buf = rest + data if rest else bytes(data)
        n = len(buf)
        pos = 0
        messages = 0
        append = out.append
        sinks = self.sinks
        while pos < n:
            if buf[pos] == 0x24:  # '$'
                if pos + 4 > n:
                    break
                sink = sinks.get(buf[pos + 1]) if sinks else None
                if sink is not None:
                    taken = sink.take_frames(buf, pos, n, out)
                    if taken == pos:
                        break
                    pos = taken
                    continue
                end = pos + 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
                if end > n:
                    break
                append(Interleaved(buf[pos + 1], buf[pos + 4 : end]))
                pos = end
                continue
            if buf[pos] in (13, 10):  # blank lines between messages are allowed
                pos += 1
                continue
            step, event = self._message(buf, pos, n)
            if event is None:
                break
            append(event)
            messages += 1
            if type(event) is ParseFailure:
                self._failed = True
                pos = n
                break
            pos = step
        self._rest = buf[pos:] if pos else buf
        return messages

    def _message(self, buf: bytes, pos: int, n: int) -> tuple[int, Event | None]:
        """(position after the message, the message) or (pos, None) if incomplete."""
        if not _PLAUSIBLE_START.match(buf, pos, min(n, pos + 33)):
            return n, ParseFailure("camera sent bytes that start neither a response nor a $ frame")
        end = _END_OF_HEAD.search(buf, pos, min(n, pos + MAX_HEAD + 4))
        if end is None and n - pos <= MAX_HEAD + 3:
            return pos, None
        if end is None or end.start() - pos > MAX_HEAD:
            return n, ParseFailure(f"camera sent a message head over {MAX_HEAD} bytes")
        text = buf[pos : end.start()].decode("utf-8", "surrogateescape")
        lines = _LINES.split(text)
        if len(lines) - 1 > MAX_HEADER_LINES:
            return n, ParseFailure(f"camera sent more than {MAX_HEADER_LINES} header lines")
        fields: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and fields:  # obsolete line folding
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {line.strip()}")
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or " " in name:
                return n, ParseFailure("camera sent a malformed header line")
            fields.append((name, value.strip()))
        headers = Headers(tuple(fields))
        length_text = headers.get("Content-Length")
        length = 0
        if length_text is not None:
            length_text = length_text.strip()
            if not length_text.isdigit() or not length_text.isascii():
                return n, ParseFailure("camera sent a malformed Content-Length")
            if len(length_text) > 9 or int(length_text) > MAX_BODY:
                return n, ParseFailure(f"camera sent a body over {MAX_BODY} bytes")
            length = int(length_text)
        body_end = end.end() + length
        if body_end > n:
            return pos, None
        body = buf[end.end() : body_end]
        first = lines[0]
        status = _STATUS.fullmatch(first)
        if status is not None:
            return body_end, Response(int(status[3]), status[4] or "", headers, body)
        request = _REQUEST.fullmatch(first)
        if request is not None:
            return body_end, ServerRequest(request[1], request[2], headers, body)
        return n, ParseFailure("camera sent a malformed status or request line")
