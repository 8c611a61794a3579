"""The namespace rig as the drill suite sees it: hil/env/netns.yaml loaded by labgrid, the pair
put into a_active by PairStrategy, and each fault driver checked to do what its protocol says,
seen from the boards' own status through BoardProtocol.

The tests share one target (module scope) and run in file order, each leaving the pair as the
next one expects; the rig is torn down whatever happens, and its namespaces, loop devices and
processes must be gone afterwards.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import labgrid
import pytest
from conftest import ROOT, holds, wait_until
from labgrid import Target
from labgrid.protocol import PowerProtocol

from hil.lab.protocols import (
    BoardProtocol,
    CableProtocol,
    CameraProtocol,
    ClientProtocol,
    DiskFaultProtocol,
    HeartbeatProtocol,
    Link,
    PartitionProtocol,
    UpsProtocol,
)

ENV = ROOT / "hil" / "env" / "netns.yaml"
STATUS = "/api/v1/status"


pytestmark = pytest.mark.hil  # bash hil/drills.sh --checks; the drills use these drivers


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    """The pair target; afterwards none of the rig's namespaces or loop devices is left."""
    env = labgrid.Environment(str(ENV))
    tgt = env.get_target("pair")
    assert tgt is not None
    rig = tgt.get_driver("NetnsRigDriver")  # brings the rig up
    prefix = rig.tb.rig.prefix
    images = [str(rig.workdir / f"disk-{h}.img") for h in ("a", "b")]
    started = time.monotonic()
    try:
        yield tgt
    finally:
        env.cleanup()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert prefix not in left, left
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        assert not any(img in loops for img in images), loops
        print(f"rig up for {time.monotonic() - started:.1f} s")


def status(target: Target, board: str) -> dict:
    return json.loads(target.get_driver(BoardProtocol, name=board).api(STATUS, timeout=1.0))


def alerts(target: Target, board: str) -> set[str]:
    return {a["id"] for a in status(target, board)["alerts"]}


def path_age(target: Target, board: str, path: str) -> float:
    """Seconds since `board` last heard its peer on `path` (inf: never)."""
    return status(target, board)["peer"]["paths"].get(path, float("inf"))


def vip_board(target: Target, timeout: float = 0.3) -> str:
    return json.loads(target.get_driver(ClientProtocol).vip(STATUS, timeout))["board"]


def test_strategy_reaches_a_active(target: Target) -> None:
    """The strategy boots the pair from nothing and leaves a active, reached on the VIP."""
    strategy = target.get_strategy()
    strategy.transition("a_active")
    assert vip_board(target) == "a"
    a, b = status(target, "a"), status(target, "b")
    assert (a["role"], b["role"]) == ("active", "standby")
    assert b["mirror"]["synced"] and all(c["holding"] for c in b["cameras"])
    assert b["mirror"]["fetched_segments"] > 0
    print("paired:", strategy.pair_view())
    assert target.get_driver(HeartbeatProtocol, name="a").has_serial_crosslink()
    assert path_age(target, "b", "serial") < 0.5  # the socat pair carries adverts
    assert target.get_driver(BoardProtocol, name="a").audit_log(), "a's audit log is empty"


def test_heartbeat_and_cable_silence_one_path_each(target: Target) -> None:
    """Blocking a's LAN adverts silences the LAN path alone; pulling b's sync cable silences
    the sync path and b sees its carrier gone. Neither moves the pair."""
    hb = target.get_driver(HeartbeatProtocol, name="a")
    hb.block_adverts(Link.LAN, True)
    try:
        wait_until(lambda: path_age(target, "b", "lan") > 1.0, 5, "b no longer hearing a on LAN")
        assert path_age(target, "b", "sync") < 0.5
    finally:
        hb.block_adverts(Link.LAN, False)
    wait_until(lambda: path_age(target, "b", "lan") < 0.5, 5, "b hearing a on the LAN again")
    cable = target.get_driver(CableProtocol, name="b")
    cable.cable(Link.SYNC, False)
    try:
        wait_until(lambda: not status(target, "b")["failover"]["sync_carrier"], 5,
                   "b seeing its sync carrier gone")  # fmt: skip
        assert path_age(target, "b", "lan") < 0.5
    finally:
        cable.cable(Link.SYNC, True)
    wait_until(lambda: path_age(target, "b", "sync") < 0.5, 5, "b hearing a on sync again")
    assert vip_board(target) == "a"


def test_ups_mains_fail_on_the_standby_raises_its_alert(target: Target) -> None:
    """The emulator behind b's [ups] port is the one the driver steers."""
    ups = target.get_driver(UpsProtocol, name="b")
    ups.mains(False)
    try:
        wait_until(lambda: "ups-on-battery" in alerts(target, "b"), 5, "b's on-battery alert")
        assert "ups-on-battery" not in alerts(target, "a")
    finally:
        ups.mains(True)
    wait_until(lambda: "ups-on-battery" not in alerts(target, "b"), 5, "b's alert clearing")


def test_partition_makes_both_active_and_healing_leaves_one(target: Target) -> None:
    """No path at all between the boards (LAN adverts, sync cable, serial cable): both claim
    the pair; healed, exactly one stays active."""
    part = target.get_driver(PartitionProtocol)
    part.partition(True)
    try:
        wait_until(lambda: status(target, "b")["role"] == "active", 10, "b active in the split")
        # Nothing at all from a, also not on the serial cable.
        wait_until(lambda: status(target, "b")["peer"]["heard_seconds_ago"] > 1.0, 5,
                   "b hearing nothing from a")  # fmt: skip
        assert status(target, "a")["role"] == "active"
    finally:
        part.partition(False)
    wait_until(lambda: sorted(status(target, h)["role"] for h in ("a", "b"))
               == ["active", "standby"], 15, "exactly one active after healing")  # fmt: skip
    wait_until(lambda: path_age(target, "a", "serial") < 0.5, 10, "the serial cable back")


def test_power_cut_of_a_moves_the_vip_to_b(target: Target) -> None:
    """From a_active again (a planned handover if the split left b active), a's power cut
    brings clients to b on the VIP."""
    before = {h: status(target, h)["role"] for h in ("a", "b")}
    print("roles before a_active:", before)
    target.get_strategy().transition("a_active")
    assert vip_board(target) == "a"
    if before["b"] == "active":
        assert status(target, "a")["failover"]["role_reason"] == "handover"
    target.get_driver(PowerProtocol, name="a").off()
    wait_until(lambda: vip_board(target) == "b", 10, "the client reaching b on the VIP")
    with pytest.raises(OSError):
        target.get_driver(BoardProtocol, name="a").api(STATUS, timeout=0.5)


def test_camera_cut_off_from_b_stops_its_recording(target: Target) -> None:
    """b alone: cut off from the camera it stops recording; back, it records again, and the
    camera's own clock kept counting meanwhile."""
    cam = target.get_driver(CameraProtocol)
    assert cam.cameras() == ["cam1"]
    before = cam.frame_clock("cam1")
    wait_until(lambda: status(target, "b")["cameras"][0]["recording"], 10, "b recording")
    cam.cut_off("b", True)
    try:
        wait_until(lambda: not status(target, "b")["cameras"][0]["recording"], 20,
                   "b's camera no longer recording")  # fmt: skip
    finally:
        cam.cut_off("b", False)
    wait_until(lambda: status(target, "b")["cameras"][0]["recording"], 20, "b recording again")
    assert cam.frame_clock("cam1") > before


def test_disk_fill_and_pull_on_b(target: Target) -> None:
    """Filled, b's disk raises disk-full; healed, the space is back; pulled, b says its disk
    is missing; healed, it is back at b's mount point."""
    disk = target.get_driver(DiskFaultProtocol, name="b")
    free = status(target, "b")["disk"]["free_bytes"]
    disk.fill()
    try:
        wait_until(lambda: "disk-full" in alerts(target, "b"), 10, "b's disk-full alert")
    finally:
        disk.heal()
    wait_until(lambda: status(target, "b")["disk"]["free_bytes"] > free // 2, 10,
               "b's disk free again")  # fmt: skip
    disk.pull()
    wait_until(lambda: "disk-missing" in alerts(target, "b"), 10, "b's disk-missing alert")
    disk.heal()
    wait_until(lambda: "disk-missing" not in alerts(target, "b"), 10, "b's disk back")
    holds(lambda: status(target, "b")["role"] == "active", 0.5, "b still active")
