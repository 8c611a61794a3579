"""What a recorder worker tells the supervisor: one frozen dataclass per kind of event.

Events cross the worker's pipe as they are (they pickle) and the supervisor dispatches them by
type, so a field misnamed on one side fails where it is built, not as a missing key read later.
Alerts travel as the board's own RaiseAlert and ClearAlert.

Also the words both sides use about a camera and a write without PyAV (`redact`, `no_space`):
the supervisor runs in the board's main process, which never loads PyAV.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urlsplit, urlunsplit

from firmware.core.actions import ClearAlert, RaiseAlert


@dataclass(frozen=True, slots=True)
class CameraProgress:
    """Once a second per camera: its newest frame and what its thread is doing. Sent as a
    sample rather than per frame, which would flood the pipe."""

    camera: str
    last_frame_wall_us: int | None
    """Wall time the newest recorded frame stands for."""
    last_frame_seen_us: int | None
    """Wall time it arrived: the difference is the ingest lag."""
    recording: bool
    holding: bool
    """A hot standby: the session is up and the last seconds are held in memory."""
    ring_seconds: float


@dataclass(frozen=True, slots=True)
class Progress:
    """Once a second per worker: each of its cameras' progress in one message, so that the
    supervisor's thread wakes once per worker, not once per camera."""

    cameras: tuple[CameraProgress, ...]


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """A camera session came up (recording unless the board is a standby) or ended (error says
    why, None when the recorder stopped it)."""

    camera: str
    recording: bool
    error: str | None
    codec: str | None = None
    """Known once a session is up; None leaves the last one shown."""
    up: bool = False
    """The session is up (it came up), or ended: said at once, where the standby's holding
    shows only with the next progress report."""


@dataclass(frozen=True, slots=True)
class SegmentCommitted:
    """A segment file is durably in place and in the catalog: the mirror's cue."""

    camera: str
    id: str
    bytes: int
    frames: int


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A run was closed in the catalog: a gap begins, and `reason` says why."""

    camera: str
    reason: str


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """A session ended and the camera is tried again after the back-off."""

    camera: str
    reason: str
    """The run-end reason of the session that ended."""


@dataclass(frozen=True, slots=True)
class RetentionDeleted:
    """Retention deleted segments, for age or free space (not tied to one camera)."""

    reason: str
    """retention.AGE or retention.FREE_SPACE."""
    segments: int
    bytes: int


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """The worker stopped its cameras and is about to exit (its last event)."""

    cameras: tuple[str, ...]


CameraEvent: TypeAlias = (
    CameraProgress | SessionChanged | SegmentCommitted | RunEnded | Reconnecting
)
"""Events about one camera; the supervisor drops those of a camera it does not record."""

WorkerEvent: TypeAlias = (
    CameraEvent | Progress | RetentionDeleted | RaiseAlert | ClearAlert | WorkerExited
)

Report: TypeAlias = Callable[[WorkerEvent], None]
"""How a camera's thread (and the worker's retention) hands an event to the supervisor."""


def redact(url: str) -> str:
    """Camera URLs carry credentials; logs and the API must not."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def no_space(e: Exception) -> bool:
    """A write failed for lack of space: ENOSPC, or SQLite's full database, or its shared
    memory file that could not grow (how a full disk shows when the catalog is opened)."""
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)
        return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_SHMSIZE)
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
