"""The drill suite's output side: report JSON, timeline picture, report.md, thresholds.

These files are what a reviewer reads after a drill run, so they must round-trip exactly, refuse
what they cannot read, and show every drill and every failure.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

from hil.drills.model import (
    SCHEMA_VERSION,
    AlertSeen,
    DrillReport,
    FrameMethod,
    Outcome,
    RoleChange,
    Span,
    Thresholds,
    VipSample,
)
from hil.drills.report import from_json, load_dir, plot, to_json, write, write_index
from hil.drills.thresholds import DEFAULT_TABLE, DRILLS, judge, load_thresholds

T0 = 1_790_000_000.0


def takeover(drill: str = "power-cut-active", outcome: Outcome = Outcome.PASSED) -> DrillReport:
    """A power cut of active board a: b takes over the VIP and the recording at +2 s."""
    spans = []
    for cam in ("cam1", "cam2"):
        for i in range(5):  # a records until the cut, b holds a's mirrored segments
            start = T0 + 2 * i
            spans.append(Span("a", cam, start, start + 2, "a"))
            if i < 4:
                spans.append(Span("b", cam, start, start + 2, "a"))
        for i in range(6):
            start = T0 + 12 + 2 * i
            spans.append(Span("b", cam, start, start + 2, "b"))
    return DrillReport(
        drill=drill,
        env="netns",
        fault="power cut of the active board a",
        expected="b takes over within 3 s, no frame lost",
        outcome=outcome,
        started_at=T0,
        ended_at=T0 + 24,
        fault_at=T0 + 10,
        healed_at=T0 + 20,
        firmware={"a": "1.4.0", "b": None},
        rto_vip_seconds=1.9,
        rto_recording_seconds=2.1,
        frames_lost=0,
        frames_duplicated=0,
        frames_checked=2400,
        mirror_lag_at_fault_seconds=0.4,
        alerts=[AlertSeen("b", "peer-lost", "warning", T0 + 11, None)],
        thresholds=Thresholds(3.0, 3.0),
        failures=[] if outcome is Outcome.PASSED else ["RTO VIP 4.10 s above its threshold"],
        spans=spans,
        roles=[
            RoleChange("a", T0, "active"),
            RoleChange("b", T0, "standby"),
            RoleChange("a", T0 + 10, "off"),
            RoleChange("b", T0 + 11.9, "active"),
            RoleChange("a", T0 + 21, "standby"),
        ],
        vip=[
            VipSample(T0 + 0.5 * i, "a" if i < 20 else None if i < 24 else "b") for i in range(48)
        ],
    )


def not_possible() -> DrillReport:
    return DrillReport(
        drill="ups-battery-low",
        env="qemu",
        fault="UPS reports a low battery",
        expected="the active board hands over and shuts down",
        outcome=Outcome.NOT_POSSIBLE,
        started_at=T0 + 100,
        ended_at=T0 + 101,
        frame_method=FrameMethod.TIMESTAMPS,
        failures=["this target has no UPS to simulate"],
    )


# --- JSON ---------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
maybe = st.none() | finite
words = st.text(max_size=12)
reports = st.builds(
    DrillReport,
    drill=words,
    env=words,
    fault=words,
    expected=words,
    outcome=st.sampled_from(Outcome),
    started_at=finite,
    ended_at=finite,
    fault_at=maybe,
    healed_at=maybe,
    firmware=st.dictionaries(words, st.none() | words, max_size=3),
    rto_vip_seconds=maybe,
    rto_recording_seconds=maybe,
    frames_lost=st.none() | st.integers(0, 10**9),
    frames_duplicated=st.none() | st.integers(0, 10**9),
    frame_method=st.sampled_from(FrameMethod),
    frames_checked=st.none() | st.integers(0, 10**9),
    mirror_lag_at_fault_seconds=maybe,
    alerts=st.lists(st.builds(AlertSeen, words, words, words, finite, maybe), max_size=3),
    thresholds=st.none() | st.builds(Thresholds, maybe, maybe, st.integers(0, 9)),
    failures=st.lists(words, max_size=3),
    spans=st.lists(st.builds(Span, words, words, finite, finite, words), max_size=4),
    roles=st.lists(st.builds(RoleChange, words, finite, words), max_size=4),
    vip=st.lists(st.builds(VipSample, finite, st.none() | words), max_size=4),
)


@settings(max_examples=60, deadline=None)
@given(reports)
def test_json_round_trip_is_exact(report: DrillReport) -> None:
    """Any report survives to_json -> JSON text -> from_json unchanged, with its verdict."""
    d = json.loads(json.dumps(to_json(report)))
    assert from_json(d) == report
    assert d["schema_version"] == SCHEMA_VERSION
    assert d["passed"] is report.passed
    assert d["outcome"] == report.outcome.value


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_round_trips_with_its_verdict(outcome: Outcome) -> None:
    """passed is true/false for a measured drill and null when nothing was judged."""
    report = replace(takeover(), outcome=outcome)
    d = to_json(report)
    assert from_json(d) == report
    want = {Outcome.PASSED: True, Outcome.FAILED: False}.get(outcome)
    assert d["passed"] is want


def test_newer_schema_is_refused() -> None:
    """A report from a newer suite must not be misread by an older reader."""
    d = to_json(takeover())
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="newer"):
        from_json(d)


def test_malformed_report_is_a_value_error() -> None:
    """A report missing a required field fails with ValueError naming the drill."""
    d = to_json(takeover())
    del d["started_at"]
    with pytest.raises(ValueError, match="power-cut-active"):
        from_json(d)
    del d["outcome"]
    with pytest.raises(ValueError, match="malformed"):
        from_json(d)


def test_unknown_field_of_the_same_version_is_ignored() -> None:
    """Adding a field keeps the version (model.py), so a reader skips fields it does not know."""
    d = to_json(takeover())
    d["new_measure"] = 3
    d["spans"][0]["new_detail"] = "x"
    assert from_json(d) == takeover()


def test_write_and_load_dir(tmp_path: Path) -> None:
    """write() leaves exactly the JSON and PNG; load_dir reads reports and skips other JSON."""
    js, png = write(takeover(), tmp_path)
    write(not_possible(), tmp_path)
    (tmp_path / "env.json").write_text('{"targets": ["a", "b"]}')
    (tmp_path / "list.json").write_text("[1, 2]")
    assert js == tmp_path / "power-cut-active.json" and png.suffix == ".png"
    assert json.loads(js.read_text())["passed"] is True
    assert js.read_text().startswith('{\n "schema_version"')  # indent 1
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    assert js.stat().st_mode & 0o777 == 0o644 == png.stat().st_mode & 0o777
    assert load_dir(tmp_path) == [takeover(), not_possible()]


def test_write_refuses_a_name_that_is_no_file_name(tmp_path: Path) -> None:
    """The drill name becomes a path: it must not climb out of the output directory."""
    with pytest.raises(ValueError, match="file name"):
        write(replace(takeover(), drill="../x"), tmp_path)
    assert not list(tmp_path.iterdir())


# --- picture ------------------------------------------------------------------------------


def distinct_colours(png: Path) -> int:
    pixels = imread(png)
    return len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


def test_timeline_picture_is_a_real_png_of_the_drill(tmp_path: Path) -> None:
    """About 1200x600 px with the bands drawn (many colours), not an empty frame."""
    _, png = write(takeover(), tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = imread(png).shape[:2]
    assert (width, height) == (1200, 600)
    assert distinct_colours(png) > 20


def test_picture_without_a_fault_and_with_many_rows(tmp_path: Path) -> None:
    """No fault: time counts from the start; many cameras make the picture taller, not
    cramped."""
    r = takeover()
    spans = [replace(s, camera=f"cam{i}") for i in range(12) for s in r.spans if s.camera == "cam1"]
    r = replace(r, fault_at=None, healed_at=None, spans=spans)
    plot(r, tmp_path / "x.png")
    height, width = imread(tmp_path / "x.png").shape[:2]
    assert width == 1200 and height > 600


def test_not_possible_drill_gets_a_small_picture(tmp_path: Path) -> None:
    """Even with nothing measured the report links a picture that says why."""
    _, png = write(not_possible(), tmp_path)
    height, width = imread(png).shape[:2]
    assert width < 1200 and height < 600
    assert distinct_colours(png) > 2  # text drawn, not a blank canvas


def test_ran_but_recorded_nothing_still_plots(tmp_path: Path) -> None:
    """A failed drill whose samplers saw nothing must not break the report."""
    r = replace(takeover(outcome=Outcome.FAILED), spans=[], roles=[], vip=[])
    plot(r, tmp_path / "empty.png")
    assert distinct_colours(tmp_path / "empty.png") > 2


# --- report.md ----------------------------------------------------------------------------


def test_index_lists_every_drill_with_links_and_failures(tmp_path: Path) -> None:
    """Header counts, one row per drill with its links, a section per drill that did not
    pass."""
    failed = replace(
        takeover("lan-pull-active", Outcome.FAILED), rto_vip_seconds=4.1, frames_lost=None
    )
    reports = [takeover(), failed, not_possible()]
    md = write_index(reports, tmp_path).read_text()
    assert "1 passed, 1 failed, 1 not possible, 0 error" in md
    assert "netns, qemu" in md and "2026-" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| power-cut-active",
        "| lan-pull-active",
        "| ups-battery-low",
    ]
    for r in reports:
        assert f"[png]({r.drill}.png)" in md and f"[json]({r.drill}.json)" in md
    assert "| 1.90 | — | 2.10 | 0 | 0 | 0.40 | b: peer-lost (warning) |" in md
    assert "| 4.10 | — | 2.10 | — | 0 |" in md
    assert "| — | — | — | — | — | — |" in md  # the not-possible row measured nothing
    assert "## power-cut-active" not in md
    assert "## lan-pull-active: failed" in md and "- RTO VIP 4.10 s above" in md
    assert "## ups-battery-low: not-possible" in md and "- this target has no UPS" in md


# --- thresholds ---------------------------------------------------------------------------


def test_thresholds_file_names_exactly_the_drills() -> None:
    """Every drill has its table, no stray ones, and the promises the pair makes."""
    t = load_thresholds()
    assert set(t) - {DEFAULT_TABLE} == set(DRILLS) and len(DRILLS) == 18
    assert t["planned-handover"].rto_vip_seconds == 2.0 == t["failback"].rto_vip_seconds
    assert t["power-cut-active"].rto_vip_seconds == 3.0
    for name in (
        "lan-pull-standby",
        "sync-pull",
        "heartbeats-but-serial",
        "camera-reboot",
        "camera-time-jump",
        "clock-step",
    ):
        assert t[name].rto_vip_seconds is None, name
    assert t["camera-reboot"].rto_recording_seconds is None  # the camera's own outage
    assert t["ups-on-battery"].rto_vip_seconds == 7.0  # 5 s on battery, then planned
    assert t["camera-path-lost-active"].rto_vip_seconds == 15.0  # the session's stall first
    assert t["ups-battery-low"].rto_vip_seconds == 5.0  # commits first
    odd = {"camera-reboot", "ups-on-battery", "camera-path-lost-active", "ups-battery-low"}
    for name in set(DRILLS) - odd:
        assert t[name].rto_recording_seconds == 3.0, name
    for name in DRILLS:
        assert (t[name].frames_lost, t[name].frames_duplicated) == (0, 0), name


def test_the_thresholds_name_the_drills_the_suite_runs() -> None:
    from hil.drills.catalogue import BY_NAME

    assert set(DRILLS) == set(BY_NAME)


def test_thresholds_file_rejects_typos(tmp_path: Path) -> None:
    """A misspelt key would silently drop a threshold; it is an error instead."""
    p = tmp_path / "t.toml"
    p.write_text("[default]\nrto_vip_seconds = 3.0\n[x]\nrto_vip_second = 1.0\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_thresholds(p)
    p.write_text("[default]\nframes_lost = 1.5\n")
    with pytest.raises(ValueError, match="whole number"):
        load_thresholds(p)


def test_frame_allowance_comes_from_default_unless_the_drill_sets_it(tmp_path: Path) -> None:
    """A drill table's own frames allowance wins; an absent one is the default's."""
    p = tmp_path / "t.toml"
    p.write_text("[default]\nframes_lost = 2\n[a]\nframes_duplicated = 5\n")
    t = load_thresholds(p)["a"]
    assert t == Thresholds(None, None, frames_lost=2, frames_duplicated=5)


def test_judge_passes_a_drill_within_its_thresholds() -> None:
    table = load_thresholds()
    assert judge(takeover(), table) == []
    # the VIP was not expected to move: no rto_vip is no failure
    assert judge(replace(takeover("sync-pull"), rto_vip_seconds=None), table) == []


@pytest.mark.parametrize(
    ("change", "failure"),
    [
        ({"frames_lost": 1}, "frames lost: 1 (allowed 0)"),
        ({"frames_duplicated": 2}, "frames duplicated: 2 (allowed 0)"),
        ({"frames_lost": None}, "frames lost not measured"),
        ({"frames_duplicated": None}, "frames duplicated not measured"),
        ({"rto_vip_seconds": 3.01}, "RTO VIP 3.01 s above its threshold of 3.00 s"),
        ({"rto_vip_seconds": None}, "RTO VIP not measured (threshold 3.00 s)"),
        ({"rto_recording_seconds": 4.5}, "RTO recording 4.50 s above its threshold of 3.00 s"),
        ({"rto_recording_seconds": None}, "RTO recording not measured (threshold 3.00 s)"),
    ],
)
def test_judge_names_each_way_of_failing(change: dict, failure: str) -> None:
    """Each threshold is checked on its own and says what it saw and what was allowed."""
    assert judge(replace(takeover(), **change), load_thresholds()) == [failure]


def test_judge_uses_the_drills_allowance_and_planned_limit() -> None:
    """A drill's own allowance replaces 0; a planned handover is held to 2 s, not 3 s."""
    allowing = Thresholds(None, 3.0, frames_lost=5, frames_duplicated=1)
    assert judge(replace(takeover(), frames_lost=5, frames_duplicated=1), allowing) == []
    assert judge(replace(takeover(), frames_lost=6), allowing) == ["frames lost: 6 (allowed 5)"]
    planned = replace(takeover("planned-handover"), rto_vip_seconds=2.5)
    assert judge(planned, load_thresholds()) == ["RTO VIP 2.50 s above its threshold of 2.00 s"]
    unknown = replace(takeover("new-drill"), rto_vip_seconds=math.nextafter(3.0, 4.0))
    assert len(judge(unknown, load_thresholds())) == 1  # judged by [default]
