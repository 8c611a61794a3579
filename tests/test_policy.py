"""The segment policy alone: time is a parameter, so hours of stream take milliseconds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.recorder import policy as P

SEG = 4_000_000
FRAME = 40_000  # 25 fps
GOP = 25


def feed(pol: P.SegmentPolicy, frames, start_mono=10_000_000, wall0=1_700_000_000_000_000):
    """frames: iterable of (pts_us, keyframe, mono_offset_us, wall_offset_us)."""
    out = []
    for pts, key, dmono, dwall in frames:
        now = P.Clocks(start_mono + dmono, wall0 + dmono + dwall)
        out.append(pol.packet(P.PacketInfo(True, key, pts), now))
    return out


def steady(n, gop=GOP, frame=FRAME, pts0=0):
    return [(pts0 + i * frame, i % gop == 0, i * frame, 0) for i in range(n)]


def segments_from(actions_per_packet):
    """Replay actions into (start, end, frames, new_run) tuples, as the adapter would."""
    segs, cur, ends = [], None, []
    for acts in actions_per_packet:
        for a in acts:
            if isinstance(a, P.StartSegment):
                cur = {"start": a.start_us, "frames": 0, "new_run": a.new_run}
            elif isinstance(a, P.Write) and cur is not None:
                cur["frames"] += 1
            elif isinstance(a, P.FinishSegment):
                cur["end"] = a.end_us
                segs.append(cur)
                cur = None
            elif isinstance(a, P.EndRun):
                ends.append(a.reason)
    return segs, cur, ends


def test_cuts_on_keyframes_every_segment_length():
    pol = P.SegmentPolicy(segment_us=SEG)
    acts = feed(pol, steady(25 * 10 + 1))
    segs, cur, ends = segments_from(acts)
    assert [s["frames"] for s in segs] == [100, 100]
    assert segs[0]["end"] == segs[1]["start"]  # contiguous
    assert segs[1]["end"] - segs[1]["start"] == SEG
    assert cur["frames"] == 51 and not ends
    assert segs[0]["new_run"] and not segs[1]["new_run"]


def test_waits_for_first_keyframe():
    pol = P.SegmentPolicy(segment_us=SEG)
    acts = feed(pol, [(0, False, 0, 0), (FRAME, False, FRAME, 0), (2 * FRAME, True, 2 * FRAME, 0)])
    assert acts[0] == [P.Drop("waiting for keyframe")]
    assert isinstance(acts[2][0], P.StartSegment)


def test_long_gop_never_cuts_between_keyframes():
    pol = P.SegmentPolicy(segment_us=SEG)
    acts = feed(pol, steady(500, gop=250))  # 10 s GOP
    segs, _, _ = segments_from(acts)
    assert [s["frames"] for s in segs] == [250]


def test_timestamp_jump_ends_run_and_restarts_at_next_keyframe():
    pol = P.SegmentPolicy(segment_us=SEG, max_drift_us=5_000_000)
    frames = steady(60)
    jump = 3600 * 1_000_000
    frames += [(jump + i * FRAME, i % GOP == 0, (60 + i) * FRAME, 0) for i in range(1, 60)]
    acts = feed(pol, frames)
    segs, cur, ends = segments_from(acts)
    assert ends == [P.TIMESTAMP_JUMP]
    # Nothing claims an hour: the segment before the jump holds its 60 frames and the 24
    # after the jump up to the next keyframe, on the run's own timeline.
    assert segs[0]["frames"] == 60 + 24
    assert segs[0]["end"] - segs[0]["start"] == (60 + 24) * FRAME
    assert cur["new_run"] and cur["frames"] == 59 - 24


def test_backwards_timestamps_are_a_jump_too():
    pol = P.SegmentPolicy(segment_us=SEG)
    frames = [*steady(30), (10 * FRAME, True, 30 * FRAME, 0)]
    _, cur, ends = segments_from(feed(pol, frames))
    assert ends == [P.TIMESTAMP_JUMP] and cur["new_run"]


def window_shifts(acts: list[list[P.Action]]) -> list[int | None]:
    """The Write actions of each packet, as their shifts (None: the packet was not written)."""
    return [next((a.shift_us for a in per if isinstance(a, P.Write)), None) for per in acts]


def ends_and_starts(per_packet: list[P.Action]) -> list[type]:
    return [type(a) for a in per_packet if isinstance(a, P.EndRun | P.StartSegment)]


@pytest.mark.parametrize("jump", [3600 * 1_000_000, -3600 * 1_000_000, -10 * FRAME])
def test_frames_up_to_the_next_keyframe_after_a_jump_stay_on_the_run_timeline(jump: int) -> None:
    """A jump on a frame that is not a keyframe loses no frame: the rest of the GOP is
    written shifted to follow the last frame, the next keyframe starts the new run."""
    pol = P.SegmentPolicy(segment_us=SEG)
    frames = steady(30)  # keyframes at 0 and 25: the jump comes at frame 30 of GOP 25
    frames += [(jump + i * FRAME, i % GOP == 0, i * FRAME, 0) for i in range(30, 60)]
    acts = feed(pol, frames)
    shifts = window_shifts(acts)
    assert shifts[:30] == [0] * 30
    assert shifts[30:50] == [-jump] * 20  # last pts + one frame: exactly the jump undone
    assert not any(isinstance(a, P.Drop) for per in acts for a in per)
    assert ends_and_starts(acts[50]) == [P.EndRun, P.StartSegment]
    assert [a for a in acts[50] if isinstance(a, P.EndRun)] == [P.EndRun(P.TIMESTAMP_JUMP)]
    assert shifts[50:] == [0] * 10  # the new run is on the camera's new timeline
    segs, cur, ends = segments_from(acts)
    assert ends == [P.TIMESTAMP_JUMP]
    assert segs[0]["frames"] == 50 and segs[0]["end"] - segs[0]["start"] == 50 * FRAME
    assert cur["new_run"] and cur["frames"] == 10


def test_keyframe_jump_starts_the_new_run_at_once() -> None:
    """A jump on a keyframe needs no shift: the new run starts with it, as before."""
    pol = P.SegmentPolicy(segment_us=SEG)
    jump = 3600 * 1_000_000
    frames = steady(25) + [(jump + i * FRAME, i % GOP == 0, i * FRAME, 0) for i in range(25, 30)]
    acts = feed(pol, frames)
    assert ends_and_starts(acts[25]) == [P.EndRun, P.StartSegment]
    assert window_shifts(acts) == [0] * 30
    assert pol.jump_shift_us is None


def av_stream(
    n: int, jump: int, video_from: int, audio_from: int, lead: int = 20_000, window_end: int = 50
) -> list[tuple[tuple[bool, bool, int], int]]:
    """(packet, expected shift) of a camera whose audio runs `lead` ahead of its video; the
    clock jumps at video frame `video_from` and at audio packet `audio_from`, and the frames
    and audio from there up to the keyframe `window_end` are shifted back by the jump."""
    out = []
    for i in range(n):
        for video, t, first in (
            (True, i * FRAME, video_from),
            (False, i * FRAME + lead, audio_from),
        ):
            shift = -jump if first <= i < window_end else 0
            out.append(((video, i % GOP == 0 and video, t + (jump if i >= first else 0)), shift))
    return out


def feed_av(pol: P.SegmentPolicy, packets: list[tuple[bool, bool, int]]) -> list[list[P.Action]]:
    """Actions for each (video, keyframe, pts), clocks running at one frame per video packet."""
    out, i = [], 0
    for video, key, pts in packets:
        now = P.Clocks(10_000_000 + i * FRAME, 1_700_000_000_000_000 + i * FRAME)
        out.append(pol.packet(P.PacketInfo(video, key, pts), now))
        i += video
    return out


@pytest.mark.parametrize("jump", [3600 * 1_000_000, -2_000_000], ids=["ahead", "back"])
@pytest.mark.parametrize("audio_from", [30, 31, 29], ids=["with", "after", "before"])
def test_audio_in_the_window_gets_the_same_shift(jump: int, audio_from: int) -> None:
    """The camera's clock jumped for all its streams: audio in the window follows the frames
    onto the run's timeline, whichever stream shows the jump first; audio still on the old
    clock is not shifted, and nothing is dropped."""
    pol = P.SegmentPolicy(segment_us=SEG)
    stream = av_stream(60, jump, video_from=30, audio_from=audio_from)
    acts = feed_av(pol, [pkt for pkt, _ in stream])
    assert not [a for per in acts for a in per if isinstance(a, P.Drop)]
    assert window_shifts(acts) == [shift for _, shift in stream]
    assert [a for per in acts for a in per if isinstance(a, P.EndRun)] == [
        P.EndRun(P.TIMESTAMP_JUMP)
    ]


def test_audio_resuming_after_silence_is_not_a_jump() -> None:
    """A camera that sends no audio for a while (longer than the drift limit) resumes on the
    video's clock: written as it is, no window opened."""
    pol = P.SegmentPolicy(segment_us=SEG)
    stream = [pkt for pkt, _ in av_stream(400, 0, 400, 400)]
    silent = [pkt for k, pkt in enumerate(stream) if k < 20 or k > 2 * 300 or pkt[0]]
    acts = feed_av(pol, silent)
    assert all(per[-1] == P.WRITE for per in acts)
    assert pol.jump_shift_us is None


def test_audio_on_its_own_offset_clock_is_written() -> None:
    """Audio whose clock sits further from the video's than the drift limit is kept: audio is
    judged against the audio before it."""
    pol = P.SegmentPolicy(segment_us=SEG)
    stream = [pkt for pkt, _ in av_stream(60, 0, 60, 60, lead=20_000_000)]
    assert all(per[-1] == P.WRITE for per in feed_av(pol, stream))


def test_second_jump_in_the_window_recomputes_the_shift() -> None:
    """Each jump before the keyframe is undone from the frame before it: no frame lost, the
    run's timeline stays one frame per frame."""
    pol = P.SegmentPolicy(segment_us=SEG)
    first, second = 3600 * 1_000_000, 7200 * 1_000_000
    frames = steady(30)
    frames += [(first + i * FRAME, False, i * FRAME, 0) for i in range(30, 40)]
    frames += [(second + i * FRAME, i % GOP == 0, i * FRAME, 0) for i in range(40, 60)]
    acts = feed(pol, frames)
    shifts = window_shifts(acts)
    assert shifts[30:40] == [-first] * 10 and shifts[40:50] == [-second] * 10
    segs, cur, ends = segments_from(acts)
    assert ends == [P.TIMESTAMP_JUMP]
    assert segs[0]["frames"] == 50 and segs[0]["end"] - segs[0]["start"] == 50 * FRAME
    assert cur["frames"] == 10


def test_camera_time_back_before_the_keyframe_keeps_the_run() -> None:
    """A jump undone before the next keyframe: the keyframe is on the run's timeline again,
    so the run goes on and nothing is shifted any more."""
    pol = P.SegmentPolicy(segment_us=SEG)
    jump = 3600 * 1_000_000
    frames = steady(30)
    frames += [(jump + i * FRAME, False, i * FRAME, 0) for i in range(30, 40)]
    frames += [(i * FRAME, i % GOP == 0, i * FRAME, 0) for i in range(40, 60)]
    acts = feed(pol, frames)
    shifts = window_shifts(acts)
    assert shifts[30:40] == [-jump] * 10
    assert shifts[40:50] == [0] * 10  # recomputed: the camera's own time again
    assert shifts[50:] == [0] * 10 and pol.jump_shift_us is None
    _, cur, ends = segments_from(acts)
    assert not ends and cur["frames"] == 60


def test_clock_step_ends_run_at_next_keyframe_with_new_anchor():
    pol = P.SegmentPolicy(segment_us=SEG)
    step = 7200 * 1_000_000
    frames = steady(30) + [(i * FRAME, i % GOP == 0, i * FRAME, step) for i in range(30, 80)]
    segs, cur, ends = segments_from(feed(pol, frames))
    assert ends == [P.CLOCK_STEP]
    assert segs[0]["frames"] == 50  # frames up to the next keyframe stay in the old run
    # The new run is anchored on the stepped wall clock, not stretched to cover the step.
    assert cur["start"] - segs[0]["end"] >= step - FRAME


def test_end_finishes_segment_at_last_frame():
    pol = P.SegmentPolicy(segment_us=SEG)
    acts = feed(pol, steady(30))
    acts.append(pol.end("stall"))
    segs, cur, ends = segments_from(acts)
    assert cur is None and ends == ["stall"]
    assert segs[0]["end"] - segs[0]["start"] == 30 * FRAME
    assert pol.end("again") == []  # nothing open, nothing to do


def test_audio_written_only_inside_a_segment():
    pol = P.SegmentPolicy(segment_us=SEG)
    now = P.Clocks(0, 0)
    assert pol.packet(P.PacketInfo(False, True, 0), now) == [P.Drop("waiting for keyframe")]
    pol.packet(P.PacketInfo(True, True, 0), now)
    assert pol.packet(P.PacketInfo(False, True, 10), now) == [P.WRITE]


@settings(max_examples=200, deadline=None)
@given(
    fps=st.sampled_from([5, 10, 15, 25, 30]),
    gop=st.integers(1, 120),
    seg_s=st.sampled_from([1, 2, 4, 6]),
    jitter=st.lists(st.integers(0, 300_000), min_size=50, max_size=400),
)
def test_segments_contiguous_and_bounded(fps, gop, seg_s, jitter):
    frame = 1_000_000 // fps
    pol = P.SegmentPolicy(segment_us=seg_s * 1_000_000)
    frames = [(i * frame, i % gop == 0, i * frame + j, 0) for i, j in enumerate(jitter)]
    segs, cur, ends = segments_from(feed(pol, frames))
    assert not ends
    written = sum(s["frames"] for s in segs) + (cur["frames"] if cur else 0)
    assert written == len(frames)  # first frame is a keyframe: nothing dropped
    for a, b in itertools.pairwise(segs):
        assert a["end"] == b["start"]
    for s in segs:
        assert s["end"] - s["start"] <= max(seg_s * 1_000_000, gop * frame) + gop * frame
