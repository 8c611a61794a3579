"""The mirror's fetching side: follow the peer's catalog and copy what this board lacks.

Each board fetches from the other, so together the two directions reconcile both ways: the
standby follows the active board's new segments within a round trip of their commit, and
after any outage each board pulls what the other recorded meanwhile. The feed is read by one
thread (a long poll); files are fetched by a few threads, in the configured order, over the
sync link while it carries adverts and over the LAN otherwise.
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from firmware.catalog import Catalog
from firmware.clockcheck import ClockCheck, round_trip
from firmware.mirror.auth import (
    REQUEST_HEADER,
    RESPONSE_HEADER,
    AuthError,
    new_nonce,
    sign_request,
    verify_response,
)
from firmware.mirror.plan import Order, PeerCamera, Summary, lag, reconcile
from firmware.mirror.store import Corrupt, commit_received, fresh, incoming, receive, resume_point
from firmware.mirror.wire import (
    FEED_PATH,
    MAX_FEED_BYTES,
    SEGMENT_PATH,
    FeedPage,
    FeedSegment,
    decode_page,
)
from firmware.supervise import Failure, keep_running

log = logging.getLogger("nvr.mirror")

FEED_WAIT_S = 2.0
"""Long-poll length: also how soon a dead path is noticed while nothing is committed."""
TIMEOUT_S = 5.0
CHUNK = 1 << 16
RETRY_S = 1.0


class TooLong(OSError):
    """The peer announced or sent more than an answer may hold: not read further."""


def read_at_most(resp: http.client.HTTPResponse, limit: int) -> bytes:
    """The whole body of an answer not yet authenticated, refused past limit bytes: a stranger
    answering for the peer cannot make this board hold more than that."""
    length = resp.getheader("Content-Length") or ""
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise TooLong(f"answer of {length} bytes (at most {limit} read)")
    body = resp.read(limit + 1)
    if len(body) > limit:
        raise TooLong(f"answer longer than {limit} bytes")
    return body


class NotServed(OSError):
    """The peer has no such route (HTTP 404): a firmware without that part."""


def signed_get(request: Callable, key: bytes, path: str, limit: int, timeout: float) -> bytes:
    """A GET to the peer for another part of the firmware (the pair settings, the evidence
    witness) over the mirror's request, its answer read to at most limit bytes and checked
    against the nonce: NotServed on a 404, OSError on another status, AuthError if forged."""
    resp, conn, nonce = request(path, timeout)
    try:
        if resp.status == 404:
            raise NotServed(f"{path.split('?')[0]}: HTTP 404")
        if resp.status != 200:  # a 401 is the peer refusing us (clock skew): the mirror alerts
            raise OSError(f"{path.split('?')[0]}: HTTP {resp.status} {resp.read(200)!r}")
        body = read_at_most(resp, limit)
    finally:
        conn.close()
    verify_response(key, nonce, body, resp.getheader(RESPONSE_HEADER))
    return body


def body_up_to(resp: http.client.HTTPResponse, n: int) -> Iterator[bytes]:
    """At most n bytes of a file's body (what its row says is left): whatever the peer sends
    after that is never read, so it can neither fill the disk nor keep a transfer going."""
    while n > 0 and (chunk := resp.read(min(CHUNK, n))):
        n -= len(chunk)
        yield chunk


@dataclass
class Counters:
    segments: int = 0
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class MirrorClient:
    def __init__(
        self,
        *,
        board: str,
        key: bytes,
        data_dir: Path,
        catalog: Catalog,
        peer: dict[str, str],
        port: int,
        order: Order,
        concurrency: int,
        path_usable: Callable[[str], bool],
        now_us: Callable[[], int],
        on_commit: Callable[[], None] = lambda: None,
        failed: Failure = lambda what, e: None,
        clock: ClockCheck | None = None,
    ) -> None:
        """peer: path name (sync, lan) -> the peer's address on it, in order of preference.
        failed(what, error): one of the mirror's threads failed and runs again."""
        self.board, self.key, self.data_dir, self.catalog = board, key, data_dir, catalog
        self.peer, self.port, self.order, self.concurrency = peer, port, order, concurrency
        self.path_usable, self.now_us, self.on_commit = path_usable, now_us, on_commit
        self.failed, self.clock = failed, clock
        self.counters = Counters()
        self.path: str | None = None
        """The path the last successful request took."""
        self.connected = False
        self.reached = False
        """The peer's feed answered at least once since start."""
        self.synced = False
        """A full pass over the peer's catalog since start found nothing left to fetch."""
        self.last_error: str | None = None
        self.refused: tuple[int, str, str] | None = None
        """(wall µs, reason, what): the last thing the peer sent that this board refused."""
        self.peer_cameras: dict[str, PeerCamera] = {}
        self._pending: dict[str, FeedSegment] = {}
        self._busy: set[str] = set()
        self._feed_done = False
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.held = False
        """The board's data disk is not there: fetch nothing, or it would land on another disk."""

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        targets = [self._follow] + [self._fetch] * self.concurrency
        for i, target in enumerate(targets):
            args = (f"mirror {target.__name__.strip('_')}", target, self._stop, self._failed)
            t = threading.Thread(target=keep_running, args=args, name=f"nvr-mirror-{i}",
                                 daemon=True)  # fmt: skip
            t.start()
            self._threads.append(t)

    def _failed(self, what: str, e: Exception) -> None:
        """A mirror thread failed (the catalog's disk full, a bug): counted and shown, and it
        runs again; a thread that ended silently is a standby that silently falls behind."""
        self.counters.error("crash")
        self.last_error = f"{what}: {e}"
        self.failed(what, e)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for t in self._threads:
            t.join(TIMEOUT_S + FEED_WAIT_S)

    # --- state --------------------------------------------------------------------------------

    def lag(self) -> tuple[float, int]:
        """(seconds of footage, bytes) behind the peer."""
        with self._lock:
            missing = [r.summary for r in self._pending.values()]
            durations = {sid: r.duration_us for sid, r in self._pending.items()}
            return lag(dict(self.peer_cameras), missing, durations, self.now_us())

    def backlog_seconds(self) -> float:
        """Committed footage of the peer still to fetch (its open segment not counted)."""
        with self._lock:
            per: dict[str, int] = {}
            for r in self._pending.values():
                per[r.camera] = per.get(r.camera, 0) + r.duration_us
            return max(per.values(), default=0) / 1e6

    # --- HTTP ---------------------------------------------------------------------------------

    def _routes(self) -> list[str]:
        usable = [p for p in self.peer if self.path_usable(p)]
        return usable or list(self.peer)

    def request(self, path_qs: str, timeout: float):
        """A signed GET to the peer's mirror port for another part of the firmware (the pair
        settings), on the path the mirror would take."""
        return self._request(path_qs, timeout)

    def _request(self, path_qs: str, timeout: float, headers: dict | None = None):
        """GET over the first path that answers; returns (response, connection, nonce)."""
        errors = []
        for route in self._routes():
            nonce = new_nonce(self.now_us())
            conn = http.client.HTTPConnection(self.peer[route], self.port, timeout=timeout)
            try:
                conn.request("GET", path_qs, headers={
                    REQUEST_HEADER: sign_request(self.key, self.board, "GET", path_qs, nonce),
                    **(headers or {}),
                })  # fmt: skip
                resp = conn.getresponse()
            except OSError as e:
                conn.close()
                errors.append(f"{route}: {e}")
                continue
            self.path = route
            return resp, conn, nonce
        raise OSError("; ".join(errors) or "no path to the peer")

    # --- the feed -----------------------------------------------------------------------------

    def _follow(self) -> None:
        seg = run = lock = 0
        while not self._stop.is_set():
            lag_s, behind = self.lag()
            wait = 0 if not self._feed_done else FEED_WAIT_S
            qs = urlencode({"seg": seg, "run": run, "wait": wait,
                            "lag_ms": round(lag_s * 1000), "behind": behind,
                            "lock": lock})  # fmt: skip
            try:
                sent = self.now_us()
                resp, conn, nonce = self._request(f"{FEED_PATH}?{qs}", TIMEOUT_S + wait)
                try:
                    if resp.status != 200:
                        why = f"feed: HTTP {resp.status} {resp.read(200)!r}"
                        raise AuthError(why) if resp.status == 401 else OSError(why)
                    body = read_at_most(resp, MAX_FEED_BYTES)
                finally:
                    conn.close()
                received = self.now_us()
                verify_response(self.key, nonce, body, resp.getheader(RESPONSE_HEADER))
                page, refused = decode_page(body)
                self._clock_sample(sent, page, received)
                self._take(page)
                seg, run, lock = page.seg, page.run, page.lock
                if not self.connected:
                    log.info("mirror: following %s over %s", page.board, self.path)
                self.connected, self.reached, self.last_error = True, True, None
                if refused:
                    self._refused(refused)
            except (OSError, ValueError, AuthError, http.client.HTTPException) as e:
                # FeedError is a ValueError; TooLong an OSError
                reason = ("auth" if isinstance(e, AuthError) else
                          "oversize" if isinstance(e, TooLong) else "feed")  # fmt: skip
                if reason == "feed":
                    self.counters.error(reason)
                else:
                    self._refuse(reason, f"feed answer: {e}")
                if self.connected or self.last_error is None:
                    log.warning("mirror: peer feed failed: %s", e)
                self.connected, self.last_error = False, str(e)
                seg = run = lock = 0  # start over: the full pass finds what changed meanwhile
                with self._lock:
                    self._feed_done = False
                self._stop.wait(RETRY_S)

    def _clock_sample(self, sent_us: int, page: FeedPage, received_us: int) -> None:
        """The peer's times in a signed answer, with this board's: a bound on the clocks'
        offset (a path that failed before the answer only widens it)."""
        if self.clock is not None and page.received_us is not None and page.sent_us is not None:
            self.clock.add(round_trip(sent_us, page.received_us, page.sent_us, received_us))

    def _refuse(self, reason: str, what: str) -> None:
        """The peer sent what this board will not take (unsigned, malformed, too long, not
        matching its row): counted, and kept for the mirror-peer-refused alert."""
        self.counters.error(reason)
        self.refused = (self.now_us(), reason, what[:200])

    def _refused(self, refused: list[str]) -> None:
        """Rows of an authentic answer that did not decode (a peer on other firmware, or a
        hostile one): left out, the rest of the answer taken, each counted, the first logged."""
        for what in refused:
            self._refuse("row", what)
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        log.error("mirror: peer feed row %s%s", refused[0], more)
        self.last_error = refused[0]

    def _take(self, page: FeedPage) -> None:
        for lk in page.locks:  # first: retention here must know them before it runs again
            self.catalog.merge_lock(lk.to_lock())
        for r in page.runs:
            self.catalog.merge_run(r.to_run())
        rows = {s.id: s for s in page.segments}
        ids = list(rows)
        local = [s for s in (self.catalog.segment(i) for i in ids) if s is not None]
        plan = reconcile(
            [Summary(s.id, s.camera, s.start_us, s.bytes, s.sha256) for s in local],
            [r.summary for r in rows.values()],
            self.order,
            self.catalog.deleted(ids),
        )
        for c in plan.conflicts:
            self.counters.conflicts += 1
            log.error("mirror: segment %s differs between the boards; both kept as they are",
                      c.id)  # fmt: skip
        with self._lock:
            for t in plan.transfers:
                if t.direction == "pull":
                    self._pending[t.id] = rows[t.id]
            self.peer_cameras = dict(page.cameras)
            if not page.more:
                self._feed_done = True
                if not self._pending and not self._busy:
                    self.synced = True
            self._lock.notify_all()

    # --- the files ----------------------------------------------------------------------------

    def _next(self) -> FeedSegment | None:
        with self._lock:
            while not self._stop.is_set():
                free = [r for sid, r in self._pending.items() if sid not in self._busy]
                if free and not self.held:
                    pick = min if self.order == "oldest" else max
                    row = pick(free, key=lambda r: (r.start_us, r.id))
                    self._busy.add(row.id)
                    return row
                self._lock.wait(1.0)
        return None

    def hold(self, held: bool) -> None:
        with self._lock:
            self.held = held
            self._lock.notify_all()

    def _done(self, sid: str, drop: bool) -> None:
        with self._lock:
            self._busy.discard(sid)
            if drop:
                self._pending.pop(sid, None)
            if self._feed_done and not self._pending and not self._busy:
                self.synced = True
            self._lock.notify_all()

    def _fetch(self) -> None:
        while (row := self._next()) is not None:
            sid = row.id
            done = False
            try:
                done = self._fetch_one(row)
            except Corrupt as e:
                self._refuse("sha256", str(e))
                log.error("mirror: %s; fetching it again", e)
            except (OSError, http.client.HTTPException) as e:
                self.counters.error("transfer")
                log.warning("mirror: fetching %s failed: %s", sid, e)
            finally:  # also when it fails otherwise: the row is fetched again, not stuck busy
                self._done(sid, drop=done)
            if not done:
                self._stop.wait(RETRY_S)

    def _fetch_one(self, row: FeedSegment) -> bool:
        """True when the segment is settled (committed here, or gone from the peer)."""
        sid = row.id
        if self.catalog.segment(sid) is not None:
            return True
        path = incoming(self.data_dir, sid)
        offset, h = resume_point(path)
        if offset >= row.bytes:
            offset, h = fresh()
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp, conn, _ = self._request(SEGMENT_PATH + sid, TIMEOUT_S, headers)
        try:
            if resp.status == 404:
                resp.read()
                path.unlink(missing_ok=True)
                return True  # the peer's retention removed it meanwhile
            if resp.status == 200 and offset:
                offset, h = fresh()  # the peer sent the whole file after all
            elif resp.status not in (200, 206):
                raise OSError(f"HTTP {resp.status} for {sid}")
            start = offset
            length = receive(path, offset, h, body_up_to(resp, row.bytes - offset))
        finally:
            conn.close()
        if commit_received(self.data_dir, self.catalog, row, path, length, h.hexdigest()):
            self.counters.segments += 1
            self.counters.bytes += length - start
            self.on_commit()
        return True
