"""The drill measures on hand-made observations: recovery times as a client and an operator
see them, frames counted by number, alerts from the audit logs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hil.drills.measure import (
    BoardSample,
    alerts_seen,
    count_frames,
    longest_outage,
    mirror_lag_at,
    recovery_seconds,
    role_changes,
    rto_recording,
    rto_vip,
)
from hil.drills.model import VipSample


def test_recovery_is_the_end_of_the_last_outage_after_the_fault():
    samples = [(9.0, True), (10.1, True), (10.2, False), (11.0, False), (11.5, True),
               (12.0, False), (12.4, True), (13.0, True)]  # fmt: skip
    assert abs(recovery_seconds(samples, 10.0) - 2.4) < 1e-9


def test_no_outage_is_zero_and_never_back_is_none():
    assert recovery_seconds([(1.0, True), (2.0, True)], 0.5) == 0.0
    assert recovery_seconds([(1.0, True), (2.0, False)], 0.5) is None
    assert recovery_seconds([(0.1, False)], 0.5) is None  # nothing seen after the fault
    assert recovery_seconds([(0.1, False), (1.0, True)], 0.5) == 0.0  # before the fault: not it


@given(
    st.lists(st.tuples(st.floats(0, 100), st.booleans()), max_size=40, unique_by=lambda x: x[0]),
    st.floats(0, 100),
)
def test_recovery_ends_on_a_good_sample_after_every_bad_one(samples, fault):
    r = recovery_seconds(samples, fault)
    after = [(t, ok) for t, ok in samples if t >= fault]
    if r is None:
        assert not after or not sorted(after)[-1][1]
        return
    assert r >= 0
    if not any(t - fault == r for t, _ in after):  # nothing went bad after the fault
        assert r == 0.0 and all(ok for _, ok in after)
        return
    back = min(t for t, _ in after if t - fault == r)
    assert all(ok for t, ok in after if t >= back)


def test_vip_recovery_is_clients_reaching_the_final_active_board():
    vip = [VipSample(1.0, "a"), VipSample(2.0, None), VipSample(2.5, None), VipSample(3.1, "b")]
    assert abs(rto_vip(vip, 1.5, "b") - 1.6) < 1e-9
    assert abs(longest_outage(vip, 1.5) - 1.6) < 1e-9  # from the fault at the earliest
    # A delayed handover: the old board answers all along, then a short switch.
    late = [VipSample(1.0, "a"), VipSample(9.0, "a"), VipSample(9.2, None), VipSample(9.4, "b")]
    assert abs(rto_vip(late, 1.0, "b") - 8.4) < 1e-9
    assert abs(longest_outage(late, 1.0) - 0.4) < 1e-9
    assert rto_vip(late, 1.0, "a") is None  # a never came back
    assert longest_outage([VipSample(1.0, "a"), VipSample(2.0, "a")], 0.0) == 0.0


def test_recording_recovery_is_the_final_active_boards_worst_camera():
    def s(at, board, role, rec, answered=True):
        return BoardSample(at, board, answered, role, frozenset(rec))

    samples = [
        s(1.0, "a", "active", {"c1", "c2"}),
        s(2.0, "a", "active", {"c1", "c2"}),  # a still claims to record: it does not count
        s(2.0, "b", "standby", set()),
        s(2.5, "b", "active", {"c1"}),
        s(3.0, "b", "active", {"c1", "c2"}),
    ]
    assert rto_recording(samples, ["c1", "c2"], "b", 1.5) == 1.5
    assert rto_recording(samples, ["c1"], "b", 1.5) == 1.0
    assert rto_recording(samples[:3], ["c1"], "b", 1.5) is None


def test_roles_lag_and_alerts():
    samples = [
        BoardSample(1.0, "b", True, "standby", mirror_lag_seconds=0.4),
        BoardSample(1.0, "a", True, "active"),
        BoardSample(2.0, "a", False),
        BoardSample(3.0, "b", True, "active"),
    ]
    assert [(r.board, r.role) for r in role_changes(samples)] == [
        ("b", "standby"), ("a", "active"), ("a", "down"), ("b", "active")]  # fmt: skip
    assert mirror_lag_at(samples, 1.5) == 0.4 and mirror_lag_at(samples, 0.5) is None
    audit = {"a": [
        {"event": "alert-raised", "time": 5.0, "id": "old", "severity": "warning"},
        {"event": "alert-raised", "time": 11.0, "id": "disk-missing", "severity": "critical"},
        {"event": "alert-cleared", "time": 14.0, "id": "disk-missing"},
        {"event": "alert-raised", "time": 15.0, "id": "no-standby", "severity": "warning"},
        {"event": "role", "time": 12.0, "role": "standby"},
    ]}  # fmt: skip
    seen = alerts_seen(audit, 10.0, 20.0, float)
    assert [(a.alert, a.raised_at, a.cleared_at) for a in seen] == [
        ("disk-missing", 11.0, 14.0), ("no-standby", 15.0, None)]  # fmt: skip


def test_frames_are_counted_by_number_minus_what_the_camera_never_sent():
    kept = [*range(100, 150), *range(160, 201)]
    assert count_frames(kept, 100, 200) == count_frames(kept, 100, 200)
    n = count_frames(kept, 100, 200)
    assert (n.checked, n.lost, n.duplicated, n.gaps) == (101, 10, 0, ((150, 159),))
    n = count_frames(kept, 100, 200, not_sent=[(150, 159)])
    assert (n.checked, n.lost, n.duplicated, n.gaps) == (91, 0, 0, ())
    n = count_frames(kept, 100, 200, not_sent=[(152, 155)])  # lost around what was not sent
    assert (n.checked, n.lost, n.gaps) == (97, 6, ((150, 151), (156, 159)))
    n = count_frames([*range(100, 201), 120, 121], 100, 200)
    assert (n.lost, n.duplicated) == (0, 2)
    n = count_frames([*range(90, 210)], 100, 200)  # frames outside the window do not count
    assert (n.checked, n.lost, n.duplicated) == (101, 0, 0)
