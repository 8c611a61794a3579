"""The QEMU rig as the drill suite sees it: hil/env/qemu.yaml loaded by labgrid.

Without QEMU (default suite): the environment loads and every driver binds, nothing is
activated (no VM, no namespace). With QEMU (marked `image`, deselected by tests/run.sh; about
ten minutes under TCG): two boards booted from the built image and set up on their consoles,
put into a_active by PairStrategy; a power cut of a moves the floating IP to b; then the other
fault drivers, each checked from the boards' own status. The QEMU tests share one target
(module scope) and run in file order, each leaving the pair as the next expects; the rig is
torn down whatever happens and its namespace must be gone afterwards.

    .venv/bin/pytest -m image tests/test_lab_qemu.py       # as root, image/out/qemu-x86_64 built
    NVR_QEMU_IMAGE_OUT=/path/to/out .venv/bin/pytest ...   # another build's directory
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import labgrid
import pytest
from conftest import ROOT, wait_until
from labgrid import Target
from labgrid.binding import BindingState
from labgrid.protocol import ConsoleProtocol, PowerProtocol

from hil.lab.protocols import (
    BoardProtocol,
    CableProtocol,
    CameraProtocol,
    ClientProtocol,
    ClockProtocol,
    HangProtocol,
    HeartbeatProtocol,
    Link,
    PartitionProtocol,
    UpdateProtocol,
)

ENV = ROOT / "hil" / "env" / "qemu.yaml"
IMAGE_OUT = Path(os.environ.get("NVR_QEMU_IMAGE_OUT", ROOT / "image" / "out" / "qemu-x86_64"))
"""The built image's directory (disk.img, build.json, maybe keys-dev); the yaml's default is
image/out/qemu-x86_64 (the qemu-x86_64 board's build), this variable points the test at another
build."""
IMAGE = IMAGE_OUT / "disk.img"
STATUS = "/api/v1/status"
PER_BOARD = (PowerProtocol, ConsoleProtocol, BoardProtocol, CableProtocol, HeartbeatProtocol,
             ClockProtocol, HangProtocol, UpdateProtocol)  # fmt: skip
SINGLE = (ClientProtocol, CameraProtocol, PartitionProtocol)


def test_environment_loads_and_every_driver_binds_without_activating() -> None:
    """The yaml names classes that exist and bindings that resolve (a typo fails here, not
    minutes into a QEMU run), and loading it starts nothing."""
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    env = labgrid.Environment(str(ENV))
    try:
        target = env.get_target("pair")
        assert target is not None
        for proto in PER_BOARD:
            for board in ("a", "b"):
                drv = target.get_driver(proto, name=board, activate=False)
                assert drv.state is BindingState.bound, drv
                assert type(drv).__name__.startswith("Qemu"), drv
        for proto in SINGLE:
            assert target.get_driver(proto, activate=False).state is BindingState.bound
        strategy = target.get_strategy()
        assert strategy.power_a.name == "a" and strategy.power_b.name == "b"
        assert strategy.board_a.name == "a" and strategy.board_b.name == "b"
        assert all(d.state is not BindingState.active for d in target.drivers)
        rig = target.get_driver("QemuRigDriver", activate=False)
        assert rig.rig is None  # nothing brought up
        assert rig.pair.image == "image/out/qemu-x86_64/disk.img"
        assert rig.pair.board == "qemu-x86_64"
    finally:
        env.cleanup()
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert after == before


# -- on QEMU ---------------------------------------------------------------------------------
QEMU_MARKS = (
    pytest.mark.image,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None or not IMAGE.exists() or os.geteuid() != 0,
        reason=f"needs root, QEMU (bash image/build.sh tools) and a built {IMAGE}",
    ),
)


def on_qemu(test: Callable[..., None]) -> Callable[..., None]:
    """pytest.mark.image (deselected from the default suite), a long timeout, and a skip
    where QEMU, root or the built image is missing."""
    for mark in QEMU_MARKS:
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    """The pair target, its rig up (both boards set up and paired); afterwards the rig's
    namespace is gone."""
    env = labgrid.Environment(str(ENV))
    tgt = env.get_target("pair")
    assert tgt is not None
    rigdrv = tgt.get_driver("QemuRigDriver", activate=False)
    pair = rigdrv.pair
    # A build of its own (--out) keeps its keys; the default builds share image/out/keys-dev.
    keys = next(k for k in (IMAGE_OUT / "keys-dev", IMAGE_OUT.parent / "keys-dev") if k.is_dir())
    pair.image, pair.keys = str(IMAGE), str(keys)
    print(f"image: {(IMAGE_OUT / 'build.json').read_text()}")
    ns = None
    started = time.monotonic()
    try:
        tgt.activate(rigdrv)
        ns = rigdrv.rig.net.ns
        print(f"rig up in {time.monotonic() - started:.1f} s: {rigdrv.rig.figures}")
        yield tgt
    finally:
        env.cleanup()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert ns is None or ns not in left, left
        print(f"rig used for {time.monotonic() - started:.1f} s")


def status(target: Target, board: str, timeout: float = 2.0) -> dict:
    return json.loads(target.get_driver(BoardProtocol, name=board).api(STATUS, timeout=timeout))


def alerts(target: Target, board: str) -> set[str]:
    return {a["id"] for a in status(target, board)["alerts"]}


def vip_board(target: Target, timeout: float = 0.5) -> str | None:
    try:
        return json.loads(target.get_driver(ClientProtocol).vip(STATUS, timeout))["board"]
    except (OSError, ValueError, KeyError):
        return None


@on_qemu
def test_strategy_reaches_a_active(target: Target) -> None:
    """Both boards set up on their consoles are paired; the strategy leaves a active and
    the client reaching a on the floating IP."""
    t0 = time.monotonic()
    target.get_strategy().transition("a_active")
    print(f"a_active after {time.monotonic() - t0:.1f} s")
    assert vip_board(target) == "a"
    assert status(target, "a")["role"] == "active"
    assert status(target, "b")["role"] == "standby"


@on_qemu
def test_console_is_a_labgrid_console(target: Target) -> None:
    """labgrid's ConsoleProtocol reads and types on the board's serial console."""
    console = target.get_driver(ConsoleProtocol, name="b")
    console.sendline("release")
    index, _, match, _ = console.expect(r"VERSION=(\S+)\s", timeout=30)
    assert index == 0 and match.group(1)


@on_qemu
def test_pulled_lan_cable_is_seen_by_the_board_which_still_answers(target: Target) -> None:
    """b's LAN cable pulled: b's NIC loses its carrier (its nic-down-lan alert), and its
    API still answers on the rig's management link; plugged back, the alert clears."""
    cable = target.get_driver(CableProtocol, name="b")
    cable.cable(Link.LAN, False)
    try:
        wait_until(lambda: "nic-down-lan" in alerts(target, "b"), 60, "b's nic-down-lan")
        assert vip_board(target) == "a"
    finally:
        cable.cable(Link.LAN, True)
    wait_until(lambda: "nic-down-lan" not in alerts(target, "b"), 120, "nic-down-lan gone")


@on_qemu
def test_power_cut_of_a_moves_the_vip_to_b(target: Target) -> None:
    """The drill's core: a loses power, the client reaches b on the floating IP and b
    records as the active board."""
    target.get_strategy().transition("a_active")
    target.get_driver(PowerProtocol, name="a").off()
    t_cut = time.monotonic()
    wait_until(lambda: vip_board(target) == "b", 120, "the client reaching b on the VIP")
    print(f"VIP on b {time.monotonic() - t_cut:.1f} s after a's power cut")
    with pytest.raises(OSError):
        status(target, "a", timeout=1.0)
    wait_until(lambda: status(target, "b")["role"] == "active", 60, "b active")


@on_qemu
def test_power_on_brings_a_back_as_standby(target: Target) -> None:
    """PowerProtocol.on boots a's disk again; a answers and joins as standby (no
    preemption), the VIP stays on b."""
    t_on = time.monotonic()
    target.get_driver(PowerProtocol, name="a").on()
    print(f"a answering {time.monotonic() - t_on:.1f} s after power on")
    wait_until(lambda: status(target, "a")["role"] == "standby", 120, "a standby")
    assert vip_board(target) == "b"


@on_qemu
def test_hung_firmware_on_the_active_is_restarted_and_a_takes_over(target: Target) -> None:
    """b's firmware stopped (SIGSTOP): a takes the VIP, systemd's watchdog restarts b's
    firmware, which comes back as standby."""
    target.get_driver(HangProtocol, name="b").hang()
    t_hang = time.monotonic()
    wait_until(lambda: vip_board(target) == "a", 120, "the client reaching a on the VIP")
    print(f"VIP on a {time.monotonic() - t_hang:.1f} s after b hung")
    wait_until(lambda: status(target, "b")["role"] == "standby", 180, "b back as standby")
    print(f"b back {time.monotonic() - t_hang:.1f} s after it hung")


def path_age(target: Target, board: str, path: str) -> float:
    """Seconds since `board` last heard its peer on `path` (inf: never)."""
    return status(target, board)["peer"]["paths"].get(path, float("inf"))


@on_qemu
def test_blocked_lan_adverts_silence_only_that_path(target: Target) -> None:
    """a's adverts dropped at its LAN bridge port: b stops hearing a on the LAN and still
    hears it on sync; unblocked, the LAN path is heard again."""
    hb = target.get_driver(HeartbeatProtocol, name="a")
    assert hb.has_serial_crosslink() is False
    hb.block_adverts(Link.LAN, True)
    try:
        wait_until(lambda: path_age(target, "b", "lan") > 3.0, 60, "b no longer hearing a on LAN")
        assert path_age(target, "b", "sync") < 2.0
    finally:
        hb.block_adverts(Link.LAN, False)
    wait_until(lambda: path_age(target, "b", "lan") < 2.0, 60, "b hearing a on the LAN again")


def cameras_held(target: Target, board: str) -> bool:
    return all(c["holding"] for c in status(target, board)["cameras"])


@on_qemu
def test_camera_cut_off_from_the_standby_only(target: Target) -> None:
    """The camera cut off from b (the standby): b no longer holds it, a still records it and
    keeps the VIP; back, b holds it again."""
    camera = target.get_driver(CameraProtocol)
    assert camera.cameras() == ["cam1"]
    assert camera.frame_clock("cam1") > 0
    camera.cut_off("b", True)
    try:
        wait_until(lambda: not cameras_held(target, "b"), 120, "b no longer holding cam1")
        assert all(c["recording"] for c in status(target, "a")["cameras"])
        assert vip_board(target) == "a"
    finally:
        camera.cut_off("b", False)
    wait_until(lambda: cameras_held(target, "b"), 120, "b holding cam1 again")


@on_qemu
def test_partition_makes_both_active_and_healing_leaves_one(target: Target) -> None:
    """No path between the boards: b hears nothing of a and takes over too (each still
    reaches the camera and the gateway); healed, one of them stands down."""
    part = target.get_driver(PartitionProtocol)
    part.partition(True)
    try:
        wait_until(lambda: status(target, "b")["role"] == "active", 120, "b active alone")
        assert status(target, "a")["role"] == "active"
    finally:
        part.partition(False)

    def one_active() -> bool:
        roles = sorted(status(target, b)["role"] for b in ("a", "b"))
        return roles == ["active", "standby"]

    wait_until(one_active, 180, "one active, one standby after the partition healed")


@on_qemu
def test_strategy_hands_the_pair_back_from_b_to_a(target: Target) -> None:
    """With b active (a planned handover from a first, if a won the healed partition), the
    strategy's a_active asks b for a planned handover: a active and reached on the VIP."""
    if status(target, "a")["role"] == "active":
        target.get_driver(BoardProtocol, name="a").api(
            "/api/v1/pair/handover", method="POST", timeout=5.0
        )
        wait_until(lambda: vip_board(target) == "b", 120, "the client reaching b on the VIP")
    assert status(target, "b")["role"] == "active"
    t0 = time.monotonic()
    target.get_strategy().transition("a_active")
    print(f"handed back to a in {time.monotonic() - t0:.1f} s")
    assert vip_board(target) == "a"


@on_qemu
def test_update_that_never_becomes_healthy_is_rolled_back_on_the_standby(
    target: Target,
) -> None:
    """A bundle whose firmware never starts, installed on b from a stick and booted: b comes
    back on slot A and joins as standby; a stays active throughout."""
    t0 = time.monotonic()
    slot = target.get_driver(UpdateProtocol, name="b").update_and_fail()
    print(f"update and rollback of b in {time.monotonic() - t0:.1f} s")
    assert slot == "A"
    wait_until(lambda: status(target, "b")["role"] == "standby", 180, "b standby again")
    assert vip_board(target) == "a"


@on_qemu
def test_audit_log_is_read_from_the_board(target: Target) -> None:
    """BoardProtocol.audit_log: b's records (its pulled cable's alert among them, raised and
    cleared), oldest first, each with its time and event."""
    records = target.get_driver(BoardProtocol, name="b").audit_log()
    assert records, "b's audit log is empty"
    assert all("time" in r and "event" in r for r in records), records[:3]
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)
    assert any("nic-down-lan" in json.dumps(r) for r in records), records


@on_qemu
def test_clock_step_of_a_board_raises_pair_clock_skew(target: Target) -> None:
    """b's wall clock stepped 30 s ahead on its console: the pair sees the skew (its
    pair-clock-skew alert); stepped back, the alert clears (once the boards prove their
    clocks within 1 s again: slow under TCG). Last, so a skew left behind harms no other
    test."""
    clock = target.get_driver(ClockProtocol, name="b")

    def skewed() -> bool:
        return "pair-clock-skew" in alerts(target, "a") | alerts(target, "b")

    clock.step(30.0)
    try:
        wait_until(skewed, 180, "pair-clock-skew raised")
    finally:
        clock.step(-30.0)
    wait_until(lambda: not skewed(), 300, "pair-clock-skew cleared")
