"""`nvr hw` as an installer runs it: real process, real pty UPS, real disks and NICs."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from conftest import NVR, ROOT

from hal.sim.ups_emulator import ApcEmulator, MegatecEmulator


def hw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NVR, "hw", *args, "--config", "/nonexistent.toml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize("emu_cls,protocol", [(MegatecEmulator, "megatec"), (ApcEmulator, "apc")])
def test_hw_ups_reads_a_unit_that_is_not_configured(emu_cls, protocol):
    with emu_cls() as emu:
        emu.set(battery_voltage=26.5, load_percent=42, input_voltage=231.0)
        emu.mains_fail()
        done = hw("ups", "--port", emu.port, "--protocol", protocol, "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    for key in ("on_battery", "low_battery", "battery_charge_percent", "battery_voltage",
                "load_percent", "input_voltage"):  # fmt: skip
        assert key in r
    assert r["on_battery"] is True and r["low_battery"] is False
    assert r["battery_voltage"] == pytest.approx(26.5, abs=0.1)
    assert r["load_percent"] == pytest.approx(42, abs=1)


def test_hw_ups_that_does_not_answer_fails_clearly_within_seconds():
    with MegatecEmulator() as emu:
        emu.mute()
        t0 = time.monotonic()
        done = hw("ups", "--port", emu.port, "--protocol", "megatec")
        took = time.monotonic() - t0
    assert done.returncode == 1 and "UPS" in done.stderr and done.stdout == ""
    assert took < 15, f"took {took:.1f} s"


def test_hw_without_a_configured_device_says_so():
    done = hw("ups")
    assert done.returncode == 1 and "no UPS configured" in done.stderr


def test_hw_disks_and_nics_report_this_machine():
    disks = hw("disks", "--json")
    assert disks.returncode == 0, disks.stderr
    d = json.loads(disks.stdout)
    assert d["mount"]["total_bytes"] > 0 and d["devices"]
    nics = hw("nics", "--json")
    assert nics.returncode == 0 and "lan" in json.loads(nics.stdout)
