"""The drill measures, computed from what the observer saw: pure functions, no I/O.

Recovery times are measured as a client and an operator see them: a sample is "good" when
the thing worked at that moment (the VIP answered; the active board recorded the camera).
The recovery time of a fault is from the fault to the first good sample after the last bad
one that came after the fault: 0.0 when nothing ever went bad, None when it never came back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hil.drills.model import AlertSeen, RoleChange, VipSample
from hil.framecheck import check_contiguous


@dataclass(frozen=True)
class BoardSample:
    """One answer (or none) of a board's status, as the observer polled it."""

    at: float
    board: str
    answered: bool
    role: str | None = None
    recording: frozenset[str] = frozenset()
    mirror_lag_seconds: float | None = None
    version: str | None = None


def recovery_seconds(samples: Iterable[tuple[float, bool]], fault_at: float) -> float | None:
    after = sorted((t, ok) for t, ok in samples if t >= fault_at)
    last_bad = max((i for i, (_, ok) in enumerate(after) if not ok), default=None)
    if last_bad is None:
        return 0.0 if after else None
    if last_bad + 1 >= len(after):
        return None
    return after[last_bad + 1][0] - fault_at


def rto_vip(vip: Sequence[VipSample], fault_at: float, board: str) -> float | None:
    """Fault -> clients reach `board` (the one active at the end) on the VIP for good: the
    failover is complete for them. 0.0 when it answered throughout."""
    return recovery_seconds(((s.at, s.board == board) for s in vip), fault_at)


def longest_outage(vip: Sequence[VipSample], since: float) -> float:
    """The longest time after `since` in which nothing answered on the VIP: what a client
    saw of the failover (a planned handover's switch, a power cut's detection)."""
    worst, last_ok, down = 0.0, since, False
    for s in sorted(vip, key=lambda s: s.at):
        if s.at < since:
            continue
        if s.board is None:
            down = True
        else:
            if down:
                worst = max(worst, s.at - last_ok)
            last_ok, down = s.at, False
    return worst


def rto_recording(
    samples: Sequence[BoardSample], cameras: Sequence[str], board: str, fault_at: float
) -> float | None:
    """Fault -> `board` (the one active at the end) is active and records every camera, worst
    camera. Samples of the other board do not count: a board cut off from its cameras may
    still say it records for a moment."""
    worst: float | None = 0.0
    mine = [s for s in samples if s.board == board]
    for cam in cameras:
        ok = ((s.at, s.answered and s.role == "active" and cam in s.recording) for s in mine)
        r = recovery_seconds(ok, fault_at)
        if r is None:
            return None
        worst = max(worst or 0.0, r)
    return worst


def mirror_lag_at(samples: Sequence[BoardSample], at: float) -> float | None:
    """The standby's own mirror lag in its last answer before `at`."""
    before = [s for s in samples if s.at <= at and s.answered and s.role == "standby"]
    return before[-1].mirror_lag_seconds if before else None


def role_changes(samples: Sequence[BoardSample]) -> list[RoleChange]:
    """Every change of a board's role as polled (an unanswered poll is role "down")."""
    out: list[RoleChange] = []
    last: dict[str, str] = {}
    for s in sorted(samples, key=lambda s: s.at):
        role = (s.role or "unknown") if s.answered else "down"
        if last.get(s.board) != role:
            out.append(RoleChange(s.board, s.at, role))
            last[s.board] = role
    return out


def alerts_seen(
    audit: dict[str, list[dict]], start: float, end: float, parse_time
) -> list[AlertSeen]:
    """Alerts raised or cleared within [start, end] from the boards' audit logs; parse_time
    turns the log's ISO time into Unix seconds."""
    out: list[AlertSeen] = []
    for board, records in audit.items():
        open_: dict[str, AlertSeen] = {}
        for r in records:
            event = r.get("event")
            if event not in ("alert-raised", "alert-cleared"):
                continue
            at = parse_time(r["time"])
            if event == "alert-raised":
                if at >= start and r["id"] not in open_:
                    open_[r["id"]] = AlertSeen(board, r["id"], r.get("severity", ""), at, None)
            elif r["id"] in open_ and at >= start:
                a = open_.pop(r["id"])
                out.append(AlertSeen(a.board, a.alert, a.severity, a.raised_at, min(at, end)))
        out += [a for a in open_.values() if a.raised_at <= end]
    return sorted(out, key=lambda a: a.raised_at)


@dataclass(frozen=True)
class FrameCount:
    checked: int
    lost: int
    duplicated: int
    gaps: tuple[tuple[int, int], ...] = ()
    """Inclusive ranges of frames sent and not kept."""


def count_frames(
    numbers: Sequence[int], first: int, last: int, not_sent: Sequence[tuple[int, int]] = ()
) -> FrameCount:
    """Frames first..last the camera sent (minus the inclusive ranges it did not send, e.g.
    while it rebooted): how many no board kept and how many were kept more than once."""

    def sent(n: int) -> bool:
        return first <= n <= last and not any(lo <= n <= hi for lo, hi in not_sent)

    kept = [n for n in numbers if sent(n)]
    report = check_contiguous(kept, first, last)
    gaps: list[tuple[int, int]] = []
    for lo, hi in report.gaps:  # split each gap around what the camera did not send
        n = lo
        while n <= hi:
            if not sent(n):
                n += 1
                continue
            end = n
            while end + 1 <= hi and sent(end + 1):
                end += 1
            gaps.append((n, end))
            n = end + 1
    expected = sum(1 for n in range(first, last + 1) if sent(n))
    lost = sum(hi - lo + 1 for lo, hi in gaps)
    return FrameCount(expected, lost, report.duplicates, tuple(gaps))
