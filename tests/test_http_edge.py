"""The HTTP servers' edge (API and mirror) against a stranger on the LAN: idle and half-sent
connections, a connection flood under a low descriptor limit, and fuzzed requests. Real
servers on 127.0.0.1, spoken to with raw sockets so any byte can be sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, holds, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.api import ApiContext, make_app
from firmware.catalog import Catalog
from firmware.httpedge import ECHO_CHARS, Served, serve
from firmware.mirror.auth import REQUEST_HEADER, new_nonce, sign_request
from firmware.mirror.server import MirrorServer
from firmware.mirror.wire import FEED_PATH, SEGMENT_PATH
from firmware.roles import Role
from firmware.status import BoardStatus
from hil.camera import free_port

TOKEN = "t" * 43
KEY = bytes(range(32))


# --- a server on its own event loop thread --------------------------------------------------


class Running:
    """An app served by firmware/httpedge.py on 127.0.0.1, its loop in a thread."""

    def __init__(self, make: Callable, name: str, **kw) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> Served:
            return await serve(make(), "127.0.0.1", 0, name, **kw)

        self.served = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self.served.port
        self.guard = self.served.guard

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.served.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def board_status() -> BoardStatus:
    return BoardStatus(
        board="a",
        role=Role.SINGLE,
        virtual_ip=None,
        version="t",
        hostname="h",
        uptime_seconds=1.0,
        data_dir="/d",
        disk_free_bytes=1,
        disk_total_bytes=2,
        cameras=(),
        alerts=(),
        alerts_raised={},
        retention_deleted={},
        worker_restarts=0,
        writes_held=False,
        pair=None,
        mirror=None,
        hardware=None,
    )


def api_app(data: Path) -> Callable:
    catalog = Catalog(data)
    ctx = ApiContext(
        snapshot=board_status,
        catalog=catalog,
        data_dir=data,
        token=TOKEN,
        camera_names=lambda: {"cam1"},
        handover=None,
    )
    return lambda: make_app(ctx)


def mirror_app(data: Path) -> Callable:
    server = MirrorServer(KEY, "a", Catalog(data), data, lambda: {"cam1": True})
    return server.app


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Running]:
    run = Running(api_app(tmp_path_factory.mktemp("api")), "API")
    yield run
    run.close()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Iterator[Running]:
    run = Running(
        mirror_app(tmp_path_factory.mktemp("mirror")),
        "mirror",
        credential_headers=(REQUEST_HEADER,),
    )
    yield run
    run.close()


class Tracebacks(logging.Handler):
    """Records with a traceback or at ERROR and above, from any logger and thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.bad.append(record)


@pytest.fixture(scope="module")
def tracebacks() -> Iterator[Tracebacks]:
    h = Tracebacks()
    root = logging.getLogger()
    root.addHandler(h)
    yield h
    root.removeHandler(h)


@pytest.fixture(autouse=True)
def _fresh_log(request) -> None:
    """Each test judges only the log lines of its own requests."""
    if "tracebacks" in request.fixturenames:
        request.getfixturevalue("tracebacks").bad.clear()


def exchange(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one request sent as raw bytes; the server closes after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def error_of(body: bytes) -> str:
    """The JSON error body's message; fails if the body is not well-formed JSON."""
    doc = json.loads(body)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str), body[:200]
    return doc["error"]


def check_answer(status: int, head: bytes, body: bytes, tracebacks: Tracebacks) -> None:
    assert status < 500, (status, body[:300])
    if status >= 400:
        assert b"application/json" in head.lower(), head
        assert len(error_of(body)) <= 4 * ECHO_CHARS, body[:300]
    assert not tracebacks.bad, [r.getMessage() for r in tracebacks.bad]


# --- the items of the issue, one by one -------------------------------------------------------


def test_non_ascii_bearer_token_is_a_401_without_traceback(api, tracebacks):
    raw = request(b"GET", b"/api/v1/cameras", [(b"Authorization", "Bearer é".encode())])
    status, head, body = exchange(api.port, raw)
    assert status == 401 and "authentication required" in error_of(body)
    check_answer(status, head, body, tracebacks)
    # Latin-1 bytes (not UTF-8) too, and the right token still works.
    raw = request(b"GET", b"/api/v1/cameras", [(b"Authorization", b"Bearer \xe9\xff")])
    check_answer(*exchange(api.port, raw), tracebacks)
    ok = request(b"GET", b"/api/v1/cameras", [(b"Authorization", f"Bearer {TOKEN}".encode())])
    assert exchange(api.port, ok)[0] == 200


def test_non_ascii_mirror_pair_header_is_a_401_without_traceback(mirror, tracebacks):
    for value in ("a é 00".encode(), b"a \xe9\xff 00", "é".encode()):
        status, head, body = exchange(
            mirror.port, request(b"GET", b"/", [(REQUEST_HEADER.encode(), value)])
        )
        assert status == 401, body
        check_answer(status, head, body, tracebacks)


@pytest.mark.parametrize("value", ['"', "\x00", 'a"}{"x', "\\", "x" * 5000])
def test_bad_query_value_gets_well_formed_bounded_json(api, tracebacks, value):
    q = urllib.parse.urlencode({"start": value})
    raw = request(
        b"GET",
        f"/api/v1/cameras/cam1/recordings?{q}".encode(),
        [(b"Authorization", f"Bearer {TOKEN}".encode())],
    )
    status, head, body = exchange(api.port, raw)
    assert status == 400
    assert len(body) < 300, len(body)
    check_answer(status, head, body, tracebacks)


def test_unknown_camera_name_is_echoed_bounded(api, tracebacks):
    name = urllib.parse.quote('"\x00' + "n" * 5000)
    raw = request(
        b"GET",
        f"/api/v1/cameras/{name}/recordings".encode(),
        [(b"Authorization", f"Bearer {TOKEN}".encode())],
    )
    status, head, body = exchange(api.port, raw)
    assert status == 404 and len(body) < 300
    check_answer(status, head, body, tracebacks)


def test_unparseable_request_is_a_json_400_without_traceback(api, mirror, tracebacks):
    for port in (api.port, mirror.port):
        for raw in (
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            check_answer(*exchange(port, raw), tracebacks)


def test_plain_text_errors_become_json(mirror, api, tracebacks):
    """aiohttp's own 404 and 405, and the mirror's plain-text refusals."""
    for port, raw in (
        (api.port, request(b"GET", b"/nope", [])),
        (api.port, request(b"DELETE", b"/api/v1/status", [])),
        (mirror.port, request(b"GET", FEED_PATH.encode(), [])),
    ):
        status, head, body = exchange(port, raw)
        assert status in (401, 404, 405)
        check_answer(status, head, body, tracebacks)


# --- idle connections and the cap ------------------------------------------------------------


def half_request(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")  # never the blank line
    return s


def closed_by_server(s: socket.socket) -> bool:
    """EOF (or a reset) from the server; a half request gets no answer but that."""
    s.settimeout(0)
    try:
        s.recv(4096)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.fixture
def small_api(tmp_path) -> Iterator[Running]:
    run = Running(api_app(tmp_path), "API", max_connections=8, idle_s=2.0)
    yield run
    run.close()


def test_idle_and_half_sent_connections_are_closed_after_the_timeout(small_api):
    socks = [half_request(small_api.port) for _ in range(3)]
    socks.append(socket.create_connection(("127.0.0.1", small_api.port), timeout=10))  # silent
    try:
        t0 = time.monotonic()
        wait_until(lambda: all(closed_by_server(s) for s in socks), 10, "idle sockets closed")
        assert time.monotonic() - t0 < 6
        assert time.monotonic() - t0 > 1.5  # not before the timeout
        wait_until(lambda: not small_api.guard.open, 5, "the guard forgetting them")
    finally:
        for s in socks:
            s.close()


def test_at_the_cap_a_real_client_is_served_and_the_oldest_idle_is_closed(small_api):
    socks = [half_request(small_api.port) for _ in range(20)]
    try:
        wait_until(lambda: small_api.guard.evicted >= 12, 10, "evictions")
        assert len(small_api.guard.open) <= 8 + 1
        assert closed_by_server(socks[0]) and not closed_by_server(socks[-1])
        status, _, body = exchange(small_api.port, request(b"GET", b"/api/v1/status", []))
        assert status == 200 and json.loads(body)["board"] == "a"
    finally:
        for s in socks:
            s.close()


def test_at_the_cap_with_every_connection_in_use_a_new_one_gets_503(small_api):
    keep = []
    try:
        for _ in range(8):  # clients that sent a request and keep their connection
            s = socket.create_connection(("127.0.0.1", small_api.port), timeout=10)
            s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            keep.append(s)
        # Refused at once: a 503 for a client that has not sent yet (one that has gets a reset).
        status, _, body = exchange(small_api.port, b"")
        assert status == 503 and error_of(body) == "too many connections"
        assert small_api.guard.refused == 1 and small_api.guard.evicted == 0
    finally:
        for s in keep:
            s.close()


# --- fuzz -------------------------------------------------------------------------------------

HEADER_NAMES = [
    b"Authorization",
    REQUEST_HEADER.encode(),
    b"Range",
    b"Accept",
    b"If-None-Match",
    b"Content-Type",
    b"X-Anything",
]
VALUE = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.encode),
    st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=60),
).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
QUERY_TEXT = st.text(max_size=40)
API_PATHS = [
    "/api/v1/status",
    "/metrics",
    "/api/v1/cameras",
    "/api/v1/cameras/{}/recordings",
    "/api/v1/segments/{}",
    "/api/v1/pair/handover",
    "/{}",
]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def target(path: str, fill: str, query: list[tuple[str, str]], raw_tail: bytes) -> bytes:
    t = path.format(urllib.parse.quote(fill, safe="")) if "{}" in path else path
    q = urllib.parse.urlencode(query)
    return (t + ("?" + q if q else "")).encode() + raw_tail


MIRROR_KEYS = ["seg", "run", "lag_ms", "behind", "x"]
RAW_TAIL = st.one_of(
    st.just(b""),
    st.binary(max_size=12).map(lambda b: bytes(c for c in b if c not in b" \r\n#")),
)


@FUZZ
@given(
    method=st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS"]),
    path=st.sampled_from(API_PATHS),
    fill=QUERY_TEXT,
    query=st.lists(st.tuples(st.sampled_from(["start", "end", "x"]), QUERY_TEXT), max_size=3),
    raw_tail=RAW_TAIL,
    auth=st.one_of(st.none(), st.just(f"Bearer {TOKEN}".encode()), VALUE),
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), VALUE), max_size=3),
)
def test_fuzzed_requests_to_the_api(
    api, tracebacks, method, path, fill, query, raw_tail, auth, headers
):
    hs = ([(b"Authorization", auth)] if auth is not None else []) + headers
    status, head, body = exchange(
        api.port, request(method, target(path, fill, query, raw_tail), hs)
    )
    if method == b"HEAD":
        body = b'{"error": ""}' if status >= 400 else body
    check_answer(status, head, body, tracebacks)


@FUZZ
@given(
    method=st.sampled_from([b"GET", b"POST", b"HEAD"]),
    segment=st.booleans(),
    fill=QUERY_TEXT,
    query=st.lists(st.tuples(st.sampled_from(MIRROR_KEYS), QUERY_TEXT), max_size=4),
    raw_tail=RAW_TAIL,
    signed=st.booleans(),
    pair=VALUE,
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), VALUE), max_size=2),
)
def test_fuzzed_requests_to_the_mirror(
    mirror, tracebacks, method, segment, fill, query, raw_tail, signed, pair, headers
):
    path = SEGMENT_PATH + "{}" if segment else FEED_PATH
    raw_target = target(path, fill, [*query, ("wait", "0")] if not segment else query, raw_tail)
    if signed:
        path_qs = raw_target.decode("latin-1")
        pair = sign_request(KEY, "b", method.decode(), path_qs, new_nonce()).encode()
    hs = [(REQUEST_HEADER.encode(), pair), *headers]
    status, head, body = exchange(mirror.port, request(method, raw_target, hs))
    if method == b"HEAD":
        body = b'{"error": ""}' if status >= 400 else body
    check_answer(status, head, body, tracebacks)


# --- the flood under a low descriptor limit: a real board in its own process ----------------

FLOOD_BOARD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
try:
    import firmware.httpedge as edge
    edge.IDLE_S = 2.0
except ImportError:
    pass
from firmware.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_connection_flood_under_a_128_descriptor_limit_keeps_the_board_recording(tmp_path):
    """140 half-sent requests against a board limited to 128 descriptors: the API answers a
    real client throughout, the half requests are closed, the data disk is never taken for
    missing, and the log stays short."""
    data, port = tmp_path / "data", free_port()
    log = tmp_path / "nvr.log"
    argv = [
        "record",
        "--data",
        str(data),
        "--camera",
        "cam1=rtsp://127.0.0.1:9/none",
        "--api-port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", FLOOD_BOARD, *argv],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    socks: list[socket.socket] = []

    def status() -> dict:
        _, _, body = exchange(port, request(b"GET", b"/api/v1/status", []), timeout=5)
        return json.loads(body)

    try:
        wait_until(status, 30, "the board's API")
        for _ in range(140):
            with contextlib.suppress(OSError):  # refused or timed out: shedding is fine
                socks.append(half_request(port))
        seen: list[set[str]] = []
        for _ in range(5):
            st_ = status()  # a real client, answered during the flood
            seen.append({a["id"] for a in st_["alerts"]})
        wait_until(lambda: all(closed_by_server(s) for s in socks), 15, "half requests closed")

        def healthy() -> bool:
            seen.append({a["id"] for a in status()["alerts"]})
            return proc.poll() is None

        holds(healthy, 3.0, "the board up after the flood", every=0.3)  # 3 disk-monitor looks
        assert all("disk-missing" not in ids and "fd-exhausted" not in ids for ids in seen), seen
        assert proc.poll() is None
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(30)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert len(text.splitlines()) < 80, text[-3000:]
