"""UPS and battery readings: one shape whatever the device (serial UPS, I2C fuel gauge)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass(frozen=True)
class UpsReading:
    """One reading. None where the device does not say; flags are the device's own."""

    on_battery: bool
    low_battery: bool
    replace_battery: bool = False
    battery_charge_percent: float | None = None
    battery_voltage: float | None = None
    load_percent: float | None = None
    input_voltage: float | None = None
    output_voltage: float | None = None
    runtime_seconds: float | None = None
    model: str | None = None
    driver: str = ""

    def to_json(self) -> dict:
        return asdict(self)


class Ups(Protocol):
    """A UPS or battery gauge. Raises hal.errors (Unavailable, DeviceTimeout, DeviceIOError)."""

    def read(self) -> UpsReading: ...

    def close(self) -> None: ...
