from firmware.catalog import Segment
from firmware.config import RecorderConfig
from firmware.recorder.retention import Watermarks, plan, watermarks

DAY = 86_400_000_000


def segs(n, size=10, start=0, step=4_000_000):
    return [
        Segment(
            f"s{i}",
            "c",
            1,
            f"p{i}",
            start + i * step,
            start + (i + 1) * step,
            0,
            0,
            1,
            size,
            "",
            "a",
            "h264",
        )
        for i in range(n)
    ]


def test_nothing_to_do_when_space_and_young():
    assert plan(segs(5), 1000, Watermarks(100, 150), DAY, DAY) == ([], [])


def test_age_first_then_space_oldest_first():
    old = segs(3, start=0)
    young = segs(5, start=5 * DAY)
    by_age, by_space = plan(old + young, 85, Watermarks(100, 125), 6 * DAY, DAY)
    assert [s.id for s in by_age] == ["s0", "s1", "s2"]
    assert by_space == []  # age freed 30: above the low watermark again
    by_age, by_space = plan(old + young, 60, Watermarks(100, 125), 6 * DAY, DAY)
    assert len(by_age) == 3
    assert [s.start_us for s in by_space] == [s.start_us for s in young[:4]]  # up to target


def test_space_alone_deletes_oldest_until_target():
    by_age, by_space = plan(segs(10), 50, Watermarks(100, 125), 0, DAY)
    assert by_age == [] and [s.id for s in by_space] == [f"s{i}" for i in range(8)]


def test_watermarks_from_config():
    cfg = RecorderConfig(min_free_percent=5, min_free_mb=1)
    m = watermarks(1_000_000_000, cfg)
    assert m.low == 50_000_000 and m.target > m.low
    cfg = RecorderConfig(min_free_percent=0, min_free_mb=8)
    assert watermarks(32_000_000, cfg).low == 8_000_000
