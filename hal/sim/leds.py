"""A simulated LED for the simulated board and tests: remembers every change."""

from __future__ import annotations

from hal.errors import DeviceIOError


class SimLed:
    def __init__(self, name: str) -> None:
        self.name = name
        self.on = False
        self.changes: list[bool] = []
        self.broken = False
        """Set by a test: the next writes fail as a vanished LED's would."""

    def set(self, on: bool) -> None:
        if self.broken:
            raise DeviceIOError(f"LED {self.name}: No such device")
        if on != self.on:
            self.changes.append(on)
        self.on = on

    def is_on(self) -> bool:
        return self.on

    def close(self) -> None:
        pass
