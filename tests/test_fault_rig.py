"""Single faults on the active board in the twin-board rig: each moves the pair to the standby
with the shipped defaults, loses no frame and keeps none twice (by the camera's frame numbers),
and a client on the LAN reaches the standby on the floating IP.

The drills share test_mirror_rig's start (a=150 records, b=100 holds and is in sync) and its
frame check: every frame from the fault on is kept exactly once, all of it on b.
"""

from __future__ import annotations

import os
import signal
from urllib.parse import urlsplit

import pytest
from conftest import holds, wait_until
from test_fault_rig_hw import handed_over
from test_fault_rig_hw import pair as start_pair
from test_mirror_rig import all_kept, first_frames, mid_segment


@pytest.fixture
def pair(tmp_path):
    with start_pair(tmp_path) as tb:
        yield tb


def test_lan_cable_pull_on_the_active_board_fails_over_and_back_in_is_standby(pair):
    tb = pair
    first = first_frames(tb)
    mid_segment(tb, "a")
    tb.rig.cable("a", "lan", False)
    handed_over(tb, "LAN cable out")
    all_kept(tb, "b", first)
    tb.rig.cable("a", "lan", True)
    wait_until(lambda: tb.status("a")["mirror"]["synced"], 60, "a caught up on the mirror")
    # Plugged back: a stays standby (no ping-pong), and advertises the fault until the
    # hold-down has passed.
    holds(lambda: tb.role("a") == "standby" and tb.vip_holders() == ["b"], 4, "no ping-pong")
    wait_until(lambda: "lan-down" not in tb.status("a")["failover"]["health"], 20,
               "the LAN fault cleared after the hold-down")  # fmt: skip


def test_cameras_unreachable_from_the_active_board_alone_fail_over(pair):
    tb = pair
    assert tb.camera is not None
    port = urlsplit(tb.camera.url("cam1")).port
    first = first_frames(tb)
    tb.rig.block("a", "lan", port, True, proto="tcp")
    try:
        handed_over(tb, "cameras live")
        all_kept(tb, "b", first)
        assert tb.status("a")["peer"]["role"] == "active"
    finally:
        tb.rig.block("a", "lan", port, False, proto="tcp")


def test_a_stalled_recorder_on_the_active_board_fails_over(pair):
    tb = pair
    first = first_frames(tb)
    workers = tb.recorder_pids("a")
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        handed_over(tb, "cameras live")
        all_kept(tb, "b", first)
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)


def test_a_fault_on_the_standby_moves_nothing(pair):
    tb = pair
    tb.rig.cable("b", "lan", False)
    wait_until(lambda: "lan-down" in tb.status("b")["failover"]["health"], 10, "b lan-down")
    holds(lambda: tb.vip_holders() == ["a"] and tb.role("b") == "standby", 4,
          "a keeps the pair")  # fmt: skip
    assert tb.via_vip()["board"] == "a"
