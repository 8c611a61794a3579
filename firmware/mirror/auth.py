"""Pair authentication of mirror traffic: HMAC-SHA256 under the pair key, both ways.

A request carries `X-NVR-Pair: <board> <nonce> <mac>` over its method, path with query, board
and a fresh nonce; a JSON answer carries `X-NVR-Pair-MAC` over the request's nonce and the body,
so an answer cannot be forged or replayed into another request. Segment files need no MAC of
their own: they are checked against the SHA-256 of their authenticated catalog row. Mirror
traffic is authenticated, not encrypted (the sync link is a cable between the two boards).

The nonce is `<wall clock ms>.<random hex>`, so the request's time is under its MAC too: the
serving board refuses a request outside a window around its own clock and one whose nonce it
has seen (`ReplayGuard`), so a captured request cannot be played again.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import os

from firmware.timefmt import now_us as wall_us

REQUEST_HEADER = "X-NVR-Pair"
RESPONSE_HEADER = "X-NVR-Pair-MAC"


class AuthError(Exception):
    pass


def _mac(key: bytes, *parts: bytes) -> str:
    return hmac.new(key, b"\n".join(parts), hashlib.sha256).hexdigest()


REPLAY_WINDOW_S = 30.0
"""How far a request's signed time may be from the serving board's clock, either way."""
NONCE_CACHE = 4096
"""Nonces remembered: far more than the requests of a window (a feed poll every 2 s and a few
segment fetches per committed segment)."""


def new_nonce(now_us: int | None = None) -> str:
    """A fresh nonce carrying the wall-clock time of the request."""
    t = wall_us() if now_us is None else now_us
    return f"{t // 1000}.{os.urandom(12).hex()}"


def nonce_time_us(nonce: str) -> int | None:
    """The wall-clock time a nonce carries (to the millisecond, rounded down), or None."""
    head, sep, rand = nonce.partition(".")
    if not (sep and head.isascii() and head.isdigit() and len(head) <= 16 and rand):
        return None
    return int(head) * 1000


class ReplayGuard:
    """Refuses a signed request played again: its time (in the nonce) must be within the window
    around now, and its nonce not seen before. Sans-IO (now is passed in) and bounded: when the
    cache is full the oldest nonce is forgotten and requests no newer than it are refused, so a
    forgotten nonce can never be replayed."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S, capacity: int = NONCE_CACHE) -> None:
        self.window_ms = round(window_s * 1000)
        self.capacity = capacity
        self._heap: list[tuple[int, str]] = []
        self._seen: set[str] = set()
        self._floor_ms = -1
        """Requests at or before this time are refused: their nonces may have been forgotten."""

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, nonce: str, now_us: int) -> None:
        """Remember an authentic request's nonce; AuthError for a replay or a stale request."""
        now_ms = now_us // 1000
        t_us = nonce_time_us(nonce)
        if t_us is None:
            raise AuthError("nonce carries no time (a peer on older firmware?)")
        t = t_us // 1000
        if abs(t - now_ms) > self.window_ms:
            raise AuthError(
                f"request time is {(t - now_ms) / 1000:+.1f} s from this board's clock (allowed "
                f"{self.window_ms / 1000:g} s): a replay, or the boards' clocks disagree"
            )
        while self._heap and self._heap[0][0] < now_ms - self.window_ms:
            self._seen.discard(heapq.heappop(self._heap)[1])
        if t <= self._floor_ms or nonce in self._seen:
            raise AuthError("request replayed (nonce already used)")
        heapq.heappush(self._heap, (t, nonce))
        self._seen.add(nonce)
        while len(self._heap) > self.capacity:
            old_t, old = heapq.heappop(self._heap)
            self._seen.discard(old)
            self._floor_ms = max(self._floor_ms, old_t)


def sign_request(key: bytes, board: str, method: str, path_qs: str, nonce: str) -> str:
    mac = _mac(key, b"req", method.encode(), path_qs.encode(), board.encode(), nonce.encode())
    return f"{board} {nonce} {mac}"


def verify_request(key: bytes, header: str | None, method: str, path_qs: str) -> tuple[str, str]:
    """(board, nonce) of an authentic request; AuthError otherwise."""
    parts = (header or "").split(" ")
    if len(parts) != 3:
        raise AuthError(f"missing or malformed {REQUEST_HEADER} header")
    board, nonce, mac = parts
    if not header.isascii():
        raise AuthError(f"malformed {REQUEST_HEADER} header (not ASCII)")
    want = sign_request(key, board, method, path_qs, nonce).rsplit(" ", 1)[1]
    if not hmac.compare_digest(mac, want):
        raise AuthError("wrong MAC (not signed with this pair's key)")
    return board, nonce


def sign_response(key: bytes, nonce: str, body: bytes) -> str:
    return _mac(key, b"resp", nonce.encode(), body)


def verify_response(key: bytes, nonce: str, body: bytes, mac: str | None) -> None:
    if not mac or not hmac.compare_digest(mac, sign_response(key, nonce, body)):
        raise AuthError("answer not signed with this pair's key")
