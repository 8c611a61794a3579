"""Hardware faults on running boards in the twin rig: a UPS emulated on a pty (the real serial
driver reads it) and a data disk on a real loop device."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import NVR, ROOT, wait_until
from test_mirror_rig import FPS, all_kept, first_frames, newest_frame, ready

from hil.twin import TwinBoards

SEGMENT_S = 2.0


def alerts(tb: TwinBoards, host: str) -> set[str]:
    try:
        return {a["id"] for a in tb.status(host)["alerts"]}
    except (OSError, ValueError):
        return set()


def peer_priority(tb: TwinBoards, host: str) -> int | None:
    try:
        peer = tb.status(host)["peer"]
    except (OSError, ValueError):
        return None
    return peer["priority"] if peer else None


def audit(tb: TwinBoards, host: str) -> list[dict]:
    path = tb.data_dir(host) / "audit.log"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def ups():
    from hal.sim.ups_emulator import MegatecEmulator

    with MegatecEmulator() as emu:
        yield emu


def ups_section(emu, **kw) -> dict:
    return {"ups": {"backend": "serial", "port": emu.port, "protocol": "megatec",
                    "poll_seconds": 0.5, "handover_after_seconds": 1.0, **kw}}  # fmt: skip


def test_mains_fail_hands_over_and_mains_back_restores_priority(tmp_path, ups):
    with TwinBoards(tmp_path, segment_seconds=SEGMENT_S) as tb:
        try:
            tb.start("a", 150, sections=ups_section(ups))
            wait_until(lambda: tb.role("a") == "active", 30, "a active")
            tb.start("b", 100)
            wait_until(lambda: ready(tb), 90, "a recording, b holding and in sync")
            assert peer_priority(tb, "b") == 150
            ups.mains_fail()
            wait_until(lambda: "ups-on-battery" in alerts(tb, "a"), 5, "a's on-battery alert")
            wait_until(lambda: tb.role("b") == "active" and tb.role("a") == "standby", 15,
                       "b taking over from a board on battery")  # fmt: skip
            wait_until(lambda: peer_priority(tb, "b") == 150 - 20, 3,
                       "a advertising its priority lowered by on-battery")  # fmt: skip
            assert "ups-on-battery" in {e.get("id") for e in audit(tb, "a")}
            ups.mains_back()
            wait_until(lambda: "ups-on-battery" not in alerts(tb, "a"), 5, "the alert clearing")
            # The fault is held down (fault_hold_down_seconds, 10 s) before the priority returns.
            assert peer_priority(tb, "b") == 150 - 20
            wait_until(lambda: peer_priority(tb, "b") == 150, 15, "a's priority back")
            assert tb.role("b") == "active", "no preempt configured: b stays active"
        except BaseException:
            for h in ("a", "b"):
                print(f"--- {h} ---\n" + tb.log(h)[-5000:])
            raise


def test_low_battery_commits_the_open_segment_and_shuts_down_cleanly(tmp_path, ups):
    marker = tmp_path / "powered-off"
    with TwinBoards(tmp_path / "twin", segment_seconds=SEGMENT_S) as tb:
        try:
            tb.start("a", 150, sections=ups_section(ups, shutdown_command=f"touch {marker}"))
            wait_until(lambda: tb.role("a") == "active" and newest_frame(tb, "a", "cam1") > 0,
                       40, "a recording alone")  # fmt: skip
            ups.mains_fail()
            wait_until(lambda: "ups-on-battery" in alerts(tb, "a"), 5, "a's on-battery alert")
            assert tb.camera is not None
            ups.low_battery()
            at_low = tb.camera.clock("cam1")
            wait_until(lambda: tb.pid("a") is None, 30, "a's firmware stopping by itself")
            assert marker.exists(), "the shutdown command ran after the firmware stopped"
            log = tb.log("a")
            assert "shutting down: UPS battery low" in log and "stopped" in log
            # The open segment was committed, not left behind: frames up to the low-battery
            # moment are in the catalog (a 2 s segment would otherwise miss up to 50).
            assert newest_frame(tb, "a", "cam1") >= at_low - FPS // 2
            events = [e["event"] for e in audit(tb, "a")]
            assert events.index("shutdown") < events.index("power-off")
            verify = subprocess.run([*NVR, "verify", "--data", str(tb.data_dir("a"))],
                                    cwd=ROOT, capture_output=True, text=True)  # fmt: skip
            assert verify.returncode == 0, verify.stdout + verify.stderr
        except BaseException:
            print("--- a ---\n" + tb.log("a")[-5000:])
            raise


def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def loop_disk(tmp_path):
    """A 256 MB ext4 filesystem on a real loop device."""
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(256 * 1024 * 1024)
    dev = _sh("losetup", "--find", "--show", str(img))
    try:
        _sh("mkfs.ext4", "-q", dev)
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_removing_the_data_disk_alerts_and_hands_over(tmp_path, loop_disk):
    with TwinBoards(tmp_path, segment_seconds=SEGMENT_S) as tb:
        data = tb.data_dir("a")
        data.mkdir(parents=True)
        _sh("mount", loop_disk, str(data))
        try:
            tb.start("a", 150)
            wait_until(lambda: tb.role("a") == "active", 30, "a active")
            tb.start("b", 100)
            wait_until(lambda: ready(tb), 90, "a recording, b holding and in sync")
            first = first_frames(tb)
            # Pulled while files are open, as the board sees it (its own mount namespace).
            pid = tb.pid("a")
            assert pid is not None
            board_ns = ["nsenter", "-t", str(pid), "-m"]
            _sh(*board_ns, "umount", "-l", str(data))
            wait_until(lambda: "disk-missing" in alerts(tb, "a"), 5, "a's disk-missing alert")
            wait_until(lambda: tb.role("b") == "active", 10, "b taking over")
            wait_until(lambda: "disk-failed" in tb.status("a")["failover"]["health"], 2,
                       "a advertising its failed disk")  # fmt: skip
            assert tb.status("a")["writes_held"]
            wait_until(lambda: not any(c["recording"] for c in tb.status("a")["cameras"]), 5,
                       "a holding its cameras in memory only")  # fmt: skip
            # Nothing was written to the directory the disk left behind, also not by the
            # mirror, which now has b's new footage to fetch.
            wait_until(lambda: tb.status("b")["cameras"][0]["recording"], 10, "b recording")
            left = _sh(*board_ns, "ls", "-A", str(data))
            assert left == "", left
            # Clients are on b, and b holds every frame from before the pull exactly once
            # (the disk is still mounted here, outside a's namespace, so a's part is read too).
            tb.wait_vip("b", 20)
            all_kept(tb, "b", first)
        except BaseException:
            for h in ("a", "b"):
                print(f"--- {h} ---\n" + tb.log(h)[-5000:])
            raise
        finally:
            tb.rig.kill("a")
            tb.rig.kill("b")
            subprocess.run(["umount", "-l", str(data)], check=False)
