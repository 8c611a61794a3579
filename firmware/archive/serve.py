"""Reading back: the API serves a segment that is no longer local from the archive store,
streamed, with the headers of a local one, and checked against its SHA-256 as it streams.

The last chunk read is held back until the whole object has been hashed: a body that does not
match its hash (or a size that differs) never reaches the client complete. The response is cut
short (the client sees fewer bytes than Content-Length) and `archive-corrupt` is raised.
Range requests are not served from the archive: the answer is 200 with the whole body
(`Accept-Ranges: none`), since the hash can only be checked over the whole object."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from firmware.alert_ids import AlertId, Severity
from firmware.catalog import ArchivedSegment
from firmware.httpedge import json_error
from firmware.timefmt import now_us

if TYPE_CHECKING:
    from firmware.archive.store import ArchiveStore

log = logging.getLogger("nvr.archive")

CHUNK = 1024 * 1024

RaiseCorrupt = Callable[[str], None]
"""Told the alert's text when an archived object does not match its hash."""


class ArchiveMismatch(Exception):
    """The archived object's bytes do not match the catalog's size and SHA-256: the response
    is cut short."""


def corrupt_text(arch: ArchivedSegment, what: str) -> str:
    seg = arch.segment
    return (
        f"archived segment {arch.id} ({seg.camera}) at {arch.key}: {what}; the archive's copy "
        "is damaged (nvr verify --archive --deep checks every archived segment)"
    )


def raise_corrupt(alerts: Any | None) -> RaiseCorrupt:
    """An `archive-corrupt` reporter on the board's Alerts (None: logged only)."""

    def report(text: str) -> None:
        log.error("%s", text)
        if alerts is not None:
            alerts.raise_(AlertId.ARCHIVE_CORRUPT, Severity.CRITICAL, text, now_us())

    return report


async def serve_archived(
    request: web.Request,
    arch: ArchivedSegment,
    store: ArchiveStore | None,
    corrupt: RaiseCorrupt,
    audit: Callable[[], None] = lambda: None,
) -> web.StreamResponse:
    """Stream the archived object of `arch`; 503 when no store is configured, 502 when the
    store cannot be read, 404 when the object is not there. `audit` is called once the
    object is open, before the first byte goes (the download's audit event)."""
    if store is None:
        raise json_error(web.HTTPServiceUnavailable, f"segment {arch.id} is archived only and "
                         "this board has no [archive] store configured")  # fmt: skip
    body = await _open(store, arch, corrupt)
    audit()
    name = arch.key.rsplit("/", 1)[-1]
    resp = web.StreamResponse(
        headers={
            "Content-Type": "video/mp4",
            "ETag": f'"{arch.sha256}"',
            "X-Segment-Sha256": arch.sha256,
            "X-Segment-Archived": "true",
            "Accept-Ranges": "none",
            "Content-Disposition": f'inline; filename="{name}"',
        }
    )
    resp.content_length = arch.bytes
    digest = hashlib.sha256()
    count = 0
    held = b""
    try:
        await resp.prepare(request)
        while True:
            chunk = await asyncio.to_thread(body.read, CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            count += len(chunk)
            if count > arch.bytes:
                break
            if held:
                await resp.write(held)
            held = chunk
    except Exception as e:
        if isinstance(e, ConnectionResetError | asyncio.CancelledError):
            raise  # the client went away: nothing is wrong with the archive
        raise ArchiveMismatch(f"{arch.id}: reading the archive failed ({type(e).__name__})") from e
    finally:
        await asyncio.to_thread(body.close)
    if count != arch.bytes or digest.hexdigest() != arch.sha256:
        what = (
            f"{count}{'+' if count > arch.bytes else ''} bytes, {arch.bytes} recorded"
            if count != arch.bytes
            else "its bytes do not match the SHA-256 recorded for them"
        )
        corrupt(corrupt_text(arch, what))
        raise ArchiveMismatch(f"{arch.id}: {what}; the response was cut short")
    if held:
        await resp.write(held)
    await resp.write_eof()
    return resp


async def _open(store: ArchiveStore, arch: ArchivedSegment, corrupt: RaiseCorrupt) -> Any:
    """The object's streaming body, its size checked against the catalog first."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        head = await asyncio.to_thread(store.head, arch.key)
        if head is None:
            corrupt(corrupt_text(arch, "the object is missing from the store"))
            raise json_error(web.HTTPNotFound, f"segment {arch.id} is archived only and the "
                             "archive does not hold it")  # fmt: skip
        if head.bytes != arch.bytes or (head.sha256 is not None and head.sha256 != arch.sha256):
            corrupt(corrupt_text(arch, f"the object's size or hash metadata differ "
                                 f"({head.bytes} bytes, {arch.bytes} recorded)"))  # fmt: skip
            raise json_error(web.HTTPBadGateway, f"segment {arch.id}: the archive's copy does "
                             "not match the catalog; not served")  # fmt: skip
        return await asyncio.to_thread(store.open_segment, arch.key)
    except (BotoCoreError, ClientError) as e:
        # The error's class only: its text may quote the endpoint.
        raise json_error(web.HTTPBadGateway, f"segment {arch.id} is archived only and the "
                         f"archive cannot be read now ({type(e).__name__})") from None  # fmt: skip
