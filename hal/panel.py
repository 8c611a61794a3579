"""Front panel: a small text display and a few buttons."""

from __future__ import annotations

from typing import Protocol

from hal.buttons import ButtonSource
from hal.i2c import I2cBus, I2cDevice


class Panel(Protocol):
    """Raises hal.errors; a panel that is not there raises Unavailable on open."""

    @property
    def size(self) -> tuple[int, int]:
        """(columns, rows) of text."""
        ...

    def show(self, lines: list[str]) -> None:
        """Replace the screen: one string per row, cut or padded to the width."""
        ...

    def buttons(self) -> list[str]:
        """Names of the buttons pressed since the last call (e.g. "up", "down", "ok")."""
        ...

    def close(self) -> None: ...


class I2cPanel(I2cDevice):
    """What the I2C displays share: their buttons, and close() leaving the picture up (so
    `nvr hw panel` can show something)."""

    def __init__(
        self, bus: I2cBus, addr: int, what: str, buttons: ButtonSource | None, close_bus: bool
    ) -> None:
        super().__init__(bus, addr, what, close_bus)
        self._buttons = buttons

    def buttons(self) -> list[str]:
        self._check_open()
        return self._buttons.pressed() if self._buttons else []

    def close(self) -> None:
        if not self._closed and self._buttons:
            self._buttons.close()
        super().close()
