"""Pairing on a running board: the routes `nvr pair code` and `nvr pair join` talk to, and the
exchange itself as a WebSocket on the API port (firmware/pairing.py holds the protocol).

`code` and `join` are admin actions: they answer only a client on the board itself (loopback,
the console and the CLI) that also holds the API token. The exchange route is open: the code is
its authentication, each exchange costs the code one of its tries, and frames are bounded and
timed. The joiner reaches the waiter at its configured peer sync address, on the API port (the
same on both boards)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from firmware.config import ConfigError
from firmware.httpedge import json_error
from firmware.pairing import (
    CODE_TTL_S,
    EXCHANGE_S,
    MAX_FRAME,
    CodeState,
    Done,
    Hello,
    Joiner,
    Message,
    PairingWireError,
    Refusal,
    Refused,
    Step,
    Waiter,
    decode,
    encode,
)
from firmware.pairkey import key_fingerprint, load_pair_key, write_pair_key

log = logging.getLogger(__name__)

EXCHANGE_PATH = "/api/v1/pair/exchange"
STEP_S = 10.0
"""Each frame of the exchange must arrive within this long."""
CONNECT_S = 5.0
WS_LIMIT = MAX_FRAME + 1
"""aiohttp refuses a message of max_msg_size bytes or more."""
MAX_BODY = 256
"""The admin routes' JSON bodies are tiny."""


class PairingError(Exception):
    """Pairing cannot start on this board (already paired); the message says why."""


class PairingRefused(Exception):
    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.text)
        self.reason = reason


@dataclass(frozen=True)
class PeerAddress:
    host: str
    port: int

    def url(self) -> URL:
        return URL.build(scheme="http", host=self.host, port=self.port, path=EXCHANGE_PATH)


class PairingService:
    """Both ends of pairing on one board. `on_paired(fingerprint)` runs on the event loop once
    this board's key file is written (the board then restarts into the pair)."""

    def __init__(self, key_file: Path, peer: PeerAddress, on_paired: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic,
                 on_joined: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.key_file = key_file
        self.peer = peer
        self.on_paired = on_paired
        self.on_joined = on_joined
        """Runs before the key is written when this board joins (it takes the pair's settings)."""
        self.clock = clock
        self.waiter: Waiter | None = None
        self.replace = False
        self.fingerprint = _fingerprint_of(key_file)
        """Of the key this board holds (None: unpaired or a bad key, said elsewhere)."""
        self._joining = asyncio.Lock()

    def current_fingerprint(self) -> str | None:
        return self.fingerprint

    def _check_free(self, replace: bool) -> None:
        if self.key_file.exists() and not replace:
            raise PairingError(
                f"this board already holds a pair key (fingerprint "
                f"{self.current_fingerprint() or '?'}); add --replace to pair it anew"
            )

    # --- the waiting board ---------------------------------------------------------------------

    def show_code(self, replace: bool = False) -> Waiter:
        """A new code; the one shown before is void."""
        self._check_free(replace)
        self.replace = replace
        self.waiter = Waiter.new(self.clock())
        log.info("pairing code shown (valid %d s, %d tries)", CODE_TTL_S, self.waiter.tries_left)
        return self.waiter

    async def exchange(self, request: web.Request) -> web.StreamResponse:
        """The waiter's side of one exchange, on a WebSocket: bounded frames, timed steps."""
        ws = web.WebSocketResponse(max_msg_size=WS_LIMIT)
        await ws.prepare(request)
        waiter = self.waiter
        who = request.remote
        hello: Hello | None = None
        try:
            while True:
                msg = await _receive_msg(ws)
                if isinstance(msg, Hello) and hello is None:
                    hello = msg
                step = self._waiter_step(msg, waiter)
                if step.key is not None:
                    step = await self._save(step.key)
                if step.send is not None:
                    await ws.send_bytes(encode(step.send))
                if step.ended:
                    if step.refusal is not None:
                        log.warning("pairing exchange from %s refused: %s", who, step.refusal.text)
                    break
        except ConnectionResetError:
            log.warning("pairing exchange from %s: the connection was reset", who)
        finally:
            if waiter is not None and hello is not None:
                waiter.abandon(hello)
            await ws.close()
        return ws

    def _waiter_step(self, msg: Message | None, waiter: Waiter | None) -> Step:
        if msg is None:
            return Step(send=Refused(Refusal.PROTOCOL), ended=True, refusal=Refusal.PROTOCOL)
        if waiter is None:
            return Step(send=Refused(Refusal.NO_CODE), ended=True, refusal=Refusal.NO_CODE)
        return waiter.handle(msg, self.clock())

    async def _save(self, key: bytes) -> Step:
        try:
            await asyncio.to_thread(write_pair_key, self.key_file, key, self.replace)
        except (OSError, ValueError) as e:
            log.error("pairing: cannot write the pair key %s: %s", self.key_file, e)
            return Step(send=Refused(Refusal.NOT_SAVED), ended=True, refusal=Refusal.NOT_SAVED)
        self._paired(key)
        return Step(send=Done(), ended=True)

    def _paired(self, key: bytes) -> None:
        self.fingerprint = key_fingerprint(key)
        log.warning("paired: pair key written to %s, fingerprint %s", self.key_file,
                    self.fingerprint)  # fmt: skip
        self.on_paired(self.fingerprint)

    # --- the joining board ---------------------------------------------------------------------

    async def join(self, code: str, replace: bool = False) -> str:
        """Run the exchange with the peer; the fingerprint on success, PairingRefused else.
        ValueError for a code that is not one; PairingError when this board is paired."""
        joiner = Joiner(code)
        self._check_free(replace)
        if self._joining.locked():
            raise PairingRefused(Refusal.BUSY)
        async with self._joining:
            key = await self._run_joiner(joiner)
            try:
                await asyncio.to_thread(self.on_joined)
                await asyncio.to_thread(write_pair_key, self.key_file, key, replace)
            except (OSError, ValueError) as e:
                log.error("pairing: cannot write the pair key %s: %s", self.key_file, e)
                raise PairingRefused(Refusal.NOT_SAVED) from None
            self._paired(key)
            return self.fingerprint or ""

    async def _run_joiner(self, joiner: Joiner) -> bytes:
        timeout = aiohttp.ClientTimeout(total=EXCHANGE_S, connect=CONNECT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.ws_connect(self.peer.url(), max_msg_size=WS_LIMIT) as ws,
            ):
                return await _joiner_talk(ws, joiner)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            log.warning("pairing: %s: %s", self.peer.url(), e)
            raise PairingRefused(Refusal.UNREACHABLE) from None

    # --- the admin routes ----------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(EXCHANGE_PATH, self.exchange),
            web.post("/api/v1/pair/code", self._code_route),
            web.post("/api/v1/pair/join", self._join_route),
            web.get("/api/v1/pair", self._state_route),
        ]

    async def _code_route(self, request: web.Request) -> web.Response:
        body = await _admin_body(request)
        try:
            waiter = self.show_code(bool(body.get("replace")))
        except PairingError as e:
            raise json_error(web.HTTPConflict, str(e)) from None
        return web.json_response({"code": waiter.shown, "expires_in_seconds": CODE_TTL_S,
                                  "tries_left": waiter.tries_left})  # fmt: skip

    async def _join_route(self, request: web.Request) -> web.Response:
        body = await _admin_body(request)
        code = body.get("code")
        if not isinstance(code, str):
            raise json_error(web.HTTPBadRequest, "code: missing")
        try:
            fp = await self.join(code, bool(body.get("replace")))
        except ValueError as e:
            raise json_error(web.HTTPBadRequest, str(e)) from None
        except PairingError as e:
            raise json_error(web.HTTPConflict, str(e)) from None
        except PairingRefused as e:
            status = web.HTTPForbidden if e.reason is Refusal.WRONG_CODE else web.HTTPConflict
            if e.reason is Refusal.UNREACHABLE:
                status = web.HTTPBadGateway
            raise json_error(status, f"pairing refused: {e}") from None
        return web.json_response({"fingerprint": fp})

    async def _state_route(self, request: web.Request) -> web.Response:
        _local_only(request)
        now = self.clock()
        code = None
        if self.waiter is not None:
            w = self.waiter
            code = {"state": w.state(now).value, "tries_left": w.tries_left,
                    "expires_in_seconds": round(max(0.0, w.expires - now), 1)}  # fmt: skip
        fp = self.current_fingerprint()
        return web.json_response({"paired": fp is not None, "fingerprint": fp, "code": code})


def _fingerprint_of(key_file: Path) -> str | None:
    try:
        return key_fingerprint(load_pair_key(key_file))
    except (ConfigError, OSError):
        return None


async def _joiner_talk(ws: aiohttp.ClientWebSocketResponse, joiner: Joiner) -> bytes:
    """The joiner's side of one exchange: the key once the waiter said Done."""
    await ws.send_bytes(encode(joiner.hello()))
    while True:
        msg = await _receive_msg(ws)
        if msg is None:
            raise PairingRefused(Refusal.PROTOCOL)
        step = joiner.handle(msg)
        if step.send is not None:
            await ws.send_bytes(encode(step.send))
        if step.key is not None:
            return step.key
        if step.ended:
            raise PairingRefused(step.refusal or Refusal.PROTOCOL)


def code_open(state: dict) -> bool:
    code = state.get("code") or {}
    return code.get("state") == CodeState.OPEN.value


async def _receive(ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> bytes | None:
    """One binary frame within STEP_S; None for anything else (text, close, too long, late)."""
    try:
        msg = await ws.receive(timeout=STEP_S)
    except TimeoutError:
        return None
    if msg.type is not aiohttp.WSMsgType.BINARY:
        return None
    return msg.data


async def _receive_msg(
    ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> Message | None:
    """The next message, decoded; None for anything that is not one (garbled, late, closed)."""
    frame = await _receive(ws)
    try:
        return None if frame is None else decode(frame)
    except PairingWireError:
        return None


def _local_only(request: web.Request) -> None:
    try:
        addr = ipaddress.ip_address(request.remote or "")
    except ValueError:
        addr = None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr is None or not addr.is_loopback:
        raise json_error(web.HTTPForbidden, "pairing is run on the board itself (console or "
                         "`nvr pair` there), not over the network")  # fmt: skip


async def _admin_body(request: web.Request) -> dict:
    _local_only(request)
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise json_error(web.HTTPRequestEntityTooLarge, "body too long")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise json_error(web.HTTPRequestEntityTooLarge, "body too long")
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "body: not a JSON object")
    return body
