"""The power and storage policies with a jumped clock: every UPS and disk sequence, no devices.
What the board does about them (hand over, shut down, hold writes) is the board core's:
tests/test_board_core.py."""

from __future__ import annotations

from firmware.config import UpsConfig
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.core.facts import DiskFault, Power, Storage
from firmware.hw.power import (
    CONFIRM_POLL_SECONDS,
    CONFIRM_SECONDS,
    LOW,
    ON_BATTERY,
    REPLACE,
    UNREACHABLE,
    PowerPolicy,
)
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


def test_mains_fail_then_back_alerts_and_reports_the_state():
    p = PowerPolicy(UpsConfig())
    assert ON_BATTERY in cleared(p.update(0.0, MAINS, None))
    assert p.fact == Power(False, False, p.fact.detail)
    first = p.update(10.0, BATTERY, None)
    assert ON_BATTERY in raised(first) and LOW in cleared(first)
    assert p.fact.on_battery and not p.fact.low
    back = p.update(20.0, MAINS, None)
    assert {ON_BATTERY, LOW} <= cleared(back) and not p.fact.on_battery


def test_low_battery_is_critical_once_it_holds():
    p = PowerPolicy(UpsConfig())
    first = p.update(0.0, LOW_FLAG, None)
    assert ON_BATTERY in raised(first) and LOW not in raised(first) and not p.fact.low
    assert p.confirming and p.poll_after(60.0) == CONFIRM_POLL_SECONDS
    acts = p.update(CONFIRM_SECONDS, LOW_FLAG, None)
    assert {ON_BATTERY, LOW} <= raised(acts)
    assert p.fact.on_battery and p.fact.low and not p.confirming
    assert p.poll_after(2.0) == 2.0


def test_one_low_battery_reading_does_not_shut_the_board_down():
    """A glitch (one reading with on battery and low battery) is not believed, however it
    comes: between mains readings, or twice within a moment."""
    p = PowerPolicy(UpsConfig())
    p.update(0.0, MAINS, None)
    assert LOW not in raised(p.update(2.0, LOW_FLAG, None)) and not p.fact.low
    assert LOW not in raised(p.update(4.0, MAINS, None)) and not p.fact.low
    assert LOW not in raised(p.update(6.0, LOW_FLAG, None)) and not p.fact.low
    assert LOW not in raised(p.update(6.5, LOW_FLAG, None)) and not p.fact.low  # too soon
    assert LOW not in raised(p.update(7.0, BATTERY, None)) and not p.fact.low
    assert LOW not in raised(p.update(9.0, LOW_FLAG, None)) and not p.fact.low
    silent = p.update(20.0, None, "timeout")  # a silent UPS does not confirm it either
    assert LOW not in raised(silent) and not p.fact.low
    assert LOW in raised(p.update(21.0, LOW_FLAG, None)) and p.fact.low


def test_a_confirmed_low_battery_stays_while_the_ups_is_silent():
    p = PowerPolicy(UpsConfig())
    p.update(0.0, LOW_FLAG, None)
    p.update(3.0, LOW_FLAG, None)
    assert LOW in raised(p.update(5.0, None, "timeout")) and p.fact.low


def test_thresholds_raise_low_battery_before_the_ups_does():
    p = PowerPolicy(UpsConfig(low_charge_percent=30.0))
    by_charge = UpsReading(on_battery=True, low_battery=False, battery_charge_percent=25.0)
    p.update(0.0, by_charge, None)
    assert LOW in raised(p.update(CONFIRM_SECONDS, by_charge, None)) and p.fact.low
    p = PowerPolicy(UpsConfig(low_runtime_seconds=300.0))
    by_runtime = UpsReading(on_battery=True, low_battery=False, runtime_seconds=120.0)
    p.update(0.0, by_runtime, None)
    assert LOW in raised(p.update(CONFIRM_SECONDS, by_runtime, None)) and p.fact.low


def test_low_battery_on_mains_is_charging_not_critical():
    p = PowerPolicy(UpsConfig())
    acts = p.update(0.0, UpsReading(on_battery=False, low_battery=True), None)
    assert LOW not in raised(acts) and not p.fact.low and not p.fact.on_battery


def test_silent_ups_keeps_its_last_state_and_alerts_after_a_while():
    p = PowerPolicy(UpsConfig(unreachable_alert_seconds=10.0))
    p.update(0.0, BATTERY, None)
    early = p.update(5.0, None, "timeout")
    assert UNREACHABLE not in raised(early) and ON_BATTERY in raised(early)
    assert p.fact.on_battery
    assert UNREACHABLE in raised(p.update(15.0, None, "timeout"))
    assert UNREACHABLE in cleared(p.update(16.0, BATTERY, None))


def test_replace_battery_warning():
    p = PowerPolicy(UpsConfig())
    old = UpsReading(on_battery=False, low_battery=False, replace_battery=True)
    assert REPLACE in raised(p.update(0.0, old, None))
    assert REPLACE in cleared(p.update(1.0, MAINS, None))


# --- storage --------------------------------------------------------------------------------

EXP = Expected("disk-1", "/data", "/dev/loop3")


def mount(point="/data", device="/dev/loop3", ro=False) -> MountState:
    return MountState("/data/nvr", point, device, "ext4", ro, 10**9, 5 * 10**8)


def test_healthy_disk_does_nothing_but_clear():
    s = StoragePolicy(EXP)
    acts = s.update(StorageView("disk-1", mount()))
    assert not raised(acts) and s.fact == Storage(None) and not s.holding


def test_unmounted_disk_is_a_missing_disk_until_it_is_back():
    s = StoragePolicy(EXP)
    gone = StorageView("disk-1", mount("/", "/dev/root"))  # an old identity file underneath
    assert MISSING in raised(s.update(gone))
    assert s.fact.fault is DiskFault.MISSING and s.holding
    back = s.update(StorageView("disk-1", mount()))
    assert MISSING in cleared(back) and s.fact == Storage(None)


def test_swapped_disk_is_never_written():
    s = StoragePolicy(EXP)
    assert MISSING in raised(s.update(StorageView("disk-2", mount())))
    assert s.fact.fault is DiskFault.MISSING and "disk-2" in s.fact.detail


def test_required_data_disk_that_is_not_mounted():
    s = StoragePolicy(Expected("disk-1", "/", "/dev/root"), require_mount=True)
    assert MISSING in raised(s.update(StorageView("disk-1", mount("/", "/dev/root"))))
    s = StoragePolicy(Expected("disk-1", "/data/nvr", "/dev/sdb1"), require_mount=True)
    own = MountState("/data/nvr", "/data/nvr", "/dev/sdb1", "ext4", False, 10**9, 10**8)
    assert not raised(s.update(StorageView("disk-1", own))) and not s.holding


def test_vanished_directory_and_read_only_disk():
    s = StoragePolicy(EXP)
    assert MISSING in raised(s.update(StorageView(None, None, "EIO")))
    s = StoragePolicy(EXP)
    acts = s.update(StorageView("disk-1", mount(ro=True)))
    assert READ_ONLY in raised(acts) and MISSING in cleared(acts)
    assert s.fact.fault is DiskFault.READ_ONLY


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
