"""Front-panel buttons on a PCF8574 expander, wired to ground (pressed reads 0)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from hal.i2c import I2cBus
from hal.linux.i2c import i2c_errors

DEFAULT_PINS: Mapping[int, str] = {0: "up", 1: "down", 2: "ok", 3: "back"}


class ButtonSource(Protocol):
    def pressed(self) -> list[str]:
        """Names of the buttons pressed since the last call."""
        ...

    def close(self) -> None: ...


class Pcf8574Buttons:
    """Reports presses (a released-to-pressed edge), not levels, so a held or stuck button
    counts once. A press is only seen if it is still down when sampled: call poll() more
    often than pressed() (every 20-50 ms) to catch short taps."""

    def __init__(self, bus: I2cBus, addr: int = 0x20, pins: Mapping[int, str] | None = None):
        self._bus, self._addr = bus, addr
        self._pins = dict(DEFAULT_PINS if pins is None else pins)
        self._what = f"buttons (PCF8574 at {addr:#04x})"
        self._queue: list[str] = []
        self._lock = threading.Lock()
        with i2c_errors(self._what):
            # Quasi-bidirectional pins: written high they are weak pull-ups we can read.
            self._bus.write_byte(addr, 0xFF)
            self._down = self._sample()  # held at open is not a press

    def _sample(self) -> set[int]:
        levels = self._bus.read_byte(self._addr)
        return {pin for pin in self._pins if not levels >> pin & 1}

    def poll(self) -> None:
        with self._lock, i2c_errors(self._what):
            down = self._sample()
            self._queue += [self._pins[p] for p in sorted(down - self._down)]
            self._down = down

    def pressed(self) -> list[str]:
        self.poll()
        with self._lock:
            out, self._queue = self._queue, []
        return out

    def close(self) -> None:
        """The bus belongs to whoever opened it (usually the panel sharing it)."""
