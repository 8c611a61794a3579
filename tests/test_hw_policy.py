"""The power and storage policies with a jumped clock: every UPS and disk sequence, no devices."""

from __future__ import annotations

from firmware.config import UpsConfig
from firmware.hw.actions import ClearAlert, HandOver, HoldWrites, RaiseAlert, ShutDown
from firmware.hw.power import LOW, ON_BATTERY, REPLACE, UNREACHABLE, PowerPolicy
from firmware.hw.screen import panel_lines
from firmware.hw.storage import (
    MISSING,
    RAID_DEGRADED,
    READ_ONLY,
    SMART_FAILING,
    Expected,
    StoragePolicy,
    StorageView,
    health_alerts,
)
from hal.disks import MountState, RaidState, SmartHealth
from hal.ups import UpsReading

MAINS = UpsReading(on_battery=False, low_battery=False, battery_charge_percent=100.0)
BATTERY = UpsReading(on_battery=True, low_battery=False, battery_charge_percent=80.0,
                     runtime_seconds=1200.0)  # fmt: skip
LOW_FLAG = UpsReading(on_battery=True, low_battery=True, battery_charge_percent=50.0)


def raised(actions) -> set[str]:
    return {a.id for a in actions if isinstance(a, RaiseAlert)}


def cleared(actions) -> set[str]:
    return {a.id for a in actions if isinstance(a, ClearAlert)}


def of(kind, actions) -> list:
    return [a for a in actions if isinstance(a, kind)]


def test_mains_fail_then_back_alerts_hands_over_once_and_clears():
    p = PowerPolicy(UpsConfig(handover_after_seconds=5.0))
    assert ON_BATTERY in cleared(p.update(0.0, MAINS, None, active=True, peer_ready=True))
    first = p.update(10.0, BATTERY, None, active=True, peer_ready=True)
    assert ON_BATTERY in raised(first) and not of(HandOver, first), "a blip rides through"
    later = p.update(15.0, BATTERY, None, active=True, peer_ready=True)
    assert of(HandOver, later) and not of(ShutDown, later)
    assert not of(HandOver, p.update(17.0, BATTERY, None, active=True, peer_ready=True))
    back = p.update(20.0, MAINS, None, active=False, peer_ready=True)
    assert {ON_BATTERY, LOW} <= cleared(back)


def test_on_battery_without_a_ready_peer_keeps_recording_here():
    p = PowerPolicy(UpsConfig(handover_after_seconds=0.0))
    acts = p.update(0.0, BATTERY, None, active=True, peer_ready=False)
    assert ON_BATTERY in raised(acts) and not of(HandOver, acts) and not of(ShutDown, acts)


def test_low_battery_hands_over_and_shuts_down_once():
    p = PowerPolicy(UpsConfig())
    acts = p.update(0.0, LOW_FLAG, None, active=True, peer_ready=True)
    assert LOW in raised(acts)
    assert [type(a) for a in acts if isinstance(a, HandOver | ShutDown)] == [HandOver, ShutDown]
    assert not of(ShutDown, p.update(1.0, LOW_FLAG, None, active=True, peer_ready=True))


def test_low_battery_alone_shuts_down_without_handover():
    p = PowerPolicy(UpsConfig())
    acts = p.update(0.0, LOW_FLAG, None, active=True, peer_ready=False)
    assert of(ShutDown, acts) and not of(HandOver, acts)


def test_thresholds_raise_low_battery_before_the_ups_does():
    p = PowerPolicy(UpsConfig(low_charge_percent=30.0, low_runtime_seconds=120.0))
    by_charge = UpsReading(on_battery=True, low_battery=False, battery_charge_percent=29.0)
    assert of(ShutDown, p.update(0.0, by_charge, None, active=False, peer_ready=False))
    p = PowerPolicy(UpsConfig(low_charge_percent=30.0, low_runtime_seconds=120.0))
    by_runtime = UpsReading(on_battery=True, low_battery=False, runtime_seconds=90.0)
    assert of(ShutDown, p.update(0.0, by_runtime, None, active=False, peer_ready=False))


def test_low_battery_on_mains_is_charging_not_critical():
    p = PowerPolicy(UpsConfig())
    acts = p.update(0.0, UpsReading(on_battery=False, low_battery=True), None, True, True)
    assert not of(ShutDown, acts) and LOW not in raised(acts)


def test_silent_ups_keeps_its_last_state_and_alerts_after_a_while():
    p = PowerPolicy(UpsConfig(unreachable_alert_seconds=10.0, handover_after_seconds=100.0))
    p.update(0.0, BATTERY, None, active=True, peer_ready=True)
    early = p.update(5.0, None, "timeout", active=True, peer_ready=True)
    assert UNREACHABLE not in raised(early) and ON_BATTERY in raised(early)
    assert UNREACHABLE not in raised(p.update(14.0, None, "timeout", True, True))
    assert UNREACHABLE in raised(p.update(15.0, None, "timeout", active=True, peer_ready=True))
    assert UNREACHABLE in cleared(p.update(16.0, BATTERY, None, active=True, peer_ready=True))


def test_replace_battery_warning():
    p = PowerPolicy(UpsConfig())
    old = UpsReading(on_battery=False, low_battery=False, replace_battery=True)
    assert REPLACE in raised(p.update(0.0, old, None, active=True, peer_ready=True))
    assert REPLACE in cleared(p.update(1.0, MAINS, None, active=True, peer_ready=True))


# --- storage --------------------------------------------------------------------------------

EXP = Expected("disk-1", "/data", "/dev/loop3")


def mount(point="/data", device="/dev/loop3", ro=False) -> MountState:
    return MountState("/data/nvr", point, device, "ext4", ro, 10**9, 5 * 10**8)


def test_healthy_disk_does_nothing_but_clear():
    s = StoragePolicy(EXP)
    acts = s.update(StorageView("disk-1", mount()), active=True, peer_ready=True)
    assert not raised(acts) and not of(HoldWrites, acts) and not of(HandOver, acts)


def test_unmounted_disk_holds_writes_and_hands_over_then_resumes():
    s = StoragePolicy(EXP)
    gone = StorageView("disk-1", mount("/", "/dev/root"))  # an old identity file underneath
    acts = s.update(gone, active=True, peer_ready=True)
    assert MISSING in raised(acts)
    assert of(HoldWrites, acts)[0].hold and of(HandOver, acts)
    again = s.update(gone, active=True, peer_ready=True)
    assert not of(HoldWrites, again) and not of(HandOver, again)
    back = s.update(StorageView("disk-1", mount()), active=False, peer_ready=True)
    assert MISSING in cleared(back) and of(HoldWrites, back)[0].hold is False


def test_swapped_disk_is_never_written():
    s = StoragePolicy(EXP)
    acts = s.update(StorageView("disk-2", mount()), active=True, peer_ready=False)
    assert MISSING in raised(acts) and of(HoldWrites, acts) and not of(HandOver, acts)


def test_required_data_disk_that_is_not_mounted():
    s = StoragePolicy(Expected("disk-1", "/", "/dev/root"), require_mount=True)
    acts = s.update(StorageView("disk-1", mount("/", "/dev/root")), active=False, peer_ready=False)
    assert MISSING in raised(acts) and of(HoldWrites, acts)
    s = StoragePolicy(Expected("disk-1", "/data/nvr", "/dev/sdb1"), require_mount=True)
    own = MountState("/data/nvr", "/data/nvr", "/dev/sdb1", "ext4", False, 10**9, 10**8)
    assert not raised(s.update(StorageView("disk-1", own), active=False, peer_ready=False))


def test_vanished_directory_and_read_only_disk():
    s = StoragePolicy(EXP)
    assert MISSING in raised(s.update(StorageView(None, None, "EIO"), True, True))
    s = StoragePolicy(EXP)
    acts = s.update(StorageView("disk-1", mount(ro=True)), active=False, peer_ready=True)
    assert READ_ONLY in raised(acts) and MISSING in cleared(acts) and not of(HandOver, acts)


def test_raid_and_smart_warnings():
    bad = RaidState("md0", "md", "raid1", ["sda1", "sdb1"], ["sdb1"], degraded=True)
    acts = health_alerts([bad], [SmartHealth("/dev/sda", passed=False)])
    assert {RAID_DEGRADED, SMART_FAILING} <= raised(acts)
    assert "sdb1" in next(
        a.text for a in acts if isinstance(a, RaiseAlert) and a.id == RAID_DEGRADED
    )
    fine = [SmartHealth("/dev/sda", passed=True), SmartHealth("/dev/loop0", None)]
    ok = health_alerts([RaidState("md0", "md", "raid1", ["sda1", "sdb1"])], fine)
    assert {RAID_DEGRADED, SMART_FAILING} <= cleared(ok) and not raised(ok)


def test_panel_shows_board_role_vip_cameras_and_top_alert():
    status = {"board": "a", "role": "active", "virtual_ip": "192.0.2.100/24",
              "cameras": [{"recording": True}, {"recording": False}],
              "alerts": [{"id": "ups-on-battery"}]}  # fmt: skip
    four = panel_lines(status, 20, 4)
    assert four == ["a active".ljust(20), "cams 1/2 rec".ljust(20), "192.0.2.100/24".ljust(20),
                    "! ups-on-battery".ljust(20)]  # fmt: skip
    two = panel_lines(status, 16, 2)
    assert len(two) == 2 and all(len(x) == 16 for x in two) and two[1].startswith("! ups-on")
