"""`nvr drill handover` in the twin-board rig: real boards, real VIP, real recordings.

The drill runs as an installer would run it, inside board a's namespace: it must hand the pair
over and back, measure both handovers, find no hole in the footage, leave a active and write
its record to a's audit log; on a pair that is not whole it must refuse and touch nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import NVR, ROOT, wait_until

from firmware.audit import AUDIT_FILE
from firmware.config import load_config
from firmware.datadir import api_token
from firmware.drill import ring_needed
from hil.twin import API_PORT, TwinBoards

SEGMENT_S = 1.0
RTO_BOUND_S = 30.0
"""Generous: the firmware reports the figures, the rig only checks they are sane."""


RING_S = ring_needed(SEGMENT_S, 2 * SEGMENT_S + 10.0)
"""What the drill asks of the standby's ring (firmware.recorder.supervisor.ring_seconds)."""


def ring(tb: TwinBoards, host: str) -> dict[str, float]:
    """Seconds each camera's ring holds on host (GET /api/v1/cameras, with the pair's token)."""
    token = api_token(load_config(tb.workdir / host / "nvr.toml"), board=False)
    cams = tb.rig.http_json(host, "127.0.0.1", API_PORT, "/api/v1/cameras",
                            headers={"Authorization": f"Bearer {token}"})["cameras"]  # fmt: skip
    return {c["name"]: c["ring_seconds"] or 0.0 for c in cams}


def ready(tb: TwinBoards) -> bool:
    """a records every camera, b is standby hearing a, holds every camera in its ring (full
    enough to take over without a gap), and its mirror has caught up: what the drill asks."""
    try:
        a, b = tb.status("a"), tb.status("b")
        return (
            a["role"] == "active"
            and all(c["recording"] for c in a["cameras"])
            and b["role"] == "standby"
            and all(c["holding"] for c in b["cameras"])
            and (b["peer"] or {}).get("role") == "active"
            and bool(b["mirror"] and b["mirror"]["synced"])
            and all(s >= RING_S for s in ring(tb, "b").values())
        )
    except (OSError, ValueError):
        return False


def drill_events(tb: TwinBoards, host: str) -> list[dict]:
    path = tb.data_dir(host) / AUDIT_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == "drill-handover"]


def run_drill(tb: TwinBoards, host: str) -> subprocess.CompletedProcess:
    cfg = tb.workdir / host / "nvr.toml"
    return tb.rig.run(host, [*NVR, "drill", "handover", "--config", str(cfg), "--json"],
                      cwd=ROOT, timeout=150)  # fmt: skip


def token(tb: TwinBoards, host: str) -> str:
    out = tb.rig.run(host, [*NVR, "token", "--config", str(tb.workdir / host / "nvr.toml")],
                     cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def back_to_a(tb: TwinBoards) -> None:
    """The pair ends as it began: a alone holds the VIP and says it is active."""
    try:
        wait_until(lambda: tb.active() == "a", 30, "a active with the VIP again")
    except AssertionError:
        print(f"VIP on {tb.vip_holders()}; roles a {tb.role('a')}, b {tb.role('b')}")
        dump(tb)
        raise


def dump(tb: TwinBoards) -> None:
    for h in ("a", "b"):
        print(f"--- {h} ---\n" + tb.log(h)[-5000:])


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[TwinBoards]:
    with TwinBoards(tmp_path, segment_seconds=SEGMENT_S) as tb:
        try:
            tb.start("a", 150)
            wait_until(lambda: tb.role("a") == "active", 30, "a active")
            tb.start("b", 100)
            wait_until(lambda: ready(tb), 60, "a recording, b standby with its mirror in sync")
            yield tb
        except BaseException:
            dump(tb)
            raise


def test_drill_hands_over_and_back_measured_with_no_hole(pair: TwinBoards) -> None:
    """The whole drill on a live pair: both handovers measured, continuity, a active again."""
    epoch = pair.status("a")["epoch"]
    done = run_drill(pair, "a")
    print(f"rig {pair.rig.prefix}\n{done.stdout}")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["verdict"] == "PASS" and result["active"] == "a" and result["standby"] == "b"
    legs = result["legs"]
    assert [(g["from"], g["to"]) for g in legs] == [("a", "b"), ("b", "a")]
    for leg in legs:
        assert leg["completed"], leg
        assert 0 < leg["rto_vip_seconds"] < RTO_BOUND_S, leg
        assert 0 < leg["rto_recording_seconds"] < RTO_BOUND_S, leg
        assert leg["first_segments"]["cam1"].endswith("." + leg["to"])  # the new board's own
    [cam] = result["continuity"]
    assert cam["camera"] == "cam1" and cam["ok"] and cam["holes"] == []
    assert cam["segments"] >= 2 and cam["largest_hole_seconds"] < 0.01
    # The pair ends as it began, two elections later.
    back_to_a(pair)
    assert pair.status("a")["epoch"] >= epoch + 2
    assert pair.via_vip()["board"] == "a"
    [event] = drill_events(pair, "a")
    assert event["outcome"] == "pass"
    assert [leg["rto_vip_seconds"] for leg in event["legs"]] == [
        leg["rto_vip_seconds"] for leg in legs
    ]
    assert token(pair, "a") not in (pair.data_dir("a") / AUDIT_FILE).read_text()
    assert drill_events(pair, "b") == []  # only the board it ran on records it


@pytest.mark.hil  # bash hil/drills.sh --checks
def test_the_drill_runs_the_same_from_the_standby(pair: TwinBoards) -> None:
    """On b (standby) the drill still hands the active a over and back: the pair's roles, not
    the board it runs on, decide."""
    done = run_drill(pair, "b")
    print(f"rig {pair.rig.prefix}\n{done.stdout}{done.stderr}")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert [(g["from"], g["to"], g["completed"]) for g in result["legs"]] == [
        ("a", "b", True),
        ("b", "a", True),
    ]
    assert all(0 < g["rto_vip_seconds"] < RTO_BOUND_S for g in result["legs"])
    back_to_a(pair)
    assert [e["outcome"] for e in drill_events(pair, "b")] == ["pass"]
    assert drill_events(pair, "a") == []


CONSOLE = (
    "import io, sys; from pathlib import Path; from firmware.console import Console; "
    "con = Console(Path(sys.argv[1]), Path('/nonexistent'), io.StringIO('y\\n'), sys.stdout); "
    "sys.exit(con.execute('drill'))"
)


@pytest.mark.hil  # bash hil/drills.sh --checks
def test_the_console_drill_runs_the_same_drill_and_shows_it(pair: TwinBoards) -> None:
    """The console's `drill`, asked and answered y on a's console: the same result, audited."""
    cfg = pair.workdir / "a" / "nvr.toml"
    done = pair.rig.run("a", [*NVR[:1], "-c", CONSOLE, str(cfg)], cwd=ROOT, timeout=150)
    print(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hand the pair over to the standby and back" in done.stdout
    lines = done.stdout.splitlines()
    assert lines[-1] == "drill handover: PASS"
    assert [ln.split()[0] for ln in lines if "handover a -> b" in ln or "handover b -> a" in ln] \
        == ["PASS", "PASS"]  # fmt: skip
    assert any(ln.startswith("PASS  continuity cam1:") for ln in lines)
    back_to_a(pair)
    [event] = drill_events(pair, "a")
    assert event["outcome"] == "pass" and len(event["legs"]) == 2


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[TwinBoards]:
    """a alone: its peer b is configured but stopped."""
    with TwinBoards(tmp_path, segment_seconds=SEGMENT_S) as tb:
        try:
            tb.start("a", 150)
            wait_until(lambda: tb.active() == "a" and tb.status("a")["cameras"][0]["recording"],
                       30, "a active and recording")  # fmt: skip
            yield tb
        except BaseException:
            dump(tb)
            raise


def test_drill_refuses_when_the_peer_does_not_answer(lone: TwinBoards) -> None:
    """No drill on half a pair: exit 1, a clear reason, and a keeps the VIP."""
    epoch = lone.status("a")["epoch"]
    done = run_drill(lone, "a")
    print(f"rig {lone.rig.prefix}\n{done.stdout}{done.stderr}")
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["refused"] and result["legs"] == []
    assert "the peer at http://" in done.stderr and "does not answer" in done.stderr
    assert lone.active() == "a" and lone.status("a")["epoch"] == epoch
    [event] = drill_events(lone, "a")
    assert event["outcome"] == "refused" and "does not answer" in event["reasons"][0]
