"""The recorder benchmark's rounds (hil/bench_recorder.py): one run's CPU moves with the host,
so the table takes each recorder's median run and the ratios are paired by round; a wrong pick
or a ratio against another round's ffmpeg shows here rather than as a wrong figure."""

from __future__ import annotations

from hil.bench_recorder import Result, medians, round_ratios


def run(tool: str, n: int, cpu_per_minute: float, turn: int) -> Result:
    # 60 s windows: CPU seconds per camera-minute = cpu / n
    return Result(tool, n, 60.0, cpu_per_minute * n, 0.0, 0, 0, 0, round=turn)


def test_each_recorder_s_median_run_and_each_round_s_ratio():
    nvr, ff = "nvr record (builtin reader), workers=2", "ffmpeg -c copy -f segment"
    results = [
        run(nvr, 8, 0.30, 0), run(ff, 8, 0.25, 0),
        run(nvr, 8, 0.20, 1), run(ff, 8, 0.25, 1),
        run(nvr, 8, 0.22, 2), run(ff, 8, 0.20, 2),
        run(nvr, 32, 0.18, 0), run(ff, 32, 0.20, 0),
    ]  # fmt: skip
    picked = medians(results)
    assert [(r.tool, r.n, r.round) for r in picked] == [(nvr, 8, 2), (ff, 8, 0), (nvr, 32, 0),
                                                        (ff, 32, 0)]  # fmt: skip
    assert round_ratios(results) == [
        f"N = 8, {nvr}: ratio to ffmpeg by round 1.20 0.80 1.10",
        f"N = 32, {nvr}: ratio to ffmpeg by round 0.90",
    ]
