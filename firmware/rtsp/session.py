"""Sans-IO RTSP client: one camera, RTP interleaved over the RTSP TCP connection.

The adapter owns the socket and the clock. It writes every `Send`, feeds what it reads to
`receive`, calls `poll` no later than `next_deadline()`, and stops on `Failed`. Closing,
connect and read timeouts are the adapter's: the core never waits on its own.

Sequence (as FFmpeg's RTSP demuxer): OPTIONS, DESCRIBE, SETUP of the first H.264/H.265 video
and the first AAC (MPEG4-GENERIC) audio, PLAY; then a keep-alive every session timeout / 2,
GET_PARAMETER if OPTIONS listed it in Public, else OPTIONS.

Decisions:
- A response whose CSeq matches no outstanding request is ignored (a late answer to a request
  already retried or to an old keep-alive); one without CSeq is taken as the answer to the
  oldest outstanding request, as FFmpeg does.
- `$` frames that arrive before the PLAY answer (cameras start media early) are held and
  handed out right after `Playing`, so the adapter always knows the tracks first. At most
  MAX_EARLY_MEDIA bytes are held; more is a PROTOCOL failure.
- Keep-alive answers never stop the media: errors are ignored (a GET_PARAMETER refused with
  405/451/501 switches later keep-alives to OPTIONS), a 401 is answered with credentials,
  except 454 Session Not Found, which means the session is gone: Failed(ENDED).
- A TEARDOWN request from the camera (RFC 7826) is answered 200 and ends with Failed(ENDED);
  other requests of the camera get 501 (200 for OPTIONS).
- An OPTIONS answered 405 or 501 is not fatal; DESCRIBE follows without a Public list.
- Any failure of a SETUP, also of the audio track, fails the whole session (as FFmpeg).
- Once playing, the adapter may `route` a track's channel to its depacketizer: its frames are
  then taken apart inside `receive` and come out as ChannelUnits, in stream order.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from firmware.rtsp.auth import Authenticator, choose, parse_challenges
from firmware.rtsp.messages import (
    Event,
    FrameSink,
    Interleaved,
    Method,
    ParseFailure,
    Parser,
    Response,
    ServerRequest,
    build_request,
    build_response,
    check_token,
)
from firmware.rtsp.rtp import ChannelUnit
from firmware.rtsp.sdp import MediaDesc, MediaKind, SdpError, parse_sdp, resolve_control

__all__ = [
    "ChannelUnit",
    "Failed",
    "FailureKind",
    "Interleaved",
    "Playing",
    "RtspClient",
    "Send",
    "State",
    "Track",
]

DEFAULT_TIMEOUT: Final = 60
"""Session timeout (s) when the camera's Session header gives none (RFC 2326 12.37)."""
MIN_KEEPALIVE: Final = 1.0
MAX_EARLY_MEDIA: Final = 4 * 1024 * 1024
MAX_PENDING_KEEPALIVES: Final = 8
VIDEO_ENCODINGS: Final = ("H264", "H265")
AUDIO_ENCODINGS: Final = ("MPEG4-GENERIC",)

_SCHEME_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/?#]*@")
_URL = re.compile(r"rtsps?://[^/?#@\s]+(?:[/?#]\S*)?", re.IGNORECASE)
_INTERLEAVED = re.compile(r"\s*interleaved\s*=\s*(\d{1,3})(?:\s*-\s*(\d{1,3}))?\s*", re.I)
_RTP_INFO_SPLIT = re.compile(r",\s*(?=url\s*=)", re.I)
_SESSION_ID = re.compile(r"[\x21-\x7e]{1,256}")


class FailureKind(enum.Enum):
    AUTH = "auth"
    NOT_FOUND = "not-found"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"
    PROTOCOL = "protocol"
    NO_VIDEO = "no-video"
    ENDED = "ended"


class State(enum.Enum):
    IDLE = "idle"
    OPTIONS = "options"
    DESCRIBE = "describe"
    SETUP = "setup"
    PLAY = "play"
    PLAYING = "playing"
    FAILED = "failed"
    CLOSED = "closed"


class _Role(enum.Enum):
    """Why a request was sent: what its answer does."""

    STEP = "step"
    KEEPALIVE = "keepalive"


@dataclass(frozen=True)
class Send:
    """Bytes to write to the socket. The repr shows only the request line (no credentials)."""

    data: bytes

    def __repr__(self) -> str:
        line = self.data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        return f"Send({line!r}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class Track:
    media: MediaDesc
    rtp_channel: int
    rtcp_channel: int
    rtptime: int | None
    seq: int | None


@dataclass(frozen=True)
class Playing:
    """The session is up; media on the tracks' channels follows."""

    tracks: tuple[Track, ...]


@dataclass(frozen=True)
class Failed:
    """The session is over; text for humans, never carrying credentials."""

    kind: FailureKind
    status: int | None
    text: str


Output = Send | Playing | Interleaved | ChannelUnit | Failed


@dataclass(frozen=True)
class _Pending:
    method: Method
    uri: str
    extra: tuple[tuple[str, str], ...]
    role: _Role
    auth_tries: int = 0
    stale_tries: int = 0


def strip_userinfo(url: str) -> str:
    """Request URIs never carry credentials, even when the camera's own URLs do."""
    return _SCHEME_USERINFO.sub(r"\1", url, count=1)


def _printable(text: str, limit: int = 100) -> str:
    clean = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    clean = "".join(c if c.isprintable() else "?" for c in clean)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


class RtspClient:
    """One RTSP session with one camera; see the module docstring for the protocol."""

    def __init__(
        self,
        url: str,
        username: str | None,
        password: str | None,
        *,
        user_agent: str = "nvr",
        cnonce: Callable[[], str],
    ) -> None:
        if not _URL.fullmatch(url):
            raise ValueError("url must be rtsp://host[:port]/path without user or password")
        check_token(url, "url")
        check_token(user_agent, "user agent")
        if username is not None:
            check_token(username, "username")
        self._url = url
        self._username = username
        self._password = password
        self._user_agent = user_agent
        self._cnonce = cnonce
        self._state = State.IDLE
        self._parser = Parser()
        self._cseq = 0
        self._pending: dict[int, _Pending] = {}
        self._auth: Authenticator | None = None
        self._public: frozenset[str] = frozenset()
        self._base = url
        self._aggregate = url
        self._wanted: tuple[MediaDesc, ...] = ()
        self._track_urls: list[str] = []
        self._tracks: list[Track] = []
        self._session: str | None = None
        self._interval = DEFAULT_TIMEOUT / 2
        self._keepalive_at: float | None = None
        self._keepalive_method = Method.OPTIONS
        self._early: list[Interleaved] = []
        self._early_bytes = 0

    def __repr__(self) -> str:
        return f"RtspClient({self._url!r}, user={self._username!r}, state={self._state.name})"

    @property
    def state(self) -> State:
        return self._state

    # -- inputs --------------------------------------------------------------------------

    def start(self, now: float) -> list[Send]:
        if self._state is not State.IDLE:
            raise RuntimeError("start() is called once")
        self._state = State.OPTIONS
        return [self._request(Method.OPTIONS, self._url, (), _Role.STEP)]

    def receive(self, data: bytes, now: float) -> list[Output]:
        """Everything `data` completes, in stream order; media passes through untouched."""
        if self._state is State.FAILED or self._state is State.CLOSED:
            return []
        out: list[Event | ChannelUnit] = []
        if not self._parser.feed(data, out) and self._state is State.PLAYING:
            return out  # type: ignore[return-value]  # only Interleaved and ChannelUnit in it
        return self._sort(out, now)

    def route(self, channel: int, sink: FrameSink | None) -> None:
        """From now on, the frames of `channel` go to `sink` (None: back to Interleaved)."""
        if self._state is not State.PLAYING:
            raise RuntimeError("route() is for a playing session")
        if sink is None:
            self._parser.sinks.pop(channel, None)
        else:
            self._parser.sinks[channel] = sink

    def poll(self, now: float) -> list[Send]:
        if self._state is not State.PLAYING or self._keepalive_at is None:
            return []
        if now < self._keepalive_at:
            return []
        self._keepalive_at = now + self._interval
        keepalives = [c for c, p in self._pending.items() if p.role is _Role.KEEPALIVE]
        for cseq in keepalives[: max(0, len(keepalives) - MAX_PENDING_KEEPALIVES + 1)]:
            del self._pending[cseq]  # never answered: forget the oldest
        return [self._request(self._keepalive_method, self._aggregate, (), _Role.KEEPALIVE)]

    def next_deadline(self) -> float | None:
        return self._keepalive_at if self._state is State.PLAYING else None

    def teardown(self) -> list[Send]:
        """TEARDOWN if the camera gave us a session; afterwards the client is closed."""
        self._keepalive_at = None
        session = self._session
        already = self._state is State.CLOSED
        self._state = State.CLOSED
        self._pending.clear()
        self._early.clear()
        if session is None or already:
            return []
        try:
            return [self._request(Method.TEARDOWN, self._aggregate, (), _Role.STEP)]
        except ValueError:
            return []

    # -- requests ------------------------------------------------------------------------

    def _request(
        self, method: Method, uri: str, extra: tuple[tuple[str, str], ...], role: _Role
    ) -> Send:
        return self._send(_Pending(method, strip_userinfo(uri), extra, role))

    def _send(self, pending: _Pending) -> Send:
        self._cseq += 1
        headers: list[tuple[str, str]] = [("User-Agent", self._user_agent)]
        if self._auth is not None:
            headers.append(("Authorization", self._auth.header(pending.method.value, pending.uri)))
        if self._session is not None:
            headers.append(("Session", self._session))
        headers.extend(pending.extra)
        data = build_request(pending.method, pending.uri, self._cseq, headers)
        self._pending[self._cseq] = pending
        return Send(data)

    # -- answers -------------------------------------------------------------------------

    def _sort(self, events: list[Event | ChannelUnit], now: float) -> list[Output]:
        result: list[Output] = []
        for event in events:
            if type(event) is Interleaved:
                if self._state is State.PLAYING:
                    result.append(event)
                else:
                    result.extend(self._hold(event))
            elif type(event) is Response:
                result.extend(self._on_response(event, now))
            elif type(event) is ServerRequest:
                result.extend(self._on_server_request(event))
            elif type(event) is ParseFailure:
                result.append(self._fail(FailureKind.PROTOCOL, None, event.text))
            else:  # what a routed channel's sink made (ChannelUnit)
                result.append(event)
            if self._state is State.FAILED or self._state is State.CLOSED:
                break
        return result

    def _hold(self, frame: Interleaved) -> list[Output]:
        self._early.append(frame)
        self._early_bytes += len(frame.data)
        if self._early_bytes > MAX_EARLY_MEDIA:
            return [
                self._fail(
                    FailureKind.PROTOCOL,
                    None,
                    f"camera sent over {MAX_EARLY_MEDIA} bytes of media before answering PLAY",
                )
            ]
        return []

    def _fail(self, kind: FailureKind, status: int | None, text: str) -> Failed:
        self._state = State.FAILED
        self._keepalive_at = None
        self._early.clear()
        return Failed(kind, status, text)

    def _on_server_request(self, request: ServerRequest) -> list[Output]:
        cseq = request.headers.get("CSeq")
        try:
            if request.method == "OPTIONS":
                return [Send(build_response(200, "OK", cseq))]
            if request.method == "TEARDOWN":
                answer = Send(build_response(200, "OK", cseq))
                return [answer, self._fail(FailureKind.ENDED, None, "camera ended the session")]
            return [Send(build_response(501, "Not Implemented", cseq))]
        except ValueError:
            return [self._fail(FailureKind.PROTOCOL, None, "camera sent a malformed CSeq")]

    def _on_response(self, response: Response, now: float) -> list[Output]:
        cseq = response.cseq
        if cseq is None:
            if not self._pending:
                return []
            cseq = min(self._pending)
        pending = self._pending.pop(cseq, None)
        if pending is None:
            return []
        try:
            if response.status == 401:
                return self._on_unauthorized(pending, response)
            if pending.role is _Role.KEEPALIVE:
                return self._on_keepalive(pending, response)
            if 200 <= response.status < 300:
                return self._on_success(pending, response, now)
            return [self._refused(pending, response)]
        except ValueError as e:  # a camera's value we cannot put into a request
            return [self._fail(FailureKind.PROTOCOL, None, f"camera sent unusable data: {e}")]

    def _refused(self, pending: _Pending, response: Response) -> Output:
        status, reason = response.status, _printable(response.reason)
        method = pending.method.value
        if pending.method is Method.OPTIONS and status in (405, 501):
            return self._describe()
        if status == 403:
            text = f"camera refused access ({status} {reason})"
            return self._fail(FailureKind.AUTH, status, text)
        if status == 404:
            return self._fail(
                FailureKind.NOT_FOUND, status, f"camera has no stream at that path ({status})"
            )
        if 500 <= status < 600:
            return self._fail(
                FailureKind.UNAVAILABLE, status, f"camera answered {status} {reason} to {method}"
            )
        return self._fail(
            FailureKind.REFUSED, status, f"camera answered {status} {reason} to {method}"
        )

    def _on_unauthorized(self, pending: _Pending, response: Response) -> list[Output]:
        if self._username is None or self._password is None:
            if pending.role is _Role.KEEPALIVE:
                return []
            return [
                self._fail(FailureKind.AUTH, 401, "camera requires credentials, none given (401)")
            ]
        challenge = choose(parse_challenges(response.headers.get_all("WWW-Authenticate")))
        refused = "camera refused the credentials (401)"
        if challenge is None:
            if pending.role is _Role.KEEPALIVE:
                return []
            text = "camera offers no supported authentication scheme (401)"
            return [self._fail(FailureKind.AUTH, 401, text)]
        if pending.auth_tries == 0:
            retry = replace(pending, auth_tries=1)
        elif challenge.stale and pending.stale_tries == 0:
            retry = replace(pending, stale_tries=1)
        elif pending.role is _Role.KEEPALIVE:
            return []
        else:
            return [self._fail(FailureKind.AUTH, 401, refused)]
        self._auth = Authenticator(self._username, self._password, challenge, self._cnonce)
        return [self._send(retry)]

    def _on_keepalive(self, pending: _Pending, response: Response) -> list[Output]:
        if response.status == 454:
            self._pending.clear()
            return [self._fail(FailureKind.ENDED, 454, "camera no longer knows the session (454)")]
        if pending.method is Method.GET_PARAMETER and response.status in (405, 451, 501):
            self._keepalive_method = Method.OPTIONS
        return []

    def _on_success(self, pending: _Pending, response: Response, now: float) -> list[Output]:
        method = pending.method
        if method is Method.OPTIONS:
            public = response.headers.get("Public") or ""
            self._public = frozenset(m.strip().upper() for m in public.split(","))
            if "GET_PARAMETER" in self._public:
                self._keepalive_method = Method.GET_PARAMETER
            return [self._describe()]
        if method is Method.DESCRIBE:
            return self._on_describe(pending, response)
        if method is Method.SETUP:
            return self._on_setup(response)
        if method is Method.PLAY:
            return self._on_play(response, now)
        return []

    def _describe(self) -> Send:
        self._state = State.DESCRIBE
        accept = (("Accept", "application/sdp"),)
        return self._request(Method.DESCRIBE, self._url, accept, _Role.STEP)

    def _on_describe(self, pending: _Pending, response: Response) -> list[Output]:
        if not response.body:
            return [self._fail(FailureKind.PROTOCOL, None, "camera sent no session description")]
        try:
            sdp = parse_sdp(response.body.decode("utf-8", "replace"))
        except SdpError as e:
            return [self._fail(FailureKind.PROTOCOL, None, f"camera's SDP: {e}")]
        base = response.headers.get("Content-Base") or response.headers.get("Content-Location")
        base = strip_userinfo(resolve_control(pending.uri, base.strip())) if base else pending.uri
        self._base = base
        self._aggregate = strip_userinfo(resolve_control(base, sdp.control or "*"))
        video = next(
            (m for m in sdp.media if m.kind is MediaKind.VIDEO and m.encoding in VIDEO_ENCODINGS),
            None,
        )
        if video is None:
            offered = ", ".join(f"{m.kind.value} {m.encoding or '?'}" for m in sdp.media)
            text = f"camera offers no H.264 or H.265 video (offered: {offered or 'nothing'})"
            return [self._fail(FailureKind.NO_VIDEO, None, _printable(text, 300))]
        audio = next(
            (m for m in sdp.media if m.kind is MediaKind.AUDIO and m.encoding in AUDIO_ENCODINGS),
            None,
        )
        self._wanted = (video,) if audio is None else (video, audio)
        self._track_urls = [strip_userinfo(resolve_control(base, m.control)) for m in self._wanted]
        self._state = State.SETUP
        return [self._setup()]

    def _free_pair(self) -> int:
        """The lowest even channel of a pair no track uses yet: 0-1 first, then 2-3."""
        used = {c for t in self._tracks for c in (t.rtp_channel, t.rtcp_channel)}
        return next(c for c in range(0, 254, 2) if c not in used and c + 1 not in used)

    def _setup(self) -> Send:
        index = len(self._tracks)
        low = self._free_pair()
        transport = (("Transport", f"RTP/AVP/TCP;unicast;interleaved={low}-{low + 1}"),)
        return self._request(Method.SETUP, self._track_urls[index], transport, _Role.STEP)

    def _on_setup(self, response: Response) -> list[Output]:
        if self._session is None:
            header = response.headers.get("Session")
            if header is None:
                return [self._fail(FailureKind.PROTOCOL, None, "camera's SETUP gave no Session")]
            ident, _, params = header.partition(";")
            ident = ident.strip()
            if not _SESSION_ID.fullmatch(ident):
                return [self._fail(FailureKind.PROTOCOL, None, "camera sent a malformed Session")]
            self._session = ident
            self._interval = max(MIN_KEEPALIVE, _timeout(params) / 2)
        channels = self._channels(response.headers.get("Transport"))
        if channels is None:
            text = "camera did not accept RTP interleaved over TCP"
            return [self._fail(FailureKind.PROTOCOL, None, text)]
        used = {c for t in self._tracks for c in (t.rtp_channel, t.rtcp_channel)}
        if channels[0] in used or channels[1] in used:
            text = "camera gave two tracks the same interleaved channel"
            return [self._fail(FailureKind.PROTOCOL, None, text)]
        media = self._wanted[len(self._tracks)]
        self._tracks.append(Track(media, channels[0], channels[1], None, None))
        if len(self._tracks) < len(self._wanted):
            return [self._setup()]
        self._state = State.PLAY
        play = (("Range", "npt=0.000-"),)
        return [self._request(Method.PLAY, self._aggregate, play, _Role.STEP)]

    def _channels(self, transport: str | None) -> tuple[int, int] | None:
        """The interleaved pair of the camera's Transport answer (ours if it names none).

        An interleaved= parameter is taken as TCP even under a plain RTP/AVP profile, which
        some cameras write; without one, only an RTP/AVP/TCP profile is accepted.
        """
        low = self._free_pair()
        if transport is None:
            return low, low + 1
        params = transport.split(",", 1)[0].split(";")
        for param in params[1:]:
            m = _INTERLEAVED.fullmatch(param)
            if m:
                rtp = int(m[1])
                rtcp = int(m[2]) if m[2] is not None else rtp + 1
                if rtp > 255 or rtcp > 255 or rtp == rtcp:
                    return None
                return rtp, rtcp
        if not params[0].strip().upper().startswith("RTP/AVP/TCP"):
            return None
        return low, low + 1

    def _on_play(self, response: Response, now: float) -> list[Output]:
        info = _rtp_info(response.headers.get("RTP-Info"))
        tracks = []
        for i, track in enumerate(self._tracks):
            match = _match_info(self._track_urls[i], info, len(self._tracks))
            if match is not None:
                track = replace(track, seq=match[1], rtptime=match[2])
            tracks.append(track)
        self._tracks = tracks
        self._state = State.PLAYING
        self._keepalive_at = now + self._interval
        result: list[Output] = [Playing(tuple(tracks))]
        result.extend(self._early)
        self._early = []
        self._early_bytes = 0
        return result


def _timeout(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "timeout":
            value = value.strip()
            if value.isdigit() and 0 < int(value) <= 86400:
                return float(value)
    return float(DEFAULT_TIMEOUT)


def _rtp_info(header: str | None) -> list[tuple[str, int | None, int | None]]:
    """(url, seq, rtptime) per stream of an RTP-Info header (RFC 2326 12.33)."""
    if not header:
        return []
    entries = []
    for item in _RTP_INFO_SPLIT.split(header.strip()):
        url, seq, rtptime = "", None, None
        for param in item.split(";"):
            name, _, value = param.partition("=")
            name, value = name.strip().lower(), value.strip()
            if name == "url":
                url = value
            elif name == "seq" and value.isdigit() and int(value) < 1 << 16:
                seq = int(value)
            elif name == "rtptime" and value.isdigit() and int(value) < 1 << 32:
                rtptime = int(value)
        entries.append((url, seq, rtptime))
    return entries


def _match_info(
    track_url: str, info: list[tuple[str, int | None, int | None]], tracks: int
) -> tuple[str, int | None, int | None] | None:
    """Cameras' RTP-Info URLs differ from the control URLs (host, port, credentials): match
    exactly, else by path suffix, else the only entry of a one-track session."""
    want = strip_userinfo(track_url).rstrip("/")
    for entry in info:
        if strip_userinfo(entry[0]).rstrip("/") == want:
            return entry
    for entry in info:
        got = strip_userinfo(entry[0]).rstrip("/")
        if got and (want.endswith("/" + got.lstrip("/")) or got.endswith(_path(want))):
            return entry
    if tracks == 1 and len(info) == 1:
        return info[0]
    return None


def _path(url: str) -> str:
    m = re.match(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^/]*", url)
    path = url[m.end() :] if m else url
    return path or "/"
