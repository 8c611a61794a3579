"""Running one drill on a labgrid target: bring the pair to a known state, watch it, make
the fault, wait for the expected outcome, heal, settle, then measure and judge.

The drill's own steps (hil.drills.catalogue) only make faults and state what must happen;
everything measured is measured here, the same way for every drill and every target.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labgrid.exceptions import NoDriverFoundError

from hil.drills import footage
from hil.drills.measure import (
    BoardSample,
    alerts_seen,
    count_frames,
    longest_outage,
    mirror_lag_at,
    role_changes,
    rto_recording,
    rto_vip,
)
from hil.drills.model import DrillReport, FrameGap, FrameMethod, Outcome, Thresholds
from hil.drills.thresholds import for_drill
from hil.lab.protocols import BoardProtocol, CameraProtocol, ClientProtocol
from hil.lab.strategy import BoardView, PairView
from hil.wait import WaitTimeout, holds, wait_until

BOARDS = ("a", "b")
CLOCK_SLACK_S = 120.0
"""How far a board's clock may be off the rig's when its recordings are listed by time."""
BASELINE_S = 2.0
"""Observed and counted before the fault and after the pair is whole again."""
SETTLE_S = 90.0
"""How long a healed pair may take to be whole again (both up, standby synced)."""


class NotPossible(Exception):
    """The target has no way to make this fault (no driver for it)."""


class DrillFailed(AssertionError):
    """The pair did not do what the drill expects."""


@dataclass
class Ctx:
    """What a drill's steps may use: the target's drivers and the observer's view."""

    target: Any
    observe: Any
    boards: dict[str, BoardProtocol]
    client: ClientProtocol
    camera: CameraProtocol
    cameras: list[str]
    away: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Per camera, (its frame clock when it went away, its frame clock when it was back):
    a camera streams only to a session, so what it made until the boards' sessions were
    up again (the first frame any board kept after it came back) was never sent."""
    notes: list[str] = field(default_factory=list)

    def driver(self, protocol: type, board: str | None = None):
        """The driver for a fault; NotPossible when this target has none."""
        try:
            if board is None:
                return self.target.get_driver(protocol)
            return self.target.get_driver(protocol, name=board)
        except NoDriverFoundError:
            where = f" for board {board}" if board else ""
            raise NotPossible(
                f"this target has no {protocol.__name__} driver{where}, so the fault cannot "
                "be made here"
            ) from None

    def sample(self, board: str) -> BoardSample | None:
        return self.observe.latest(board)

    def is_active(self, board: str) -> bool:
        s = self.sample(board)
        return bool(s and s.answered and s.role == "active")

    def vip_on(self, board: str) -> bool:
        seen = self.observe.vip_since(time.time() - 0.5)
        return bool(seen) and seen[-1].board == board

    def wait(self, cond: Callable[[], object], timeout: float, what: str) -> None:
        try:
            wait_until(cond, timeout, what, every=0.05)
        except WaitTimeout as e:
            raise DrillFailed(str(e)) from None

    def takes_over(self, board: str, timeout: float = 20.0) -> None:
        """`board` becomes active and the client reaches it on the VIP."""
        self.wait(lambda: self.is_active(board) and self.vip_on(board), timeout,
                  f"{board} active and answering on the VIP")  # fmt: skip

    def stays(self, board: str, seconds: float) -> None:
        """Nothing moves: `board` stays active and alone on the VIP for `seconds`."""
        since = time.time()
        try:
            holds(lambda: self.is_active(board), seconds, f"{board} staying active", every=0.1)
        except AssertionError as e:
            raise DrillFailed(str(e)) from None
        others = {s.board for s in self.observe.vip_since(since)} - {board, None}
        if others:
            raise DrillFailed(f"the VIP answered from {sorted(others)} while {board} held it")

    def api_post(self, board: str, path: str) -> None:
        self.boards[board].api(path, method="POST", timeout=10.0)


@dataclass(frozen=True)
class Drill:
    name: str
    fault: str
    expected: str
    apply: Callable[[Ctx], None]
    outcome: Callable[[Ctx], None]
    heal: Callable[[Ctx], None] = lambda ctx: None
    setup: Callable[[Ctx], None] | None = None
    """Steps before the measured part (e.g. the failover a failback starts from)."""
    first_start: bool = False
    """Start from both boards' first start (a up first), not from a takeover: a board that
    took the pair over from a live peer holds the camera and battery rules for its minimum
    dwell ([pair] takeover_dwell_seconds, docs/FAILOVER.md), which a drill of those rules
    must not start in."""
    needs: tuple[tuple[type, str | None], ...] = ()
    """The drivers the fault takes, (protocol, board or None): looked up before the pair is
    touched, so a target without one reports the drill as not possible at once."""


def pair_view(boards: dict[str, BoardProtocol]) -> PairView | None:
    """Both boards' status as the pair strategy reads it; None when one does not answer."""
    try:
        return PairView(*(BoardView.from_status(json.loads(boards[b].api(
            "/api/v1/status", timeout=2.0))) for b in BOARDS))  # fmt: skip
    except (OSError, ValueError, KeyError):
        return None


def whole(boards: dict[str, BoardProtocol]) -> str | None:
    """The active board when the pair is whole: one active recording every camera, one
    standby holding them with its mirror synced (the strategy's `paired`)."""
    view = pair_view(boards)
    return view.active if view is not None and view.paired else None


def pair_whole(ctx: Ctx) -> str | None:
    return whole(ctx.boards)


def run_drill(
    target: Any,
    drill: Drill,
    env: str,
    thresholds: dict[str, Thresholds],
    judge: Callable[[DrillReport, dict[str, Thresholds]], list[str]],
    to_a_active: Callable[[bool], None],
) -> DrillReport:
    """One drill, start to end; never raises for what the pair does (that is the report),
    only when the rig itself cannot be used."""
    from hil.drills.observe import Observer

    report = DrillReport(drill=drill.name, env=env, fault=drill.fault, expected=drill.expected,
                         outcome=Outcome.ERROR, started_at=time.time(), ended_at=0.0)  # fmt: skip
    report.thresholds = for_drill(thresholds, drill.name)
    boards = {b: target.get_driver(BoardProtocol, name=b) for b in BOARDS}
    client = target.get_driver(ClientProtocol)
    camera = target.get_driver(CameraProtocol)
    ctx = Ctx(target, None, boards, client, camera, camera.cameras())
    verdict: Outcome | None = None
    try:
        for protocol, board in drill.needs:
            ctx.driver(protocol, board)
        to_a_active(drill.first_start)
        ctx.observe = Observer(boards, client).start()
        try:
            _measured(ctx, drill, report)
        finally:
            ctx.observe.stop()
    except NotPossible as e:
        verdict = Outcome.NOT_POSSIBLE
        report.failures = [str(e)]
    except DrillFailed as e:
        verdict = Outcome.FAILED
        report.failures.insert(0, str(e))
    except Exception as e:  # the rig broke: say where, measure nothing more
        verdict = Outcome.ERROR
        last = traceback.extract_tb(e.__traceback__)[-1]
        report.failures.insert(0, f"{type(e).__name__}: {e} ({last.filename}:{last.lineno})")
    report.ended_at = time.time()
    if ctx.observe is not None and verdict is not Outcome.NOT_POSSIBLE:
        _fill(ctx, report)
        report.failures += [f"observer: {e}" for e in ctx.observe.errors]
    if verdict is None and report.fault_at is not None:
        report.failures += judge(report, thresholds)
    if verdict is None:
        verdict = Outcome.FAILED if report.failures else Outcome.PASSED
    report.outcome = verdict
    return report


def _measured(ctx: Ctx, drill: Drill, report: DrillReport) -> None:
    if drill.setup is not None:
        drill.setup(ctx)
    wait_until(lambda: all(ctx.sample(b) for b in BOARDS) and ctx.observe.vip_since(0), 10,
               "the observer's first samples")  # fmt: skip
    before = wait_until(lambda: pair_whole(ctx), SETTLE_S, "the pair whole before the fault")
    report.firmware = {b: (ctx.sample(b).version if ctx.sample(b) else None) for b in BOARDS}
    first = {c: ctx.camera.frame_clock(c) for c in ctx.cameras}
    # A baseline before the fault: the frames of it are counted too, and the picture shows
    # the pair as it was.
    ctx.stays(before, BASELINE_S)
    report.fault_at = time.time()
    try:
        drill.apply(ctx)
        try:
            drill.outcome(ctx)
        except DrillFailed as e:
            report.failures.append(f"outcome: {e}")
    finally:  # also after a fault that broke the rig: the next drill needs the pair back
        report.healed_at = time.time()
        drill.heal(ctx)
    try:
        active = wait_until(lambda: pair_whole(ctx), SETTLE_S, "the pair whole again", every=0.5)
    except WaitTimeout as e:
        raise DrillFailed(f"after healing: {e}") from None
    ctx.stays(active, BASELINE_S)  # the whole pair recording on for a while, counted too
    ctx.observe.stop()  # what follows (reading the footage back) is not the pair's doing
    last = {c: ctx.camera.frame_clock(c) for c in ctx.cameras}
    _count(ctx, report, first, last, active)


def _count(
    ctx: Ctx, report: DrillReport, first: dict[str, int], last: dict[str, int], active: str
) -> None:
    """Wait until the active board committed past `last`, then count every frame from
    `first` to `last` across both boards. Judged by frame numbers, not by the segments'
    times: those are the board's clock, which need not be the rig's."""
    start = report.fault_at - CLOCK_SLACK_S  # type: ignore[operator]

    def committed() -> bool:
        for c in ctx.cameras:
            now, slack = time.time(), CLOCK_SLACK_S
            segs = footage.recordings(ctx.boards[active], c, now - slack, now + slack)
            if not segs:
                return False
            newest = max(segs, key=lambda s: s["start"])
            if footage.newest_frame(ctx.boards[active], newest) < last[c]:
                return False
        return True

    wait_until(committed, 60, f"{active} committing past the drill's last frame", every=0.5)
    lost = dup = checked = 0
    for c in ctx.cameras:
        end = time.time() + CLOCK_SLACK_S
        held = {b: footage.recordings(ctx.boards[b], c, start, end) for b in BOARDS}
        for b, segs in held.items():
            report.spans += footage.spans(b, segs)
        records = footage.union_frames(ctx.boards, held)
        numbers = [r.frame for r in records]
        not_sent = [
            (left, min((n for n in numbers if n >= back), default=last[c] + 1) - 1)
            for left, back in ctx.away.get(c, ())
        ]
        n = count_frames(numbers, first[c], last[c], not_sent)
        lost, dup, checked = lost + n.lost, dup + n.duplicated, checked + n.checked
        sent_at = {r.frame: r.sender_us / 1e6 for r in records}
        gaps = [FrameGap(c, lo, hi, sent_at.get(lo - 1)) for lo, hi in n.gaps]
        report.frame_gaps += gaps
        for g in gaps:
            when = "" if g.at is None else f", sent {g.at - report.fault_at:+.2f} s from the fault"
            report.failures.append(f"{c}: frames {g.first}..{g.last} kept by no board{when}")
    report.frames_lost, report.frames_duplicated, report.frames_checked = lost, dup, checked
    report.frame_method = FrameMethod.SIMULATOR_NUMBERS


def _fill(ctx: Ctx, report: DrillReport) -> None:
    obs = ctx.observe
    # The picture and the JSON need the changes only (polled every 20 ms, a drill's minute
    # would be thousands of equal samples); the recovery times use every sample.
    report.vip = [v for i, v in enumerate(obs.vip)
                  if i in (0, len(obs.vip) - 1) or v.board != obs.vip[i - 1].board]  # fmt: skip
    report.roles = role_changes(obs.samples)
    if report.fault_at is None:
        return
    report.vip_outage_seconds = longest_outage(obs.vip, report.fault_at)
    final = [r for r in report.roles if r.role == "active"]
    if final:
        board = final[-1].board
        report.rto_vip_seconds = rto_vip(obs.vip, report.fault_at, board)
        report.rto_recording_seconds = rto_recording(
            obs.samples, ctx.cameras, board, report.fault_at
        )
    report.mirror_lag_at_fault_seconds = mirror_lag_at(obs.samples, report.fault_at)
    audit: dict[str, list[dict]] = {}
    for b in BOARDS:
        try:
            audit[b] = ctx.boards[b].audit_log()
        except OSError as e:
            report.failures.append(f"audit log of {b} unreadable: {e}")
    report.alerts = alerts_seen(audit, report.started_at, report.ended_at, footage.seconds)
