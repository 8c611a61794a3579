"""Pair-wide settings between the boards (the adapter of firmware/pairsettings.py).

The version travels on the mirror's port, on its pair-key authentication (firmware/mirror/auth.py:
every request signed, every answer MACed, replays refused): `GET /mirror/v1/settings/head`
answers the version, `GET /mirror/v1/settings` the document. The document's settings are also
sealed under a key derived from the pair key, because they hold camera passwords and the API
token and the mirror may take the LAN when the sync cable is down.

A received document is checked before it touches anything: at most MAX_DOC_BYTES, MAC, the
shape of every field, its content hash; then merged into this board's nvr.toml with tomlkit
(per-board sections, comments and order kept) and the merged text validated by the firmware's
own loader. Only then: the token file (if the pair uses one), nvr.toml.prev (the file as it
was), nvr.toml, each written atomically; the config watch reloads it like any edit, and the
audit log says which board's version it is and which keys changed (names only).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomlkit
from aiohttp import web

from firmware.alert_ids import AlertId, Severity
from firmware.alerts import Alerts
from firmware.audit import AuditLog
from firmware.config import NAME, Config, ConfigError, RecorderConfig, parse_config
from firmware.datadir import MIN_TOKEN_CHARS
from firmware.mirror.auth import RESPONSE_HEADER, AuthError, sign_response
from firmware.mirror.client import NotServed, TooLong, signed_get
from firmware.pairkey import read_secret
from firmware.pairsettings import (
    RECORDER_KEYS,
    Action,
    Apply,
    Audit,
    Camera,
    Clear,
    Fetch,
    PairSettings,
    PairSettingsCore,
    Raise,
    Save,
    Version,
    adopting,
    initial,
    version_of_json,
)
from firmware.provision import write_file_atomic
from firmware.supervise import Failure, keep_running
from firmware.timefmt import iso

log = logging.getLogger("nvr.pairsync")

HEAD_PATH = "/mirror/v1/settings/head"
DOC_PATH = "/mirror/v1/settings"
STATE_FILE = "pair-settings.json"
MAX_HEAD_BYTES = 16384
MAX_DOC_BYTES = 256 * 1024
"""A document with the most cameras a board takes, their URLs at their longest: well under."""
MAX_CAMERAS = 256
MAX_URL = 2048
POLL_S = 1.0
TIMEOUT_S = 5.0


# --- keys derived from the pair key ---------------------------------------------------------------


def _derive(key: bytes, label: bytes) -> bytes:
    """A key of its own for each use of the pair key (HKDF-SHA256)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 32, None, b"nvr pair-settings " + label).derive(key)


def content_hash(key: bytes, s: PairSettings) -> str:
    """Keyed, so the hash in status and the audit log says nothing about a weak password."""
    return hmac.new(_derive(key, b"hash"), s.canonical(), hashlib.sha256).hexdigest()


NONCE = 12


def seal(key: bytes, plain: bytes) -> str:
    """The document encrypted and authenticated (ChaCha20-Poly1305, a fresh random nonce each
    time): it holds camera passwords and may cross the LAN when the sync cable is out."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    nonce = os.urandom(NONCE)
    return (nonce + ChaCha20Poly1305(_derive(key, b"seal")).encrypt(nonce, plain, None)).hex()


def unseal(key: bytes, sealed: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    try:
        raw = bytes.fromhex(sealed)
    except ValueError:
        raise ValueError("settings: not sealed hex") from None
    if len(raw) < NONCE + 16:
        raise ValueError("settings: too short")
    try:
        return ChaCha20Poly1305(_derive(key, b"seal")).decrypt(raw[:NONCE], raw[NONCE:], None)
    except InvalidTag:
        raise ValueError("settings: do not open with the pair key (sealed by another)") from None


# --- the settings of a config, and back ---------------------------------------------------------


def settings_of(cfg: Config, token: str | None) -> PairSettings:
    """The pair-wide part of a loaded config; `token`: the content of [api] token_file when it
    is set (None: the pair key's derived token)."""
    return PairSettings(
        cameras=tuple(Camera(c.name, c.url, c.enabled) for c in cfg.camera),
        retention_days=cfg.recorder.retention_days,
        min_free_percent=cfg.recorder.min_free_percent,
        min_free_mb=cfg.recorder.min_free_mb,
        virtual_ip=str(cfg.pair.virtual_ip) if cfg.pair else None,
        recorder=tuple(
            (k, v)
            for k in RECORDER_KEYS  # defaults left out: one way to say them
            if (v := getattr(cfg.recorder, k)) != RecorderConfig.model_fields[k].default
        ),
        api_token=token if cfg.api.token_file is not None else None,
    )


def token_of(cfg: Config) -> str | None:
    """The token file's content when [api] token_file is set; ConfigError if unreadable."""
    if cfg.api.token_file is None:
        return None
    try:
        return read_secret(cfg.api.token_file, "API token").decode().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{cfg.api.token_file}: cannot read the API token: {e}") from None


def _number(d: dict, key: str, section: str = "") -> float:
    v = d.get(key)
    if type(v) not in (int, float) or not math.isfinite(v):
        raise ValueError(f"settings.{section}{key}: not a finite number")
    return float(v) if type(v) is float else v


def settings_of_json(d: object) -> PairSettings:
    """The peer's settings, shape and sizes checked (the values are judged by the config's own
    loader once merged); ValueError naming the field, never its value."""
    if not isinstance(d, dict):
        raise ValueError("settings: not an object")
    cams = d.get("cameras")
    if not isinstance(cams, list) or len(cams) > MAX_CAMERAS:
        raise ValueError(f"settings.cameras: not a list of at most {MAX_CAMERAS}")
    cameras = []
    for i, c in enumerate(cams):
        if not isinstance(c, dict) or set(c) != {"name", "url", "enabled"}:
            raise ValueError(f"settings.cameras[{i + 1}]: not name, url and enabled")
        name, url, enabled = c["name"], c["url"], c["enabled"]
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"settings.cameras[{i + 1}].name: not a camera name")
        if not isinstance(url, str) or len(url) > MAX_URL:
            raise ValueError(f"settings.cameras[{i + 1}].url: not text of at most {MAX_URL}")
        if not isinstance(enabled, bool):
            raise ValueError(f"settings.cameras[{i + 1}].enabled: not true or false")
        cameras.append(Camera(name, url, enabled))
    vip, token = d.get("virtual_ip"), d.get("api_token")
    if vip is not None and (not isinstance(vip, str) or len(vip) > 64):
        raise ValueError("settings.virtual_ip: not an address")
    if token is not None and not (
        isinstance(token, str)
        and MIN_TOKEN_CHARS <= len(token) <= 512
        and token.isascii()
        and token.isprintable()
        and " " not in token
    ):
        raise ValueError(
            f"settings.api_token: not a token ({MIN_TOKEN_CHARS}-512 printable characters)"
        )
    rec = d.get("recorder")
    if not isinstance(rec, dict) or not set(rec) <= set(RECORDER_KEYS):
        raise ValueError(f"settings.recorder: not an object of {', '.join(RECORDER_KEYS)}")
    return PairSettings(
        cameras=tuple(cameras),
        recorder=tuple((k, _number(rec, k, "recorder.")) for k in RECORDER_KEYS if k in rec),
        retention_days=_number(d, "retention_days"),
        min_free_percent=_number(d, "min_free_percent"),
        min_free_mb=_number(d, "min_free_mb"),
        virtual_ip=vip,
        api_token=token,
    )


def merge(text: str, s: PairSettings, token_path: Path) -> str:
    """This board's config text with the pair-wide settings `s`: every other key, the comments
    and the order kept; a camera table that stays keeps its own comments."""
    doc = tomlkit.parse(text)
    rec = doc.setdefault("recorder", tomlkit.table())
    want = {k: getattr(s, k) for k in ("retention_days", "min_free_percent", "min_free_mb")}
    want |= {k: RecorderConfig.model_fields[k].default for k in RECORDER_KEYS} | dict(s.recorder)
    for key, new in want.items():
        if rec.get(key, RecorderConfig.model_fields[key].default) != new:
            rec[key] = int(new) if float(new).is_integer() else new  # 7, as an installer writes
    if s.virtual_ip is not None and "pair" in doc and doc["pair"].get("virtual_ip") != s.virtual_ip:
        doc["pair"]["virtual_ip"] = s.virtual_ip
    api = doc.get("api")
    if s.api_token is not None:
        api = doc.setdefault("api", tomlkit.table())
        if "token_file" not in api:
            api["token_file"] = str(token_path)
    elif api is not None and "token_file" in api:
        del api["token_file"]
    old = {t.get("name"): t for t in doc.get("camera", [])}
    want = [(c.name, c.url, c.enabled) for c in s.cameras]
    have = [(t.get("name"), t.get("url"), t.get("enabled", True)) for t in doc.get("camera", [])]
    if want != have:
        cameras = tomlkit.aot()
        for c in s.cameras:
            t = old.get(c.name) or tomlkit.table()
            t["name"] = c.name
            t["url"] = c.url
            if not c.enabled:
                t["enabled"] = False
            elif "enabled" in t:
                del t["enabled"]
            cameras.append(t)
        if "camera" in doc:
            del doc["camera"]
        if cameras:
            doc["camera"] = cameras
    return tomlkit.dumps(doc)


# --- the record on disk ------------------------------------------------------------------------

ADOPT_FILE = "pair-settings.adopt"
"""Left by a join: the next start counts no change of this board's own (pairsettings.adopting)."""


def adopt_on_join(data_dir: Path) -> None:
    """This board joined a pair: the record of any earlier pair goes, and the next start takes
    the peer's settings (cameras, retention, VIP) instead of contesting them."""
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    write_file_atomic(data_dir / ADOPT_FILE, b"", 0o600)


def load_record(path: Path) -> tuple[Version | None, Version | None]:
    """(current, pending) from the record file; (None, None) if there is none yet. A record
    that does not read is said and started over (the settings in the file stay in force)."""
    try:
        d = json.loads(path.read_bytes())
        cur = version_of_json(d["current"])
        pend = d.get("pending")
        return cur, None if pend is None else version_of_json(pend)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.error("pair settings record %s unreadable (%s): starting a new one", path, e)
        return None, None


def save_record(path: Path, current: Version, pending: Version | None) -> None:
    body = {"current": current.to_json(), "pending": pending.to_json() if pending else None}
    write_file_atomic(path, json.dumps(body, indent=1).encode() + b"\n", 0o640)


# --- on the board -------------------------------------------------------------------------------

Request = Callable[[str, float], tuple[http.client.HTTPResponse, http.client.HTTPConnection, str]]
"""A signed GET to the peer's mirror port: (response, connection, nonce) (MirrorClient.request)."""


@dataclass
class Counters:
    heads: int = 0
    documents: int = 0
    applied: int = 0
    refused: int = 0


class PairSync:
    """One board's pair-wide settings: the core, its record, its routes on the mirror server,
    the thread that polls the peer. Every core event runs under one lock."""

    def __init__(
        self,
        *,
        board: str,
        key: bytes,
        config_path: Path,
        cfg: Config,
        token: str | None,
        alerts: Alerts,
        audit: AuditLog,
        request: Request,
        now_us: Callable[[], int],
        failed: Failure = lambda what, e: None,
    ) -> None:
        self.board, self.key, self.path = board, key, config_path
        self.alerts, self.audit, self.request, self.now_us = alerts, audit, request, now_us
        self.failed = failed
        self.data_dir = cfg.board.data_dir
        self.record = self.data_dir / STATE_FILE
        self.token_path = cfg.token_file
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters = Counters()
        self.last_error: str | None = None
        settings = settings_of(cfg, token)
        h = content_hash(key, settings)
        self.known: dict[str, PairSettings] = {h: settings}
        """Settings by hash: this board's, and a peer document being written."""
        cur, pending = load_record(self.record)
        adopt = self.data_dir / ADOPT_FILE
        start = adopting if cur is None and adopt.exists() else initial
        self.core = PairSettingsCore(board, cur or start(board, h, now_us()), pending)
        first: list[Action] = [Save(self.core.current, pending)] if cur is None else []
        self._run(first + self.core.local(h, now_us()))
        adopt.unlink(missing_ok=True)  # the record holds it now

    # -- this board's config -------------------------------------------------------------------

    def local(self, cfg: Config) -> None:
        """The config was (re)loaded and is good (Board.reload)."""
        try:
            settings = settings_of(cfg, token_of(cfg))
        except ConfigError as e:
            log.error("pair settings: %s; not counted as a change", e)
            return
        h = content_hash(self.key, settings)
        with self._lock:
            self.known[h] = settings
            self._run(self.core.local(h, self.now_us()))

    @property
    def settings(self) -> PairSettings:
        return self.known[self.core.current.hash]

    # -- carrying the core's actions out ---------------------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        with self._lock:
            queue = list(actions)
            while queue:
                a = queue.pop(0)
                queue += self._do(a)
            core = self.core
            keep = {core.current.hash, *((core.pending.hash,) if core.pending else ())}
            self.known = {h: s for h, s in self.known.items() if h in keep}
            # What the event loop reads (serving, status) without waiting for the lock, which
            # a fetch from the peer may hold for seconds.
            self._view = (core.current, self.known[core.current.hash], core.peer, core.pending,
                          core.agree())  # fmt: skip

    def _do(self, a: Action) -> list[Action]:
        if isinstance(a, Save):
            try:
                save_record(self.record, a.current, a.pending)
            except OSError as e:  # a full data disk must not stop the board; said, and retried
                self.last_error = f"{self.record}: cannot write: {e}"  # at the next change
                log.error("pair settings: %s", self.last_error)
        elif isinstance(a, Fetch):
            return self._fetch()
        elif isinstance(a, Apply):
            return self._apply(a)
        elif isinstance(a, Raise):
            self.alerts.raise_(a.id, Severity.WARNING, a.text, self.now_us())
            log.warning("%s", a.text)
        elif isinstance(a, Clear):
            self.alerts.clear(a.id)
        elif isinstance(a, Audit):
            self._audit(a)
        return []

    def _audit(self, a: Audit) -> None:
        new = self.known.get(a.version.hash)
        old = self.known.get(a.other.hash) if a.other else None
        fields: dict[str, object] = {
            "board": self.board,
            "version": a.version.version,
            "counts": dict(a.version.counts),
            "origin": a.version.origin,
            "hash": a.version.hash[:12],
        }
        if a.other is not None:
            fields["other"] = a.other.label()
        if new is not None and a.event != "pair-settings-refused":
            fields["keys"] = new.changed_keys(old)
        if a.reason:
            fields["reason"] = a.reason
        self.audit.append(self.now_us(), a.event.value, **fields)

    def _apply(self, a: Apply) -> list[Action]:
        """Write the peer's settings into nvr.toml: validated first, the old file kept."""
        v = a.version
        new = self.known.get(v.hash)
        if new is None:
            return self.core.write_failed(v, "its document is no longer here (fetched again)")
        try:
            text = self.path.read_bytes().decode("utf-8-sig")
            here = parse_config(text, str(self.path))
            if content_hash(self.key, settings_of(here, token_of(here))) != self.core.current.hash:
                log.info("pair settings: %s was edited here meanwhile; that edit goes first",
                         self.path)  # fmt: skip
                return self.core.deferred(v)
            merged = merge(text, new, self.token_path)
            parse_config(merged, f"{self.path} with the peer's settings {v.label()}")
        except (OSError, UnicodeDecodeError, ConfigError) as e:
            self.counters.refused += 1
            return self.core.write_failed(v, str(e).replace("\n", "; ")[:600])
        try:
            if new.api_token is not None:
                write_file_atomic(self.token_path, new.api_token.encode() + b"\n", 0o600)
            mode = self.path.stat().st_mode & 0o777
            write_file_atomic(self.path.with_name(self.path.name + ".prev"), text.encode(), mode)
            write_file_atomic(self.path, merged.encode(), mode)
        except OSError as e:
            return self.core.write_failed(v, f"{self.path}: cannot write: {e}")
        self.counters.applied += 1
        old = self.settings
        if new.api_token != old.api_token:
            self.alerts.raise_(AlertId.RESTART_NEEDED, Severity.WARNING,
                               "the pair's API token changed (replicated from the peer): "
                               "restart the firmware to use it", self.now_us())  # fmt: skip
        keys = ", ".join(new.changed_keys(old)) or "no key"
        log.info("pair settings: wrote %s from the peer (%s); previous kept as %s.prev",
                 v.label(), keys, self.path.name)  # fmt: skip
        return self.core.written(v)

    # -- the peer ------------------------------------------------------------------------------

    def _get(self, path: str, limit: int) -> bytes:
        try:
            return signed_get(self.request, self.key, path, limit, TIMEOUT_S)
        except NotServed as e:
            raise NotServed(f"{e} (a peer without pair settings?)") from None

    def poll(self) -> None:
        """Once: the peer's version, and its document if this board needs it."""
        try:
            body = self._get(HEAD_PATH, MAX_HEAD_BYTES)
            d = json.loads(body)
            v = version_of_json(d.get("version") if isinstance(d, dict) else None)
        except NotServed as e:
            self.last_error = str(e)
            return
        except (OSError, http.client.HTTPException) as e:
            self.last_error = f"peer: {e}"
            return
        except (AuthError, ValueError, RecursionError) as e:
            self.last_error = f"peer's version refused: {e}"
            log.warning("pair settings: %s", self.last_error)
            return
        self.counters.heads += 1
        self.last_error = None
        with self._lock:
            self._run(self.core.peer_advert(v))

    def _fetch(self) -> list[Action]:
        try:
            body = self._get(DOC_PATH, MAX_DOC_BYTES)
            d = json.loads(body)
            if not isinstance(d, dict):
                raise ValueError("document: not an object")
            v = version_of_json(d.get("version"))
            sealed = d.get("settings")
            if not isinstance(sealed, str):
                raise ValueError("document.settings: missing")
            settings = settings_of_json(json.loads(unseal(self.key, sealed)))
        except (NotServed, OSError, http.client.HTTPException) as e:
            if isinstance(e, TooLong):
                return self._refused(f"oversized: {e}")
            self.last_error = f"peer: {e}"
            return []
        except (AuthError, ValueError, RecursionError, UnicodeDecodeError) as e:
            return self._refused(str(e)[:300])
        self.counters.documents += 1
        h = content_hash(self.key, settings)
        self.known[h] = settings
        return self.core.document(v, h)

    def _refused(self, why: str) -> list[Action]:
        self.counters.refused += 1
        self.last_error = f"peer's document refused: {why}"
        return self.core.transfer_failed(why)

    # -- serving the peer (routes on the mirror server, authenticated there) ---------------------

    def routes(self) -> list[tuple[str, Callable]]:
        return [(HEAD_PATH, self._serve_head), (DOC_PATH, self._serve_doc)]

    def _answer(self, request: web.Request, body: dict) -> web.Response:
        raw = json.dumps(body).encode()
        return web.Response(body=raw, content_type="application/json",
                            headers={RESPONSE_HEADER: sign_response(self.key, request["nonce"],
                                                                    raw)})  # fmt: skip

    async def _serve_head(self, request: web.Request) -> web.Response:
        v = self._view[0]
        return self._answer(request, {"board": self.board, "version": v.to_json()})

    async def _serve_doc(self, request: web.Request) -> web.Response:
        v, s = self._view[:2]
        return self._answer(request, {"board": self.board, "version": v.to_json(),
                                      "settings": seal(self.key, s.canonical())})  # fmt: skip

    # -- lifecycle and status ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=keep_running,
            args=("the pair settings sync", self._follow, self._stop, self.failed),
            name="nvr-pairsync",
            daemon=True,
        )
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(POLL_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT_S * 2 + POLL_S)

    def status(self) -> dict:
        """`pair_settings` in status: versions and hashes only, never a setting's value."""
        cur, _, peer, pending, agree = self._view
        return {
            "version": cur.version,
            "counts": dict(cur.counts),
            "origin": cur.origin,
            "changed_at": iso(cur.time_us),
            "hash": cur.hash[:12],
            "peer_version": None if peer is None else peer.version,
            "peer_hash": None if peer is None else peer.hash[:12],
            "agree": agree,
            "pending": None if pending is None else pending.version,
            "last_error": self.last_error,
            "applied": self.counters.applied,
            "refused": self.counters.refused,
        }
