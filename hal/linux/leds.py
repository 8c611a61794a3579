"""An LED of the kernel's LED class (/sys/class/leds/<name>): the board's device tree or ACPI
names them, the board profile says which is which."""

from __future__ import annotations

from pathlib import Path

from hal.errors import DeviceIOError, Unavailable

SYS_CLASS_LEDS = Path("/sys/class/leds")


class SysfsLed:
    """Takes the LED over from any kernel trigger (heartbeat, disk activity) on open, so the
    firmware alone decides; lit is full brightness."""

    def __init__(self, name: str, root: Path = SYS_CLASS_LEDS) -> None:
        self.name = name
        self._dir = root / name
        if "/" in name or not (self._dir / "brightness").exists():
            raise Unavailable(f"LED {name}: no such LED under {root}")
        try:
            self._max = int((self._dir / "max_brightness").read_text().strip() or "1")
            trigger = self._dir / "trigger"
            if trigger.exists():
                trigger.write_text("none")
        except (OSError, ValueError) as e:
            raise DeviceIOError(f"LED {name}: {e}") from e

    def set(self, on: bool) -> None:
        try:
            (self._dir / "brightness").write_text(str(self._max if on else 0))
        except OSError as e:
            raise DeviceIOError(f"LED {self.name}: {e.strerror}") from e

    def is_on(self) -> bool:
        try:
            return int((self._dir / "brightness").read_text().strip() or "0") > 0
        except (OSError, ValueError) as e:
            raise DeviceIOError(f"LED {self.name}: {e}") from e

    def close(self) -> None:
        """Left as it is: a board that stops shows its last state."""
