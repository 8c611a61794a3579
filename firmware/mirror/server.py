"""The mirror's serving side: the peer asks for our catalog changes and for segment files.

An aiohttp app on its own port (`[pair] mirror_port`), authenticated with the pair key. The
feed is a long poll: it answers as soon as a segment is committed or a run changes here, so the
standby's copy follows within a round trip. Files go out by sendfile with Range support, so a
transfer cut short resumes where it stopped, and serving never blocks the recorder, which
writes in its own processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from firmware.catalog import Catalog, Run
from firmware.clockcheck import ClockCheck, one_way
from firmware.mirror.auth import (
    REQUEST_HEADER,
    RESPONSE_HEADER,
    AuthError,
    ReplayGuard,
    nonce_time_us,
    sign_response,
    verify_request,
)
from firmware.mirror.plan import PeerCamera
from firmware.mirror.wire import (
    FEED_LIMIT,
    FEED_PATH,
    LOCK_FEED_LIMIT,
    SEGMENT_PATH,
    FeedLock,
    FeedPage,
    FeedRun,
    FeedSegment,
)
from firmware.timefmt import now_us as wall_us

MAX_WAIT_S = 25.0

Recording = Callable[[], dict[str, bool]]
"""Per camera: is this board writing it now?"""


class MirrorServer:
    def __init__(self, key: bytes, board: str, catalog: Catalog, data_dir: Path,
                 recording: Recording, now_us: Callable[[], int] = wall_us,
                 clock: ClockCheck | None = None) -> None:  # fmt: skip
        self.key, self.board, self.catalog, self.data_dir = key, board, catalog, data_dir
        self.recording, self.now_us, self.clock = recording, now_us, clock
        self.replay = ReplayGuard()
        self._changed: asyncio.Event | None = None
        self.peer_lag: tuple[float, int, float] | None = None
        """(seconds, bytes, monotonic time): what the peer last said it lacks of ours."""
        self.served = {"feeds": 0, "segments": 0, "rejected": 0}
        self.routes: list[tuple[str, Callable]] = []
        """More GET routes behind the same authentication (the pair settings, firmware/pairsync.py);
        their handlers sign their answers with request["nonce"]."""

    def notify(self) -> None:
        """Something was committed: answer the waiting feed request now (loop thread only)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get(FEED_PATH, self._feed)
        app.router.add_get(SEGMENT_PATH + "{id}", self._segment)
        for path, handler in self.routes:
            app.router.add_get(path, handler)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        try:
            board, nonce = verify_request(
                self.key, request.headers.get(REQUEST_HEADER), request.method, request.path_qs
            )
            now = self.now_us()
            sent = nonce_time_us(nonce)
            if self.clock is not None and sent is not None:
                # before the window check: a request refused as too far off still shows how far
                self.clock.add(one_way(sent, now))
            self.replay.check(nonce, now)  # only authentic nonces take a place
        except AuthError as e:
            self.served["rejected"] += 1
            raise web.HTTPUnauthorized(text=f"mirror: {e}") from None
        if board == self.board:
            raise web.HTTPForbidden(text="mirror: that is this board's own name")
        request["nonce"] = nonce
        request["received_us"] = now
        return await handler(request)

    def _read(self, seg_cursor: int, run_cursor: int, lock_cursor: int = 0) -> FeedPage:
        rows = self.catalog.segments_since(seg_cursor, FEED_LIMIT)
        runs: dict[int, Run | None] = {}
        segments: list[FeedSegment] = []
        for rowid, seg in rows:
            if seg.run_id not in runs:
                runs[seg.run_id] = self.catalog.run_by_id(seg.run_id)
            run = runs[seg.run_id]
            if run is not None:
                segments.append(FeedSegment.of(seg, run))
            seg_cursor = rowid
        changed = self.catalog.runs_since(run_cursor, FEED_LIMIT)
        if changed:
            run_cursor = changed[-1].changed
        locks = self.catalog.locks_since(lock_cursor, LOCK_FEED_LIMIT)
        if locks:
            lock_cursor = locks[-1].changed
        recording = self.recording()
        cameras = {}
        for name in set(recording) | set(self.catalog.cameras()):
            latest = self.catalog.latest_segments(name)
            cameras[name] = PeerCamera(latest[0].end_us if latest else None,
                                       recording.get(name, False))  # fmt: skip
        return FeedPage(
            board=self.board,
            segments=tuple(segments),
            runs=tuple(FeedRun.of(r) for r in changed),
            seg=seg_cursor,
            run=run_cursor,
            more=(len(rows) == FEED_LIMIT or len(changed) == FEED_LIMIT
                  or len(locks) == LOCK_FEED_LIMIT),
            cameras=cameras,
            locks=tuple(FeedLock.of(lk) for lk in locks),
            lock=lock_cursor,
        )  # fmt: skip

    async def _feed(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            seg_cursor, run_cursor = int(q.get("seg", 0)), int(q.get("run", 0))
            lock_cursor = int(q.get("lock", 0))
            wait = min(MAX_WAIT_S, max(0.0, float(q.get("wait", 0))))
            if "lag_ms" in q:
                self.peer_lag = (int(q["lag_ms"]) / 1000, int(q.get("behind", 0)),
                                 time.monotonic())  # fmt: skip
        except ValueError:
            raise web.HTTPBadRequest(text="mirror: bad cursor") from None
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        page = await asyncio.to_thread(self._read, seg_cursor, run_cursor, lock_cursor)
        if wait and not page.segments and not page.runs and not page.locks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)
            page = await asyncio.to_thread(self._read, seg_cursor, run_cursor, lock_cursor)
        self.served["feeds"] += 1
        page = dataclasses.replace(page, received_us=request["received_us"],
                                   sent_us=self.now_us())  # fmt: skip
        body = json.dumps(page.to_json()).encode()
        return web.Response(
            body=body,
            content_type="application/json",
            headers={RESPONSE_HEADER: sign_response(self.key, request["nonce"], body)},
        )

    async def _segment(self, request: web.Request) -> web.StreamResponse:
        seg = await asyncio.to_thread(self.catalog.segment, request.match_info["id"])
        if seg is None:
            raise web.HTTPNotFound(text="mirror: no such segment here")
        path = self.data_dir / seg.path
        if not path.exists():
            raise web.HTTPNotFound(text="mirror: segment file gone")
        self.served["segments"] += 1
        return web.FileResponse(path, headers={"Content-Type": "video/mp4"})
