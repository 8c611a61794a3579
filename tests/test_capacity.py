"""Capacity planning: the days the storage holds at the measured rates, the retention-short
alert, the rates measured from a real catalog, and the line status and the console show."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from firmware.alert_ids import AlertId
from firmware.alerts import Alerts
from firmware.apiclient import capacity_line
from firmware.capacity import DAY_S, Capacity, Rate, estimate, judge
from firmware.catalog import Catalog, Segment
from firmware.config import CameraConfig, RecorderConfig
from firmware.core.actions import ClearAlert, RaiseAlert

GB = 10**9
MBIT_S = 1e6 / 8  # bytes per second


def test_days_from_the_rates_beside_what_is_not_footage_and_the_reserve() -> None:
    # 100 GB disk, 10 GB of logs and foreign files, 30 GB of footage, 5 GB kept free:
    # footage may fill 85 GB; two 4 Mbit/s cameras write 86.4 GB a day.
    rates = {"door": Rate(int(4 * MBIT_S * 3600), 3600.0), "yard": Rate(int(4 * MBIT_S * 600), 600)}
    cap = estimate(100 * GB, 60 * GB, 30 * GB, 5 * GB, rates)
    assert cap.footage_bytes_max == 85 * GB
    assert abs(cap.bytes_per_day - 86.4 * GB) < 1e3
    assert abs(cap.days - 85 / 86.4) < 1e-6


def test_no_estimate_until_every_camera_has_a_minute_of_footage() -> None:
    one_new = {"door": Rate(10**9, 3600.0), "new": Rate(10**6, 20.0)}
    assert estimate(100 * GB, 50 * GB, 10 * GB, GB, one_new).days is None
    assert estimate(100 * GB, 50 * GB, 10 * GB, GB, {}).days is None
    assert judge(Capacity(GB, None, None), 30, raised=True) is None  # unknown: left as it is


def test_short_retention_raises_and_clears_only_with_a_margin() -> None:
    short = judge(Capacity(GB, GB, 9.0), 10.0, raised=False)
    assert isinstance(short, RaiseAlert) and short.id is AlertId.RETENTION_SHORT
    assert "9.0 days" in short.text and "retention_days = 10" in short.text
    assert judge(Capacity(GB, GB, 10.2), 10.0, raised=True) is None  # within the margin: stays
    assert judge(Capacity(GB, GB, 10.2), 10.0, raised=False) is None
    assert judge(Capacity(GB, GB, 10.6), 10.0, raised=True) == ClearAlert(AlertId.RETENTION_SHORT)


@given(
    total=st.integers(1, 10**13),
    used=st.integers(0, 10**13),
    footage=st.integers(0, 10**13),
    reserve=st.integers(0, 10**12),
    rates=st.dictionaries(
        st.text(min_size=1, max_size=4),
        st.builds(Rate, st.integers(0, 10**12), st.floats(0, 10**6)),
        max_size=5,
    ),
)
def test_the_estimate_is_never_negative_and_bounded_by_the_disk(
    total: int, used: int, footage: int, reserve: int, rates: dict[str, Rate]
) -> None:
    free = max(0, total - used)
    cap = estimate(total, free, min(footage, total - free), reserve, rates)
    assert 0 <= cap.footage_bytes_max <= total
    if cap.days is not None:
        assert cap.days >= 0 and cap.bytes_per_day > 0
        assert abs(cap.days * cap.bytes_per_day - cap.footage_bytes_max) <= 1e-6 * total + 1


def _segment(cam: str, run: int, i: int, start_us: int, seconds: float, size: int) -> Segment:
    return Segment(
        id=f"{cam}-{i}", camera=cam, run_id=run, path=f"{cam}/{i}.mp4", start_us=start_us,
        end_us=start_us + int(seconds * 1e6), media_start_us=0, media_end_us=int(seconds * 1e6),
        frames=1, bytes=size, sha256="0" * 64, origin="a", codec="h264",
    )  # fmt: skip


def test_rates_come_from_the_last_hour_of_the_real_catalog(tmp_path: Path) -> None:
    cat = Catalog(tmp_path)
    try:
        hour = 3600 * 10**6
        now = 10 * hour
        run = cat.new_run("door", "a", now - 2 * hour, now)
        for i in range(30):  # 2 h ago: an old, bigger rate that must not count
            cat.add_segment(_segment("door", run, i, now - 2 * hour + i * 4_000_000, 4, 4 * 10**6))
        for i in range(30, 60):  # the last two minutes: 4 s of 500 kB
            start = now - 120 * 10**6 + (i - 30) * 4_000_000
            cat.add_segment(_segment("door", run, i, start, 4, 500_000))
        measured = cat.rates(now - hour)
    finally:
        cat.close()
    assert measured == {"door": (30 * 500_000, 30 * 4_000_000)}
    rate = Rate(measured["door"][0], measured["door"][1] / 1e6)
    cap = estimate(100 * GB, 90 * GB, 10 * GB, 0, {"door": rate})
    assert abs(cap.bytes_per_day - 125_000 * DAY_S) < 1


def test_the_supervisor_raises_retention_short_from_its_own_catalog(tmp_path: Path) -> None:
    """A disk that holds less than the configured days at the cameras' rate: the recorder's
    upkeep says so with the alert; status gets the estimate."""
    from firmware.recorder.supervisor import Recorder

    alerts = Alerts()
    cfg = RecorderConfig(retention_days=3650, min_free_percent=0, min_free_mb=0)
    sup = Recorder(tmp_path, "a", cfg, [CameraConfig(name="door", url="rtsp://192.0.2.31/d")],
                     alerts)  # fmt: skip
    try:
        now = 10 * 3600 * 10**6
        run = sup.catalog.new_run("door", "a", now - 10**9, now)
        for i in range(30):
            start = now - 120 * 10**6 + i * 4_000_000
            sup.catalog.add_segment(_segment("door", run, i, start, 4, 2_000_000))
        cap = sup.plan_capacity(now)
    finally:
        sup.catalog.close()
    assert cap.days is not None and cap.days < 3650  # this disk at 4 Mbit/s: not ten years
    active = {a.id: a for a in alerts.active()}
    assert (
        AlertId.RETENTION_SHORT in active
        and "retention_days = 3650" in active[AlertId.RETENTION_SHORT].text
    )
    line = capacity_line({**cap.to_json(), "retention_days": 3650})
    assert line.startswith("retention: the storage holds") and line.endswith("(SHORT)")


def test_the_console_line_before_a_measure() -> None:
    assert "not measured yet" in capacity_line(None)
    assert "not measured yet" in capacity_line({"days": None, "retention_days": 30})
