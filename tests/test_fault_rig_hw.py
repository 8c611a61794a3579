"""More single faults on the active board in the twin-board rig, each checked by the camera's
frame numbers: the data disk turning read-only or filling up, the UPS on battery and its
battery low, some cameras cut off from the active board alone, a crash-looping recorder.

Every drill starts as test_mirror_rig's do (a=150 records, b=100 holds every camera and is in
sync), notes the cameras' frame numbers, puts the fault on a, waits until a client on the LAN
reaches b on the floating IP, checks that a handed over and says why, and then requires every
frame from the fault on exactly once across both boards, all of it on b.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import holds, wait_until
from test_hw_rig import audit, ups_section
from test_mirror_rig import FPS, SEGMENT_S, all_kept, first_frames, mid_segment, newest_frame, ready

from hil.diskfill import fill
from hil.twin import TwinBoards


def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def ups() -> Iterator[Any]:
    """A Megatec UPS on a pty, read by the real serial driver."""
    from hal.sim.ups_emulator import MegatecEmulator

    with MegatecEmulator() as emu:
        yield emu


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[str]:
    """A 64 MB ext4 filesystem on a real loop device, formatted as a data disk would be for
    these drills: no blocks kept back for root (the firmware runs as root, so with reserved
    blocks a full disk would still take its writes) and read-only after an error."""
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    dev = _sh("losetup", "--find", "--show", str(img))
    try:
        _sh("mkfs.ext4", "-q", "-m", "0", "-e", "remount-ro", dev)
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@contextlib.contextmanager
def pair(
    tmp_path: Path,
    disk: str | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
    cameras: int = 1,
    second_camera: tuple[str, ...] = (),
    camera_auth: str | None = None,
) -> Iterator[TwinBoards]:
    """a (150) records, b (100) holds every camera and is in sync; a's data directory lies on
    `disk` if one is given. Boards, camera and rig go down whatever happens, and the disk is
    unmounted before its loop device is released."""
    with TwinBoards(tmp_path / "twin", segment_seconds=SEGMENT_S, cameras=cameras,
                    second_camera=second_camera, camera_auth=camera_auth) as tb:  # fmt: skip
        data = tb.data_dir("a")
        if disk is not None:
            data.mkdir(parents=True)
            _sh("mount", disk, str(data))
        try:
            tb.start("a", 150, sections=sections)
            wait_until(lambda: tb.role("a") == "active", 30, "a active")
            tb.start("b", 100)
            wait_until(lambda: ready(tb), 90, "a recording, b holding and in sync")
            yield tb
        except BaseException:
            for h in ("a", "b"):
                print(f"--- {h} ---\n" + tb.log(h)[-8000:])
            raise
        finally:
            if disk is not None:
                tb.rig.kill("a")
                tb.rig.kill("b")
                subprocess.run(["umount", "-l", str(data)], check=False)


def critical(tb: TwinBoards, host: str, alert_id: str) -> bool:
    """The alert is up on host as critical (retention's disk-full is only a warning)."""
    try:
        found = tb.status(host)["alerts"]
    except (OSError, ValueError):
        return False
    return any(a["id"] == alert_id and a["severity"] == "critical" for a in found)


def handed_over(tb: TwinBoards, why: str | tuple[str, ...], audited: bool = True) -> None:
    """b active and reached through the VIP, a standby after a handover whose reason (`why`)
    its log says, and its audit log too where its data disk can still be written."""
    tb.wait_vip("b", 20)
    assert tb.vip_holders() == ["b"]
    wait_until(lambda: tb.role("a") == "standby", 10, "a standby")
    assert tb.status("a")["failover"]["role_reason"] == "handover"
    whys = (why,) if isinstance(why, str) else why
    said = [ln for ln in tb.log("a").splitlines() if "handing over: " in ln]
    assert any(w in ln for ln in said for w in whys), f"a's log does not say why ({why}): {said}"
    if audited:
        reasons = [e.get("reason", "") for e in audit(tb, "a") if e["event"] == "handover"]
        assert any(w in r for r in reasons for w in whys), f"a's audit log lacks why: {reasons}"


def logged_at(tb: TwinBoards, host: str, text: str) -> datetime:
    """When host first logged a line containing text."""
    line = next(ln for ln in tb.log(host).splitlines() if text in ln)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


# --- the data disk ------------------------------------------------------------------------------


@pytest.mark.long  # test_data_disk_turned_read_only_by_the_kernel_hands_over: the field's way
def test_data_disk_remounted_read_only_hands_over(tmp_path, small_disk):
    with pair(tmp_path, disk=small_disk) as tb:
        data = tb.data_dir("a")
        first = first_frames(tb)
        # The recorder holds files open for writing, so the kernel refuses a plain read-only
        # remount (EBUSY). A read-only mount of the disk over the data directory, in a's own
        # mount namespace, is what a then sees: its disk on its mount point, read-only.
        pid = tb.pid("a")
        assert pid is not None
        _sh("nsenter", "-t", str(pid), "-m", "mount", "--bind", "-o", "ro", str(data), str(data))
        wait_until(lambda: critical(tb, "a", "disk-read-only"), 5, "a's disk-read-only alert")
        handed_over(tb, "turned read-only")
        assert "disk-failed" in tb.status("a")["failover"]["health"]
        assert tb.status("a")["writes_held"]
        all_kept(tb, "b", first)


def test_data_disk_turned_read_only_by_the_kernel_hands_over(tmp_path, small_disk):
    with pair(tmp_path, disk=small_disk) as tb:
        first = first_frames(tb)
        # What ext4 (errors=remount-ro) does after a write fails on the device.
        Path(f"/sys/fs/ext4/{Path(small_disk).name}/trigger_fs_error").write_text("1")
        wait_until(lambda: critical(tb, "a", "disk-read-only"), 5, "a's disk-read-only alert")
        # The failed write can stop the camera, or hold its writes, before the disk poll (1 s)
        # sees the read-only superblock: any of these reasons hands over.
        handed_over(tb, ("turned read-only", "cameras live", "Read-only file system"),
                    audited=False)  # fmt: skip
        all_kept(tb, "b", first)


def segment_just_began(tb: TwinBoards) -> None:
    """Wait until a committed a segment of cam1 less than half a GOP ago: the new segment's
    first fragment is still in memory, written when the next keyframe comes."""
    assert tb.camera is not None
    last = newest_frame(tb, "a", "cam1")

    def fresh() -> bool:
        nonlocal last
        now = newest_frame(tb, "a", "cam1")
        grew, last = now > last, now
        return grew and tb.camera.clock("cam1") - now < FPS // 2

    wait_until(fresh, 3 * SEGMENT_S + 5, "a fresh segment on a", every=0.02)


def test_data_disk_full_at_a_segment_end_hands_over(tmp_path, small_disk):
    with pair(tmp_path, disk=small_disk) as tb:
        first = first_frames(tb)
        # Between the segment's last two keyframes: committing it is the write that fails.
        mid_segment(tb, "a")
        fill(tb.data_dir("a") / "ballast")
        wait_until(lambda: critical(tb, "a", "disk-full"), 5, "a's critical disk-full")
        # The audit log lives on the full disk too: the log says it.
        handed_over(tb, "the data disk cannot be written", audited=False)
        assert "alert raised: disk-full (critical)" in tb.log("a")
        assert "disk-full" in tb.status("a")["failover"]["health"]
        all_kept(tb, "b", first)


def test_data_disk_full_mid_segment_hands_over(tmp_path, small_disk):
    with pair(tmp_path, disk=small_disk) as tb:
        first = first_frames(tb)
        # Right after a segment began (retention looked at the free space for it), before its
        # first fragment is written: that write is the one that fails.
        segment_just_began(tb)
        fill(tb.data_dir("a") / "ballast")
        wait_until(lambda: critical(tb, "a", "disk-full"), 5, "a's critical disk-full")
        handed_over(tb, "the data disk cannot be written", audited=False)
        all_kept(tb, "b", first)


# --- the UPS ------------------------------------------------------------------------------------


def test_on_battery_hands_over_after_the_delay(tmp_path, ups):
    with pair(tmp_path, sections=ups_section(ups, handover_after_seconds=1.0)) as tb:
        first = first_frames(tb)
        ups.mains_fail()
        handed_over(tb, "on battery; the peer is on mains")
        on_battery = logged_at(tb, "a", "alert raised: ups-on-battery")
        waited = (logged_at(tb, "a", "handing over: ") - on_battery).total_seconds()
        assert 0.95 <= waited < 3, f"handed over {waited:.2f} s after going on battery"
        all_kept(tb, "b", first)


def test_battery_low_hands_over_commits_and_shuts_down(tmp_path, ups):
    section = ups_section(ups, shutdown_command="")
    with pair(tmp_path, sections=section) as tb:
        first = first_frames(tb)
        ups.mains_fail()
        ups.low_battery()
        tb.wait_vip("b", 20)
        wait_until(lambda: tb.pid("a") is None, 30, "a's firmware stopping by itself")
        log = tb.log("a")
        # A low battery counts after two readings 2 s apart, so the on-battery rule may hand
        # over first; either way before the shutdown.
        assert re.search(r"handing over: (UPS battery low|on battery)", log), log[-3000:]
        assert "role active -> standby (handover)" in log
        assert "shutting down: UPS battery low" in log and "stopped" in log
        events = [e["event"] for e in audit(tb, "a")]
        assert events.index("handover") < events.index("shutdown")
        # a committed the segment the handover cut short, then went off: b continued after
        # the segment before it, and a removes its spare copy once it is back (on mains).
        ups.low_battery(False)
        ups.mains_back()
        tb.start("a", 150, sections=section)
        wait_until(lambda: tb.role("a") == "standby", 30, "a back as standby")
        all_kept(tb, "b", first, seconds=2)


# --- cameras ------------------------------------------------------------------------------------


def cam2_port(tb: TwinBoards) -> int:
    """The port of the simulator serving cam2 alone."""
    assert tb.camera2 is not None
    port = urlsplit(tb.camera2.url("cam2")).port
    assert port is not None
    return port


def test_one_camera_cut_off_from_the_active_board_alone_hands_over(tmp_path):
    with pair(tmp_path, cameras=2, second_camera=("cam2",)) as tb:
        port = cam2_port(tb)
        first = first_frames(tb)
        tb.rig.block("a", "lan", port, True, proto="tcp")
        handed_over(tb, "b has 2 cameras live, this board 1")
        all_kept(tb, "b", first)


def test_one_camera_cut_off_from_both_boards_moves_nothing(tmp_path):
    with pair(tmp_path, cameras=2, second_camera=("cam2",)) as tb:
        port = cam2_port(tb)
        # b first: for a moment b has fewer cameras live, never more.
        for host in ("b", "a"):
            tb.rig.block(host, "lan", port, True, proto="tcp")
        for host in ("b", "a"):
            wait_until(lambda h=host: "recorder-unhealthy" in tb.status(h)["failover"]["health"],
                       20, f"{host} has lost cam2")  # fmt: skip
        # Longer than camera_confirm_seconds (1 s) with one camera live on each board.
        holds(lambda: tb.vip_holders() == ["a"] and tb.role("a") == "active", 4,
              "a keeps the pair")  # fmt: skip
        assert tb.via_vip()["board"] == "a"
        assert "handing over" not in tb.log("a")


# --- the recorder -------------------------------------------------------------------------------


def test_crash_looping_recorder_hands_over(tmp_path):
    with pair(tmp_path) as tb:
        first = first_frames(tb)
        killed: list[int] = []

        def kill_workers() -> bool:
            """SIGKILL every recorder worker of a that is up; done once b took over."""
            for pid in tb.recorder_pids("a"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            return tb.role("b") == "active"

        wait_until(kill_workers, 20, "b taking over from a crash-looping recorder", every=0.05)
        assert killed
        handed_over(tb, "cameras live")
        assert "worker for cam1 exited (code -9); restarting it" in tb.log("a")
        all_kept(tb, "b", first)
