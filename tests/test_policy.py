"""The segment policy alone: time is a parameter, so hours of stream take milliseconds."""

from __future__ import annotations

import itertools

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
    # Nothing claims an hour: the segment before the jump is just its 60 frames.
    assert segs[0]["end"] - segs[0]["start"] == 60 * FRAME
    assert cur["new_run"] and cur["frames"] == 59 - 24


def test_backwards_timestamps_are_a_jump_too():
    pol = P.SegmentPolicy(segment_us=SEG)
    frames = [*steady(30), (10 * FRAME, True, 30 * FRAME, 0)]
    _, cur, ends = segments_from(feed(pol, frames))
    assert ends == [P.TIMESTAMP_JUMP] and cur["new_run"]


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
