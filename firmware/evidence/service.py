"""The evidence log at work on a board: takes in what was committed, signs checkpoints, and
trades cosignatures with the peer over the mirror's authenticated channel.

Each board is a log and the witness of the other's log. Every WITNESS_S a board asks the
peer for its newest checkpoint and a consistency proof from the one it holds, judges it
(firmware/evidence/witness.py), and hands back its cosignature, or the reason it refuses, so
that both boards raise the same critical alert when a history was changed."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web

from firmware.alert_ids import AlertId, Severity
from firmware.alerts import Alerts
from firmware.catalog import Catalog
from firmware.evidence.log import EvidenceLog, LogDamaged
from firmware.evidence.verifier import FormatError, key_fingerprint
from firmware.evidence.witness import (
    TAMPER,
    Cosigned,
    Held,
    Offer,
    Problem,
    Refused,
    Unchanged,
    judge,
)
from firmware.supervise import Failure, keep_running
from firmware.timefmt import iso, now_us

log = logging.getLogger("nvr.evidence")

INGEST_S = 1.0
WITNESS_S = 5.0
CHECKPOINT_US = 5_000_000
"""A new checkpoint at most this often: what the witness rounds can cosign anyway."""
PRUNE_US = 3_600_000_000
REFRESH_US = 60_000_000
"""A checkpoint at least this often, grown or not: it dates the log's state."""
KEEP_ALL_US = 86_400_000_000
"""Every checkpoint of the last day is kept; older ones, the newest cosigned per hour."""
TIMEOUT_S = 5.0
MAX_OFFER_BYTES = 64 * 1024
OFFER_PATH = "/evidence/offer"
COSIGNED_PATH = "/evidence/cosigned"
REFUSED_PATH = "/evidence/refused"

Request = Callable[[str, float], tuple]
"""The mirror client's signed GET (firmware/mirror/client.py `request`)."""


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s.encode())


class PeerError(Exception):
    """The peer did not answer, or its answer was not authentic."""


class EvidenceService:
    def __init__(self, evlog: EvidenceLog, catalog: Catalog, alerts: Alerts, failed: Failure,
                 key: bytes | None = None, request: Request | None = None,
                 clock: Callable[[], int] = now_us) -> None:  # fmt: skip
        self.log, self.catalog, self.alerts, self.failed = evlog, catalog, alerts, failed
        self.key, self.request, self.now_us = key, request, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.refused: Refused | None = None
        """The peer's log, as this board last judged it: refused and why."""
        self.refused_by_peer: tuple[Problem, str] | None = None
        self._delivered: int | None = None
        self._signed_us = self._pruned_us = -(1 << 62)

    # --- the board's own log -------------------------------------------------------------------

    def step(self) -> None:
        """Once: take in, sign, prune. Raises the damage alert instead of failing silently."""
        now = self.now_us()
        try:
            got = self.log.ingest(self.catalog)
        except LogDamaged as e:
            self._damaged(str(e))
            return
        except (OSError, sqlite3.OperationalError) as e:
            # A full or failing disk: nothing is lost, the cursors did not move.
            self.alerts.raise_(AlertId.EVIDENCE_LOG_BEHIND, Severity.WARNING,
                               f"evidence log: cannot write ({e}); what is committed meanwhile "
                               "is taken in when it can", now)  # fmt: skip
            return
        self.alerts.clear(AlertId.EVIDENCE_LOG_BEHIND)
        if got.audit_shrank:
            self._damaged(
                "audit.log is shorter than the log's record of it: it was cut or replaced"
            )
        if now - self._signed_us >= CHECKPOINT_US:
            self._signed_us = now
            self.log.sign(now, REFRESH_US)
        if now - self._pruned_us >= PRUNE_US:
            self._pruned_us = now
            self.log.prune_checkpoints(now - KEEP_ALL_US)

    def _damaged(self, text: str) -> None:
        self.alerts.raise_(AlertId.EVIDENCE_LOG_DAMAGED, Severity.CRITICAL,
                           f"evidence log: {text}; run nvr verify", self.now_us())  # fmt: skip

    # --- the peer's log, as its witness --------------------------------------------------------

    def _get(self, path: str) -> bytes:
        """A signed GET to the peer; PeerError when it fails. (The mirror's parts are imported
        by a board that has a pair only: tests/test_start_imports.py.)"""
        from firmware.mirror.auth import AuthError
        from firmware.mirror.client import signed_get

        assert self.request is not None and self.key is not None
        try:
            return signed_get(self.request, self.key, path, MAX_OFFER_BYTES, TIMEOUT_S)
        except (OSError, http.client.HTTPException) as e:  # TooLong, NotServed included
            raise PeerError(f"peer: {e}") from None
        except AuthError as e:
            raise PeerError(f"the peer's answer refused: {e}") from None

    def witness(self) -> None:
        """One round as the peer's witness."""
        held = self.log.held()
        try:
            body = self._get(f"{OFFER_PATH}?from={held.checkpoint.size if held else 0}")
            d = json.loads(body)
            offer = Offer(str(d["note"]), tuple(_unb64(p) for p in d["proof"]), str(d["vkey"]))
        except PeerError as e:
            self.last_error = str(e)
            return
        except (ValueError, KeyError, TypeError) as e:
            self.last_error = f"the peer's offer refused: {e}"
            return
        verdict = judge(offer, held, self.log.pinned(), self.log.signer, self.now_us() // 10**6)
        if isinstance(verdict, Unchanged):
            if held is not None and self._delivered != held.checkpoint.size:
                self._deliver(held)  # the peer did not take it last time (not pinned yet)
            return
        if isinstance(verdict, Refused):
            self._refuse(verdict)
            return
        assert isinstance(verdict, Cosigned)
        if verdict.pin is not None:
            self.log.pin(verdict.pin)
            log.info("evidence: pinned the peer's log key %s", verdict.pin.vkey())
        self.log.hold(verdict.held, self.now_us())
        self.refused = None
        self.alerts.clear(AlertId.EVIDENCE_PEER_LOG_CHANGED)
        self._deliver(verdict.held)

    def _deliver(self, held: Held) -> None:
        """Hand the cosigned checkpoint back to the peer's log."""
        try:
            self._get(f"{COSIGNED_PATH}?note={_b64(held.note.encode())}")
            self._delivered = held.checkpoint.size
            self.last_error = None
        except PeerError as e:
            self.last_error = f"handing the cosignature back: {e}"

    def _refuse(self, r: Refused) -> None:
        self.refused = r
        self.last_error = f"the peer's checkpoint refused: {r.text}"
        if r.problem in TAMPER:
            self.alerts.raise_(AlertId.EVIDENCE_PEER_LOG_CHANGED, Severity.CRITICAL,
                               f"the peer's evidence log: {r.text}. This board keeps what it "
                               "cosigned: run nvr verify on both boards",
                               self.now_us())  # fmt: skip
        else:
            log.warning("evidence: %s", self.last_error)
        try:
            self._get(f"{REFUSED_PATH}?problem={r.problem.value}&text={quote(r.text[:300])}")
        except PeerError as e:
            log.warning("evidence: telling the peer it was refused: %s", e)

    # --- serving the peer ----------------------------------------------------------------------

    def routes(self) -> list[tuple[str, Callable]]:
        return [(OFFER_PATH, self._serve_offer), (COSIGNED_PATH, self._serve_cosigned),
                (REFUSED_PATH, self._serve_refused)]  # fmt: skip

    def _answer(self, request: web.Request, body: dict) -> web.Response:
        from firmware.mirror.auth import RESPONSE_HEADER, sign_response

        assert self.key is not None
        raw = json.dumps(body).encode()
        return web.Response(body=raw, content_type="application/json",
                            headers={RESPONSE_HEADER: sign_response(self.key, request["nonce"],
                                                                    raw)})  # fmt: skip

    async def _serve_offer(self, request: web.Request) -> web.Response:
        try:
            size = int(request.query.get("from", "0"))
            if size < 0:
                raise ValueError(size)
            offer = self.log.offer(size)
        except ValueError:
            raise web.HTTPBadRequest(text="evidence: from= must be a size this log had") from None
        if offer is None:
            raise web.HTTPServiceUnavailable(text="evidence: no checkpoint signed yet")
        return self._answer(request, {"note": offer.note, "vkey": offer.vkey,
                                      "proof": [_b64(p) for p in offer.proof]})  # fmt: skip

    async def _serve_cosigned(self, request: web.Request) -> web.Response:
        peer = self.log.pinned()
        try:
            text = _unb64(request.query["note"]).decode()
            if peer is None:
                raise ValueError("this board has not pinned the peer's key yet")
            cp = self.log.store_cosigned(text, peer)
        except (KeyError, ValueError, UnicodeDecodeError, FormatError) as e:
            raise web.HTTPBadRequest(text=f"evidence: cosignature refused: {e}") from None
        if self.refused_by_peer is not None:
            self.refused_by_peer = None
            self.alerts.clear(AlertId.EVIDENCE_LOG_REFUSED)
        return self._answer(request, {"size": cp.size})

    async def _serve_refused(self, request: web.Request) -> web.Response:
        try:
            problem = Problem(request.query["problem"])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="evidence: unknown problem") from None
        text = request.query.get("text", "")[:300]
        self.refused_by_peer = (problem, text)
        if problem in TAMPER:
            self.alerts.raise_(AlertId.EVIDENCE_LOG_REFUSED, Severity.CRITICAL,
                               f"the peer refuses to cosign this board's evidence log: {text}",
                               self.now_us())  # fmt: skip
        return self._answer(request, {"ok": True})

    # --- lifecycle and status ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=keep_running,
            args=("the evidence log", self._follow, self._stop, self.failed),
            name="nvr-evidence",
            daemon=True,
        )
        self._thread.start()

    def _follow(self) -> None:
        next_witness = 0.0
        while not self._stop.is_set():
            self.step()
            if self.request is not None and time.monotonic() >= next_witness:
                next_witness = time.monotonic() + WITNESS_S
                self.witness()
            self._stop.wait(INGEST_S)

    def stop(self) -> None:
        """After the recorder committed its last segments: they go into the log and a last
        checkpoint is signed before it closes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT_S * 3 + INGEST_S)
        try:
            self._signed_us = -(1 << 62)  # sign what the last segments made of the tree
            self.step()
        except Exception as e:  # the log is closed whatever happens
            log.error("evidence: the last ingest failed: %s", e)
        self.log.close()

    def status(self) -> dict:
        """Sizes, times and key fingerprints; nothing secret."""
        latest = self.log.latest()
        cosigned = self.log.cosigned()
        held = self.log.held()
        pinned = self.log.pinned()
        return {
            "origin": self.log.origin,
            "key": key_fingerprint(self.log.signer.note_key),
            "size": self.log.tree.size(),
            "signed": None if latest is None else {"size": latest[0].size,
                                                   "at": _time_of(latest[0].extensions)},
            "cosigned": None if cosigned is None else {"size": cosigned[0].size,
                                                       "at": _time_of(cosigned[0].extensions)},
            "peer_key": None if pinned is None else key_fingerprint(pinned),
            "peer_held": None if held is None else held.checkpoint.size,
            "refused": None if self.refused is None else self.refused.text,
            "refused_by_peer": None if self.refused_by_peer is None else self.refused_by_peer[1],
            "last_error": self.last_error,
        }  # fmt: skip


def _time_of(extensions: tuple[str, ...]) -> str | None:
    for e in extensions:
        if e.startswith("time "):
            try:
                return iso(int(e[5:]) * 1_000_000)
            except ValueError:
                return None
    return None
