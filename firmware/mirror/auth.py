"""Pair authentication of mirror traffic: HMAC-SHA256 under the pair key, both ways.

A request carries `X-NVR-Pair: <board> <nonce> <mac>` over its method, path with query, board
and a fresh nonce; a JSON answer carries `X-NVR-Pair-MAC` over the request's nonce and the body,
so an answer cannot be forged or replayed into another request. Segment files need no MAC of
their own: they are checked against the SHA-256 of their authenticated catalog row. Mirror
traffic is authenticated, not encrypted (the sync link is a cable between the two boards).
"""

from __future__ import annotations

import hashlib
import hmac
import os

REQUEST_HEADER = "X-NVR-Pair"
RESPONSE_HEADER = "X-NVR-Pair-MAC"


class AuthError(Exception):
    pass


def _mac(key: bytes, *parts: bytes) -> str:
    return hmac.new(key, b"\n".join(parts), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return os.urandom(16).hex()


def sign_request(key: bytes, board: str, method: str, path_qs: str, nonce: str) -> str:
    mac = _mac(key, b"req", method.encode(), path_qs.encode(), board.encode(), nonce.encode())
    return f"{board} {nonce} {mac}"


def verify_request(key: bytes, header: str | None, method: str, path_qs: str) -> tuple[str, str]:
    """(board, nonce) of an authentic request; AuthError otherwise."""
    parts = (header or "").split(" ")
    if len(parts) != 3:
        raise AuthError(f"missing or malformed {REQUEST_HEADER} header")
    board, nonce, mac = parts
    want = sign_request(key, board, method, path_qs, nonce).rsplit(" ", 1)[1]
    if not hmac.compare_digest(mac, want):
        raise AuthError("wrong MAC (not signed with this pair's key)")
    return board, nonce


def sign_response(key: bytes, nonce: str, body: bytes) -> str:
    return _mac(key, b"resp", nonce.encode(), body)


def verify_response(key: bytes, nonce: str, body: bytes, mac: str | None) -> None:
    if not mac or not hmac.compare_digest(mac, sign_response(key, nonce, body)):
        raise AuthError("answer not signed with this pair's key")
