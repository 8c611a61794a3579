"""The mirror plan: both ways, in order, conflicts kept apart, deletions respected."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware.mirror.plan import Summary, reconcile


def seg(cam: str, start_ms: int, origin: str, sha: str = "x", size: int = 10) -> Summary:
    return Summary(f"{cam}.{start_ms}.{origin}", cam, start_ms * 1000, size, sha * 64)


def test_missing_segments_go_both_ways_oldest_first():
    a = [seg("c1", 0, "a"), seg("c1", 4000, "a"), seg("c1", 8000, "a")]
    b = [seg("c1", 0, "a"), seg("c1", 6000, "b")]  # b recorded alone while a was away
    plan = reconcile(a, b)
    assert [(t.id, t.direction) for t in plan.transfers] == [
        ("c1.4000.a", "push"),
        ("c1.6000.b", "pull"),
        ("c1.8000.a", "push"),
    ]
    assert plan.bytes_to_push == 20 and plan.bytes_to_pull == 10
    newest = reconcile(a, b, order="newest")
    assert [t.id for t in newest.transfers] == ["c1.8000.a", "c1.6000.b", "c1.4000.a"]


def test_dual_active_recordings_of_the_same_time_are_both_kept():
    a = [seg("c1", 0, "a")]
    b = [seg("c1", 0, "b")]
    plan = reconcile(a, b)
    assert {(t.id, t.direction) for t in plan.transfers} == {
        ("c1.0.a", "push"),
        ("c1.0.b", "pull"),
    }


def test_same_id_with_other_content_is_a_conflict_not_a_copy():
    plan = reconcile([seg("c1", 0, "a", "1")], [seg("c1", 0, "a", "2")])
    assert plan.transfers == []
    assert [c.id for c in plan.conflicts] == ["c1.0.a"]


def test_retention_deletions_are_not_pulled_back():
    plan = reconcile([], [seg("c1", 0, "a"), seg("c1", 4000, "a")], deleted=["c1.0.a"])
    assert [t.id for t in plan.transfers] == ["c1.4000.a"]


ids = st.tuples(st.sampled_from(["c1", "c2"]), st.integers(0, 50), st.sampled_from(["a", "b"]))


@given(st.sets(ids, max_size=30), st.sets(ids, max_size=30))
def test_after_applying_the_plan_both_boards_hold_the_union(left, right):
    a = [seg(c, t * 4000, o) for c, t, o in left]
    b = [seg(c, t * 4000, o) for c, t, o in right]
    plan = reconcile(a, b)
    have_a = {s.id for s in a} | {t.id for t in plan.transfers if t.direction == "pull"}
    have_b = {s.id for s in b} | {t.id for t in plan.transfers if t.direction == "push"}
    assert have_a == have_b == {s.id for s in a} | {s.id for s in b}
    assert len(plan.transfers) == len({t.id for t in plan.transfers})  # nothing twice
    by_id = {s.id: s for s in a + b}
    again = reconcile([by_id[i] for i in have_a], [by_id[i] for i in have_b])
    assert again.transfers == [] and again.conflicts == []  # idempotent once applied
