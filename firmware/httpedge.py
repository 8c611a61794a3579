"""The edge of the board's HTTP servers (the API and the mirror): what a stranger on the LAN can
do to them before any handler runs.

Without bounds, sockets that never finish a request each hold a file descriptor for ever; once
the process runs out, nothing can open a file any more (the catalog, the data disk's identity
file). So every server here closes a connection that has not delivered a whole request within
`IDLE_S` of opening (and aiohttp's keep-alive timeout closes one idle for as long after an
answer), holds at most a share of the process's descriptors, and when that share is taken
closes the oldest connection that never delivered a request, so a flood of half requests cannot
lock out a real client. Errors are answered as JSON with bounded text; a client's mistake (any
4xx) is logged as one line, never with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import reprlib
from dataclasses import dataclass

from aiohttp import web

from firmware.fds import fd_limit

log = logging.getLogger("nvr.http")

IDLE_S = 20.0
"""A connection gets this long to deliver a whole request after opening or after an answer.
Longer than aiohttp clients keep an idle connection (15 s), so a client never sends on a
connection the server is closing."""
MAX_CONNECTIONS = 256
"""Connections one server holds at most; lower when the descriptor limit is low."""
FD_SHARE = 8
"""One server holds at most 1/FD_SHARE of the process's descriptor limit (API and mirror
together a quarter; the rest is the recorder's, the catalog's and the data disk checks')."""
ECHO_CHARS = 64
"""What of a client's input an error message repeats, at most."""

_echo = reprlib.Repr()
_echo.maxstring = ECHO_CHARS
_echo.maxother = ECHO_CHARS


def echo(value: object) -> str:
    """A client's input quoted in an error message: repr'd (no control characters), cut short."""
    return _echo.repr(value)


def json_error(cls: type[web.HTTPException], message: str,
               headers: dict[str, str] | None = None) -> web.HTTPException:  # fmt: skip
    """An HTTP error whose body is `{"error": message}`, well-formed whatever the message holds."""
    return cls(text=json.dumps({"error": message}), content_type="application/json",
               headers=headers)  # fmt: skip


_KEEP_HEADERS = ("WWW-Authenticate", "Allow", "Retry-After")
CREDENTIALS = web.AppKey("edge-credential-headers", tuple)
"""Headers of an app that carry credentials: printable ASCII or the request is refused."""


@web.middleware
async def edge(request: web.Request, handler):
    """Outermost middleware: marks the connection as having delivered a request, and answers
    any HTTP error that is not JSON yet (aiohttp's own 404 and 405, plain-text ones) as JSON."""
    proto = request.protocol
    if isinstance(proto, EdgeHandler):
        proto.delivered = True
    for name in request.app.get(CREDENTIALS, ()):
        value = request.headers.get(name, "")
        if not (value.isascii() and value.isprintable()):
            # Credentials are ASCII by protocol; anything else never reaches the checks.
            raise json_error(web.HTTPUnauthorized, f"malformed {name} header")
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        headers = {k: e.headers[k] for k in _KEEP_HEADERS if k in e.headers}
        text = e.text or e.reason
        if len(text) > 2 * ECHO_CHARS:
            text = text[: 2 * ECHO_CHARS] + "..."
        return web.json_response({"error": text}, status=e.status, headers=headers)


class EdgeHandler(web.RequestHandler):
    """aiohttp's connection handler with a deadline for the first request and JSON errors."""

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kw) -> None:
        super().__init__(manager, **kw)
        self.guard = guard
        self.delivered = False
        """A request reached the application on this connection."""
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.idle_s, self._first_request_due)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self.guard.lost(self)
        super().connection_lost(exc)

    def _first_request_due(self) -> None:
        if not self.delivered and self.transport is not None:
            self.guard.closed_idle += 1
            self.force_close()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:  # fmt: skip
        """A request aiohttp could not parse (4xx: one log line) or an unhandled exception
        (5xx: a bug, logged with its traceback); either way a JSON answer."""
        if status >= 500:
            log.error("%s: error handling a request from %s", self.guard.name, request.remote,
                      exc_info=exc)  # fmt: skip
            text = "internal error"
        else:
            text = message or (str(exc) if exc else "bad request")
            text = text if len(text) <= 2 * ECHO_CHARS else text[: 2 * ECHO_CHARS] + "..."
            log.info("%s: bad request from %s: HTTP %d %s", self.guard.name, request.remote,
                     status, echo(text))  # fmt: skip
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun; the connection is dropped")
        resp = web.json_response({"error": text}, status=status)
        resp.force_close()
        return resp


class _Refused(asyncio.Protocol):
    """A connection over the cap with none to make room: 503 and closed at once (a client
    that has already sent its request may see a reset instead: nothing lingers to read it)."""

    BODY = b'{"error": "too many connections"}'
    ANSWER = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.ANSWER)
        transport.close()


class ConnectionGuard:
    """The protocol factory of one server: caps its connections."""

    def __init__(self, name: str, server: web.Server, max_connections: int, idle_s: float,
                 handler_kw: dict) -> None:  # fmt: skip
        self.name, self.server = name, server
        self.max_connections, self.idle_s = max_connections, idle_s
        self.handler_kw = handler_kw
        self.open: dict[EdgeHandler, None] = {}
        """Connections in the order they were opened (a dict keeps it)."""
        self.evicted = self.refused = self.closed_idle = 0

    def __call__(self) -> asyncio.Protocol:
        if len(self.open) >= self.max_connections and not self._evict():
            self.refused += 1
            log.warning("%s: %d connections open, all in use; new ones are refused",
                        self.name, self.max_connections)  # fmt: skip
            return _Refused()
        handler = EdgeHandler(self, self.server, loop=asyncio.get_running_loop(),
                              **self.handler_kw)  # fmt: skip
        self.open[handler] = None
        return handler

    def _evict(self) -> bool:
        """Close the oldest connection that never delivered a request; False if none."""
        for handler in self.open:
            if not handler.delivered and handler.transport is not None:
                handler.force_close()
                self.evicted += 1
                log.warning("%s: %d connections open; closing the oldest that sent no request",
                            self.name, self.max_connections)  # fmt: skip
                return True
        return False

    def lost(self, handler: EdgeHandler) -> None:
        self.open.pop(handler, None)


def connection_cap() -> int:
    return max(4, min(MAX_CONNECTIONS, fd_limit() // FD_SHARE))


@dataclass
class Served:
    """One running server: its runner (the app's lifecycle), listening socket and guard."""

    runner: web.AppRunner
    listener: asyncio.Server
    guard: ConnectionGuard

    @property
    def port(self) -> int:
        return self.listener.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.listener.close()
        await self.runner.cleanup()


async def serve(
    app: web.Application,
    host: str,
    port: int,
    name: str,
    credential_headers: tuple[str, ...] = (),
    max_connections: int | None = None,
    idle_s: float | None = None,
) -> Served:
    """Serve app on host:port with the edge's bounds (defaults: `connection_cap()`, `IDLE_S`)."""
    cap = max_connections or connection_cap()
    idle = IDLE_S if idle_s is None else idle_s
    app[CREDENTIALS] = credential_headers
    app.middlewares.insert(0, edge)
    handler_kw = {"keepalive_timeout": idle, "access_log": None}
    runner = web.AppRunner(app, **handler_kw)
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(name, runner.server, cap, idle, handler_kw)
    # One accept round takes up to `backlog` sockets before any closed one frees its
    # descriptor, so the backlog is bounded by the cap too.
    listener = await asyncio.get_running_loop().create_server(
        guard, host, port, reuse_address=True, backlog=min(128, cap)
    )
    return Served(runner, listener, guard)
