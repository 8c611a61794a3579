"""What each drill must show (thresholds.toml) and the verdict on a measured report.

`judge` only compares measurements with thresholds; the drill decides the outcome from its
list (empty: passed) together with anything else it checked itself.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from hil.drills.model import DrillReport, Thresholds

DEFAULT = Path(__file__).with_name("thresholds.toml")
DEFAULT_TABLE = "default"

DRILLS = (
    "power-cut-active",
    "planned-handover",
    "failback",
    "lan-pull-active",
    "lan-pull-standby",
    "sync-pull",
    "heartbeats-but-serial",
    "partition-heal",
    "camera-path-lost-active",
    "data-disk-missing",
    "disk-full",
    "ups-on-battery",
    "ups-battery-low",
    "camera-reboot",
    "camera-time-jump",
    "clock-step",
    "firmware-hang",
    "update-rollback",
)

_SECONDS = ("rto_vip_seconds", "rto_recording_seconds")
_FRAMES = ("frames_lost", "frames_duplicated")


def _bad(where: str, key: str, value: object, want: str) -> ValueError:
    return ValueError(f"thresholds [{where}] {key} = {value!r}: want {want}")


def _seconds(where: str, table: dict, key: str) -> float | None:
    if key not in table:
        return None
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < float("inf"):
        raise _bad(where, key, v, "seconds >= 0")
    return float(v)


def _frames(where: str, table: dict, key: str, default: int) -> int:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(where, key, v, "a whole number of frames >= 0")
    return v


def _table(where: str, table: object, base: Thresholds | None) -> Thresholds:
    if not isinstance(table, dict):
        raise ValueError(f"thresholds [{where}]: want a table")
    unknown = set(table) - {*_SECONDS, *_FRAMES}
    if unknown:
        raise ValueError(f"thresholds [{where}]: unknown keys {sorted(unknown)}")
    return Thresholds(
        rto_vip_seconds=_seconds(where, table, "rto_vip_seconds"),
        rto_recording_seconds=_seconds(where, table, "rto_recording_seconds"),
        frames_lost=_frames(where, table, "frames_lost", base.frames_lost if base else 0),
        frames_duplicated=_frames(
            where, table, "frames_duplicated", base.frames_duplicated if base else 0
        ),
    )


def load_thresholds(path: Path = DEFAULT) -> dict[str, Thresholds]:
    """Drill name -> its thresholds, plus DEFAULT_TABLE for drills without a table."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    if DEFAULT_TABLE not in raw:
        raise ValueError(f"{path}: no [{DEFAULT_TABLE}] table")
    base = _table(DEFAULT_TABLE, raw[DEFAULT_TABLE], None)
    return {
        name: base if name == DEFAULT_TABLE else _table(name, table, base)
        for name, table in raw.items()
    }


def for_drill(table: Mapping[str, Thresholds], drill: str) -> Thresholds:
    """The drill's own thresholds, else the default ones."""
    return table.get(drill) or table[DEFAULT_TABLE]


def _s(x: float) -> str:
    return f"{x:.2f} s"


def judge(report: DrillReport, thresholds: Thresholds | Mapping[str, Thresholds]) -> list[str]:
    """The ways the report misses its thresholds (empty: it meets them). Takes one drill's
    thresholds or the whole table (then the report's drill picks its entry)."""
    t = thresholds if isinstance(thresholds, Thresholds) else for_drill(thresholds, report.drill)
    out: list[str] = []
    for label, value, allowed in (
        ("frames lost", report.frames_lost, t.frames_lost),
        ("frames duplicated", report.frames_duplicated, t.frames_duplicated),
    ):
        if value is None:
            out.append(f"{label} not measured")
        elif value > allowed:
            out.append(f"{label}: {value} (allowed {allowed})")
    for label, value, limit in (
        ("RTO VIP", report.rto_vip_seconds, t.rto_vip_seconds),
        ("RTO recording", report.rto_recording_seconds, t.rto_recording_seconds),
    ):
        if limit is None:
            continue
        if value is None:
            out.append(f"{label} not measured (threshold {_s(limit)})")
        elif value > limit:
            out.append(f"{label} {_s(value)} above its threshold of {_s(limit)}")
    return out
