"""When to cut segments and where runs end: the recorder's sans-IO core.

Inputs are packet facts (video or not, keyframe, media time) plus the two clocks the adapter read
(monotonic and wall, microseconds); outputs are actions for the adapter to carry out in order.
Two clocks per run: media time from the camera, wall time anchored at the run's first keyframe.
A camera timestamp jump or a wall-clock step ends the run with a reason and starts a new one, so
no segment ever claims more time than it holds. The frames between a camera's jump and its next
keyframe still belong to the open GOP: they are written on the run's timeline (shifted to follow
the last frame) and the run ends at that keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


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
    shift_us: int = 0
    """Added to the packet's media time before it is written: after a camera timestamp jump,
    the frames up to the next keyframe continue the run's own timeline."""


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
    jump_shift_us: int | None = None
    """Set from a camera timestamp jump on a frame that is not a keyframe until the next
    keyframe: added to the media time of every packet (video and audio) meanwhile."""
    last_audio_pts_us: int | None = None
    audio_step_us: int = 0
    """Last audio packet written (on the run's timeline) and the step before it."""

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
            return [self._audio(p)] if self.recording else [Drop("waiting for keyframe")]
        actions: list[Action] = []
        shift = 0
        reason = self._discontinuity(p, now)
        if reason == TIMESTAMP_JUMP and p.keyframe:
            actions += self.end(reason)
            return actions + self._start_run(p, now)
        if reason == TIMESTAMP_JUMP and self.jump_shift_us is not None:
            shifted = self._discontinuity(self._shifted(p, self.jump_shift_us), now)
            if shifted != TIMESTAMP_JUMP:
                shift, reason = self.jump_shift_us, shifted
        if reason == TIMESTAMP_JUMP:
            # Intact frames of the open GOP whose time jumped: they follow the last frame, and
            # the run ends at the next keyframe. A second jump before it recomputes the shift.
            assert self.last_video_pts_us is not None
            shift = self.last_video_pts_us + round(self._frame_us()) - p.pts_us
            self.jump_shift_us = shift
            reason = None
        if p.keyframe:
            # On the run's timeline: the camera's time came back (or never left) before it.
            self.jump_shift_us = None
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
        self._note_video(self._shifted(p, shift), now)
        actions.append(Write(shift) if shift else WRITE)
        return actions

    def _audio(self, p: PacketInfo) -> Write | Drop:
        """Audio after a jump takes the frames' shift. The camera's audio runs ahead of its
        video: audio that jumped before any frame did opens the window itself, shifted to
        follow the last audio packet (so does a second jump). Late audio still on the old
        clock stays unshifted."""
        last = self.last_audio_pts_us
        if last is None:
            return self._audio_write(p, 0)
        for shift in (0, self.jump_shift_us):
            if shift is not None and self._audio_follows(p.pts_us + shift, last):
                return self._audio_write(p, shift)
        if self.audio_step_us <= 0:
            return Drop("audio off the run's timeline")
        shift = last + self.audio_step_us - p.pts_us
        self.jump_shift_us = shift
        return self._audio_write(p, shift)

    def _audio_follows(self, pts_us: int, last_us: int) -> bool:
        """Not before the last audio (a frame's leeway: several audio streams interleave), and
        either close after it or close to the video (audio resuming after a silent gap)."""
        video = self.last_video_pts_us
        assert video is not None
        return pts_us > last_us - round(self._frame_us()) and (
            pts_us <= last_us + self.max_drift_us or abs(pts_us - video) <= self.max_drift_us
        )

    def _audio_write(self, p: PacketInfo, shift: int) -> Write:
        pts = p.pts_us + shift
        if self.last_audio_pts_us is not None and pts > self.last_audio_pts_us:
            self.audio_step_us = pts - self.last_audio_pts_us
        self.last_audio_pts_us = pts
        return Write(shift) if shift else WRITE

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
        self.jump_shift_us = None
        self.last_audio_pts_us = None
        self.audio_step_us = 0
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

    @staticmethod
    def _shifted(p: PacketInfo, shift_us: int) -> PacketInfo:
        return replace(p, pts_us=p.pts_us + shift_us) if shift_us else p

    def _frame_us(self) -> float:
        return self.frame_us_estimate or self.default_frame_us

    def _half_frame(self) -> int:
        return round(self._frame_us() / 2)
