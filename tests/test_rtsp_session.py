"""The sans-IO RTSP client core: SDP, authentication, framing and the session state machine.

A scripted camera (byte strings built here) stands in for the server; nothing touches a socket.
"""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.rtsp.auth import (
    Authenticator,
    AuthScheme,
    Challenge,
    DigestAlgorithm,
    choose,
    parse_challenges,
)
from firmware.rtsp.messages import (
    MAX_BODY,
    MAX_FRAME,
    MAX_HEAD,
    Headers,
    Interleaved,
    Method,
    ParseFailure,
    Parser,
    Response,
    ServerRequest,
    build_request,
)
from firmware.rtsp.sdp import MediaKind, SdpError, parse_sdp, resolve_control
from firmware.rtsp.session import (
    MAX_EARLY_MEDIA,
    Failed,
    FailureKind,
    Playing,
    RtspClient,
    Send,
    State,
)

URL = "rtsp://192.0.2.5:8554/cam1"
TCP01 = "RTP/AVP/TCP;interleaved=0-1"
TCP23 = "RTP/AVP/TCP;interleaved=2-3"
BASE = URL + "/"
PASSWORD = "s3cr3t-Pa55"
USER = "admin"

SDP = (
    "v=0\r\n"
    "o=- 1188340656180883 1 IN IP4 192.0.2.5\r\n"
    "s=Session streamed with GStreamer\r\n"
    "t=0 0\r\n"
    "a=tool:GStreamer\r\n"
    "a=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 packetization-mode=1;profile-level-id=42c01f;"
    "sprop-parameter-sets=Z0LAH9kAUAW7ARAAAAMAEAAAAwPI8YMkgA==,aMuMsg==\r\n"
    "a=control:stream=0\r\n"
    "m=application 0 RTP/AVP 107\r\n"
    "a=rtpmap:107 vnd.onvif.metadata/90000\r\n"
    "a=control:stream=1\r\n"
    "m=audio 0 RTP/AVP 97\r\n"
    "a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"
    "a=fmtp:97 streamtype=5; profile-level-id=2; mode=AAC-hbr; config=1190; "
    "SizeLength=13; indexlength=3; indexdeltalength=3\r\n"
    "a=control:stream=2\r\n"
)


def cnonce() -> str:
    return "0a4f113b"


def client(user: str | None = None, password: str | None = None) -> RtspClient:
    return RtspClient(URL, user, password, user_agent="nvr-test", cnonce=cnonce)


def answer(
    cseq: int | None,
    status: int = 200,
    reason: str = "OK",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    lines = [f"RTSP/1.0 {status} {reason}"]
    if cseq is not None:
        lines.append(f"CSeq: {cseq}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def frame(channel: int, payload: bytes) -> bytes:
    return bytes((0x24, channel)) + len(payload).to_bytes(2, "big") + payload


def request_of(send: object) -> tuple[str, str, Headers]:
    """(method, uri, headers) of what the client sent, parsed by an independent reading."""
    assert isinstance(send, Send)
    head, _, body = send.data.partition(b"\r\n\r\n")
    assert body == b""
    lines = head.decode().split("\r\n")
    method, uri, version = lines[0].split(" ")
    assert version == "RTSP/1.0"
    fields = tuple((k, v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:]))
    return method, uri, Headers(fields)


def cseq_of(send: object) -> int:
    cseq = request_of(send)[2].get("CSeq")
    assert cseq is not None
    return int(cseq)


OPTIONS_OK = answer(1, headers=(("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER"),))
DESCRIBE_OK = answer(
    2,
    headers=(("Content-Base", BASE), ("Content-Type", "application/sdp")),
    body=SDP.encode(),
)
SETUP1_OK = answer(
    3,
    headers=(
        ("Transport", 'RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=1A2B3C4D;mode="PLAY"'),
        ("Session", "Xy12Ab;timeout=60"),
    ),
)
SETUP2_OK = answer(
    4,
    headers=(
        ("Transport", "RTP/AVP/TCP;unicast;interleaved=2-3"),
        ("Session", "Xy12Ab;timeout=60"),
    ),
)
PLAY_OK = answer(
    5,
    headers=(
        ("Session", "Xy12Ab;timeout=60"),
        ("Range", "npt=0-"),
        (
            "RTP-Info",
            f"url={BASE}stream=0;seq=4711;rtptime=90000, url={BASE}stream=2;seq=9;rtptime=7",
        ),
    ),
)
HANDSHAKE = OPTIONS_OK + DESCRIBE_OK + SETUP1_OK + SETUP2_OK + PLAY_OK


def play(c: RtspClient, now: float = 100.0) -> Playing:
    c.start(now)
    out = c.receive(HANDSHAKE, now)
    assert isinstance(out[-1], Playing), out
    return out[-1]


# -- the happy path -----------------------------------------------------------------------


def test_sequence_requests_and_tracks() -> None:
    c = client()
    (options,) = c.start(10.0)
    assert request_of(options)[:2] == ("OPTIONS", URL)
    assert request_of(options)[2].get("CSeq") == "1"
    assert request_of(options)[2].get("User-Agent") == "nvr-test"

    (describe,) = c.receive(OPTIONS_OK, 10.0)
    method, uri, h = request_of(describe)
    assert (method, uri, h.get("CSeq"), h.get("Accept")) == (
        "DESCRIBE",
        URL,
        "2",
        "application/sdp",
    )

    (setup1,) = c.receive(DESCRIBE_OK, 10.0)
    method, uri, h = request_of(setup1)
    assert (method, uri) == ("SETUP", BASE + "stream=0")
    assert h.get("Transport") == "RTP/AVP/TCP;unicast;interleaved=0-1"
    assert h.get("Session") is None

    (setup2,) = c.receive(SETUP1_OK, 10.0)
    method, uri, h = request_of(setup2)
    assert (method, uri) == ("SETUP", BASE + "stream=2")  # the metadata stream is skipped
    assert h.get("Transport") == "RTP/AVP/TCP;unicast;interleaved=2-3"
    assert h.get("Session") == "Xy12Ab"

    (play_req,) = c.receive(SETUP2_OK, 10.0)
    method, uri, h = request_of(play_req)
    assert (method, uri) == ("PLAY", BASE)  # aggregate control "*": the Content-Base
    assert (h.get("Session"), h.get("Range"), h.get("CSeq")) == ("Xy12Ab", "npt=0.000-", "5")
    assert c.next_deadline() is None

    (playing,) = c.receive(PLAY_OK, 12.0)
    assert isinstance(playing, Playing)
    video, audio = playing.tracks
    assert (video.media.encoding, video.rtp_channel, video.rtcp_channel) == ("H264", 0, 1)
    assert (video.seq, video.rtptime) == (4711, 90000)
    assert video.media.fmtp["packetization-mode"] == "1"
    assert (audio.media.encoding, audio.media.clock_rate, audio.media.channels) == (
        "MPEG4-GENERIC",
        48000,
        2,
    )
    assert (audio.rtp_channel, audio.rtcp_channel, audio.seq, audio.rtptime) == (2, 3, 9, 7)
    assert audio.media.fmtp["sizelength"] == "13"
    assert c.state is State.PLAYING
    assert c.next_deadline() == 12.0 + 30.0


def test_media_and_keepalive_answers_interleave() -> None:
    c = client()
    play(c, now=0.0)
    assert c.poll(29.9) == []
    (keepalive,) = c.poll(30.0)
    method, uri, h = request_of(keepalive)
    assert (method, uri, h.get("Session")) == ("GET_PARAMETER", BASE, "Xy12Ab")
    assert c.next_deadline() == 60.0
    stream = frame(0, b"a" * 10) + answer(cseq_of(keepalive)) + frame(1, b"rtcp") + frame(2, b"x")
    out = c.receive(stream, 31.0)
    assert out == [Interleaved(0, b"a" * 10), Interleaved(1, b"rtcp"), Interleaved(2, b"x")]
    assert c.state is State.PLAYING
    # an error answer to a keep-alive does not stop the media either
    (keepalive,) = c.poll(60.0)
    out = c.receive(answer(cseq_of(keepalive), 500, "Internal Server Error") + frame(0, b"b"), 61)
    assert out == [Interleaved(0, b"b")]


def test_keepalive_is_options_without_get_parameter_and_default_timeout() -> None:
    c = client()
    c.start(0.0)
    c.receive(answer(1, headers=(("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN"),)), 0)
    c.receive(DESCRIBE_OK, 0)
    c.receive(
        answer(3, headers=(("Session", "77"), ("Transport", "RTP/AVP/TCP;interleaved=0-1"))), 0
    )
    c.receive(
        answer(4, headers=(("Session", "77"), ("Transport", "RTP/AVP/TCP;interleaved=2-3"))), 0
    )
    (playing,) = c.receive(answer(5), 1.0)
    assert isinstance(playing, Playing)
    assert playing.tracks[0].seq is None and playing.tracks[0].rtptime is None
    assert c.next_deadline() == 31.0  # default timeout 60 s
    (keepalive,) = c.poll(31.0)
    assert request_of(keepalive)[0] == "OPTIONS"
    assert request_of(keepalive)[2].get("Session") == "77"


def test_short_session_timeout_and_get_parameter_refused_falls_back_to_options() -> None:
    c = client()
    c.start(0.0)
    c.receive(OPTIONS_OK + DESCRIBE_OK, 0)
    c.receive(answer(3, headers=(("Session", "Q;timeout=10"), ("Transport", "RTP/AVP/TCP"))), 0)
    c.receive(SETUP2_OK, 0)
    c.receive(answer(5), 0)
    assert c.next_deadline() == 5.0
    (first,) = c.poll(5.0)
    assert request_of(first)[0] == "GET_PARAMETER"
    assert c.receive(answer(cseq_of(first), 501, "Not Implemented"), 5.1) == []
    (second,) = c.poll(10.0)
    assert request_of(second)[0] == "OPTIONS"


def test_a_routed_channel_goes_to_its_sink_amid_answers_and_other_frames() -> None:
    """Once playing, a routed channel's frames are taken by its sink (whole frames, in any
    split) and what it makes keeps its place in the stream; unrouted, they are Interleaved."""

    class Sink:
        def take_frames(self, buf: bytes, pos: int, n: int, out: list) -> int:
            taken = pos
            while n - taken >= 4 and buf[taken] == 0x24 and buf[taken + 1] == 0:
                end = taken + 4 + ((buf[taken + 2] << 8) | buf[taken + 3])
                if end > n:
                    break
                out.append(("unit", bytes(buf[taken + 4 : end])))
                taken = end
            return taken

    c = client()
    with pytest.raises(RuntimeError):
        c.route(0, Sink())  # type: ignore[arg-type]  # a test double
    play(c, now=0.0)
    c.route(0, Sink())  # type: ignore[arg-type]
    (keepalive,) = c.poll(30.0)
    stream = (frame(0, b"a" * 10) + frame(0, b"b") + answer(cseq_of(keepalive))
              + frame(1, b"rtcp") + frame(0, b"c"))  # fmt: skip
    for cut in range(len(stream) + 1):
        out = c.receive(stream[:cut], 31.0) + c.receive(stream[cut:], 31.0)
        assert out == [("unit", b"a" * 10), ("unit", b"b"), Interleaved(1, b"rtcp"), ("unit", b"c")]
        assert c.state is State.PLAYING
    c.route(0, None)
    assert c.receive(frame(0, b"d"), 32.0) == [Interleaved(0, b"d")]


def test_media_before_the_play_answer_is_held_until_playing() -> None:
    c = client()
    c.start(0.0)
    early = frame(0, b"sps") + frame(0, b"idr")
    out = c.receive(OPTIONS_OK + DESCRIBE_OK + SETUP1_OK + SETUP2_OK + early, 0)
    assert all(isinstance(o, Send) for o in out)
    out = c.receive(frame(2, b"aac") + PLAY_OK + frame(0, b"p"), 0)
    assert isinstance(out[0], Playing)
    assert out[1:] == [
        Interleaved(0, b"sps"),
        Interleaved(0, b"idr"),
        Interleaved(2, b"aac"),
        Interleaved(0, b"p"),
    ]


def test_too_much_media_before_play_is_a_protocol_failure() -> None:
    c = client()
    c.start(0.0)
    c.receive(OPTIONS_OK + DESCRIBE_OK + SETUP1_OK + SETUP2_OK, 0)
    chunk = frame(0, bytes(60000)) * 10
    out: list[object] = []
    for _ in range(MAX_EARLY_MEDIA // len(chunk) + 2):
        out += c.receive(chunk, 0)
    assert [type(o) for o in out] == [Failed]
    assert isinstance(out[0], Failed) and out[0].kind is FailureKind.PROTOCOL


def test_server_chosen_channels_are_used() -> None:
    c = client()
    c.start(0.0)
    c.receive(OPTIONS_OK + DESCRIBE_OK, 0)
    (setup2,) = c.receive(
        answer(3, headers=(("Session", "S"), ("Transport", "RTP/AVP/TCP;unicast;interleaved=4-5"))),
        0,
    )
    assert request_of(setup2)[2].get("Transport") == "RTP/AVP/TCP;unicast;interleaved=0-1"
    c.receive(
        answer(4, headers=(("Session", "S"), ("Transport", "RTP/AVP/TCP;interleaved=0-1"))), 0
    )
    (playing,) = c.receive(answer(5), 0)
    assert isinstance(playing, Playing)
    assert [(t.rtp_channel, t.rtcp_channel) for t in playing.tracks] == [(4, 5), (0, 1)]


@pytest.mark.parametrize(
    ("transport", "text"),
    [
        ("RTP/AVP;unicast;client_port=5000-5001", "interleaved over TCP"),
        ("RTP/AVP/TCP;interleaved=2-3", "same interleaved channel"),
        ("RTP/AVP/TCP;interleaved=7-7", "interleaved over TCP"),
    ],
)
def test_unusable_transport_answers_fail(transport: str, text: str) -> None:
    c = client()
    c.start(0.0)
    c.receive(OPTIONS_OK + DESCRIBE_OK, 0)
    c.receive(
        answer(3, headers=(("Session", "S"), ("Transport", "RTP/AVP/TCP;interleaved=2-3"))), 0
    )
    (failed,) = c.receive(answer(4, headers=(("Session", "S"), ("Transport", transport))), 0)
    assert isinstance(failed, Failed) and failed.kind is FailureKind.PROTOCOL
    assert text in failed.text


def test_video_only_camera_with_absolute_controls_and_no_content_base() -> None:
    sdp = (
        "v=0\r\ns=x\r\na=control:rtsp://192.0.2.5:8554/cam1\r\n"
        "m=video 0 RTP/AVP 98\r\na=rtpmap:98 H265/90000\r\n"
        "a=fmtp:98 sprop-vps=QAEM;sprop-sps=QgEB;sprop-pps=RAHA\r\n"
        "a=control:rtsp://192.0.2.5:8554/cam1/trackID=1\r\n"
        "m=audio 0 RTP/AVP 0\r\na=control:trackID=2\r\n"
    )
    c = client()
    c.start(0.0)
    c.receive(OPTIONS_OK, 0)
    (setup,) = c.receive(answer(2, body=sdp.encode()), 0)
    assert request_of(setup)[1] == "rtsp://192.0.2.5:8554/cam1/trackID=1"
    (play_req,) = c.receive(answer(3, headers=(("Session", "1;timeout=30"),)), 0)
    assert request_of(play_req)[1] == URL
    rtp_info = "url=rtsp://198.51.100.2/cam1/trackID=1;seq=1;rtptime=2"  # other host: by path
    (playing,) = c.receive(answer(4, headers=(("RTP-Info", rtp_info),)), 0)
    assert isinstance(playing, Playing)
    (track,) = playing.tracks
    assert (track.media.encoding, track.seq, track.rtptime) == ("H265", 1, 2)
    assert c.next_deadline() == 15.0


def test_no_video_names_what_the_camera_offered() -> None:
    sdp = "v=0\r\nm=video 0 RTP/AVP 26\r\na=control:t0\r\nm=audio 0 RTP/AVP 8\r\na=control:t1\r\n"
    c = client()
    c.start(0.0)
    describe, failed = c.receive(OPTIONS_OK + answer(2, body=sdp.encode()), 0)
    assert request_of(describe)[0] == "DESCRIBE"
    assert isinstance(failed, Failed) and failed.kind is FailureKind.NO_VIDEO
    assert "video JPEG" in failed.text and "audio PCMA" in failed.text
    assert c.receive(frame(0, b"x"), 0) == [] and c.poll(1e9) == []


@pytest.mark.parametrize(
    ("body", "text"),
    [(b"", "no session description"), (b"<html>hello</html>", "SDP")],
)
def test_describe_without_usable_sdp_is_protocol(body: bytes, text: str) -> None:
    c = client()
    c.start(0.0)
    _describe, failed = c.receive(OPTIONS_OK + answer(2, body=body), 0)
    assert isinstance(failed, Failed) and failed.kind is FailureKind.PROTOCOL
    assert text in failed.text


# -- status codes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "kind", "text"),
    [
        (404, "Not Found", FailureKind.NOT_FOUND, "camera has no stream at that path (404)"),
        (400, "Bad Request", FailureKind.REFUSED, "400 Bad Request"),
        (461, "Unsupported Transport", FailureKind.REFUSED, "461 Unsupported Transport"),
        (302, "Moved Temporarily", FailureKind.REFUSED, "302 Moved Temporarily"),
        (503, "Service Unavailable", FailureKind.UNAVAILABLE, "503 Service Unavailable"),
        (500, "Internal Server Error", FailureKind.UNAVAILABLE, "500 Internal Server Error"),
        (403, "Forbidden", FailureKind.AUTH, "403 Forbidden"),
    ],
)
@pytest.mark.parametrize("step", [2, 3, 5])
def test_error_statuses(status: int, reason: str, kind: FailureKind, text: str, step: int) -> None:
    c = client()
    c.start(0.0)
    before = HANDSHAKE.split(b"RTSP/1.0 ")
    stream = b"".join(b"RTSP/1.0 " + part for part in before[1:step])
    c.receive(stream, 0)
    (failed,) = c.receive(answer(step, status, reason), 0)
    assert isinstance(failed, Failed)
    assert (failed.kind, failed.status) == (kind, status)
    assert text in failed.text
    assert c.state is State.FAILED and c.next_deadline() is None


def test_options_not_implemented_is_not_fatal() -> None:
    c = client()
    c.start(0.0)
    (describe,) = c.receive(answer(1, 501, "Not Implemented"), 0)
    assert request_of(describe)[0] == "DESCRIBE"


def test_hostile_reason_phrase_is_made_printable_and_short() -> None:
    c = client()
    c.start(0.0)
    (failed,) = c.receive(answer(1, 500, "\x1b[31m" + "x" * 500), 0)
    assert isinstance(failed, Failed)
    assert "\x1b" not in failed.text and len(failed.text) < 150


# -- CSeq and server requests ---------------------------------------------------------------


def test_answer_with_unknown_cseq_is_ignored() -> None:
    c = client()
    c.start(0.0)
    assert c.receive(answer(7, headers=(("Public", "GET_PARAMETER"),)), 0) == []
    assert c.state is State.OPTIONS
    (describe,) = c.receive(OPTIONS_OK, 0)
    assert request_of(describe)[0] == "DESCRIBE"


def test_answer_without_cseq_answers_the_outstanding_request() -> None:
    c = client()
    c.start(0.0)
    (describe,) = c.receive(answer(None), 0)
    assert request_of(describe)[0] == "DESCRIBE"


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("ANNOUNCE", b"RTSP/1.0 501 Not Implemented\r\nCSeq: 42\r\n\r\n"),
        ("SET_PARAMETER", b"RTSP/1.0 501 Not Implemented\r\nCSeq: 42\r\n\r\n"),
        ("OPTIONS", b"RTSP/1.0 200 OK\r\nCSeq: 42\r\n\r\n"),
    ],
)
def test_server_requests_are_answered_mid_media(method: str, expected: bytes) -> None:
    c = client()
    play(c)
    body = b"v=0\r\n"
    req = (
        f"{method} {URL} RTSP/1.0\r\nCSeq: 42\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    out = c.receive(frame(0, b"1") + req + frame(0, b"2"), 200)
    assert out == [Interleaved(0, b"1"), Send(expected), Interleaved(0, b"2")]
    assert c.state is State.PLAYING


def test_server_teardown_ends_the_session() -> None:
    c = client()
    play(c)
    out = c.receive(f"TEARDOWN {URL} RTSP/1.0\r\nCSeq: 3\r\n\r\n".encode(), 200)
    assert out[0] == Send(b"RTSP/1.0 200 OK\r\nCSeq: 3\r\n\r\n")
    assert isinstance(out[1], Failed) and out[1].kind is FailureKind.ENDED


def test_keepalive_454_ends_the_session() -> None:
    c = client()
    play(c, now=0.0)
    (keepalive,) = c.poll(30.0)
    (failed,) = c.receive(answer(cseq_of(keepalive), 454, "Session Not Found"), 31)
    assert isinstance(failed, Failed) and (failed.kind, failed.status) == (FailureKind.ENDED, 454)


def test_teardown() -> None:
    c = client()
    assert c.teardown() == []  # no session yet
    c = client()
    play(c)
    (teardown,) = c.teardown()
    method, uri, h = request_of(teardown)
    assert (method, uri, h.get("Session"), h.get("CSeq")) == ("TEARDOWN", BASE, "Xy12Ab", "6")
    assert c.state is State.CLOSED and c.next_deadline() is None
    assert c.receive(frame(0, b"late"), 0) == [] and c.teardown() == []


def test_start_twice_is_a_bug() -> None:
    c = client()
    c.start(0)
    with pytest.raises(RuntimeError):
        c.start(0)


# -- authentication ---------------------------------------------------------------------------


def unauthorized(cseq: int, *challenges: str) -> bytes:
    return answer(cseq, 401, "Unauthorized", tuple(("WWW-Authenticate", v) for v in challenges))


def test_basic_auth_retries_with_new_cseq_and_sticks() -> None:
    c = client(USER, PASSWORD)
    c.start(0.0)
    (retry,) = c.receive(unauthorized(1, 'Basic realm="cam"'), 0)
    method, _uri, h = request_of(retry)
    assert (method, h.get("CSeq")) == ("OPTIONS", "2")
    assert h.get("Authorization") == "Basic YWRtaW46czNjcjN0LVBhNTU="  # admin:s3cr3t-Pa55
    (describe,) = c.receive(answer(2), 0)
    assert request_of(describe)[2].get("Authorization") == "Basic YWRtaW46czNjcjN0LVBhNTU="


def test_digest_preferred_over_basic_and_nc_increases() -> None:
    c = client(USER, PASSWORD)
    c.start(0.0)
    (retry,) = c.receive(
        unauthorized(1, 'Basic realm="cam"', 'Digest realm="cam", nonce="n1", qop="auth"'), 0
    )
    auth = request_of(retry)[2].get("Authorization") or ""
    assert auth.startswith("Digest ") and 'nonce="n1"' in auth and "nc=00000001" in auth
    assert f'uri="{URL}"' in auth
    (describe,) = c.receive(answer(2), 0)
    auth = request_of(describe)[2].get("Authorization") or ""
    assert "nc=00000002" in auth and 'cnonce="0a4f113b"' in auth


def test_digest_without_qop_matches_rfc2069_formula() -> None:
    c = client(USER, PASSWORD)
    c.start(0.0)
    (retry,) = c.receive(unauthorized(1, 'Digest realm="IP Camera(21388)", nonce="abc123"'), 0)
    auth = request_of(retry)[2].get("Authorization") or ""

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = md5(f"{USER}:IP Camera(21388):{PASSWORD}")
    expected = md5(f"{ha1}:abc123:{md5('OPTIONS:' + URL)}")
    assert f'response="{expected}"' in auth
    assert "qop" not in auth and "nc=" not in auth and "algorithm" not in auth


def test_second_401_is_auth_failure() -> None:
    c = client(USER, PASSWORD)
    c.start(0.0)
    c.receive(unauthorized(1, 'Digest realm="r", nonce="n"'), 0)
    (failed,) = c.receive(unauthorized(2, 'Digest realm="r", nonce="n"'), 0)
    assert failed == Failed(FailureKind.AUTH, 401, "camera refused the credentials (401)")


def test_stale_nonce_is_retried_once_more() -> None:
    c = client(USER, PASSWORD)
    play(c, now=0.0)  # no auth so far
    (keepalive,) = c.poll(30.0)
    (r1,) = c.receive(unauthorized(cseq_of(keepalive), 'Digest realm="r", nonce="n1"'), 30)
    (r2,) = c.receive(unauthorized(cseq_of(r1), 'Digest realm="r", nonce="n2", stale=true'), 30)
    auth = request_of(r2)[2].get("Authorization") or ""
    assert 'nonce="n2"' in auth
    # a third 401 for the keep-alive gives up quietly: the media keeps flowing
    out = c.receive(unauthorized(cseq_of(r2), 'Digest realm="r", nonce="n3", stale=true'), 30)
    assert out == [] and c.state is State.PLAYING


def test_stale_nonce_during_setup() -> None:
    c = client(USER, PASSWORD)
    c.start(0.0)
    c.receive(unauthorized(1, 'Digest realm="r", nonce="n1"'), 0)
    (_describe,) = c.receive(answer(2, headers=(("Public", "GET_PARAMETER"),)), 0)
    (retry,) = c.receive(unauthorized(3, 'Digest realm="r", nonce="n2", stale=TRUE'), 0)
    assert 'nonce="n2"' in (request_of(retry)[2].get("Authorization") or "")
    assert request_of(retry)[0] == "DESCRIBE" and cseq_of(retry) == 4
    # stale again: one more try with the new nonce, then the credentials count as refused
    (again,) = c.receive(unauthorized(4, 'Digest realm="r", nonce="n3", stale=true'), 0)
    assert 'nonce="n3"' in (request_of(again)[2].get("Authorization") or "")
    (failed,) = c.receive(unauthorized(5, 'Digest realm="r", nonce="n4", stale=true'), 0)
    assert isinstance(failed, Failed) and failed.kind is FailureKind.AUTH


@pytest.mark.parametrize(
    ("user", "password", "challenge", "text"),
    [
        (None, None, 'Basic realm="x"', "none given"),
        (
            USER,
            PASSWORD,
            'Negotiate abc==, Digest realm="x", nonce="y", qop="auth-int"',
            "no supported",
        ),
    ],
)
def test_401_that_cannot_be_answered(
    user: str | None, password: str | None, challenge: str, text: str
) -> None:
    c = client(user, password)
    c.start(0.0)
    (failed,) = c.receive(unauthorized(1, challenge), 0)
    assert isinstance(failed, Failed) and (failed.kind, failed.status) == (FailureKind.AUTH, 401)
    assert text in failed.text


def test_rfc2617_md5_vector() -> None:
    (challenge,) = parse_challenges(
        [
            'Digest realm="testrealm@host.com", qop="auth,auth-int", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
        ]
    )
    auth = Authenticator("Mufasa", "Circle Of Life", challenge, lambda: "0a4f113b")
    value = auth.header("GET", "/dir/index.html")
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value
    assert "qop=auth, nc=00000001" in value


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, response: str) -> None:
    header = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    (challenge,) = parse_challenges([header])
    auth = Authenticator(
        "Mufasa",
        "Circle of Life",
        challenge,
        lambda: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    value = auth.header("GET", "/dir/index.html")
    assert f'response="{response}"' in value
    assert f"algorithm={algorithm}" in value


def test_challenge_choice_sha256_over_md5_over_basic() -> None:
    parsed = parse_challenges(
        [
            'Basic realm="a", Digest realm="b", nonce="1", algorithm=MD5',
            'Digest realm="c", nonce="2", algorithm=SHA-256, qop="auth"',
            'Digest realm="d", nonce="3", algorithm=SHA-512-256',
        ]
    )
    assert [c.scheme for c in parsed] == [AuthScheme.BASIC, AuthScheme.DIGEST, AuthScheme.DIGEST]
    best = choose(parsed)
    assert best is not None and (best.realm, best.algorithm) == ("c", DigestAlgorithm.SHA256)
    md5_only = choose(parsed[:2])
    assert md5_only is not None and md5_only.realm == "b"


def test_quoted_commas_and_escapes_in_challenges() -> None:
    (c,) = parse_challenges(['Digest realm="a, \\"b\\"", nonce="x,y", qop="auth-int, auth"'])
    assert (c.realm, c.nonce, c.qop) == ('a, "b"', "x,y", True)


def test_sha256_sess_uses_cnonce_in_ha1() -> None:
    plain = Challenge(AuthScheme.DIGEST, "r", "n", None, DigestAlgorithm.SHA256, True, True)
    sess = Challenge(AuthScheme.DIGEST, "r", "n", None, DigestAlgorithm.SHA256_SESS, True, True)
    a = Authenticator("u", "p", plain, cnonce).header("PLAY", "rtsp://h/")
    b = Authenticator("u", "p", sess, cnonce).header("PLAY", "rtsp://h/")
    response = re.compile(r'response="([0-9a-f]{64})"')
    ra, rb = response.search(a), response.search(b)
    assert ra is not None and rb is not None and ra[1] != rb[1]
    assert "algorithm=SHA-256-sess" in b


# -- secrets ------------------------------------------------------------------------------------


def test_password_never_in_text_the_core_makes() -> None:
    texts: list[str] = []
    sent: list[bytes] = []
    for challenge in ('Digest realm="r", nonce="n", qop="auth"', 'Basic realm="r"'):
        c = client(USER, PASSWORD)
        outs: list[object] = [*c.start(0.0)]
        outs += c.receive(unauthorized(1, challenge), 0)
        outs += c.receive(answer(2, headers=(("Public", "GET_PARAMETER"),)), 0)
        outs += c.receive(answer(3, 200, body=SDP.encode(), headers=(("Content-Base", BASE),)), 0)
        outs += c.receive(answer(4, headers=(("Session", "S"),)), 0)
        outs += c.receive(answer(5, headers=(("Session", "S"),)), 0)
        outs += c.receive(answer(6) + frame(0, b"x"), 0)
        outs += c.poll(1e6)
        outs += c.receive(unauthorized(7, challenge), 1e6)
        outs += c.receive(unauthorized(8, challenge), 1e6)
        outs += c.teardown()
        assert any(isinstance(o, Playing) for o in outs)
        texts += [repr(o) for o in outs] + [repr(c)]
        for o in outs:
            if isinstance(o, Send):
                sent.append(o.data)
                texts.append(o.data.split(b"\r\n", 1)[0].decode())  # the request line
                assert b"@" not in o.data.split(b"\r\n", 1)[0]
        c2 = client(USER, PASSWORD)
        c2.start(0.0)
        c2.receive(unauthorized(1, challenge), 0)
        (failed,) = c2.receive(unauthorized(2, challenge), 0)
        assert isinstance(failed, Failed)
        texts += [failed.text, repr(failed), repr(c2)]
        auth = Authenticator(USER, PASSWORD, Challenge(AuthScheme.BASIC, "r"), cnonce)
        texts.append(repr(auth))
    assert len(sent) > 10
    assert not [t for t in texts if PASSWORD in t]
    # Digest never puts the password on the wire in any form
    digest_sent = b"".join(sent[: len(sent) // 2])
    assert b"Digest" in digest_sent and PASSWORD.encode() not in digest_sent


def test_url_with_userinfo_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as info:
        RtspClient(f"rtsp://{USER}:{PASSWORD}@192.0.2.5/cam", None, None, cnonce=cnonce)
    assert PASSWORD not in str(info.value)


def test_camera_urls_with_userinfo_are_stripped_from_requests() -> None:
    sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1\r\n"
    c = client(USER, PASSWORD)
    c.start(0.0)
    c.receive(OPTIONS_OK, 0)
    base = f"rtsp://{USER}:{PASSWORD}@192.0.2.5:8554/cam1/"
    (setup,) = c.receive(answer(2, headers=(("Content-Base", base),), body=sdp.encode()), 0)
    assert request_of(setup)[1] == "rtsp://192.0.2.5:8554/cam1/track1"
    (play_req,) = c.receive(answer(3, headers=(("Session", "S"),)), 0)
    assert request_of(play_req)[1] == "rtsp://192.0.2.5:8554/cam1/"


@pytest.mark.parametrize("bad", ["rtsp://cam/x y", "http://cam/x", "rtsp://cam/\r\nX: y", "cam/x"])
def test_bad_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        RtspClient(bad, None, None, cnonce=cnonce)


def test_header_injection_from_the_camera_is_a_protocol_failure() -> None:
    c = client(USER, PASSWORD)
    c.start(0.0)
    (failed,) = c.receive(unauthorized(1, 'Digest realm="a\rInjected: 1", nonce="n"'), 0)
    assert isinstance(failed, Failed) and failed.kind is FailureKind.PROTOCOL


# -- framing: the parser ----------------------------------------------------------------------


def test_parser_mixed_stream() -> None:
    p = Parser()
    out: list[object] = []
    stream = (
        frame(0, b"rtp")
        + b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nX-Folded: a\r\n b\r\nContent-Length: 4\r\n\r\n$$$$"
        + b"\r\n"  # a stray blank line between messages
        + frame(1, b"")
        + b"SET_PARAMETER rtsp://h/ RTSP/1.0\nCSeq: 9\n\n"  # bare LF line ends
    )
    assert p.feed(stream, out) == 2
    assert out[0] == Interleaved(0, b"rtp")
    resp = out[1]
    assert isinstance(resp, Response)
    assert (resp.status, resp.reason, resp.cseq, resp.body) == (200, "OK", 3, b"$$$$")
    assert resp.headers.get("x-folded") == "a b"
    assert out[2] == Interleaved(1, b"")
    req = out[3]
    assert isinstance(req, ServerRequest) and (req.method, req.uri) == (
        "SET_PARAMETER",
        "rtsp://h/",
    )
    assert p.buffered == 0


def test_build_request_refuses_injection() -> None:
    with pytest.raises(ValueError):
        build_request(Method.OPTIONS, "rtsp://h/", 1, [("Session", "a\r\nX: y")])
    assert build_request(Method.PLAY, "rtsp://h/", 7, [("Range", "npt=0.000-")]) == (
        b"PLAY rtsp://h/ RTSP/1.0\r\nCSeq: 7\r\nRange: npt=0.000-\r\n\r\n"
    )


def feed_all(p: Parser, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        p.feed(chunk, out)  # type: ignore[arg-type]
    return out


def test_head_over_16k_fails_without_buffering_more() -> None:
    p = Parser()
    out: list[object] = []
    p.feed(b"RTSP/1.0 200 OK\r\n", out)
    for _ in range(MAX_HEAD // 1000 + 2):
        p.feed(b"X-Pad: " + b"a" * 991 + b"\r\n", out)
        assert p.buffered <= MAX_HEAD + 4
    assert len(out) == 1 and isinstance(out[0], ParseFailure) and "head" in out[0].text
    assert p.feed(answer(1), out) == 0 and len(out) == 1  # dead after failing


def test_head_just_under_16k_is_fine() -> None:
    head = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n"
    pad = MAX_HEAD - len(head) - len(b"X: \r\n")
    out = feed_all(Parser(), [head + b"X: " + b"a" * pad + b"\r\n\r\n"])
    assert len(out) == 1 and isinstance(out[0], Response)


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (b"RTSP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), "body"),
        (b"RTSP/1.0 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "header lines"),
        (b"RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"RTSP/1.0 200 OK\r\nno colon here\r\n\r\n", "header line"),
        (b"RTSP/1.0 2000 OK\r\n\r\n", "status"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "neither"),
        (b"PLAY\r\n\r\n", "neither"),
        (b"PLAY rtsp://h/\r\n\r\n", "status or request"),
        (b"<html>", "neither"),
        (b"\x00\x01\x02", "neither"),
        (b"rtsp/1.0 200 OK\r\n\r\n", "neither"),
    ],
)
def test_malformed_messages_fail(message: bytes, text: str) -> None:
    out = feed_all(Parser(), [message])
    assert len(out) == 1 and isinstance(out[0], ParseFailure)
    assert text in out[0].text


def test_body_of_exactly_64k_and_100_header_lines_are_fine() -> None:
    body = bytes(MAX_BODY)
    msg = b"RTSP/1.0 200 OK\r\n" + b"X: y\r\n" * 99 + b"Content-Length: %d\r\n\r\n" % len(body)
    out = feed_all(Parser(), [msg + body])
    assert len(out) == 1 and isinstance(out[0], Response) and out[0].body == body


def test_garbage_fails_the_client() -> None:
    c = client()
    play(c)
    out = c.receive(frame(0, b"ok") + b"\x17\x03\x03 garbage", 0)
    assert out[0] == Interleaved(0, b"ok")
    assert isinstance(out[1], Failed) and out[1].kind is FailureKind.PROTOCOL
    assert c.receive(frame(0, b"more"), 0) == []


# -- hypothesis: splits and garbage -------------------------------------------------------------

_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
_frames = st.builds(Interleaved, st.integers(0, 255), st.binary(max_size=300))
_responses = st.builds(
    Response,
    st.integers(100, 599),
    st.text(alphabet="ABCDEFGHIJ abcdefg", max_size=20).map(str.strip),
    st.lists(st.tuples(_TOKEN, _VALUE), max_size=6).map(
        lambda fs: Headers(tuple((k, v) for k, v in fs if k.lower() != "content-length"))
    ),
    st.binary(max_size=200),
)
_requests = st.builds(
    ServerRequest,
    st.sampled_from(["ANNOUNCE", "SET_PARAMETER", "OPTIONS", "GET_PARAMETER", "REDIRECT"]),
    st.sampled_from(["rtsp://h/x", "*"]),
    st.lists(st.tuples(_TOKEN, _VALUE), max_size=3).map(
        lambda fs: Headers(tuple((k, v) for k, v in fs if k.lower() != "content-length"))
    ),
    st.binary(max_size=50),
)


def serialize(event: object) -> bytes:
    if isinstance(event, Interleaved):
        return frame(event.channel, event.data)
    if isinstance(event, Response):
        first = f"RTSP/1.0 {event.status} {event.reason}".rstrip()
    else:
        assert isinstance(event, ServerRequest)
        first = f"{event.method} {event.uri} RTSP/1.0"
    fields = (*event.headers.fields, ("Content-Length", str(len(event.body))))
    head = first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
    return head.encode() + event.body


def with_length(event: object) -> object:
    """What the parser reports: the Content-Length it was sent is among the headers."""
    if isinstance(event, Interleaved):
        return event
    assert isinstance(event, Response | ServerRequest)
    fields = (*event.headers.fields, ("Content-Length", str(len(event.body))))
    if isinstance(event, Response):
        return Response(event.status, event.reason, Headers(fields), event.body)
    return ServerRequest(event.method, event.uri, Headers(fields), event.body)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(_frames, _frames, _responses, _requests), max_size=12),
    st.lists(st.integers(0, 10**6), max_size=30),
)
def test_any_split_of_a_valid_stream_gives_the_same_events(
    events: list[object], cuts: list[int]
) -> None:
    data = b"".join(serialize(e) for e in events)
    expected = [with_length(e) for e in events]
    assert feed_all(Parser(), [data]) == expected
    assert feed_all(Parser(), split(data, cuts)) == expected
    p = Parser()
    assert feed_all(p, [data[i : i + 1] for i in range(len(data))]) == expected
    assert p.buffered == 0


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=70000 // 8), max_size=8))
def test_random_bytes_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    p = Parser()
    out: list[object] = []
    for chunk in chunks:
        p.feed(chunk, out)  # type: ignore[arg-type]
        assert p.buffered <= MAX_FRAME + MAX_HEAD + MAX_BODY + len(chunk)
    assert all(isinstance(e, Interleaved | Response | ServerRequest | ParseFailure) for e in out)
    assert sum(isinstance(e, ParseFailure) for e in out) <= 1
    assert p.failed == any(isinstance(e, ParseFailure) for e in out)


@given(
    st.binary(min_size=1, max_size=200).filter(
        lambda b: b[0] not in b"$\r\nABCDEFGHIJKLMNOPQRSTUVWXYZ"
    )
)
def test_garbage_start_is_a_failure_at_once(data: bytes) -> None:
    out = feed_all(Parser(), [data])
    assert len(out) == 1 and isinstance(out[0], ParseFailure)


@given(st.binary(max_size=2000), st.lists(st.integers(0, 10**6), max_size=10))
def test_client_survives_garbage_in_any_state(data: bytes, cuts: list[int]) -> None:
    for prefix_len in (0, len(OPTIONS_OK), len(HANDSHAKE)):
        c = client(USER, PASSWORD)
        c.start(0.0)
        outs: list[object] = [*c.receive(HANDSHAKE[:prefix_len], 0)]
        for chunk in split(data, cuts):
            outs += c.receive(chunk, 1.0)
            outs += c.poll(1e6)
        assert all(isinstance(o, Send | Playing | Interleaved | Failed) for o in outs)
        assert sum(isinstance(o, Failed) for o in outs) <= 1


@settings(max_examples=200)
@given(st.lists(st.integers(0, 10**6), max_size=40))
def test_client_any_split_of_a_whole_session_gives_the_same_outputs(cuts: list[int]) -> None:
    announce = b"ANNOUNCE rtsp://h/ RTSP/1.0\r\nCSeq: 5\r\n\r\n"
    stream = (
        unauthorized(1, 'Digest realm="r", nonce="n", qop="auth"')
        + answer(2, headers=(("Public", "GET_PARAMETER"),))
        + answer(3, headers=(("Content-Base", BASE),), body=SDP.encode())
        + answer(
            4, headers=(("Session", "S;timeout=20"), ("Transport", "RTP/AVP/TCP;interleaved=0-1"))
        )
        + frame(0, b"early")
        + answer(5, headers=(("Session", "S"), ("Transport", TCP23)))
        + frame(0, b"early2")
        + answer(6, headers=(("RTP-Info", f"url={BASE}stream=0;seq=1;rtptime=2"),))
        + b"".join(frame(i % 4, bytes([i]) * i) for i in range(40))
        + announce
        + frame(0, b"last")
    )

    def run(chunks: list[bytes]) -> list[object]:
        c = client(USER, PASSWORD)
        outs: list[object] = [*c.start(0.0)]
        for chunk in chunks:
            outs += c.receive(chunk, 0.0)
        return outs

    whole = run([stream])
    assert [type(o) for o in whole[:7]] == [Send] * 6 + [Playing]
    assert whole[7:9] == [Interleaved(0, b"early"), Interleaved(0, b"early2")]
    assert whole[-2:] == [
        Send(b"RTSP/1.0 501 Not Implemented\r\nCSeq: 5\r\n\r\n"),
        Interleaved(0, b"last"),
    ]
    assert run(split(stream, cuts)) == whole


# -- SDP -------------------------------------------------------------------------------------------


def test_parse_sdp_media() -> None:
    sdp = parse_sdp(SDP)
    assert sdp.control == "*"
    video, meta, audio = sdp.media
    assert (video.kind, video.payload_type, video.encoding, video.clock_rate) == (
        MediaKind.VIDEO,
        96,
        "H264",
        90000,
    )
    assert video.channels is None and video.control == "stream=0"
    assert video.fmtp["sprop-parameter-sets"] == "Z0LAH9kAUAW7ARAAAAMAEAAAAwPI8YMkgA==,aMuMsg=="
    assert (meta.kind, meta.encoding) == (MediaKind.OTHER, "VND.ONVIF.METADATA")
    assert audio.fmtp == {
        "streamtype": "5",
        "profile-level-id": "2",
        "mode": "AAC-hbr",
        "config": "1190",
        "sizelength": "13",
        "indexlength": "3",
        "indexdeltalength": "3",
    }


def test_parse_sdp_static_payload_type_and_defaults() -> None:
    sdp = parse_sdp("v=0\nm=audio 0 RTP/AVP 0 8\nm=video 0 RTP/AVP 97\n")
    pcmu, unknown = sdp.media
    assert (pcmu.encoding, pcmu.clock_rate, pcmu.channels, pcmu.control) == ("PCMU", 8000, 1, "*")
    assert sdp.control is None
    assert (unknown.encoding, unknown.clock_rate) == ("", 0)  # no rtpmap: not set up, no error


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\r\n\r\n",
        "hello world",
        "<html><body>401</body></html>",
        "v=0\r\nm=video 0\r\n",
        "v=0\r\nm=video 0 RTP/AVP H264\r\n",
        "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264\r\n",
        "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/fast\r\n",
    ],
)
def test_parse_sdp_garbage(text: str) -> None:
    with pytest.raises(SdpError):
        parse_sdp(text)


@given(st.text(max_size=300))
def test_parse_sdp_never_raises_anything_but_sdp_error(text: str) -> None:
    try:
        parse_sdp(text)
    except SdpError as e:
        assert str(e)


@pytest.mark.parametrize(
    ("base", "control", "expected"),
    [
        ("rtsp://h:554/cam/", "stream=0", "rtsp://h:554/cam/stream=0"),
        ("rtsp://h:554/cam", "trackID=1", "rtsp://h:554/cam/trackID=1"),
        ("rtsp://h/cam/realmonitor?channel=1&subtype=0/", "trackID=0",
         "rtsp://h/cam/realmonitor?channel=1&subtype=0/trackID=0"),
        ("rtsp://h/cam/", "rtsp://other:8554/x/track1", "rtsp://other:8554/x/track1"),
        ("rtsp://h/cam/", "RTSP://h/cam/t", "RTSP://h/cam/t"),
        ("rtsp://h:554/cam/", "*", "rtsp://h:554/cam/"),
        ("rtsp://h:554/cam/", "", "rtsp://h:554/cam/"),
        ("rtsp://h:554/cam/x", "/abs/track", "rtsp://h:554/abs/track"),
    ],
)  # fmt: skip
def test_resolve_control(base: str, control: str, expected: str) -> None:
    assert resolve_control(base, control) == expected


@pytest.mark.parametrize(
    ("transport", "channels"),
    [
        ("RTP/AVP;unicast;interleaved=6-7", (6, 7)),  # TCP left out of the profile
        ("RTP/AVP/TCP;unicast;interleaved=8", (8, 9)),
        ("RTP/AVP/TCP;unicast", (0, 1)),
        (None, (0, 1)),
    ],
)
def test_lenient_transport_answers(transport: str | None, channels: tuple[int, int]) -> None:
    sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    c = client()
    c.start(0.0)
    c.receive(OPTIONS_OK + answer(2, body=sdp.encode()), 0)
    headers = (("Session", "S"),) + ((("Transport", transport),) if transport else ())
    c.receive(answer(3, headers=headers), 0)
    (playing,) = c.receive(answer(4), 0)
    assert isinstance(playing, Playing)
    assert (playing.tracks[0].rtp_channel, playing.tracks[0].rtcp_channel) == channels


def test_reprs_of_media_events_are_short() -> None:
    assert repr(Interleaved(3, bytes(1400))) == "Interleaved(channel=3, 1400 bytes)"
    assert repr(Send(b"PLAY rtsp://h/ RTSP/1.0\r\nAuthorization: Basic eA==\r\n\r\n")) == (
        "Send('PLAY rtsp://h/ RTSP/1.0', 54 bytes)"
    )
