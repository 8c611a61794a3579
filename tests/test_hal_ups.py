"""One contract for serial UPSes: our drivers against the protocol emulators on a pty, and
both emulators against NUT's own drivers (an independent reading of each protocol)."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import serial

from hal.errors import DeviceIOError, DeviceTimeout, Unavailable
from hal.linux.ups_serial import ApcSmartUps, MegatecUps, open_serial_ups
from hal.sim.ups_emulator import ApcEmulator, MegatecEmulator
from hil.camera.client import free_port
from tests.conftest import wait_until

TIMEOUT = 1.0
EMULATORS = {"megatec": MegatecEmulator, "apc": ApcEmulator}


@dataclass
class Rig:
    protocol: str
    emu: MegatecEmulator | ApcEmulator
    ups: MegatecUps | ApcSmartUps


@pytest.fixture(params=["megatec", "apc"])
def rig(request):
    emu = EMULATORS[request.param]().start()
    try:
        ups = open_serial_ups(emu.port, request.param, timeout=TIMEOUT)
        try:
            yield Rig(request.param, emu, ups)
        finally:
            ups.close()
    finally:
        emu.stop()


def test_online_reading(rig):
    r = rig.ups.read()
    s = rig.emu.snapshot()
    assert (r.on_battery, r.low_battery, r.replace_battery) == (False, False, False)
    assert r.driver == rig.protocol
    assert (r.input_voltage, r.output_voltage) == (230.0, 230.0)
    assert r.battery_voltage == pytest.approx(s.battery_voltage)
    assert r.load_percent == 25.0
    if rig.protocol == "megatec":
        assert r.model == "EMU LI-1000"
        assert (r.battery_charge_percent, r.runtime_seconds) == (None, None)
        assert rig.ups.ratings().battery_voltage == 24.0
    else:
        assert r.model == "Smart-UPS 1500"
        assert (r.battery_charge_percent, r.runtime_seconds) == (100.0, 2520.0)


def test_driver_sends_the_protocol_commands(rig):
    rig.ups.read()
    first = list(rig.emu.commands)
    rig.ups.read()
    second = rig.emu.commands[len(first) :]
    if rig.protocol == "megatec":
        assert first == ["Q1", "F", "I"]
        assert second == ["Q1"]  # identity and ratings are static
    else:
        assert first == ["Y", "Q", "j", "\x01", "f", "B", "P", "L", "O"]
        assert second == ["Q", "j", "f", "B", "P", "L", "O"]  # stays in smart mode


def test_values_are_scaled(rig):
    rig.emu.set(
        battery_voltage=26.4,
        load_percent=63,
        input_voltage=221.5,
        output_voltage=229.8,
        charge_percent=57,
        runtime_seconds=754,
    )
    r = rig.ups.read()
    assert r.battery_voltage == pytest.approx(26.4)
    assert r.load_percent == 63.0
    assert (r.input_voltage, r.output_voltage) == (221.5, 229.8)
    if rig.protocol == "apc":
        assert r.battery_charge_percent == 57.0
        assert r.runtime_seconds == 720.0  # the unit counts whole minutes
    else:
        assert (r.battery_charge_percent, r.runtime_seconds) == (None, None)


def test_mains_fail_then_back(rig):
    assert rig.ups.read().on_battery is False
    rig.emu.mains_fail()
    r = rig.ups.read()
    assert r.on_battery is True and r.low_battery is False
    assert r.input_voltage == 0.0 and r.output_voltage == 230.0
    rig.emu.mains_back()
    r = rig.ups.read()
    assert r.on_battery is False and r.input_voltage == 230.0


def test_low_battery_sets_and_clears(rig):
    rig.emu.mains_fail()
    rig.emu.low_battery()
    r = rig.ups.read()
    assert (r.on_battery, r.low_battery) == (True, True)
    rig.emu.low_battery(False)
    rig.emu.mains_back()
    r = rig.ups.read()
    assert (r.on_battery, r.low_battery) == (False, False)


def test_replace_battery(rig):
    rig.emu.replace_battery()
    r = rig.ups.read()
    # Megatec's Q1 has no such bit: the driver must not invent one.
    assert r.replace_battery is (rig.protocol == "apc")
    rig.emu.replace_battery(False)
    assert rig.ups.read().replace_battery is False


def test_silent_unit_times_out_within_the_deadline(rig):
    rig.emu.mute()
    started = time.monotonic()
    with pytest.raises(DeviceTimeout, match="no answer"):
        rig.ups.read()
    elapsed = time.monotonic() - started
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 1.0
    assert rig.emu.commands, "the driver asked something"
    rig.emu.mute(False)
    assert rig.ups.read().input_voltage == 230.0  # the unit is back, so is the driver


def test_unit_going_silent_mid_session_costs_one_timeout(rig):
    rig.ups.read()
    rig.emu.mute()
    started = time.monotonic()
    with pytest.raises(DeviceTimeout):
        rig.ups.read()
    assert time.monotonic() - started < TIMEOUT + 1.0


def test_garbled_answer_is_an_io_error_with_the_raw_text(rig):
    rig.emu.garble()
    started = time.monotonic()
    with pytest.raises(DeviceIOError) as info:
        rig.ups.read()
    assert rig.emu.garbage[:5].decode() in str(info.value)
    assert time.monotonic() - started < TIMEOUT + 1.0
    assert len(rig.emu.commands) == 2  # the first command, then its one retry


def test_one_garbled_line_is_retried(rig):
    rig.emu.garble(times=1)
    r = rig.ups.read()
    assert r.input_voltage == 230.0
    first = rig.emu.commands[0]
    assert rig.emu.commands[:2] == [first, first]


def test_port_vanishing_is_unavailable(rig):
    """A USB serial adapter pulled out: its device node goes away under an open driver."""
    rig.ups.read()
    rig.emu.stop()
    with pytest.raises(Unavailable):
        rig.ups.read()
    with pytest.raises(Unavailable):
        rig.ups.read()  # the retry to open it again says the same


@pytest.mark.parametrize("protocol", sorted(EMULATORS))
def test_missing_port_is_unavailable(protocol, tmp_path):
    with pytest.raises(Unavailable):
        open_serial_ups(str(tmp_path / "ttyUSB9"), protocol)
    not_a_tty = tmp_path / "file"
    not_a_tty.write_text("")
    with pytest.raises(Unavailable):
        open_serial_ups(str(not_a_tty), protocol)


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="megatec"):
        open_serial_ups("/dev/ttyS0", "upsilon")


def test_megatec_per_cell_battery_voltage_is_scaled_by_the_rating():
    """Some units report volts per 2 V cell ("2.27"); F says the pack is 24 V (12 cells)."""
    with MegatecEmulator() as emu:
        emu.set(battery_voltage=2.27)
        ups = MegatecUps(emu.port, timeout=TIMEOUT)
        try:
            assert ups.read().battery_voltage == pytest.approx(27.24)
        finally:
            ups.close()


def test_apc_unsolicited_characters_are_skipped_and_kept():
    with ApcEmulator() as emu:
        ups = ApcSmartUps(emu.port, timeout=TIMEOUT)
        try:
            ups.read()
            emu.mains_fail()  # '!' arrives while the driver is idle
            emu.low_battery()  # '%'
            emu.inject(b"|#")  # and these in the middle of the next answer
            r = ups.read()
            assert (r.on_battery, r.low_battery) == (True, True)
            assert r.input_voltage == 0.0 and r.battery_charge_percent == 100.0
            assert list(ups.events) == [
                "on_battery",
                "low_battery",
                "eeprom_changed",
                "replace_battery",
            ]
            emu.mains_back()
            emu.low_battery(False)
            assert ups.read().on_battery is False
            assert list(ups.events)[-2:] == ["on_line", "low_battery_cleared"]
        finally:
            ups.close()


def test_apc_emulator_is_dumb_until_smart_mode():
    with ApcEmulator() as emu, serial.Serial(emu.port, 2400, timeout=0.3) as port:
        port.write(b"Q")
        assert port.read(16) == b""
        port.write(b"Y")
        assert port.read_until(b"\n") == b"SM\r\n"
        port.write(b"Q")
        assert port.read_until(b"\n") == b"08\r\n"


def test_megatec_emulator_echoes_unknown_commands():
    with MegatecEmulator() as emu, serial.Serial(emu.port, 2400, timeout=1) as port:
        port.write(b"QGS\r")  # a Voltronic query this unit does not know
        assert port.read_until(b"\r") == b"QGS\r"
        port.write(b"Q1\r")
        assert port.read_until(b"\r") == b"(230.0 230.0 230.0 025 50.0 27.2 30.0 00001001\r"


# -- NUT's own drivers against the emulators -------------------------------------------------
NUT_UPSD = Path("/lib/nut/upsd")
"""The daemon itself: Debian's /usr/sbin/upsd wrapper refuses to run unless /etc/nut/nut.conf
sets MODE, and a test must not depend on (or change) the host's NUT setup."""
NUT_DRIVERS = {
    # nutdrv_qx polls the status bits every pollinterval but measurements every pollfreq.
    "megatec": ("nutdrv_qx", "  protocol = megatec\n  pollfreq = 1\n"),
    "apc": ("apcsmart", ""),
}


class Nut:
    """A NUT driver and upsd with a throwaway configuration, upsc to read what they see."""

    def __init__(self, base: Path, driver: str, port: str, options: str = "") -> None:
        self.driver = driver
        self.dir = base / "nut"
        self.dir.mkdir()
        self.dir.chmod(0o700)
        self.listen = free_port()
        self.last: dict[str, str] = {}
        (self.dir / "ups.conf").write_text(
            f"[emu]\n  driver = {driver}\n  port = {port}\n  pollinterval = 1\n{options}"
        )
        (self.dir / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {self.listen}\n")
        (self.dir / "upsd.users").write_text("[monitor]\n  password = unused\n  upsmon primary\n")
        for f in ("ups.conf", "upsd.conf", "upsd.users"):
            (self.dir / f).chmod(0o600)
        self.env = dict(
            os.environ,
            NUT_CONFPATH=str(self.dir),
            NUT_STATEPATH=str(self.dir),
            NUT_ALTPIDPATH=str(self.dir),
        )
        self.procs: list[subprocess.Popen] = []

    def spawn(self, name: str, *argv: str) -> None:
        with open(self.dir / f"{name}.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    argv,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def start(self) -> None:
        self.spawn("driver", f"/lib/nut/{self.driver}", "-a", "emu", "-u", "root", "-F")
        try:
            socket = self.dir / f"{self.driver}-emu"
            wait_until(lambda: self._alive() and socket.exists(), 15, "the driver's socket")
            self.spawn("upsd", str(NUT_UPSD), "-u", "root", "-F")
            wait_until(lambda: self._alive() and self.upsc().get("ups.status"), 15, "upsd")
        except AssertionError as e:
            raise AssertionError(f"{e}\nNUT logs:\n{self.logs()}") from None

    def _alive(self) -> bool:
        dead = [p.args for p in self.procs if p.poll() is not None]
        if dead:
            raise AssertionError(f"NUT process exited: {dead}")
        return True

    def upsc(self) -> dict[str, str]:
        out = subprocess.run(
            ["upsc", f"emu@127.0.0.1:{self.listen}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)

    def wait_for(self, status: str, what: str, **values: float) -> dict[str, str]:
        """Until NUT shows this status and these values (battery_voltage=27.4 stands for
        battery.voltage): status and measurements may arrive in different polls."""
        want = {k.replace("_", "."): v for k, v in values.items()}

        def seen() -> dict[str, str] | None:
            self.last = self.upsc()
            got = {k: float(self.last[k]) for k in want}
            return self.last if self.last["ups.status"] == status and got == want else None

        try:
            return wait_until(seen, 10, f"NUT to report {what}")
        except AssertionError as e:
            raise AssertionError(f"{e}; NUT last said {self.last}") from None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.dir.glob("*.log"))

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait(5)


@pytest.fixture(params=["megatec", "apc"])
def nut_rig(request, tmp_path):
    driver, options = NUT_DRIVERS[request.param]
    if not Path(f"/lib/nut/{driver}").exists():
        pytest.skip(f"NUT's /lib/nut/{driver} is not installed (Debian nut-server)")
    emu = EMULATORS[request.param]().start()
    emu.set(battery_voltage=27.4, input_voltage=229.5, output_voltage=230.1, load_percent=31)
    nut = Nut(tmp_path, driver, emu.port, options)
    try:
        nut.start()
        yield request.param, emu, nut
    finally:
        nut.stop()
        emu.stop()


def test_nut_reads_the_emulator(nut_rig):
    protocol, emu, nut = nut_rig
    v = nut.wait_for("OL", "online", battery_voltage=27.4, input_voltage=229.5, ups_load=31)
    assert float(v["output.voltage"]) == 230.1
    if protocol == "megatec":
        assert (v["device.mfr"], v["device.model"]) == ("EMU", "LI-1000")
        assert float(v["battery.voltage.nominal"]) == 24.0
        assert {"Q1", "F", "I"} <= set(emu.commands)
    else:
        assert v["device.model"] == "Smart-UPS 1500"
        assert float(v["battery.charge"]) == 100.0
        assert {"Y", "Q", "f", "B"} <= set(emu.commands)

    emu.mains_fail()
    nut.wait_for("OB", "on battery", input_voltage=0.0, output_voltage=230.1)

    emu.set(battery_voltage=22.1, load_percent=40, charge_percent=12)
    emu.low_battery()
    v = nut.wait_for("OB LB", "low battery", battery_voltage=22.1, ups_load=40)
    if protocol == "apc":
        assert float(v["battery.charge"]) == 12.0

    emu.low_battery(False)
    emu.mains_back()
    nut.wait_for("OL", "the mains back", input_voltage=229.5)
    if protocol == "apc":
        emu.replace_battery()
        nut.wait_for("OL RB", "replace battery")
