"""The drill's decisions (firmware/drill.py) on hand-made inputs: no boards, no clock."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from firmware.drill import (
    HOLE_TOLERANCE_US,
    BoardView,
    CameraContinuity,
    DrillResult,
    Fitness,
    GapRec,
    LegResult,
    LegStep,
    LegWatch,
    NoAnswer,
    SegmentRec,
    Verdict,
    check_fit,
    continuity,
    drill_window,
    parse_recordings,
    ring_needed,
)
from firmware.roles import Role
from firmware.timefmt import iso

S = 1_000_000
T0 = 1_796_000_000 * S
"""A wall-clock origin for the segments (microseconds)."""


def status(board: str, role: str, peer: str | None, peer_role: str | None = None,
           synced: bool = True, recording: tuple[bool, ...] = (True,)) -> dict:  # fmt: skip
    """A GET /api/v1/status answer with the fields the drill reads (and some it does not)."""
    return {
        "board": board,
        "role": role,
        "epoch": 3,
        "peer": {"board": peer, "role": peer_role, "priority": 100, "paths": {}} if peer else None,
        "mirror": {"synced": synced, "lag_seconds": 0.1},
        "cameras": [
            {"name": f"cam{i + 1}", "recording": r, "holding": not r}
            for i, r in enumerate(recording)
        ],
        "alerts": [],
    }


def view(*args, **kw) -> BoardView:
    return BoardView.from_status(status(*args, **kw))


def seg(camera: str, origin: str, start_s: float, end_s: float) -> SegmentRec:
    start = T0 + round(start_s * S)
    return SegmentRec(f"{camera}.{start // 1000}.{origin}", camera, origin, start,
                      T0 + round(end_s * S))  # fmt: skip


def healthy() -> list[BoardView | NoAnswer]:
    return [view("a", "active", "b", "standby", recording=(True, True)),
            view("b", "standby", "a", "active", recording=(False, False))]  # fmt: skip


# --- fitness --------------------------------------------------------------------------------


def test_a_whole_pair_is_fit_and_the_roles_are_named() -> None:
    """The drill hands over from whichever board is active, whichever board it runs on."""
    fit = check_fit(list(reversed(healthy())))
    assert fit.ok and fit.reasons == ()
    assert (fit.active, fit.standby, fit.cameras) == ("a", "b", ("cam1", "cam2"))
    assert fit.line().startswith("fit: a active, b standby (mirror in sync, cameras held)")


@pytest.mark.parametrize(
    ("boards", "reason"),
    [
        ([view("a", "active", None), NoAnswer("the peer at http://192.0.2.12:8080", "refused")],
         "the peer at http://192.0.2.12:8080 does not answer: refused"),
        ([view("a", "active", "b", "active"), view("b", "active", "a", "active")],
         "need one active and one standby board, found a active, b active"),
        ([view("a", "standby", "b", "init"), view("b", "init", "a", "standby")],
         "need one active and one standby board, found a standby, b init"),
        ([view("a", "active", "b", "standby"), view("b", "standby", "a", "active", synced=False)],
         "the standby b's mirror is not in sync"),
        ([view("a", "active", "b", "standby", recording=(True, False)),
          view("b", "standby", "a", "active")],
         "not recording on a: cam2"),
        ([view("a", "active", "b", "standby"),
          view("b", "standby", "a", "active", recording=(True,))],
         "not held in b's ring yet: cam1"),
        ([view("a", "active", None), view("b", "standby", None)],
         "the boards do not hear each other (a hears None, b hears None)"),
        ([view("a", "active", "a"), view("a", "standby", "a")], "expected two boards, got a, a"),
        ([view("a", "active", "b", "standby", recording=()), view("b", "standby", "a", "active")],
         "the active a has no cameras"),
    ],
)  # fmt: skip
def test_an_unfit_pair_is_refused_with_the_reason(boards, reason: str) -> None:
    """Each way a pair can be unfit is said in words an installer acts on."""
    fit = check_fit(boards)
    assert not fit.ok
    assert reason in fit.reasons
    assert fit.line().startswith("not fit for the drill: ")


def test_a_standby_whose_ring_is_still_filling_is_not_fit_yet() -> None:
    """Right after a handover the new standby's ring holds only seconds: handing back then
    would lose the frames between the cut segment and the next keyframe."""
    assert ring_needed(2.0, 14.0) == 5.0 and ring_needed(4.0, 3.0) == 3.0
    a, b = healthy()
    assert isinstance(b, BoardView)
    filling = replace(b, ring_seconds={"cam1": 5.2, "cam2": 1.4})
    fit = check_fit([a, filling], ring_needed(2.0, 14.0))
    assert fit.reasons == ("b's ring is still filling (cam2 1.4 s; 5 s needed to take over "
                           "without a gap)",)  # fmt: skip
    full = replace(b, ring_seconds={"cam1": 5.2, "cam2": 5.0})
    assert check_fit([a, full], 5.0).ok
    assert check_fit([a, filling]).ok  # not asked for: not checked


def test_a_status_that_is_not_a_board_status_does_not_pass_as_one() -> None:
    """The adapter turns these errors into NoAnswer: nonsense from a port is no board."""
    with pytest.raises((KeyError, ValueError)):
        BoardView.from_status({"board": "a", "role": "leader"})
    with pytest.raises(KeyError):
        BoardView.from_status({"hello": "world"})


# --- one handover leg -----------------------------------------------------------------------


def watch(known: frozenset[str] = frozenset(), cameras: tuple[str, ...] = ("cam1",)) -> LegWatch:
    return LegWatch("a", "b", cameras, known, requested_at=100.0, deadline=160.0)


def test_a_leg_waits_for_the_vip_then_for_new_footage_of_every_camera() -> None:
    """RTOs are measured from the request: VIP from the target, then its own new segments."""
    w = watch(frozenset({seg("cam1", "b", -30, -28).id}), ("cam1", "cam2"))
    assert w.step(100.0) is LegStep.WATCH_VIP
    w.vip_answer("a", 100.1)  # still the old board on the VIP
    assert w.step(100.1) is LegStep.WATCH_VIP
    w.recordings("cam1", [seg("cam1", "b", -30, -28), seg("cam1", "a", -2, 0)], 100.2)
    assert w.pending_cameras() == ["cam1", "cam2"]  # old footage of b and a's own: not new
    w.vip_answer("b", 100.4)
    w.vip_answer("a", 100.5)  # the first answer from b counts
    assert w.step(100.5) is LegStep.WATCH_RECORDINGS
    first = seg("cam1", "b", 0.2, 1.2)
    w.recordings("cam1", [seg("cam1", "b", 1.2, 2.2), first], 101.5)
    w.recordings("cam1", [seg("cam1", "b", 2.2, 3.2)], 103.0)  # seen already: no change
    assert w.step(101.5) is LegStep.WATCH_RECORDINGS
    w.recordings("cam2", [seg("cam2", "b", 0.3, 1.3)], 102.25)
    assert w.step(102.3) is LegStep.DONE
    r = w.result()
    assert r.completed and r.error is None
    assert (r.rto_vip_seconds, r.rto_recording_seconds) == (0.4, 2.25)  # worst camera: cam2
    assert r.recording_seconds == {"cam1": 1.5, "cam2": 2.25}
    assert r.first_segments["cam1"] == first
    assert (
        r.line()
        == "PASS  handover a -> b: VIP answered by b after 0.400 s, recording after 2.250 s"
    )


def test_a_leg_that_never_records_times_out_and_says_what_is_missing() -> None:
    """Completion decides: a VIP that moved is not a handover without footage."""
    w = watch(cameras=("cam1", "cam2"))
    w.vip_answer("b", 100.3)
    w.recordings("cam1", [seg("cam1", "b", 0, 1)], 101.0)
    assert w.step(159.9) is LegStep.WATCH_RECORDINGS
    assert w.step(160.0) is LegStep.FAILED
    r = w.result()
    assert not r.completed and r.rto_vip_seconds == 0.3
    assert r.rto_recording_seconds is None and r.recording_seconds["cam2"] is None
    assert r.error == "timed out: no new segment from b of cam2"
    assert r.line().startswith("FAIL  handover a -> b") and "recording after -" in r.line()


def test_a_refused_request_ends_the_leg_at_once() -> None:
    """A board that says no (e.g. it is not active) is not waited for."""
    w = watch()
    w.stop("handover request refused: a: 409 this board is standby, not active")
    assert w.step(100.0) is LegStep.FAILED
    r = w.result()
    assert not r.completed and "refused" in (r.error or "") and r.rto_vip_seconds is None


# --- continuity -----------------------------------------------------------------------------


def test_back_to_back_footage_from_both_boards_has_no_hole_and_mirror_copies_count_once() -> None:
    """The usual handover: a's last segment overlaps b's first; the mirror's copies of a's
    segments on b carry the same ids."""
    a_side = [seg("cam1", "a", -1, 0), seg("cam1", "a", 0, 0.6)]
    b_side = [*a_side, seg("cam1", "b", 0.2, 1.2), seg("cam1", "b", 1.2, 2.2)]
    c = continuity("cam1", [*a_side, *b_side], [], (T0 - S // 2, T0 + 2 * S))
    assert c.ok and c.holes == () and c.segments == 4
    assert c.largest_hole_seconds == 0.0 and c.largest_overlap_seconds == 0.4
    assert c.line().startswith("PASS  continuity cam1: largest hole 0.000 s, overlap 0.400 s")


def test_a_stretch_nobody_recorded_is_a_hole_and_rounding_is_not() -> None:
    """Holes longer than the tolerance fail; the API's millisecond rounding does not."""
    tiny = HOLE_TOLERANCE_US / S / 2
    segs = [seg("cam1", "a", 0, 1), seg("cam1", "b", 1 + tiny, 2), seg("cam1", "b", 2.5, 3)]
    c = continuity("cam1", segs, [], (T0, T0 + 3 * S))
    assert not c.ok
    assert [(h.start_us - T0, h.end_us - T0) for h in c.holes] == [(2 * S, 2 * S + S // 2)]
    assert c.largest_hole_seconds == 0.5 and c.largest_overlap_seconds == 0.0
    assert c.line().startswith("FAIL  continuity cam1:") and "1 hole(s)" in c.line()


def test_the_window_edges_clip_the_footage_and_an_early_end_is_a_hole() -> None:
    """Segments reaching past the window count only inside it; a trailing gap is a hole."""
    segs = [seg("cam1", "a", -5, 1), seg("cam1", "b", 1, 1.5), seg("cam2", "a", 1.5, 9)]
    c = continuity("cam1", segs, [], (T0, T0 + 2 * S))
    assert [(h.start_us - T0, h.end_us - T0) for h in c.holes] == [(S + S // 2, 2 * S)]
    assert c.segments == 2  # cam2 is another camera's footage
    assert continuity("cam1", segs, [], (T0, T0 + S + S // 2)).ok


def test_a_catalog_gap_counts_only_where_no_board_has_footage() -> None:
    """A board's catalog may not know the peer's run yet: the union decides; an open gap that
    nothing covers is a hole to the window's end."""
    segs = [seg("cam1", "a", 0, 1), seg("cam1", "b", 1, 2)]
    covered = GapRec("cam1", T0 + S, None, "handover", "a")
    c = continuity("cam1", segs, [covered], (T0, T0 + 2 * S))
    assert c.ok and c.catalog_gaps == (covered,)
    outside = GapRec("cam1", T0 + 5 * S, None, "stopped", "a")
    assert continuity("cam1", segs, [outside], (T0, T0 + 2 * S)).catalog_gaps == ()
    c = continuity("cam1", segs[:1], [covered], (T0, T0 + 2 * S))
    assert not c.ok and c.holes[0].start_us == T0 + S and c.holes[0].end_us == T0 + 2 * S
    assert c.to_json()["catalog_gaps"] == [
        {"board": "a", "start": iso(T0 + S), "end": None, "reason": "handover"}
    ]


def test_the_recordings_answer_is_read_as_the_api_gives_it() -> None:
    """ISO times with milliseconds, as GET /api/v1/cameras/{name}/recordings returns them."""
    answer = {
        "camera": "cam1",
        "segments": [{"id": "cam1.1796000000000.a", "camera": "cam1", "origin": "a",
                      "start": iso(T0), "end": iso(T0 + 2 * S), "frames": 50}],
        "gaps": [{"camera": "cam1", "start": iso(T0 + 2 * S), "end": None, "reason": "stopped"}],
    }  # fmt: skip
    segs, gaps = parse_recordings(answer, "b")
    assert segs == [SegmentRec("cam1.1796000000000.a", "cam1", "a", T0, T0 + 2 * S)]
    assert gaps == [GapRec("cam1", T0 + 2 * S, None, "stopped", "b")]


# --- the result -----------------------------------------------------------------------------


def leg(source: str, target: str, done: bool = True) -> LegResult:
    first = {"cam1": seg("cam1", target, 3, 4)} if done else {}
    return LegResult(source, target, done, 0.1 if done else None, 1.5 if done else None,
                     {"cam1": 1.5 if done else None}, first,
                     None if done else "timed out: x")  # fmt: skip


def whole(cont: tuple[CameraContinuity, ...]) -> DrillResult:
    return DrillResult(check_fit(healthy()), (leg("a", "b"), leg("b", "a")), cont)


def test_two_handovers_and_continuity_pass_and_the_window_ends_with_footage() -> None:
    """Continuity and completion decide; RTO figures are reported, not judged."""
    window = drill_window(T0, leg("b", "a"))
    assert window == (T0, T0 + 4 * S)
    assert drill_window(T0, leg("b", "a", done=False)) is None
    r = whole((continuity("cam1", [seg("cam1", "a", -1, 5)], [], window),))
    assert r.ok and r.verdict is Verdict.PASS
    lines = r.lines()
    assert lines[-1] == "drill handover: PASS"
    assert [ln.split()[0] for ln in lines[:-1]] == ["PASS"] * 4
    j = r.to_json()
    assert j["verdict"] == "PASS" and j["legs"][0]["rto_vip_seconds"] == 0.1
    assert j["legs"][1]["first_segments"] == {"cam1": seg("cam1", "a", 3, 4).id}


def test_a_hole_an_unfinished_leg_or_a_refusal_fails_the_drill() -> None:
    """Each fails on its own, and the audit record says why with no secret in it."""
    hole = continuity("cam1", [seg("cam1", "a", 0, 1)], [], (T0, T0 + 2 * S))
    assert not whole((hole,)).ok and whole((hole,)).lines()[-1] == "drill handover: FAIL"
    assert not whole(()).ok  # no continuity measured is no pass
    half = DrillResult(check_fit(healthy()), (leg("a", "b", done=False),), error="stopped")
    assert not half.ok and half.lines()[-2] == "FAIL  stopped"
    refused = DrillResult(Fitness(("the peer at http://192.0.2.12:8080 does not answer: x",)))
    assert refused.refused and not refused.ok
    assert refused.lines() == [
        "FAIL  not fit for the drill: the peer at http://192.0.2.12:8080 does not answer: x",
        "drill handover: refused",
    ]
    fields = refused.audit_fields()
    assert fields["outcome"] == "refused" and fields["legs"] == []
    record = json.dumps(whole((hole,)).audit_fields())
    assert json.loads(record)["outcome"] == "fail"
    assert "token" not in record.lower() and "bearer" not in record.lower()
    assert json.loads(record)["legs"][0]["rto_recording_seconds"] == 1.5


def test_role_values_are_the_firmware_roles() -> None:
    """The status's role text is read as the firmware's Role, not compared as strings."""
    v = view("a", "active", "b", "standby")
    assert v.role is Role.ACTIVE and v.peer_role is Role.STANDBY and v.mirror_synced is True
    assert v.not_holding == ("cam1",) and v.not_recording == ()
