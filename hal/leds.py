"""The board's LEDs: on or off, nothing more (what they mean is firmware/hw/leds.py's)."""

from __future__ import annotations

from typing import Protocol


class Led(Protocol):
    name: str

    def set(self, on: bool) -> None:
        """Raises HalError when the LED went away or cannot be written."""
        ...

    def is_on(self) -> bool:
        """As the device reads back, not as last asked."""
        ...

    def close(self) -> None: ...
