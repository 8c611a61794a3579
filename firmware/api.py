"""The board's HTTP API (aiohttp): status and metrics open on the LAN, footage behind a token."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from firmware.audit import AuditLog, open_audit
from firmware.catalog import Catalog
from firmware.evidence.export import (
    EXPORT_EVENT,
    ExportRefused,
    export_fields,
    export_to_temp,
    tar_stream,
)
from firmware.evidence.locks import (
    LockError,
    audit_lock,
    audit_release,
    check_reason,
    make_lock,
)
from firmware.httpedge import echo, json_error
from firmware.metrics import registry_for
from firmware.pairing_http import EXCHANGE_PATH, PairingService
from firmware.status import BoardStatus
from firmware.timefmt import iso, now_us, parse_iso


@dataclass(frozen=True)
class ApiContext:
    """What the API may use of the board: its status snapshot, its footage, its token and the
    one action it offers."""

    snapshot: Callable[[], BoardStatus]
    catalog: Catalog
    data_dir: Path
    token: str
    camera_names: Callable[[], set[str]]
    handover: Callable[[], bool] | None
    """None on a board without [pair]; else True if this board was active."""
    pairing: PairingService | None = None
    """`nvr pair code` / `nvr pair join` and the exchange (a board with [pair], keyed or not)."""
    audit: AuditLog | None = None
    """The board's audit log (evidence locks taken and released here); None: the data
    directory's, opened at the first lock."""
    archive: Any | None = None
    """The archive store (firmware/archive/store.py ArchiveStore, the uploader's): segments
    that are no longer local are served from it. None: no [archive] (or no credentials)."""
    alerts: Any | None = None
    """The board's Alerts, for `archive-corrupt`; None: logged only."""


BOARD = web.AppKey("board", ApiContext)


def _board(request: web.Request) -> ApiContext:
    return request.app[BOARD]


@web.middleware
async def require_token(request: web.Request, handler):
    """Everything but status and metrics needs `Authorization: Bearer <token>`; the pairing
    exchange is authenticated by its one-time code instead (firmware/pairing_http.py)."""
    if request.path in ("/api/v1/status", "/metrics", "/", EXCHANGE_PATH):
        return await handler(request)
    token = _board(request).token.encode()
    given = request.headers.get("Authorization", "")
    # As bytes: header text may hold anything (aiohttp keeps undecodable bytes as surrogates),
    # and compare_digest refuses non-ASCII str.
    offered = given[7:].strip().encode("utf-8", "surrogateescape")
    if not (given.startswith("Bearer ") and hmac.compare_digest(offered, token)):
        _audit_refused(request)
        raise json_error(
            web.HTTPUnauthorized,
            "authentication required: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="nvr"'},
        )
    return await handler(request)


REFUSED_AUDIT_US = 60_000_000
"""A refused address is audited once a minute at most, with the count: a flood of wrong
tokens must not flood the audit log (and the evidence log behind it)."""
REFUSALS = web.AppKey("refusals", dict)


def _audit_refused(request: web.Request) -> None:
    """A failed authentication: an audit event (the token offered is never written)."""
    seen: dict[str, tuple[int, int]] = request.app[REFUSALS]
    remote, now = request.remote or "?", now_us()
    first, count = seen.get(remote, (0, 0))
    if now - first < REFUSED_AUDIT_US:
        seen[remote] = (first, count + 1)
        return
    if len(seen) > 1024:  # many addresses: forget the quiet ones
        for k in [k for k, (t, _) in seen.items() if now - t >= REFUSED_AUDIT_US]:
            del seen[k]
    seen[remote] = (now, 0)
    _audit(request).append(now, "api-login-failed", remote=remote, path=request.path,
                           refused_since_last=count)  # fmt: skip


async def status(request: web.Request) -> web.Response:
    return web.json_response(_board(request).snapshot().to_json())


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app["registry"])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def cameras(request: web.Request) -> web.Response:
    cams = _board(request).snapshot().cameras
    return web.json_response({"cameras": [c.detail_json() for c in cams]})


def _time_arg(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        raise json_error(web.HTTPBadRequest, f"{key}: not an ISO 8601 time: {echo(raw)}") from None


async def recordings(request: web.Request) -> web.Response:
    board = _board(request)
    name = request.match_info["name"]
    if name not in board.camera_names():
        raise json_error(web.HTTPNotFound, f"no camera named {echo(name)}")
    start, end = _time_arg(request, "start"), _time_arg(request, "end")
    cat = board.catalog
    segs = cat.segments(name, start, end)
    gaps = cat.gaps(name, start, end)
    # Archived segments no longer on the disk are listed too (served from the archive).
    archived = cat.archived_ids([s.id for s in segs])
    away = cat.archived_segments(name, -(1 << 62) if start is None else start,
                                 1 << 62 if end is None else end)  # fmt: skip
    listed = [{**s.to_json(), "archived": s.id in archived, "local": True} for s in segs]
    listed += [{**s.to_json(), "archived": True, "local": False} for s in away]
    listed.sort(key=lambda d: (d["start"], d["id"]))
    return web.json_response(
        {
            "camera": name,
            "start": iso(start),
            "end": iso(end),
            "segments": listed,
            "gaps": [g.to_json() for g in gaps],
        }
    )


async def segment(request: web.Request) -> web.StreamResponse:
    board = _board(request)
    seg = board.catalog.segment(request.match_info["id"])
    if seg is None:
        arch = board.catalog.archived(request.match_info["id"])
        if arch is not None:  # no longer local: from the archive (firmware/archive/serve.py)
            from firmware.archive.serve import raise_corrupt, serve_archived

            def audited() -> None:
                _audit(request).append(
                    now_us(), "footage-download", segment=arch.id, camera=arch.segment.camera,
                    remote=request.remote or "?", range=request.headers.get("Range"),
                    archived=True,
                )  # fmt: skip

            return await serve_archived(request, arch, board.archive, raise_corrupt(board.alerts),
                                        audited)  # fmt: skip
        raise web.HTTPNotFound(text='{"error": "no such segment"}', content_type="application/json")
    path = board.data_dir / seg.path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise web.HTTPGone(
            text='{"error": "segment file is gone"}', content_type="application/json"
        ) from None
    if size != seg.bytes:
        # Truncated or grown behind the firmware's back: its ETag and hash no longer hold.
        raise json_error(web.HTTPConflict, f"segment file does not match the catalog: {size} "
                         f"bytes on disk, {seg.bytes} recorded; not served")  # fmt: skip
    _audit(request).append(
        now_us(), "footage-download", segment=seg.id, camera=seg.camera,
        remote=request.remote or "?", range=request.headers.get("Range"),
    )  # fmt: skip
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "video/mp4",
            "ETag": f'"{seg.sha256}"',
            "X-Segment-Sha256": seg.sha256,
            "Content-Disposition": f'inline; filename="{path.name}"',
        },
    )


async def handover(request: web.Request) -> web.Response:
    board = _board(request)
    if board.handover is None:
        raise json_error(web.HTTPConflict, "no [pair] configured")
    if not board.handover():
        raise json_error(web.HTTPConflict, f"this board is {board.snapshot().role}, not active")
    st = board.snapshot()
    return web.json_response({"board": st.board, "role": st.role})


# --- evidence locks --------------------------------------------------------------------------

AUDIT = web.AppKey("audit", list)
"""Holds the audit log the lock endpoints write, once opened."""


def _audit(request: web.Request) -> AuditLog:
    board, held = _board(request), request.app[AUDIT]
    if board.audit is not None:
        return board.audit
    if not held:
        held.append(open_audit(board.data_dir))
    return held[0]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise json_error(web.HTTPBadRequest, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "the body is not a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise json_error(web.HTTPBadRequest, f"{key}: missing, or not a string")
    return value


def _when(body: dict[str, Any], key: str) -> int:
    raw = _text(body, key)
    try:
        return parse_iso(raw)
    except ValueError:
        raise json_error(web.HTTPBadRequest, f"{key}: not an ISO 8601 time: {echo(raw)}") from None


async def list_locks(request: web.Request) -> web.Response:
    every = request.query.get("all", "") in ("1", "true", "yes")
    locks = _board(request).catalog.locks(active_only=not every)
    return web.json_response({"locks": [lk.to_json() for lk in locks]})


async def add_lock(request: web.Request) -> web.Response:
    """JSON {camera, start, end, reason}, or all_cameras: true instead of camera."""
    board = _board(request)
    body = await _body(request)
    if body.get("all_cameras") is True:
        if body.get("camera") is not None:
            raise json_error(web.HTTPBadRequest, "camera and all_cameras: one or the other")
        camera = None
    else:
        camera = _text(body, "camera")
    start, end = _when(body, "start"), _when(body, "end")
    now = now_us()
    try:
        lock = make_lock(camera, start, end, _text(body, "reason"), now, board.camera_names())
        lock = await asyncio.to_thread(board.catalog.add_lock, lock)
    except LockError as e:
        raise json_error(web.HTTPBadRequest, str(e)) from None
    audit_lock(_audit(request), lock, "api", now)
    return web.json_response(lock.to_json(), status=201)


async def release_lock(request: web.Request) -> web.Response:
    board = _board(request)
    body = await _body(request)
    lock_id = request.match_info["id"]
    now = now_us()
    try:
        reason = check_reason(_text(body, "reason"))
        lock = await asyncio.to_thread(board.catalog.release_lock, lock_id, reason, now)
    except LockError as e:
        if board.catalog.lock(lock_id) is None:
            raise json_error(web.HTTPNotFound, str(e)) from None
        raise json_error(web.HTTPBadRequest, str(e)) from None
    audit_release(_audit(request), lock, "api", now)
    return web.json_response(lock.to_json())


async def export_footage(request: web.Request) -> web.StreamResponse:
    """An evidence export of one camera over a range, as an uncompressed tar (made in a
    temporary directory under the data directory, sent, removed); an audit event."""
    from firmware import __version__
    from firmware.evidence.note import KeyFileError

    board = _board(request)
    camera = request.query.get("camera", "")
    if camera not in board.camera_names() | set(board.catalog.cameras()):
        raise json_error(web.HTTPNotFound, f"no camera named {echo(camera)}")
    start, end = _time_arg(request, "start"), _time_arg(request, "end")
    if start is None or end is None:
        raise json_error(web.HTTPBadRequest, "start and end are needed (ISO 8601)")
    damaged = request.query.get("allow_damaged", "") in ("1", "true")
    try:
        made = await asyncio.to_thread(export_to_temp, board.data_dir, board.catalog, camera,
                                       start, end, __version__, damaged)  # fmt: skip
    except (ExportRefused, FileNotFoundError, KeyFileError) as e:
        raise json_error(web.HTTPConflict, str(e)) from None
    try:
        fields = export_fields(made.summary, "api")
        fields.update(out=f"{made.name}.tar (download)", client=request.remote)
        _audit(request).append(now_us(), EXPORT_EVENT, **fields)
        resp = web.StreamResponse(headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": f'attachment; filename="{made.name}.tar"',
        })  # fmt: skip
        await resp.prepare(request)
        chunks = tar_stream(made.path, made.name)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        await asyncio.to_thread(made.remove)


def make_app(board: ApiContext) -> web.Application:
    app = web.Application(middlewares=[require_token])
    app[BOARD] = board
    app[AUDIT] = []
    app[REFUSALS] = {}
    app["registry"] = registry_for(board.snapshot)
    app.add_routes(
        [
            web.get("/api/v1/status", status),
            web.get("/metrics", metrics),
            web.get("/api/v1/cameras", cameras),
            web.get("/api/v1/cameras/{name}/recordings", recordings),
            web.get("/api/v1/segments/{id}", segment),
            web.post("/api/v1/pair/handover", handover),
            web.get("/api/v1/locks", list_locks),
            web.post("/api/v1/locks", add_lock),
            web.post("/api/v1/locks/{id}/release", release_lock),
            web.get("/api/v1/export", export_footage),
        ]
    )
    if board.pairing is not None:
        app.add_routes(board.pairing.routes())
    return app
