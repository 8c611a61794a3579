"""A drill's report on disk: `<drill>.json`, its timeline picture `<drill>.png`, and the
suite's `report.md` that links them.

The picture follows Jepsen's timeline plots: time runs left to right in seconds from the fault,
one row per thing observed (who answered on the VIP, each board's role, the footage each board
holds of each camera), the fault shaded.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hil.drills.model import (
    SCHEMA_VERSION,
    AlertSeen,
    DrillReport,
    FrameGap,
    FrameMethod,
    Outcome,
    RoleChange,
    Span,
    Thresholds,
    VipSample,
)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A drill name is a file name in the output directory."""

# --- JSON ---------------------------------------------------------------------------------


def to_json(report: DrillReport) -> dict[str, Any]:
    """The report as JSON-ready data: enums as their values, plus schema_version and passed."""
    d = asdict(report)
    d["outcome"] = report.outcome.value
    d["frame_method"] = report.frame_method.value
    return {"schema_version": SCHEMA_VERSION, **d, "passed": report.passed}


def _build(cls: type, d: dict[str, Any]) -> Any:
    """cls from d, ignoring keys it does not know (a later writer of the same version may add
    fields; see model.SCHEMA_VERSION)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def from_json(d: dict[str, Any]) -> DrillReport:
    """The report back from to_json's data; refuses a schema newer than this reader."""
    version = d.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"not a drill report: schema_version is {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"drill report {d.get('drill')!r} has schema version {version}, newer than the "
            f"{SCHEMA_VERSION} this reader knows: update hil/drills to read it"
        )
    try:
        return _report(d)
    except (KeyError, TypeError) as e:
        raise ValueError(f"drill report {d.get('drill')!r} is malformed: {e!r}") from None


def _report(d: dict[str, Any]) -> DrillReport:
    kw = dict(d)
    kw["outcome"] = Outcome(d["outcome"])
    kw["frame_method"] = FrameMethod(d.get("frame_method", FrameMethod.SIMULATOR_NUMBERS.value))
    kw["firmware"] = dict(d.get("firmware", {}))
    kw["alerts"] = [_build(AlertSeen, a) for a in d.get("alerts", [])]
    kw["thresholds"] = _build(Thresholds, d["thresholds"]) if d.get("thresholds") else None
    kw["failures"] = list(d.get("failures", []))
    kw["spans"] = [_build(Span, s) for s in d.get("spans", [])]
    kw["frame_gaps"] = [_build(FrameGap, g) for g in d.get("frame_gaps", [])]
    kw["roles"] = [_build(RoleChange, r) for r in d.get("roles", [])]
    kw["vip"] = [_build(VipSample, v) for v in d.get("vip", [])]
    return _build(DrillReport, kw)


def _is_report(d: object) -> bool:
    return isinstance(d, dict) and "schema_version" in d and "drill" in d and "outcome" in d


def load_dir(out_dir: Path) -> list[DrillReport]:
    """Every report in out_dir (other JSON files are skipped), oldest first."""
    reports = []
    for p in sorted(Path(out_dir).glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if _is_report(d):
            reports.append(from_json(d))
    return sorted(reports, key=lambda r: (r.started_at, r.drill))


# --- files --------------------------------------------------------------------------------


def _replace_into(path: Path, fill: Callable[[Path], object]) -> None:
    """Write path through a temporary file beside it, so a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fill(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the report from other readers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    _replace_into(path, lambda tmp: tmp.write_text(text))


def write(report: DrillReport, out_dir: Path) -> tuple[Path, Path]:
    """out_dir/<drill>.json and out_dir/<drill>.png, each replaced whole."""
    if not NAME.fullmatch(report.drill):
        raise ValueError(f"drill name {report.drill!r} is not usable as a file name")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, png = out_dir / f"{report.drill}.json", out_dir / f"{report.drill}.png"
    _write_text(js, json.dumps(to_json(report), indent=1) + "\n")
    _replace_into(png, lambda tmp: plot(report, tmp))
    return js, png


# --- picture ------------------------------------------------------------------------------

RECORDED, MIRRORED = "#1f77b4", "#9467bd"
ROLE_COLOURS = {"active": "#2ca02c", "standby": "#aec7e8"}
OTHER_ROLE = "#ffbb78"
BOARD_COLOURS = ("#17becf", "#bcbd22", "#8c564b", "#e377c2")
NOBODY = "#c7c7c7"
FAULT = "#d62728"
LOST = "#000000"


def _num(x: float | None, unit: str = "") -> str:
    """Seconds with 2 decimals; "—" when not measured."""
    return "—" if x is None else f"{x:.2f}{unit}"


def _count(n: int | None) -> str:
    """Frames are whole numbers; "—" when not measured."""
    return "—" if n is None else str(n)


def _title(r: DrillReport) -> str:
    return (
        f"{r.drill} on {r.env}: {r.outcome.value}\n"
        f"RTO VIP {_num(r.rto_vip_seconds, ' s')} · RTO recording "
        f"{_num(r.rto_recording_seconds, ' s')} · frames lost {_count(r.frames_lost)} · "
        f"duplicated {_count(r.frames_duplicated)}"
    )


def _boards(r: DrillReport) -> list[str]:
    names = set(r.firmware) | {s.board for s in r.spans} | {c.board for c in r.roles}
    names |= {v.board for v in r.vip if v.board is not None}
    return sorted(names)


def _bands(points: list[tuple[float, Any]], end: float) -> list[tuple[float, float, Any]]:
    """(start, width, value): each value held until the next different one (the last until
    end)."""
    runs: list[tuple[float, Any]] = []
    for at, value in sorted(points, key=lambda p: p[0]):
        if not runs or runs[-1][1] != value:
            runs.append((at, value))
    out = []
    for i, (at, value) in enumerate(runs):
        until = runs[i + 1][0] if i + 1 < len(runs) else end
        if until > at:
            out.append((at, until - at, value))
    return out


def _natural(text: str) -> list[Any]:
    """cam2 before cam10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def _vip_end(r: DrillReport) -> float:
    """Where the last VIP sample stops counting: one usual sampling interval after it."""
    ats = sorted(v.at for v in r.vip)
    gaps = sorted(b - a for a, b in pairwise(ats) if b > a)
    step = gaps[len(gaps) // 2] if gaps else 0.01 * max(r.ended_at - r.started_at, 1.0)
    return min(ats[-1] + step, max(r.ended_at, ats[-1]))


def _plot_nothing(r: DrillReport, path: Path) -> None:
    fig = Figure(figsize=(8, 2.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(_title(r), fontsize=10)
    why = "; ".join(r.failures) or "nothing was recorded on the timeline"
    head = {Outcome.NOT_POSSIBLE: "Not possible on this target", Outcome.ERROR: "Drill broke"}
    text = f"{head.get(r.outcome, 'No timeline')}: {why}"
    ax.text(0.5, 0.5, textwrap.fill(text, 90), ha="center", va="center", fontsize=10)
    fig.savefig(path, format="png")


def plot(report: DrillReport, path: Path) -> None:
    """The drill's timeline as a PNG at path (about 1200x600 px)."""
    r = report
    if r.outcome in (Outcome.NOT_POSSIBLE, Outcome.ERROR) or not (r.spans or r.roles or r.vip):
        _plot_nothing(r, path)
        return
    t0 = r.fault_at if r.fault_at is not None else r.started_at
    boards = _boards(r)
    colour = {b: BOARD_COLOURS[i % len(BOARD_COLOURS)] for i, b in enumerate(boards)}
    cameras = sorted({(s.board, s.camera) for s in r.spans}, key=lambda bc: _natural(" ".join(bc)))
    rows = ["VIP", *(f"{b} role" for b in boards), *(f"{b} · {c}" for b, c in cameras)]
    y = {name: len(rows) - 1 - i for i, name in enumerate(rows)}  # first row on top

    fig = Figure(figsize=(12, max(6.0, 1.6 + 0.3 * len(rows))), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    bar = {"edgecolor": "white", "linewidth": 0.4}

    for at, width, board in _bands([(v.at, v.board) for v in r.vip], _vip_end(r) if r.vip else 0):
        ax.broken_barh(
            [(at - t0, width)], (y["VIP"] - 0.35, 0.7), facecolors=colour.get(board, NOBODY), **bar
        )
    for b in boards:
        changes = [(c.at, c.role) for c in r.roles if c.board == b]
        for at, width, role in _bands(changes, r.ended_at):
            row = y[f"{b} role"]
            face = ROLE_COLOURS.get(role.lower(), OTHER_ROLE)
            ax.broken_barh([(at - t0, width)], (row - 0.35, 0.7), facecolors=face, **bar)
            if face == OTHER_ROLE and width > 0.06 * (r.ended_at - r.started_at):
                ax.text(at - t0 + width / 2, row, role, ha="center", va="center", fontsize=8)
    for s in r.spans:
        face = RECORDED if s.origin == s.board else MIRRORED
        row = y[f"{s.board} · {s.camera}"]
        ax.broken_barh([(s.start - t0, s.end - s.start)], (row - 0.35, 0.7), facecolors=face, **bar)

    for g in r.frame_gaps:  # frames no board kept: on every row of that camera
        if g.at is None:
            continue
        for b, c in cameras:
            if c == g.camera:
                row = y[f"{b} · {c}"]
                ax.plot([g.at - t0] * 2, [row - 0.45, row + 0.45], color=LOST, linewidth=2)

    if r.fault_at is not None:
        healed = r.healed_at if r.healed_at is not None else r.ended_at
        ax.axvspan(0, healed - t0, color=FAULT, alpha=0.12, linewidth=0, zorder=0)
        ax.axvline(0, color=FAULT, linewidth=1)
        if r.healed_at is not None:
            ax.axvline(r.healed_at - t0, color=FAULT, linewidth=1, linestyle="--")

    ax.set_yticks([y[n] for n in rows], rows, fontsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(r.started_at - t0, r.ended_at - t0)
    ax.set_xlabel(
        "seconds after the fault" if r.fault_at is not None else "seconds after the start"
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(_title(r), fontsize=11)
    handles = [
        Patch(color=RECORDED, label="recorded by this board"),
        Patch(color=MIRRORED, label="mirrored from the peer"),
        Patch(color=ROLE_COLOURS["active"], label="active"),
        Patch(color=ROLE_COLOURS["standby"], label="standby"),
        Patch(color=OTHER_ROLE, label="other role"),
        *(Patch(color=colour[b], label=f"VIP: {b}") for b in boards),
        Patch(color=NOBODY, label="VIP: no answer"),
    ]
    if r.fault_at is not None:
        handles.append(Patch(color=FAULT, alpha=0.25, label="fault"))
    if r.frame_gaps:
        handles.append(Patch(color=LOST, label="frames lost"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.savefig(path, format="png")


# --- report.md ----------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _alerts(alerts: Iterable[AlertSeen]) -> str:
    names = dict.fromkeys(f"{a.board}: {a.alert} ({a.severity})" for a in alerts)
    return ", ".join(names) or "—"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_index(reports: list[DrillReport], out_dir: Path) -> Path:
    """out_dir/report.md: the summary table of the reports, then why each one did not pass."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    envs = ", ".join(sorted({r.env for r in reports})) or "—"
    counts = {o: sum(r.outcome is o for r in reports) for o in Outcome}
    lines = [f"# Failover drills on {envs}", ""]
    if reports:
        first = min(r.started_at for r in reports)
        last = max(r.ended_at for r in reports)
        lines.append(f"From {_when(first)} to {_when(last)}.")
    lines += [
        "",
        f"{len(reports)} drills: {counts[Outcome.PASSED]} passed, {counts[Outcome.FAILED]} "
        f"failed, {counts[Outcome.NOT_POSSIBLE]} not possible, {counts[Outcome.ERROR]} error.",
        "",
        "| drill | outcome | RTO VIP s | VIP outage s | RTO recording s | frames lost "
        "| frames duplicated | mirror lag at fault s | alerts | picture | JSON |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in reports:
        cells = [
            r.drill,
            r.outcome.value,
            _num(r.rto_vip_seconds),
            _num(r.vip_outage_seconds),
            _num(r.rto_recording_seconds),
            _count(r.frames_lost),
            _count(r.frames_duplicated),
            _num(r.mirror_lag_at_fault_seconds),
            _alerts(r.alerts),
            f"[png]({r.drill}.png)",
            f"[json]({r.drill}.json)",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for r in reports:
        if r.passed:
            continue
        lines += ["", f"## {r.drill}: {r.outcome.value}", "", f"Fault: {r.fault}  "]
        lines += [f"Expected: {r.expected}", ""]
        lines += [f"- {f}" for f in r.failures] or ["- (no reason recorded)"]
    path = out_dir / "report.md"
    _write_text(path, "\n".join(lines) + "\n")
    return path
