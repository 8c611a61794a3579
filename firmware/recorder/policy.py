"""When to cut segments and where runs end: the recorder's sans-IO core.

Inputs are packet facts (video or not, keyframe, media time) plus the two clocks the adapter read
(monotonic and wall, microseconds); outputs are actions for the adapter to carry out in order.
Two clocks per run: media time from the camera, wall time anchored at the run's first keyframe.
A camera timestamp jump or a wall-clock step ends the run with a reason and starts a new one, so
no segment ever claims more time than it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PacketInfo:
    video: bool
    keyframe: bool
    pts_us: int


@dataclass(frozen=True)
class Clocks:
    mono_us: int
    wall_us: int


@dataclass(frozen=True)
class StartSegment:
    start_us: int
    """Wall-clock start of the segment."""
    media_start_us: int
    new_run: bool


@dataclass(frozen=True)
class Write:
    pass


@dataclass(frozen=True)
class Drop:
    reason: str


@dataclass(frozen=True)
class FinishSegment:
    end_us: int
    media_end_us: int


@dataclass(frozen=True)
class EndRun:
    reason: str


Action = StartSegment | Write | Drop | FinishSegment | EndRun

WRITE = Write()

# Reasons a run ends; they appear in the catalog, the API and `nvr catalog`.
TIMESTAMP_JUMP = "timestamp-jump"
CLOCK_STEP = "clock-step"


@dataclass
class _Run:
    anchor_pts_us: int
    anchor_mono_us: int
    anchor_wall_us: int
    clock_offset_us: int
    """Wall minus monotonic clock when the run started: a change means the clock stepped.
    Kept apart from the anchor, which a takeover sets from the peer's timeline."""

    def wall(self, pts_us: int) -> int:
        """Wall time of a media time, to the millisecond: the catalog's and the API's unit."""
        return _ms(self.anchor_wall_us + (pts_us - self.anchor_pts_us))


RunClock = _Run
"""A run's mapping from media time to wall time (read by the adapter, never changed)."""


def _ms(us: int) -> int:
    return round(us, -3)


@dataclass
class SegmentPolicy:
    segment_us: int
    max_drift_us: int = 5_000_000
    clock_step_us: int = 1_000_000
    default_frame_us: int = 40_000
    run: _Run | None = None
    seg_media_start_us: int | None = None
    last_video_pts_us: int | None = None
    last_video_mono_us: int | None = None
    frame_us_estimate: float = field(default=0.0)
    clock_step_pending: bool = False
    continue_wall_us: int | None = None
    """Set by continue_at: the wall time the next run starts at."""

    def continue_at(self, wall_us: int) -> None:
        """The next run continues another recording of the same frames (the peer's, on a
        takeover): start it on that recording's wall-clock timeline instead of our arrival
        time, so the pair's timeline has neither a gap nor an overlap."""
        self.continue_wall_us = wall_us

    @property
    def recording(self) -> bool:
        return self.seg_media_start_us is not None

    def deadline_us(self, stall_us: int) -> int | None:
        """Monotonic time by which the next video packet must arrive, else the run stalled."""
        return None if self.last_video_mono_us is None else self.last_video_mono_us + stall_us

    def packet(self, p: PacketInfo, now: Clocks) -> list[Action]:
        if self.run is None:
            if not (p.video and p.keyframe):
                return [Drop("waiting for keyframe")]
            return self._start_run(p, now)
        if not p.video:
            return [WRITE] if self.recording else [Drop("waiting for keyframe")]
        actions: list[Action] = []
        reason = self._discontinuity(p, now)
        if reason == TIMESTAMP_JUMP:
            actions += self.end(reason)
            if not p.keyframe:
                return [*actions, Drop("waiting for keyframe")]
            return actions + self._start_run(p, now)
        if reason == CLOCK_STEP:
            self.clock_step_pending = True
        if p.keyframe and self.clock_step_pending:
            actions += self.end(CLOCK_STEP)
            return actions + self._start_run(p, now)
        assert self.seg_media_start_us is not None
        if (
            p.keyframe
            and p.pts_us - self.seg_media_start_us >= self.segment_us - self._half_frame()
        ):
            actions.append(FinishSegment(self.run.wall(p.pts_us), p.pts_us))
            actions.append(StartSegment(self.run.wall(p.pts_us), p.pts_us, new_run=False))
            self.seg_media_start_us = p.pts_us
        self._note_video(p, now)
        actions.append(WRITE)
        return actions

    def end(self, reason: str) -> list[Action]:
        """The run ends (disconnect, stall, stop, discontinuity): commit what we have."""
        actions: list[Action] = []
        if self.run is not None and self.last_video_pts_us is not None:
            media_end = self.last_video_pts_us + round(self._frame_us())
            actions.append(FinishSegment(self.run.wall(media_end), media_end))
            actions.append(EndRun(reason))
        self.run = None
        self.seg_media_start_us = None
        self.last_video_pts_us = None
        self.last_video_mono_us = None
        self.frame_us_estimate = 0.0
        self.clock_step_pending = False
        return actions

    def _start_run(self, p: PacketInfo, now: Clocks) -> list[Action]:
        wall = now.wall_us if self.continue_wall_us is None else self.continue_wall_us
        self.continue_wall_us = None
        self.run = _Run(p.pts_us, now.mono_us, _ms(wall), now.wall_us - now.mono_us)
        self.seg_media_start_us = p.pts_us
        self._note_video(p, now)
        return [StartSegment(self.run.anchor_wall_us, p.pts_us, new_run=True), WRITE]

    def _discontinuity(self, p: PacketInfo, now: Clocks) -> str | None:
        run = self.run
        assert run is not None and self.last_video_pts_us is not None
        media_elapsed = p.pts_us - run.anchor_pts_us
        mono_elapsed = now.mono_us - run.anchor_mono_us
        if (
            p.pts_us < self.last_video_pts_us
            or abs(media_elapsed - mono_elapsed) > self.max_drift_us
        ):
            return TIMESTAMP_JUMP
        wall_offset = now.wall_us - now.mono_us
        if abs(wall_offset - run.clock_offset_us) > self.clock_step_us:
            return CLOCK_STEP
        return None

    def _note_video(self, p: PacketInfo, now: Clocks) -> None:
        if self.last_video_pts_us is not None and p.pts_us > self.last_video_pts_us:
            step = p.pts_us - self.last_video_pts_us
            est = self.frame_us_estimate
            self.frame_us_estimate = step if est == 0 else est * 0.9 + step * 0.1
        self.last_video_pts_us = p.pts_us
        self.last_video_mono_us = now.mono_us

    def _frame_us(self) -> float:
        return self.frame_us_estimate or self.default_frame_us

    def _half_frame(self) -> int:
        return round(self._frame_us() / 2)
