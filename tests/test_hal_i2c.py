"""I2C bus, INA219 and MAX17048: the raw words on the wire and the scalings from REFERENCE.md,
checked against hand-computed values rather than the drivers' own arithmetic."""

from __future__ import annotations

import errno
import glob
import os
from dataclasses import replace
from pathlib import Path

import pytest

from firmware.config import UpsConfig
from firmware.hw.power import PowerPolicy
from hal.errors import DeviceIOError, DeviceTimeout, Unavailable
from hal.i2c_ups import INA219_CONFIG, Ina219Ups, Max17048Gauge
from hal.linux.i2c import bus_path, hal_error, open_bus
from hal.sim.i2c_bus import FakeDevice, FakeI2cBus, FakeIna219, FakeMax17048, Transfer
from hal.ups import UpsReading

INA, GAUGE = 0x42, 0x36


class FixedWords(FakeDevice):
    """Answers word reads with given SMBus words and accepts writes: decodes tested alone."""

    def __init__(self, words: dict[int, int]) -> None:
        super().__init__()
        self.words = words

    def read_word(self, register: int) -> int:
        return self.words[register]

    def write_word(self, register: int, value: int) -> None:
        pass


# --- the bus ------------------------------------------------------------------------------


def _i2c_stub() -> tuple[int, int] | None:
    """(adapter number, chip address) of a loaded i2c-stub, if any."""
    for name in glob.glob("/sys/bus/i2c/devices/i2c-*/name"):
        if Path(name).read_text().strip() == "SMBus stub driver":
            addrs = Path("/sys/module/i2c_stub/parameters/chip_addr").read_text()
            return int(Path(name).parent.name.split("-")[1]), int(addrs.split(",")[0], 0)
    return None


@pytest.fixture(params=["sim", "linux"])
def any_bus(request):
    """(bus, address of a chip whose word registers read back what was written)."""
    if request.param == "sim":
        bus = FakeI2cBus()
        bus.attach(GAUGE, FakeMax17048())
        yield bus, GAUGE, 0x0A  # HIBRT: a plain read/write register
        return
    if not glob.glob("/dev/i2c-*"):
        pytest.skip("no /dev/i2c-* on this machine and no i2c-stub module to make one")
    stub = _i2c_stub()
    if stub is None:
        pytest.skip("no i2c-stub adapter (modprobe i2c-stub chip_addr=0x36)")
    bus = open_bus(stub[0])
    try:
        yield bus, stub[1], 0x0A
    finally:
        bus.close()


def test_bus_contract_word_roundtrip_and_absent_address(any_bus):
    bus, addr, reg = any_bus
    bus.write_word_data(addr, reg, 0x1234)
    assert bus.read_word_data(addr, reg) == 0x1234
    free = next(a for a in range(0x08, 0x78) if a != addr)
    with pytest.raises(OSError) as exc:
        bus.read_byte(free)
    assert isinstance(hal_error(exc.value, "probe"), Unavailable)


def test_fake_bus_logs_wire_order_and_fails_like_i2c_dev():
    bus = FakeI2cBus()
    chip = bus.attach(GAUGE, FakeMax17048())
    chip.set_soc(90.5)
    assert bus.read_word_data(GAUGE, 0x04) == 0x805A  # register 0x5A80, MSB first on the wire
    assert bus.log[-1] == Transfer("read_word", GAUGE, 0x04, 0x805A)
    assert bus.log[-1].wire == b"\x5a\x80"
    with pytest.raises(OSError) as exc:
        bus.read_byte(0x50)
    assert exc.value.errno == errno.ENXIO
    assert bus.log[-1] == Transfer("read_byte", 0x50, None, None, errno.ENXIO)
    bus.fail(GAUGE, errno.EIO)
    with pytest.raises(OSError) as exc:
        bus.read_word_data(GAUGE, 0x04)
    assert exc.value.errno == errno.EIO
    assert bus.read_word_data(GAUGE, 0x04) == 0x805A  # one failure only
    with pytest.raises(ValueError):
        bus.write_i2c_block_data(0x3C, 0x40, [0] * 33)  # smbus2's block limit
    with pytest.raises(ValueError):
        bus.write_word_data(GAUGE, 0x0A, -1)
    bus.close()
    with pytest.raises(OSError):
        bus.read_word_data(GAUGE, 0x04)


def test_open_bus_names_and_missing_adapter():
    assert bus_path(1) == bus_path("1") == "/dev/i2c-1"
    assert bus_path("/dev/i2c-7") == "/dev/i2c-7"
    if os.path.exists("/dev/i2c-99"):
        pytest.skip("a real adapter is at /dev/i2c-99, so it cannot stand for a missing one")
    with pytest.raises(Unavailable, match="/dev/i2c-99"):
        open_bus(99)
    with pytest.raises(Unavailable):
        open_bus("/dev/i2c-99")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ENXIO, Unavailable),
        (errno.EREMOTEIO, Unavailable),
        (errno.ENODEV, Unavailable),
        (errno.ETIMEDOUT, DeviceTimeout),
        (errno.EIO, DeviceIOError),
        (errno.EAGAIN, DeviceIOError),
    ],
)
def test_errno_mapping(code, kind):
    assert type(hal_error(OSError(code, os.strerror(code)), "chip")) is kind


# --- INA219 -------------------------------------------------------------------------------


@pytest.fixture
def ina():
    bus = FakeI2cBus()
    chip = bus.attach(INA, FakeIna219(shunt_ohms=0.1))
    chip.set_bus_voltage(8.2)
    return bus, chip


def test_ina219_open_writes_calibration_then_config(ina):
    bus, chip = ina
    Ina219Ups(bus, INA, shunt_ohms=0.1)
    # 40960000 / 100000 uOhm = 409.6 -> 409, bit 0 void -> 408 = 0x0198, sent 01 98.
    # Config 0x3EEF: 32 V, PGA /8, 12-bit x32 on both, continuous; sent 3E EF.
    assert bus.transfers(INA, "write_word") == [
        Transfer("write_word", INA, 0x05, 0x9801),
        Transfer("write_word", INA, 0x00, 0xEF3E),
    ]
    assert [t.wire for t in bus.transfers(INA, "write_word")] == [b"\x01\x98", b"\x3e\xef"]
    assert (chip.calibration, chip.config) == (0x0198, INA219_CONFIG)
    assert chip.violations == []


def test_ina219_calibration_for_a_10_milliohm_shunt():
    bus = FakeI2cBus()
    bus.attach(INA, FakeIna219(shunt_ohms=0.01))
    ups = Ina219Ups(bus, INA, shunt_ohms=0.01)
    assert ups.calibration == 4096  # 40960000 / 10000
    assert bus.transfers(INA, "write_word")[0] == Transfer("write_word", INA, 0x05, 0x0010)
    assert ups.current_lsb == pytest.approx(0.001)


def test_ina219_decodes_raw_registers():
    # 10 mOhm shunt: calibration 4096, exactly 1 mA/bit.
    words = {
        0x05: 0x0010,  # calibration 0x1000 as it reads back
        0x02: 0x401F,  # 0x1F40: (0x1F40 >> 3) = 1000 x 4 mV = 4.000 V
        0x01: 0x18FC,  # 0xFC18 = -1000 x 10 uV = -10.00 mV
        0x04: 0x18FC,  # -1000 mA
        0x03: 0xC800,  # 0x00C8 = 200 x 20 mW = 4.0 W
    }
    bus = FakeI2cBus()
    bus.attach(INA, FixedWords(words))
    s = Ina219Ups(bus, INA, shunt_ohms=0.01).measure()
    assert s.bus_volts == pytest.approx(4.000)
    assert s.shunt_volts == pytest.approx(-0.010)
    assert s.current_amps == pytest.approx(-1.000)
    assert s.power_watts == pytest.approx(4.0)


def test_ina219_bus_voltage_masks_status_bits(ina):
    bus, _ = ina
    ups = Ina219Ups(bus, INA)
    # 8.2 V = 2050 counts: register 2050 << 3 | CNVR = 0x4012, read as the word 0x1240.
    assert ups.measure().bus_volts == pytest.approx(8.2)
    assert Transfer("read_word", INA, 0x02, 0x1240) in bus.log


def test_ina219_current_through_the_calibration(ina):
    bus, chip = ina
    ups = Ina219Ups(bus, INA)
    chip.set_current(-1.0)  # -100 mV over 0.1 ohm: shunt register -10000
    s = ups.measure()
    assert s.shunt_volts == pytest.approx(-0.1)
    # current register = -10000 x 408 / 4096 = -996; LSB = 0.04096 / (408 x 0.1) A
    assert Transfer("read_word", INA, 0x04, 0x1CFC) in bus.log  # -996 = 0xFC1C
    assert s.current_amps == pytest.approx(-1.0, rel=1e-3)


@pytest.mark.parametrize(
    ("amps", "sign", "on_battery"),
    [(-1.0, -1, True), (1.0, -1, False), (-0.02, -1, False), (1.0, 1, True), (-1.0, 1, False)],
)
def test_ina219_on_battery_follows_the_discharge_sign(ina, amps, sign, on_battery):
    bus, chip = ina
    chip.set_current(amps)
    assert Ina219Ups(bus, INA, discharge_sign=sign).read().on_battery is on_battery


@pytest.mark.parametrize(
    ("volts", "percent", "low"),
    [
        (8.4, 100.0, False),
        (7.2, 50.0, False),
        (6.3, 12.5, True),
        (5.5, 0.0, True),
        (9.0, 100.0, False),
    ],
)
def test_ina219_charge_estimate_from_pack_voltage(ina, volts, percent, low):
    bus, chip = ina
    chip.set_bus_voltage(volts)
    r = Ina219Ups(bus, INA, cells=2).read()  # 2 cells: 6.0 V empty, 8.4 V full
    assert r.battery_charge_percent == pytest.approx(percent)
    assert (r.battery_charge_percent < UpsConfig().low_charge_percent) is low
    assert r.low_battery is False, "no flag on the chip: the power policy decides by charge"
    assert r.battery_voltage == pytest.approx(volts)
    assert (r.driver, r.model) == ("ina219", "INA219")


def test_ina219_custom_pack_limits(ina):
    bus, chip = ina
    chip.set_bus_voltage(12.0)
    r = Ina219Ups(bus, INA, empty_v=10.0, full_v=12.6).read()
    assert r.battery_charge_percent == pytest.approx(76.9, abs=0.05)


def test_ina219_restores_calibration_after_a_chip_reset(ina):
    bus, chip = ina
    ups = Ina219Ups(bus, INA)
    chip.set_current(-1.0)
    chip.power_cycle()  # brownout: calibration 0, current would read 0
    assert ups.read().on_battery is True
    assert chip.calibration == 0x0198
    assert len(bus.transfers(INA, "write_word")) == 4


def test_ina219_overflow_is_an_error():
    bus = FakeI2cBus()
    chip = bus.attach(INA, FakeIna219(shunt_ohms=0.001))
    ups = Ina219Ups(bus, INA, shunt_ohms=0.001)  # calibration 40960: 320 mV -> 320 A
    chip.set_shunt_voltage(0.2)
    with pytest.raises(DeviceIOError, match="overflow"):
        ups.read()


def test_ina219_rejects_impossible_settings():
    bus = FakeI2cBus()
    bus.attach(INA, FakeIna219())
    with pytest.raises(ValueError):
        Ina219Ups(bus, INA, shunt_ohms=0)
    with pytest.raises(ValueError):
        Ina219Ups(bus, INA, discharge_sign=0)
    assert bus.log == []


# --- MAX17048 -----------------------------------------------------------------------------


@pytest.fixture
def gauge():
    bus = FakeI2cBus()
    chip = bus.attach(GAUGE, FakeMax17048())
    return bus, chip


def test_max17048_open_reads_version(gauge):
    bus, _ = gauge
    g = Max17048Gauge(bus)
    assert g.version == 0x0012
    assert bus.log == [Transfer("read_word", GAUGE, 0x08, 0x1200)]


def test_max17048_scalings(gauge):
    bus, chip = gauge
    chip.soc_raw = 0x5A80  # 0x5A = 90 %, 0x80 / 256 = 0.5 %
    chip.vcell_raw = 0xC350  # 50000 x 78.125 uV = 3.90625 V
    r = Max17048Gauge(bus).read()
    assert r.battery_charge_percent == 90.5
    assert r.battery_voltage == pytest.approx(3.90625)
    assert r.low_battery is False
    assert (r.driver, r.model) == ("max17048", "MAX17048")
    assert bus.log[-2:] == [
        Transfer("read_word", GAUGE, 0x02, 0x50C3),
        Transfer("read_word", GAUGE, 0x04, 0x805A),
    ]


def test_max17048_low_battery_and_full_clamp(gauge):
    bus, chip = gauge
    g = Max17048Gauge(bus)
    chip.soc_raw = 0x1280  # 18.5 %
    low = g.read()
    assert low.battery_charge_percent == 18.5 and low.low_battery is False
    critical = PowerPolicy(UpsConfig(low_charge_percent=20)).critical
    assert critical(replace(low, on_battery=True)), "under [ups] low_charge_percent on battery"
    chip.soc_raw = 0x6640  # 102.25 %: the gauge overshoots a little when full
    assert g.read().battery_charge_percent == 100.0


def test_max17048_on_battery_needs_a_mains_signal(gauge):
    bus, _ = gauge
    assert Max17048Gauge(bus).read().on_battery is False
    mains = {"up": False}
    g = Max17048Gauge(bus, on_battery=lambda: not mains["up"])
    assert g.read().on_battery is True
    mains["up"] = True
    assert g.read().on_battery is False


def test_max17048_quick_start_and_reset(gauge):
    bus, chip = gauge
    g = Max17048Gauge(bus)
    chip.set_cell_voltage(3.6)
    g.quick_start()
    assert bus.log[-1] == Transfer("write_word", GAUGE, 0x06, 0x0040)  # 0x4000, MSB first
    assert chip.quick_starts == 1
    assert chip.soc_raw == round(50.0 * 256)  # the fake's linear model: 3.6 V -> 50 %
    chip.regs[chip.CONFIG] = 0x1234
    g.reset()  # the chip does not ACK: no error for the caller
    assert bus.log[-1] == Transfer("write_word", GAUGE, 0xFE, 0x0054, errno.EREMOTEIO)
    assert chip.resets == 1
    assert chip.regs[chip.CONFIG] == 0x971C
    assert chip.violations == []
    bus.fail(GAUGE, errno.ETIMEDOUT)  # not a NAK: reported
    with pytest.raises(DeviceTimeout):
        g.reset()


def test_max17048_refuses_another_chip():
    bus = FakeI2cBus()
    bus.attach(GAUGE, FixedWords({0x08: 0x0300}))  # VERSION 0x0003: a MAX17043
    with pytest.raises(Unavailable, match="0x0003"):
        Max17048Gauge(bus)


# --- both, as hal.ups.Ups ------------------------------------------------------------------


def _ina_setup(bus: FakeI2cBus) -> Ina219Ups:
    bus.attach(INA, FakeIna219()).set_bus_voltage(7.8)
    return Ina219Ups(bus, INA)


def _gauge_setup(bus: FakeI2cBus) -> Max17048Gauge:
    chip = bus.attach(GAUGE, FakeMax17048())
    chip.set_cell_voltage(3.9)
    chip.set_soc(75)
    return Max17048Gauge(bus)


SETUPS = {"ina219": (INA, _ina_setup, Ina219Ups), "max17048": (GAUGE, _gauge_setup, Max17048Gauge)}


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_ups_contract(name):
    addr, setup, cls = SETUPS[name]
    bus = FakeI2cBus()
    ups = setup(bus)
    r = ups.read()
    assert isinstance(r, UpsReading)
    assert r.driver == name and r.battery_voltage and 0 < r.battery_charge_percent <= 100
    assert r.to_json()["driver"] == name
    bus.fail(addr, errno.EIO)
    with pytest.raises(DeviceIOError):
        ups.read()
    bus.fail(addr, errno.ETIMEDOUT)
    with pytest.raises(DeviceTimeout):
        ups.read()
    bus.detach(addr)
    with pytest.raises(Unavailable):
        ups.read()
    with pytest.raises(Unavailable):
        cls(FakeI2cBus(), addr)  # nothing at the address
    ups.close()
    assert bus.closed
    shared = FakeI2cBus()
    setup(shared)
    kept = cls(shared, addr, close_bus=False)
    kept.close()
    assert not shared.closed
