"""A hostile peer, in the real protocols. `HostileAdverts` makes the adverts a board on the
LAN with another key (or none) would send. `HostilePeer`, a mirror peer, answers a board's
mirror requests (signed with the pair key, with another key, or not at all) with what an
attacker or a broken peer would send: rows that climb out of the data directory, null fields,
files far longer than their row, feed bodies of hundreds of megabytes. Tests point a real
MirrorClient at it on loopback.

The mirror peer is a plain threaded HTTP server so it can lie at the byte level (a
Content-Length it does not keep, a body that never ends), which a well-behaved server library
would not let it do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from firmware.failover.advert import Advert, encode
from firmware.mirror.auth import REQUEST_HEADER, RESPONSE_HEADER, sign_response
from firmware.mirror.wire import FEED_PATH, SEGMENT_PATH

CHUNK = 1 << 16


@dataclass(frozen=True)
class HostileAdverts:
    """Adverts from a board that claims the pair: `key` signs them (the pair key: a peer that
    replays or forges with the key; None: a fresh random key per advert, a mis-keyed board)."""

    pair_id: str
    board: str = "a"
    key: bytes | None = None

    def claims(self, n: int, seq: int = 2**62, priority: int = 254) -> list[bytes]:
        """n adverts saying "active, best priority", sequence numbers from `seq` on."""
        base = Advert(pair_id=self.pair_id, board_id=self.board, priority=priority,
                      state="active", epoch=99, seq=seq, interval_ms=100)  # fmt: skip
        return [
            encode(dataclasses.replace(base, seq=seq + i), self.key or os.urandom(32))
            for i in range(n)
        ]

    @staticmethod
    def garbage(n: int) -> list[bytes]:
        """n datagrams of random bytes, 0 to 11 * (n - 1) long."""
        return [os.urandom(i * 11) for i in range(n)]


@dataclass
class FileAnswer:
    """What the peer sends for one segment: `data`, then `tail` more bytes (zeros) that no
    row announced; `length` is the Content-Length it claims (None: none, the body ends when
    the connection closes)."""

    data: bytes
    tail: int = 0
    length: int | None = None


@dataclass
class HugeFeed:
    """A feed answer of `size` bytes of JSON-looking filler, unsigned; `announce` sends its
    Content-Length (else the body is delimited by the connection's end)."""

    size: int
    announce: bool = True


@dataclass
class HostilePeer:
    key: bytes | None
    """The pair key (an authentic but hostile peer), another key, or None (no MAC at all)."""
    pages: list[dict | HugeFeed] = field(default_factory=list)
    """Feed answers in order; the last is repeated. Empty: empty pages."""
    files: dict[str, FileAnswer] = field(default_factory=dict)
    board: str = "b"
    answers: dict[str, dict | HugeFeed] = field(default_factory=dict)
    """Answers to other GET paths (exact path), e.g. the pair settings' head and document."""
    bind: tuple[str, int] = ("127.0.0.1", 0)
    """Where it listens: loopback for a test's own client, a rig host's mirror port else."""
    requests: Counter = field(default_factory=Counter)
    sent: Counter = field(default_factory=Counter)
    """Bytes of body written per request kind ("feed", or the segment id), as far as the
    connection took them."""

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    # --- what it answers --------------------------------------------------------------------

    def empty_page(self) -> dict:
        return {"board": self.board, "segments": [], "runs": [], "seg": 0, "run": 0,
                "more": False, "cameras": {}}  # fmt: skip

    def _feed_answer(self) -> dict | HugeFeed:
        with self._lock:
            n = self.requests["feed"]
            self.requests["feed"] += 1
        if not self.pages:
            return self.empty_page()
        return self.pages[min(n, len(self.pages) - 1)]

    def _sign(self, nonce: str, body: bytes) -> str:
        return sign_response(self.key, nonce, body) if self.key is not None else ""

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def __enter__(self) -> HostilePeer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = (self.headers.get(REQUEST_HEADER) or "").split(" ")
                nonce = parts[1] if len(parts) == 3 else ""
                try:
                    if self.path.startswith(FEED_PATH):
                        peer._answer_feed(self, nonce)
                    elif self.path.startswith(SEGMENT_PATH):
                        peer._answer_file(self, self.path.removeprefix(SEGMENT_PATH))
                    elif self.path in peer.answers:
                        with peer._lock:
                            peer.requests[self.path] += 1
                        peer._answer_json(self, nonce, peer.answers[self.path], self.path)
                    else:
                        self.send_error(404)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self._server = ThreadingHTTPServer(self.bind, Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="hostile-peer",
                         daemon=True).start()  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # --- the answers --------------------------------------------------------------------------

    def _stream(self, h: BaseHTTPRequestHandler, kind: str, chunks: Iterator[bytes]) -> None:
        for chunk in chunks:
            h.wfile.write(chunk)
            with self._lock:
                self.sent[kind] += len(chunk)

    def _answer_feed(self, h: BaseHTTPRequestHandler, nonce: str) -> None:
        self._answer_json(h, nonce, self._feed_answer(), "feed")

    def _answer_json(
        self, h: BaseHTTPRequestHandler, nonce: str, answer: dict | HugeFeed, kind: str
    ) -> None:
        if isinstance(answer, HugeFeed):
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            if answer.announce:
                h.send_header("Content-Length", str(answer.size))
            else:
                h.send_header("Connection", "close")
                h.close_connection = True
            h.end_headers()
            self._stream(h, kind, _filler(b'{"segments": [', answer.size))
            return
        body = json.dumps(answer).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.send_header(RESPONSE_HEADER, self._sign(nonce, body))
        h.end_headers()
        self._stream(h, kind, iter([body]))

    def _answer_file(self, h: BaseHTTPRequestHandler, sid: str) -> None:
        with self._lock:
            self.requests[sid] += 1
        answer = self.files.get(sid)
        if answer is None:
            h.send_error(404)
            return
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        if answer.length is not None:
            h.send_header("Content-Length", str(answer.length))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        self._stream(h, sid, iter([answer.data]))
        self._stream(h, sid, _filler(b"", answer.tail))


def _filler(head: bytes, size: int) -> Iterator[bytes]:
    """size bytes: head, then zeros, in chunks."""
    yield head[:size]
    left = size - len(head[:size])
    block = bytes(CHUNK)
    while left > 0:
        yield block[: min(CHUNK, left)]
        left -= CHUNK
