"""`nvr drill handover`, its decisions: the non-destructive drill on a live pair (planned
handover and back, measured RTO and continuity). No sockets and no clock here: the adapter
(firmware/drillcli.py) asks the boards and reads the clock, and hands what it got to these
functions, which say whether the pair is fit, what to wait for next and what the result is.

Measures, precisely:

- `rto_vip_seconds`: from just before the handover request is sent to the first answer on the
  floating IP (GET /api/v1/status on the VIP) that names the other board.
- `rto_recording_seconds`: from the same moment to when the new active board's recordings API
  first lists, for a camera, a segment whose origin is the new active board and that was not
  in its catalog before the request (so: footage the board recorded since it took over, whole
  and committed); the worst camera counts. Only the drill's own monotonic clock is read, so
  the figures hold whatever the boards' clocks say. A segment is listed once it is committed,
  so the figure includes up to a segment's length and the polling interval.
- Continuity, per camera: the union of both boards' segments (the mirror copies a segment under
  the same id, so it counts once) over the drill's window. The window is wall-clock time: from
  the first request (the clock of the board the drill runs on) to the end of the final active
  board's first segment after the hand-back (its clock; footage after that is still in an open
  segment). A hole is a stretch of the window no segment covers, longer than HOLE_TOLERANCE_US
  (the catalog's own notion: a run's end is a gap unless another run covers it within
  COVER_SLACK_US). The gaps the catalogs report ("gaps" of the recordings API) inside the
  window are listed with the result; one that no segment of either board covers is among the
  holes already. Overlap is footage recorded twice (the old active board's last segment and
  the new one's first, typically).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from firmware.catalog import COVER_SLACK_US
from firmware.roles import Role
from firmware.timefmt import iso, parse_iso

API_RESOLUTION_US = 1000
"""The API gives times in milliseconds."""
HOLE_TOLERANCE_US = COVER_SLACK_US + API_RESOLUTION_US
"""A shorter uncovered stretch is rounding, not a hole: the catalog's own slack for a run that
takes over, plus the API's resolution."""


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"


class LegStep(StrEnum):
    """What a handover leg waits for next."""

    WATCH_VIP = "watch-vip"
    WATCH_RECORDINGS = "watch-recordings"
    DONE = "done"
    FAILED = "failed"
    """Refused, unreadable, or the deadline passed: the result says which."""


# --- what the boards said -------------------------------------------------------------------


@dataclass(frozen=True)
class BoardView:
    """One board's status, the fields the drill needs."""

    name: str
    role: Role
    peer: str | None
    peer_role: Role | None
    mirror_synced: bool | None
    """None: no mirror block."""
    cameras: tuple[str, ...]
    not_recording: tuple[str, ...]
    not_holding: tuple[str, ...] = ()
    """Cameras a standby does not hold in its ring: it could not take them over seamlessly."""
    ring_seconds: Mapping[str, float | None] = field(default_factory=dict)
    """Per camera, how much its ring holds (GET /api/v1/cameras; empty: not asked)."""

    @classmethod
    def from_status(cls, st: Mapping) -> BoardView:
        """From GET /api/v1/status (ValueError/KeyError/TypeError for something else)."""
        peer = st.get("peer") or {}
        mirror = st.get("mirror")
        cams = st.get("cameras") or []
        return cls(
            name=str(st["board"]),
            role=Role(st["role"]),
            peer=peer.get("board"),
            peer_role=Role(peer["role"]) if peer.get("role") else None,
            mirror_synced=None if mirror is None else bool(mirror.get("synced")),
            cameras=tuple(str(c["name"]) for c in cams),
            not_recording=tuple(str(c["name"]) for c in cams if not c.get("recording")),
            not_holding=tuple(str(c["name"]) for c in cams if not c.get("holding")),
        )


@dataclass(frozen=True)
class NoAnswer:
    """A board that did not answer (or answered nonsense)."""

    where: str
    error: str


@dataclass(frozen=True)
class Fitness:
    """Whether the pair can take the drill now; `reasons` say why not."""

    reasons: tuple[str, ...]
    active: str | None = None
    standby: str | None = None
    cameras: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.reasons

    def line(self) -> str:
        if self.ok:
            return (
                f"fit: {self.active} active, {self.standby} standby (mirror in sync, cameras "
                f"held), {len(self.cameras)} camera(s) recording"
            )
        return "not fit for the drill: " + "; ".join(self.reasons)


def ring_needed(segment_seconds: float, ring_span_seconds: float) -> float:
    """How much a standby's ring must hold to take over without a gap: the old active board's
    open segment and the whole one before it (a takeover continues after the newest segment
    whose last frame is in the ring and is followed by a keyframe), a second for the GOP; at
    most what the ring is made to hold."""
    return min(2 * segment_seconds + 1.0, ring_span_seconds)


def check_fit(boards: Sequence[BoardView | NoAnswer], ring_seconds: float = 0.0) -> Fitness:
    """Both boards answer, one active and one standby that know each other, the standby's
    mirror in sync and every camera held in its ring (at least `ring_seconds` of it, right
    after a handover the new standby's ring is still filling), every camera recording on the
    active board."""
    reasons = [f"{b.where} does not answer: {b.error}" for b in boards if isinstance(b, NoAnswer)]
    views = [b for b in boards if isinstance(b, BoardView)]
    if reasons:
        return Fitness(tuple(reasons))
    if len(views) != 2 or views[0].name == views[1].name:
        return Fitness((f"expected two boards, got {', '.join(v.name for v in views)}",))
    active = [v for v in views if v.role is Role.ACTIVE]
    standby = [v for v in views if v.role is Role.STANDBY]
    if len(active) != 1 or len(standby) != 1:
        roles = ", ".join(f"{v.name} {v.role.value}" for v in views)
        return Fitness((f"need one active and one standby board, found {roles}",))
    act, sby = active[0], standby[0]
    if act.peer != sby.name or sby.peer != act.name:
        reasons.append(f"the boards do not hear each other ({act.name} hears {act.peer}, "
                       f"{sby.name} hears {sby.peer})")  # fmt: skip
    if not sby.mirror_synced:
        reasons.append(f"the standby {sby.name}'s mirror is not in sync")
    if not act.cameras:
        reasons.append(f"the active {act.name} has no cameras")
    if sby.not_holding:
        reasons.append(f"not held in {sby.name}'s ring yet: {', '.join(sby.not_holding)}")
    short = [f"{c} {sby.ring_seconds.get(c) or 0:.1f} s" for c in act.cameras
             if (sby.ring_seconds.get(c) or 0) < ring_seconds]  # fmt: skip
    if ring_seconds and short and not sby.not_holding:
        reasons.append(f"{sby.name}'s ring is still filling ({', '.join(short)}; "
                       f"{ring_seconds:g} s needed to take over without a gap)")  # fmt: skip
    if act.not_recording:
        reasons.append(f"not recording on {act.name}: {', '.join(act.not_recording)}")
    return Fitness(tuple(reasons), act.name, sby.name, act.cameras)


@dataclass(frozen=True)
class SegmentRec:
    id: str
    camera: str
    origin: str
    start_us: int
    end_us: int

    @classmethod
    def from_json(cls, s: Mapping) -> SegmentRec:
        return cls(str(s["id"]), str(s["camera"]), str(s["origin"]), parse_iso(s["start"]),
                   parse_iso(s["end"]))  # fmt: skip


@dataclass(frozen=True)
class GapRec:
    camera: str
    start_us: int
    end_us: int | None
    """None: open (not recorded since)."""
    reason: str
    board: str
    """The board whose catalog reports it."""

    @classmethod
    def from_json(cls, g: Mapping, board: str) -> GapRec:
        end = g.get("end")
        return cls(str(g["camera"]), parse_iso(g["start"]), parse_iso(end) if end else None,
                   str(g.get("reason", "")), board)  # fmt: skip


def parse_recordings(answer: Mapping, board: str) -> tuple[list[SegmentRec], list[GapRec]]:
    """GET /api/v1/cameras/{name}/recordings, typed."""
    segs = [SegmentRec.from_json(s) for s in answer.get("segments") or []]
    gaps = [GapRec.from_json(g, board) for g in answer.get("gaps") or []]
    return segs, gaps


# --- one handover leg -----------------------------------------------------------------------


@dataclass(frozen=True)
class LegResult:
    source: str
    target: str
    completed: bool
    rto_vip_seconds: float | None
    rto_recording_seconds: float | None
    """The worst camera's."""
    recording_seconds: Mapping[str, float | None]
    """Per camera."""
    first_segments: Mapping[str, SegmentRec]
    """Per camera, the new active board's first segment after the handover."""
    error: str | None = None

    def line(self) -> str:
        verdict = Verdict.PASS if self.completed else Verdict.FAIL
        head = f"{verdict}  handover {self.source} -> {self.target}"
        vip = "-" if self.rto_vip_seconds is None else f"{self.rto_vip_seconds:.3f} s"
        rec = "-" if self.rto_recording_seconds is None else f"{self.rto_recording_seconds:.3f} s"
        text = f"{head}: VIP answered by {self.target} after {vip}, recording after {rec}"
        return text + (f" ({self.error})" if self.error else "")

    def to_json(self) -> dict:
        return {
            "from": self.source,
            "to": self.target,
            "completed": self.completed,
            "rto_vip_seconds": self.rto_vip_seconds,
            "rto_recording_seconds": self.rto_recording_seconds,
            "recording_seconds": dict(self.recording_seconds),
            "first_segments": {c: s.id for c, s in self.first_segments.items()},
            "error": self.error,
        }


@dataclass
class LegWatch:
    """One planned handover, source to target, from the request on: fed the VIP's answers and
    the target's recordings with the times they came, it says what to wait for next."""

    source: str
    target: str
    cameras: tuple[str, ...]
    known: frozenset[str]
    """Ids of the target's own segments before the request: they are not new footage."""
    requested_at: float
    deadline: float
    vip_at: float | None = None
    recording_at: dict[str, float] = field(default_factory=dict)
    first: dict[str, SegmentRec] = field(default_factory=dict)
    error: str | None = None

    def stop(self, error: str) -> None:
        """The leg cannot go on (the request was refused, the target's recordings could not
        be read before it): nothing to wait for."""
        self.error = error

    def vip_answer(self, board: str, at: float) -> None:
        if self.vip_at is None and board == self.target:
            self.vip_at = at

    def recordings(self, camera: str, segments: Iterable[SegmentRec], at: float) -> None:
        if camera in self.first:
            return
        new = [s for s in segments if s.origin == self.target and s.id not in self.known
               and s.camera == camera]  # fmt: skip
        if new:
            self.first[camera] = min(new, key=lambda s: s.start_us)
            self.recording_at[camera] = at

    def pending_cameras(self) -> list[str]:
        return [c for c in self.cameras if c not in self.first]

    def step(self, now: float) -> LegStep:
        if self.error is not None:
            return LegStep.FAILED
        if self.vip_at is not None and not self.pending_cameras():
            return LegStep.DONE
        if now >= self.deadline:
            return LegStep.FAILED
        return LegStep.WATCH_VIP if self.vip_at is None else LegStep.WATCH_RECORDINGS

    def result(self) -> LegResult:
        done = self.error is None and self.vip_at is not None and not self.pending_cameras()
        per = {c: (self.recording_at[c] - self.requested_at if c in self.recording_at else None)
               for c in self.cameras}  # fmt: skip
        known = [v for v in per.values() if v is not None]
        worst = max(known) if known and len(known) == len(per) else None
        error = self.error
        if error is None and not done:
            missing = []
            if self.vip_at is None:
                missing.append(f"the VIP never answered from {self.target}")
            if self.pending_cameras():
                missing.append(f"no new segment from {self.target} of "
                               f"{', '.join(self.pending_cameras())}")  # fmt: skip
            error = "timed out: " + "; ".join(missing)
        return LegResult(
            self.source, self.target, done,
            None if self.vip_at is None else round(self.vip_at - self.requested_at, 3),
            None if worst is None else round(worst, 3),
            {c: None if v is None else round(v, 3) for c, v in per.items()},
            dict(self.first), error,
        )  # fmt: skip


# --- continuity -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hole:
    start_us: int
    end_us: int

    @property
    def seconds(self) -> float:
        return (self.end_us - self.start_us) / 1e6


@dataclass(frozen=True)
class CameraContinuity:
    camera: str
    window: tuple[int, int]
    holes: tuple[Hole, ...]
    largest_hole_seconds: float
    largest_overlap_seconds: float
    segments: int
    catalog_gaps: tuple[GapRec, ...]
    """Gaps the catalogs report inside the window: a board's catalog may not know the peer's
    newest run yet, so where either board's footage covers one it is no hole; where none does,
    the union's holes have it already."""

    @property
    def ok(self) -> bool:
        return not self.holes

    def line(self) -> str:
        verdict = Verdict.PASS if self.ok else Verdict.FAIL
        seconds = (self.window[1] - self.window[0]) / 1e6
        text = (
            f"{verdict}  continuity {self.camera}: largest hole {self.largest_hole_seconds:.3f} s"
            f", overlap {self.largest_overlap_seconds:.3f} s ({self.segments} segments, "
            f"{seconds:.1f} s)"
        )
        if self.holes:
            text += f"; {len(self.holes)} hole(s), first at {iso(self.holes[0].start_us)}"
        return text

    def to_json(self) -> dict:
        return {
            "camera": self.camera,
            "ok": self.ok,
            "window": [iso(self.window[0]), iso(self.window[1])],
            "segments": self.segments,
            "largest_hole_seconds": self.largest_hole_seconds,
            "largest_overlap_seconds": self.largest_overlap_seconds,
            "holes": [[iso(h.start_us), iso(h.end_us)] for h in self.holes],
            "catalog_gaps": [
                {"board": g.board, "start": iso(g.start_us), "end": iso(g.end_us),
                 "reason": g.reason}
                for g in self.catalog_gaps
            ],
        }  # fmt: skip


def _uncovered(spans: list[tuple[int, int]], start: int, end: int) -> list[Hole]:
    """The stretches of [start, end) that no span covers (spans sorted by start)."""
    out = []
    at = start
    for s, e in spans:
        if s > at:
            out.append(Hole(at, min(s, end)))
        at = max(at, e)
        if at >= end:
            break
    if at < end:
        out.append(Hole(at, end))
    return [h for h in out if h.end_us > h.start_us]


def continuity(
    camera: str,
    segments: Iterable[SegmentRec],
    gaps: Iterable[GapRec],
    window: tuple[int, int],
) -> CameraContinuity:
    """Holes and overlaps of one camera over the window, from both boards' answers."""
    start, end = window
    unique = {s.id: s for s in segments if s.camera == camera}
    inside = sorted(
        (s for s in unique.values() if s.end_us > start and s.start_us < end),
        key=lambda s: (s.start_us, s.end_us),
    )
    spans = [(s.start_us, s.end_us) for s in inside]
    holes = [h for h in _uncovered(spans, start, end) if h.end_us - h.start_us > HOLE_TOLERANCE_US]
    overlap = 0
    covered_to: int | None = None
    for s, e in spans:
        if covered_to is not None and s < covered_to:
            overlap = max(overlap, min(covered_to, e) - max(s, start))
        covered_to = e if covered_to is None else max(covered_to, e)
    reported = tuple(
        g for g in gaps
        if g.camera == camera and g.start_us < end and (g.end_us is None or g.end_us > start)
    )  # fmt: skip
    largest = max((h.end_us - h.start_us for h in _uncovered(spans, start, end)), default=0)
    return CameraContinuity(camera, window, tuple(holes), round(largest / 1e6, 3),
                            round(max(overlap, 0) / 1e6, 3), len(inside), reported)  # fmt: skip


def drill_window(start_us: int, final_leg: LegResult) -> tuple[int, int] | None:
    """From the first request (wall clock) to the end of the earliest of the final active
    board's first segments after the hand-back; None if the hand-back never recorded."""
    if not final_leg.first_segments or not final_leg.completed:
        return None
    end = min(s.end_us for s in final_leg.first_segments.values())
    return (start_us, max(end, start_us))


# --- the result -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillResult:
    fitness: Fitness
    legs: tuple[LegResult, ...] = ()
    continuity: tuple[CameraContinuity, ...] = ()
    error: str | None = None
    """Why the drill stopped short (after the fitness check)."""

    @property
    def refused(self) -> bool:
        return not self.fitness.ok

    @property
    def ok(self) -> bool:
        return (
            self.fitness.ok
            and self.error is None
            and len(self.legs) == 2
            and all(leg.completed for leg in self.legs)
            and bool(self.continuity)
            and all(c.ok for c in self.continuity)
        )

    @property
    def verdict(self) -> Verdict:
        return Verdict.PASS if self.ok else Verdict.FAIL

    def lines(self) -> list[str]:
        """One line per measure, PASS/FAIL first."""
        if self.refused:
            return [f"{Verdict.FAIL}  {self.fitness.line()}", "drill handover: refused"]
        out = [f"{Verdict.PASS}  {self.fitness.line()}"]
        out += [leg.line() for leg in self.legs]
        out += [c.line() for c in self.continuity]
        if self.error:
            out.append(f"{Verdict.FAIL}  {self.error}")
        out.append(f"drill handover: {self.verdict}")
        return out

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "verdict": self.verdict.value,
            "refused": self.refused,
            "reasons": list(self.fitness.reasons),
            "active": self.fitness.active,
            "standby": self.fitness.standby,
            "cameras": list(self.fitness.cameras),
            "legs": [leg.to_json() for leg in self.legs],
            "continuity": [c.to_json() for c in self.continuity],
            "error": self.error,
        }

    def audit_fields(self) -> dict:
        """The audit record: names, figures and verdicts (no token, no URL credentials)."""
        return {
            "outcome": "refused" if self.refused else self.verdict.value.lower(),
            "reasons": list(self.fitness.reasons),
            "active": self.fitness.active,
            "standby": self.fitness.standby,
            "legs": [
                {"from": leg.source, "to": leg.target, "completed": leg.completed,
                 "rto_vip_seconds": leg.rto_vip_seconds,
                 "rto_recording_seconds": leg.rto_recording_seconds}
                for leg in self.legs
            ],
            "continuity": {c.camera: {"ok": c.ok, "largest_hole_seconds": c.largest_hole_seconds,
                                      "largest_overlap_seconds": c.largest_overlap_seconds}
                           for c in self.continuity},
            "error": self.error,
        }  # fmt: skip
