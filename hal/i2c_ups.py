"""Battery monitors on I2C: an INA219 on the pack (Waveshare UPS HATs) and a MAX17048 gauge.

Neither chip knows whether mains is present; each driver says how it infers on_battery."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from hal.errors import DeviceIOError, Unavailable
from hal.i2c import I2cBus, I2cDevice, swap16
from hal.linux.i2c import NOT_THERE, hal_error, i2c_errors
from hal.ups import UpsReading

INA219_CONFIG = 0x3EEF
"""32 V bus range, PGA /8 (+-320 mV shunt), 12-bit x32 averaging on shunt and bus, continuous:
the setting Waveshare's HAT code uses; one conversion pair takes about 34 ms."""
_CONFIG, _SHUNT, _BUS, _POWER, _CURRENT, _CALIBRATION = range(6)


def _signed16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


@dataclass(frozen=True)
class Ina219Sample:
    bus_volts: float
    shunt_volts: float
    current_amps: float
    """Signed as the chip sees it: positive flows from IN+ to IN-."""
    power_watts: float


class _WordChip(I2cDevice):
    """A chip with big-endian 16-bit registers."""

    def _read(self, reg: int) -> int:
        return swap16(self._bus.read_word_data(self._addr, reg))

    def _write(self, reg: int, value: int) -> None:
        self._bus.write_word_data(self._addr, reg, swap16(value))


class Ina219Ups(_WordChip):
    """A UPS HAT whose INA219 sits between the pack and the load (Waveshare UPS HAT and
    friends). The pack voltage gives a charge estimate and the current's direction tells
    discharging: that is as close to "on battery" as the chip gets."""

    def __init__(
        self,
        bus: I2cBus,
        addr: int = 0x42,
        shunt_ohms: float = 0.1,
        cells: int = 2,
        *,
        empty_v: float | None = None,
        full_v: float | None = None,
        discharge_sign: int = -1,
        discharge_threshold_a: float = 0.05,
        close_bus: bool = True,
    ) -> None:
        """empty_v/full_v: pack voltage read as 0 % and 100 % (default 3.0 V and 4.2 V per
        Li-ion cell). discharge_sign: -1 where discharging reads negative (Waveshare wiring),
        +1 where the shunt is wired the other way. A discharge below discharge_threshold_a
        counts as noise, not as running on battery."""
        super().__init__(bus, addr, f"INA219 at {addr:#04x}", close_bus)
        if shunt_ohms <= 0 or cells < 1 or discharge_sign not in (-1, 1):
            raise ValueError("shunt_ohms > 0, cells >= 1 and discharge_sign of -1 or 1 please")
        # 1 mA per bit; bit 0 of the register is void, so clear it and use the true LSB.
        self.calibration = int(40_960_000 / (shunt_ohms * 1_000_000)) & 0xFFFE
        if not 2 <= self.calibration <= 0xFFFE:
            raise ValueError(f"shunt of {shunt_ohms} ohm is out of the INA219's range at 1 mA/bit")
        self.current_lsb = 0.04096 / (self.calibration * shunt_ohms)
        self.empty_v = cells * 3.0 if empty_v is None else empty_v
        self.full_v = cells * 4.2 if full_v is None else full_v
        if self.full_v <= self.empty_v:
            raise ValueError("full_v must be above empty_v")
        self.discharge_sign = discharge_sign
        self.discharge_threshold_a = discharge_threshold_a
        with i2c_errors(self._what):
            self._configure()

    def _configure(self) -> None:
        self._write(_CALIBRATION, self.calibration)
        self._write(_CONFIG, INA219_CONFIG)

    def measure(self) -> Ina219Sample:
        """After open or a chip reset, current and power lag by one conversion (~34 ms)."""
        with i2c_errors(self._what):
            # A brownout resets the chip to calibration 0, where current reads 0 forever.
            if self._read(_CALIBRATION) != self.calibration:
                self._configure()
            bus = self._read(_BUS)
            shunt = _signed16(self._read(_SHUNT))
            current = _signed16(self._read(_CURRENT))
            power = self._read(_POWER)
        if bus & 0x01:
            raise DeviceIOError(f"{self._what}: overflow, current beyond the shunt's range")
        return Ina219Sample(
            bus_volts=(bus >> 3) * 0.004,
            shunt_volts=shunt * 10e-6,
            current_amps=current * self.current_lsb,
            power_watts=power * 20 * self.current_lsb,
        )

    def charge_percent(self, volts: float) -> float:
        """An estimate only: linear between empty_v and full_v, and the pack voltage sags
        under load and rises while charging, so expect tens of percent of error."""
        span = (volts - self.empty_v) / (self.full_v - self.empty_v) * 100
        return max(0.0, min(100.0, span))

    def read(self) -> UpsReading:
        s = self.measure()
        percent = self.charge_percent(s.bus_volts)
        return UpsReading(
            on_battery=s.current_amps * self.discharge_sign > self.discharge_threshold_a,
            low_battery=False,  # the chip has no such flag: [ups] low_charge_percent decides
            battery_charge_percent=round(percent, 1),
            battery_voltage=round(s.bus_volts, 3),
            model="INA219",
            driver="ina219",
        )


class Max17048Gauge(_WordChip):
    """A MAX17048 Li-ion fuel gauge (one cell). It measures the cell, not the supply, so
    it cannot tell mains from battery: pass on_battery (e.g. a GPIO reading the charger's
    power-good line) or every reading says on_battery=False. Its CRATE register would hint
    at discharge but is missing on related parts and lags, so it is not used."""

    def __init__(
        self,
        bus: I2cBus,
        addr: int = 0x36,
        *,
        on_battery: Callable[[], bool] | None = None,
        close_bus: bool = True,
    ) -> None:
        super().__init__(bus, addr, f"MAX17048 at {addr:#04x}", close_bus)
        self._on_battery = on_battery
        with i2c_errors(self._what):
            self.version = self._read(0x08)
        if self.version & 0xFFF0 != 0x0010:
            raise Unavailable(f"{self._what}: VERSION {self.version:#06x} is not a MAX17048/9")

    def read(self) -> UpsReading:
        with i2c_errors(self._what):
            vcell = self._read(0x02)
            soc = self._read(0x04)
        percent = (soc >> 8) + (soc & 0xFF) / 256
        return UpsReading(
            on_battery=bool(self._on_battery()) if self._on_battery else False,
            low_battery=False,  # the chip has no such flag: [ups] low_charge_percent decides
            battery_charge_percent=min(100.0, percent),  # reads a little over 100 when full
            battery_voltage=round(vcell * 78.125e-6, 5),
            model="MAX17048",
            driver="max17048",
        )

    def quick_start(self) -> None:
        """Restart the SOC estimate from the voltage now; only right after a battery swap,
        since a cell under load gives a wrong start."""
        with i2c_errors(self._what):
            self._write(0x06, 0x4000)

    def reset(self) -> None:
        """Power-on reset of the gauge. The chip resets before it ACKs, so the write's bus
        error (a NAK, whichever errno the adapter uses for it) is expected and ignored."""
        try:
            self._write(0xFE, 0x5400)
        except OSError as e:
            if e.errno not in NOT_THERE | {errno.EIO}:
                raise hal_error(e, self._what) from e
