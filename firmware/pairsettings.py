"""Pair-wide settings: the part of the config both boards of a pair must agree on (the
cameras, the recorder's and retention settings, the floating IP, the API token), versioned
so that a change made on either board reaches the other and no change is lost without an
alert.

Sans-IO: the adapter (firmware/pairsync.py) feeds events in (this board's config was loaded
with these pair-wide settings, the peer advertises its version, the peer's document arrived,
the write of it succeeded or failed) and carries the actions out (save the version record,
fetch the peer's document, write it into the config file, raise or clear an alert, audit).

Versions are version vectors: how many changes each board has made. That is what tells "the
peer changed the settings after seeing mine" (its vector dominates: take it) from "both
boards changed them without seeing each other's change" (concurrent: a conflict). A conflict
is settled the same way on both boards without a round of its own: the change with the
higher rank wins (more changes in total, then the later time, then the board name, then the
hash), the winner's settings are kept with the componentwise maximum of both vectors, and the
version carries the discarded one (`replaced`), so the board whose change lost says so in an
alert naming both, and the discarded file is kept beside the config (nvr.toml.prev).
The scalar `version` shown in status is the vector's sum: it only grows on each board.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from firmware.alert_ids import AlertId

# --- the settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    name: str
    url: str
    """May hold the camera's credentials: never logged, shown or put in an alert."""
    enabled: bool = True


RECORDER_KEYS = (
    "segment_seconds",
    "open_timeout_seconds",
    "stall_seconds",
    "max_drift_seconds",
    "reconnect_min_seconds",
    "reconnect_max_seconds",
    "standby_ring_seconds",
)
"""[recorder] keys beyond retention that the pair shares: both boards cut, judge and hold the
cameras alike. `workers` stays per board (its CPU count)."""


@dataclass(frozen=True)
class PairSettings:
    """The pair-wide part of a board's config; everything else ([board], [network], the rest of
    [pair] and [recorder], [api] listen_*) stays per board."""

    cameras: tuple[Camera, ...] = ()
    retention_days: float = 30.0
    min_free_percent: float = 5.0
    min_free_mb: float = 256.0
    virtual_ip: str | None = None
    recorder: tuple[tuple[str, float], ...] = ()
    """(key, value) of RECORDER_KEYS away from their defaults, in their order; a key left out
    means its default (one way to say the same settings: the same hash)."""
    api_token: str | None = field(default=None, repr=False)
    """The token from [api] token_file; None: the token derived from the pair key (the same
    on both boards without replication). Secret."""

    def to_json(self) -> dict:
        return {
            "cameras": [{"name": c.name, "url": c.url, "enabled": c.enabled} for c in self.cameras],
            # as floats: 3 and 3.0 are the same setting and must hash the same
            "retention_days": float(self.retention_days),
            "min_free_percent": float(self.min_free_percent),
            "min_free_mb": float(self.min_free_mb),
            "virtual_ip": self.virtual_ip,
            "recorder": {k: float(v) for k, v in self.recorder},
            "api_token": self.api_token,
        }

    def canonical(self) -> bytes:
        """The bytes the content hash is taken over: the same settings, the same bytes."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def changed_keys(self, old: PairSettings | None) -> list[str]:
        """The config keys that differ from `old`, by name only (never a value: a camera URL
        may hold a password, and the token is one)."""
        keys: list[str] = []
        o = old or PairSettings(retention_days=-1, min_free_percent=-1, min_free_mb=-1)
        mine = {c.name: c for c in self.cameras}
        theirs = {c.name: c for c in (old.cameras if old else ())}
        for name in sorted(mine.keys() | theirs.keys()):
            a, b = theirs.get(name), mine.get(name)
            if a is None:
                keys.append(f"camera[{name}] added")
            elif b is None:
                keys.append(f"camera[{name}] removed")
            else:
                keys += [f"camera[{name}].{k}" for k in ("url", "enabled")
                         if getattr(a, k) != getattr(b, k)]  # fmt: skip
        if old is not None and [c.name for c in old.cameras] != [c.name for c in self.cameras] \
                and mine.keys() == theirs.keys():  # fmt: skip
            keys.append("camera order")
        for key, section in (("retention_days", "recorder"), ("min_free_percent", "recorder"),
                             ("min_free_mb", "recorder"), ("virtual_ip", "pair")):  # fmt: skip
            if getattr(o, key) != getattr(self, key):
                keys.append(f"{section}.{key}")
        mine_r, theirs_r = dict(self.recorder), dict(old.recorder if old else ())
        keys += [f"recorder.{k}" for k in RECORDER_KEYS if mine_r.get(k) != theirs_r.get(k)]
        if o.api_token != self.api_token:
            keys.append("api.token")
        return keys


# --- versions -----------------------------------------------------------------------------------

ANCESTRY = 32
"""Earlier settings a version remembers (their hashes) to tell a real conflict from none."""

Counts = tuple[tuple[str, int], ...]
"""A version vector: (board, changes made there), sorted by board, no zero entries."""


def counts_of(m: Mapping[str, int]) -> Counts:
    return tuple(sorted((b, n) for b, n in m.items() if n > 0))


def _merge(a: Counts, b: Counts) -> Counts:
    m = dict(a)
    for board, n in b:
        m[board] = max(m.get(board, 0), n)
    return counts_of(m)


def _covers(a: Counts, b: Counts) -> bool:
    """Every change counted in b is counted in a."""
    m = dict(a)
    return all(m.get(board, 0) >= n for board, n in b)


@dataclass(frozen=True)
class Version:
    counts: Counts
    origin: str
    """The board whose change these settings are."""
    time_us: int
    """Wall clock of that change on its board (the tie-break of a conflict, never its order)."""
    hash: str
    """Keyed hash of the settings (PairSettings.canonical): the same settings, the same hash."""
    replaced: Version | None = None
    """Settled a conflict: the version whose settings were discarded for these."""
    bases: tuple[str, ...] = ()
    """Hashes of the settings this change was made on, newest first (at most ANCESTRY): a
    concurrent version holding one of those lost nothing to it (this board changed those very
    settings, e.g. both boards started from them), so that is no conflict to alert."""

    @property
    def version(self) -> int:
        return sum(n for _, n in self.counts)

    def rank(self) -> tuple:
        return (self.version, self.time_us, self.origin, self.hash, self.counts)

    def full_rank(self) -> tuple:
        """Orders even versions of the same settings: both boards keep the higher record."""
        return (self.rank(), self.replaced.rank() if self.replaced else ())

    def same(self, other: Version) -> bool:
        """The same settings at the same version (whatever conflict led there)."""
        return self.counts == other.counts and self.hash == other.hash

    def stripped(self) -> Version:
        return replace(self, replaced=None, bases=())

    def label(self) -> str:
        """For alerts, logs and the audit log: no secret in it (the hash is keyed)."""
        return f"v{self.version} of {self.origin} ({self.hash[:12]})"

    def to_json(self) -> dict:
        return {
            "counts": dict(self.counts),
            "origin": self.origin,
            "time_us": self.time_us,
            "hash": self.hash,
            "version": self.version,
            "replaced": self.replaced.to_json() if self.replaced else None,
            "bases": list(self.bases),
        }


def initial(board: str, content_hash: str, now_us: int) -> Version:
    """A board's first record counts the settings it started with as its first change: two
    boards paired with the same settings agree at once, with different ones they conflict
    (an alert), and neither board's first settings are overwritten silently."""
    return Version(((board, 1),), board, now_us, content_hash)


def adopting(board: str, content_hash: str, now_us: int) -> Version:
    """A board that has just joined a pair (`nvr pair join`) counts no change of its own: the
    waiting board's settings are newer and are taken without a conflict. The board that joins
    is the new one (a replacement, or the second of a new pair); the one that showed the code
    holds the pair's cameras."""
    return Version((), board, now_us, content_hash)


class Relation(StrEnum):
    SAME = "same"
    NEWER = "newer"
    """The other version has seen every change of this one and more."""
    OLDER = "older"
    CONCURRENT = "concurrent"


def relation(mine: Version, other: Version) -> Relation:
    if mine.counts == other.counts:
        return Relation.SAME if mine.hash == other.hash else Relation.CONCURRENT
    if _covers(other.counts, mine.counts):
        return Relation.NEWER
    if _covers(mine.counts, other.counts):
        return Relation.OLDER
    return Relation.CONCURRENT


def settle(a: Version, b: Version) -> Version:
    """The version two concurrent ones settle into: the same on both boards, whichever sees
    the conflict first."""
    win, lose = (a, b) if a.rank() >= b.rank() else (b, a)
    replaced = None if lose.hash == win.hash or lose.hash in win.bases else lose.stripped()
    return replace(win, counts=_merge(a.counts, b.counts), replaced=replaced)


# --- events and actions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Save:
    """Persist the record before anything else happens (a restart must find it)."""

    current: Version
    pending: Version | None


@dataclass(frozen=True)
class Fetch:
    """Fetch the peer's document (its advert said `advertised`)."""

    advertised: Version


@dataclass(frozen=True)
class Apply:
    """Write the peer's settings (the document with hash `version.hash`) into the config
    file, then report `written` or `write_failed`. `discarded`: this board's version a
    conflict threw away (keep the file it was in)."""

    version: Version
    discarded: Version | None


@dataclass(frozen=True)
class Raise:
    id: AlertId
    text: str


@dataclass(frozen=True)
class Clear:
    id: AlertId


class Event(StrEnum):
    LOCAL_CHANGE = "pair-settings-changed"
    APPLIED = "pair-settings-applied"
    CONFLICT = "pair-settings-conflict"
    REFUSED = "pair-settings-refused"


@dataclass(frozen=True)
class Audit:
    event: Event
    version: Version
    other: Version | None = None
    reason: str = ""


Action = Save | Fetch | Apply | Raise | Clear | Audit

CONFLICT = AlertId.PAIR_SETTINGS_CONFLICT
REFUSED = AlertId.PAIR_SETTINGS_REFUSED


@dataclass
class PairSettingsCore:
    """One board's side. `current` is the version of the settings in force here; `pending`
    the peer's version being written into the config file (a restart that finds the file
    already holding it takes it as current instead of counting it as a local change)."""

    board: str
    current: Version
    pending: Version | None = None
    peer: Version | None = None
    """The peer's version as it last advertised it."""
    refused: Version | None = None
    """The last peer version this board refused: not fetched again until the peer advertises
    another one or this board's settings change."""

    def _save(self) -> Save:
        return Save(self.current, self.pending)

    # -- this board's config -----------------------------------------------------------------

    def local(self, content_hash: str, now_us: int) -> list[Action]:
        """This board's config was loaded (start, an edit, our own write) with these settings."""
        if self.pending is not None and content_hash == self.pending.hash:
            return self._taken(self.pending)
        pending, self.pending = self.pending, None
        if content_hash == self.current.hash:
            return []
        # A write of the peer's settings was under way (power cut) and the file has been edited
        # since: the edit may have been made on the peer's settings, so a change of this board's
        # that the write was discarding is said to be discarded (never lost without a word).
        lost = (
            pending is not None
            and pending.replaced is not None
            and pending.replaced.same(self.current)
        )
        m = dict(self.current.counts)
        m[self.board] = m.get(self.board, 0) + 1
        bases = (self.current.hash, *self.current.bases)[:ANCESTRY]
        self.current = Version(counts_of(m), self.board, now_us, content_hash, bases=bases)
        self.refused = None
        out: list[Action] = [self._save(), Audit(Event.LOCAL_CHANGE, self.current),
                             Clear(REFUSED), Clear(CONFLICT)]  # fmt: skip
        if lost:
            assert pending is not None
            out += self._conflict(pending, discarded_here=True)
        return out + self._compare()

    # -- the peer ------------------------------------------------------------------------------

    def peer_advert(self, v: Version) -> list[Action]:
        self.peer = v
        return self._compare()

    def agree(self) -> bool | None:
        """Both boards hold the same settings at the same version; None: peer not heard."""
        return None if self.peer is None else self.peer.same(self.current)

    def _compare(self) -> list[Action]:
        p = self.peer
        if p is None or self.pending is not None:
            return []
        if self.refused is not None and p.same(self.refused):
            return []
        rel = relation(self.current, p)
        if rel in (Relation.SAME, Relation.NEWER) and p.hash == self.current.hash:
            if rel == Relation.NEWER or p.full_rank() > self.current.full_rank():
                return self._align(p)
            return []
        if rel in (Relation.SAME, Relation.OLDER):
            return []
        if rel == Relation.CONCURRENT:
            settled = settle(self.current, p)
            if settled.hash == self.current.hash:
                return self._keep(settled)
        return [Fetch(p)]

    def _align(self, v: Version) -> list[Action]:
        """The same settings under the peer's record: no file to write. If the peer settled a
        conflict in favour of this board's settings, this board says so too."""
        was, self.current = self.current, v
        out: list[Action] = [self._save()]
        if v.replaced is not None and not (was.replaced and was.replaced.same(v.replaced)):
            out += self._conflict(v, discarded_here=False)
        return out

    def _keep(self, settled: Version) -> list[Action]:
        """This board's settings won a conflict (or both boards made the same change)."""
        self.current = settled
        out: list[Action] = [self._save()]
        if settled.replaced is not None:
            out += self._conflict(settled, discarded_here=False)
        return out

    def _conflict(self, settled: Version, discarded_here: bool) -> list[Action]:
        lost = settled.replaced
        assert lost is not None
        where = "this board's" if discarded_here else "the peer's"
        text = (
            f"the pair-wide settings were changed on both boards at once: {where} change "
            f"{lost.label()} was discarded for {settled.stripped().label()}"
            + (" (the discarded config is kept as nvr.toml.prev)" if discarded_here else "")
            + "; check the cameras, retention and floating IP, and change them again if needed"
        )
        return [Raise(CONFLICT, text), Audit(Event.CONFLICT, settled.stripped(), lost)]

    def document(self, v: Version, content_hash: str) -> list[Action]:
        """The peer's document arrived, authenticated and decoded; content_hash is the hash of
        the settings it holds, as this board computes it."""
        if content_hash != v.hash:
            return self._refuse(v, "its settings do not match the hash it names")
        if self.pending is not None:
            return []
        rel = relation(self.current, v)
        if rel == Relation.SAME:
            return []
        if rel == Relation.NEWER and v.hash == self.current.hash:
            return self._align(v)
        if rel == Relation.OLDER:
            return self._refuse(
                v, f"older than this board's ({v.label()} < {self.current.label()}); kept ours"
            )
        if rel == Relation.CONCURRENT:
            settled = settle(self.current, v)
            if settled.hash == self.current.hash:
                return self._keep(settled)
            v = settled
        self.pending = v
        discarded = self.current if v.replaced and v.replaced.same(self.current) else None
        return [self._save(), Apply(v, discarded)]

    def written(self, v: Version) -> list[Action]:
        """The config file holds the peer's settings now."""
        if self.pending is None or not self.pending.same(v):
            return []
        return self._taken(v)

    def _taken(self, v: Version) -> list[Action]:
        was = self.current
        self.current, self.pending, self.refused = v, None, None
        out: list[Action] = [self._save(), Audit(Event.APPLIED, v, was), Clear(REFUSED)]
        if v.replaced is not None and v.replaced.same(was):
            out += self._conflict(v, discarded_here=True)
        elif not v.same(was):
            out.append(Clear(CONFLICT))
        return out + self._compare()

    def write_failed(self, v: Version, why: str) -> list[Action]:
        """The peer's settings do not make a valid config here (or could not be written)."""
        if self.pending is None or not self.pending.same(v):
            return []
        self.pending = None
        return [self._save(), *self._refuse(v, why)]

    def deferred(self, v: Version) -> list[Action]:
        """The config file was edited here meanwhile: that edit is counted first (the reload
        that follows it), then the peer's version is compared again."""
        if self.pending is not None and self.pending.same(v):
            self.pending = None
            return [self._save()]
        return []

    def transfer_failed(self, why: str) -> list[Action]:
        """The document could not be had (unsigned, oversized, malformed): refused until the
        peer advertises another version."""
        return self._refuse(self.peer, why) if self.peer is not None else []

    def _refuse(self, v: Version, why: str) -> list[Action]:
        self.refused = v
        text = (f"the peer's pair-wide settings {v.label()} were refused: {why}; this board "
                "keeps its own settings in force")  # fmt: skip
        return [Raise(REFUSED, text), Audit(Event.REFUSED, v, reason=why)]


# --- the record's file format -------------------------------------------------------------------


def version_of_json(d: object, depth: int = 0) -> Version:
    """A version from JSON (the record file or the peer's answer): ValueError naming the
    field that is wrong. Board names follow the config's rule (firmware/config.py NAME)."""
    from firmware.config import NAME

    if not isinstance(d, dict):
        raise ValueError("version: not an object")
    counts = d.get("counts")
    if not isinstance(counts, dict) or len(counts) > 2:
        raise ValueError("version.counts: not a map of at most two boards")
    for b, n in counts.items():
        if not NAME.fullmatch(b) or type(n) is not int or not 0 <= n < 1 << 53:
            raise ValueError("version.counts: a board name and a count 0..2^53 each")
    origin, t, h = d.get("origin"), d.get("time_us"), d.get("hash")
    if not isinstance(origin, str) or not NAME.fullmatch(origin):
        raise ValueError("version.origin: not a board name")
    if type(t) is not int or not 0 <= t < 1 << 62:
        raise ValueError("version.time_us: not a time in µs")
    if not _is_sha256(h):
        raise ValueError("version.hash: not a SHA-256 in hex")
    bases = d.get("bases", [])
    if not isinstance(bases, list) or len(bases) > ANCESTRY or not all(map(_is_sha256, bases)):
        raise ValueError(f"version.bases: not a list of at most {ANCESTRY} SHA-256 in hex")
    rep = d.get("replaced")
    if rep is not None and depth > 0:
        raise ValueError("version.replaced: nested")
    return Version(counts_of(counts), origin, t, h,
                   None if rep is None else version_of_json(rep, depth + 1),
                   tuple(bases))  # fmt: skip


def _is_sha256(h: object) -> bool:
    return isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)
