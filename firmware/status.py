"""The board's status as one frozen snapshot: the API, the metrics, the console and the front
panel read this instead of reaching into the board's parts, and `to_json` is the status
contract (docs/DESIGN.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from firmware.alerts import Alert
from firmware.roles import Role
from firmware.timefmt import iso


@dataclass(frozen=True)
class CameraView:
    name: str
    url: str
    """Without credentials."""
    recording: bool
    holding: bool
    ring_seconds: float | None
    codec: str | None
    last_frame_wall_us: int | None
    ingest_lag_seconds: float | None
    error: str | None
    segments: int
    bytes: int
    frames: int
    reconnects: int
    gaps: Mapping[str, int]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "recording": self.recording,
            "holding": self.holding,
            "last_frame_at": iso(self.last_frame_wall_us),
            "segments": self.segments,
        }

    def detail_json(self) -> dict:
        """GET /api/v1/cameras."""
        return {
            "name": self.name,
            "url": self.url,
            "recording": self.recording,
            "holding": self.holding,
            "ring_seconds": self.ring_seconds,
            "codec": self.codec,
            "last_frame_at": iso(self.last_frame_wall_us),
            "ingest_lag_seconds": self.ingest_lag_seconds,
            "error": self.error,
            "segments_written": self.segments,
            "bytes_written": self.bytes,
            "reconnects": self.reconnects,
            "gaps": dict(self.gaps),
        }


@dataclass(frozen=True)
class PathCounts:
    name: str
    sent: int
    received: int
    send_errors: int


@dataclass(frozen=True)
class PairView:
    role: Role
    epoch: int
    effective_priority: int
    vip_held: bool
    role_changes: Mapping[str, int]
    paths: tuple[PathCounts, ...]
    dropped: Mapping[str, int]
    peer_heard_seconds: float | None
    peer: Mapping | None
    """The `peer` block of the status contract."""
    detail: Mapping
    """The `failover` block of the status contract."""


@dataclass(frozen=True)
class MirrorView:
    lag_seconds: float | None
    """This board's own lag on a standby, the lag its standby reports on the active board."""
    behind_bytes: int
    fetched_segments: int
    fetched_bytes: int
    errors: Mapping[str, int]
    spares_removed: int
    detail: Mapping
    """The `mirror` block of the status contract."""
    clock_offset_seconds: float | None = None
    """The peer's clock minus this board's, as the signed mirror traffic shows it."""
    clock_uncertainty_seconds: float | None = None


def pair_settings_line(ps: Mapping) -> str:
    """The console's line for the `pair_settings` block: versions on both boards."""
    here = f"pair settings v{ps['version']} ({ps['hash']}, from {ps['origin']})"
    if ps.get("peer_version") is None:
        return f"{here}; peer's not heard"
    if ps.get("agree"):
        return f"{here}; the same on the peer"
    return f"{here}; peer has v{ps['peer_version']} ({ps['peer_hash']}): NOT the same yet"


@dataclass(frozen=True)
class BoardStatus:
    board: str
    role: Role
    virtual_ip: str | None
    version: str
    hostname: str
    uptime_seconds: float
    data_dir: str
    disk_free_bytes: int
    disk_total_bytes: int
    cameras: tuple[CameraView, ...]
    alerts: tuple[Alert, ...]
    alerts_raised: Mapping[str, int]
    retention_deleted: Mapping[str, int]
    worker_restarts: int
    writes_held: bool
    pair: PairView | None
    mirror: MirrorView | None
    hardware: Mapping | None
    pair_fingerprint: str | None = None
    """Short name of the pair key (firmware/pairkey.py), the same on both boards of a pair."""
    pair_settings: Mapping | None = None
    capacity: Mapping | None = None
    """firmware/capacity.py's estimate with the configured retention_days; None before one."""
    """Version of the pair-wide settings here and on the peer (firmware/pairsync.py)."""
    locks: Mapping | None = None
    """What active evidence locks keep from retention (firmware/evidence/locks.py LockHold)."""
    evidence: Mapping | None = None
    """The transparency log: sizes, checkpoints, key fingerprints (firmware/evidence/service.py)."""
    archive: Mapping | None = None
    """The archive uploader (firmware/archive/uploader.py `status`); None without [archive]."""

    @property
    def epoch(self) -> int:
        return self.pair.epoch if self.pair else 0

    def to_json(self) -> dict:
        """`nvr status --json` and GET /api/v1/status: fields may be added, never renamed."""
        return {
            "board": self.board,
            "role": self.role.value,
            "pair_fingerprint": self.pair_fingerprint,
            "peer": dict(self.pair.peer) if self.pair and self.pair.peer else None,
            "virtual_ip": self.virtual_ip,
            "epoch": self.epoch,
            "mirror_lag_seconds": self.mirror.lag_seconds if self.mirror else None,
            "version": self.version,
            "hostname": self.hostname,
            "uptime_seconds": self.uptime_seconds,
            "data_dir": self.data_dir,
            "evidence": dict(self.evidence) if self.evidence is not None else None,
            "disk": {
                "free_bytes": self.disk_free_bytes,
                "total_bytes": self.disk_total_bytes,
                "capacity": dict(self.capacity) if self.capacity else None,
                "locks": dict(self.locks) if self.locks is not None else None,
            },
            "cameras": [c.to_json() for c in self.cameras],
            "alerts": [a.to_json() for a in self.alerts],
            "failover": dict(self.pair.detail) if self.pair else None,
            "mirror": dict(self.mirror.detail) if self.mirror else None,
            "hardware": dict(self.hardware) if self.hardware is not None else None,
            "writes_held": self.writes_held,
            "pair_settings": dict(self.pair_settings) if self.pair_settings else None,
            "archive": dict(self.archive) if self.archive is not None else None,
        }
