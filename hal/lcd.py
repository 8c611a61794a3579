"""HD44780 character LCD behind a PCF8574 I2C backpack, as a front panel."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hal.buttons import ButtonSource
from hal.i2c import I2cBus
from hal.linux.i2c import i2c_errors
from hal.panel import I2cPanel


@dataclass(frozen=True)
class PinMap:
    """Which expander bit drives which LCD pin."""

    data: tuple[int, int, int, int]
    """Bits for D4, D5, D6, D7."""
    rs: int
    rw: int
    e: int
    backlight: int
    backlight_active_low: bool


PIN_MAPS = {
    "common": PinMap((4, 5, 6, 7), rs=0, rw=1, e=2, backlight=3, backlight_active_low=False),
    "lcdproc": PinMap((0, 1, 2, 3), rs=4, rw=5, e=6, backlight=7, backlight_active_low=True),
}

_CLEAR, _ENTRY_INC, _DISPLAY_ON, _FUNCTION_4BIT_2LINE, _SET_DDRAM = 0x01, 0x06, 0x0C, 0x28, 0x80


def _lcd_code(ch: str) -> int:
    """ROM A00 matches ASCII from 0x20 to 0x7D except 0x5C (a yen sign)."""
    o = ord(ch)
    return o if 0x20 <= o <= 0x7D and o != 0x5C else ord("?")


class Hd44780Panel(I2cPanel):
    """Writes only the characters that changed since the last show(), since every one
    costs four I2C writes. close() leaves the text up (so `nvr hw` can show something) and
    closes the bus unless close_bus=False."""

    def __init__(
        self,
        bus: I2cBus,
        addr: int = 0x27,
        cols: int = 16,
        rows: int = 2,
        pin_map: str = "common",
        *,
        buttons: ButtonSource | None = None,
        sleep: Callable[[float], None] = time.sleep,
        close_bus: bool = True,
    ) -> None:
        if pin_map not in PIN_MAPS:
            raise ValueError(f"pin_map must be one of {sorted(PIN_MAPS)}, not {pin_map!r}")
        if rows not in (1, 2, 4) or not 8 <= cols <= 40 or (rows == 4 and cols > 20):
            raise ValueError(f"no HD44780 layout of {cols}x{rows}")
        super().__init__(bus, addr, f"LCD at {addr:#04x}", buttons, close_bus)
        self._cols, self._rows = cols, rows
        self._map = PIN_MAPS[pin_map]
        self._sleep = sleep
        self._backlight = True
        self._shown: list[str | None] = [None] * rows
        with i2c_errors(self._what):
            self._init()

    @property
    def size(self) -> tuple[int, int]:
        return self._cols, self._rows

    def _row_address(self, row: int) -> int:
        return (0x00, 0x40, self._cols, 0x40 + self._cols)[row]

    def _light(self) -> int:
        on = self._backlight != self._map.backlight_active_low
        return 1 << self._map.backlight if on else 0

    def _nibble(self, value: int, rs: bool) -> None:
        bits = self._light() | (1 << self._map.rs if rs else 0)
        for i, bit in enumerate(self._map.data):
            if value >> i & 1:
                bits |= 1 << bit
        # Data settles with E high and is latched as E falls; E alone changes in between.
        self._bus.write_byte(self._addr, bits | 1 << self._map.e)
        self._bus.write_byte(self._addr, bits)

    def _send(self, byte: int, rs: bool = False) -> None:
        self._nibble(byte >> 4, rs)
        self._nibble(byte & 0x0F, rs)

    def _init(self) -> None:
        """Initialisation by instruction (HD44780 datasheet, 4-bit): works from any state,
        including a controller left in 4-bit mode by an earlier run."""
        self._sleep(0.040)
        self._nibble(0x3, False)
        self._sleep(0.0045)
        self._nibble(0x3, False)
        self._sleep(0.0045)
        self._nibble(0x3, False)
        self._sleep(0.0001)
        self._nibble(0x2, False)
        self._send(_FUNCTION_4BIT_2LINE)
        self._send(_DISPLAY_ON)
        self._send(_CLEAR)
        self._sleep(0.002)
        self._send(_ENTRY_INC)
        self._shown = [" " * self._cols] * self._rows

    def show(self, lines: list[str]) -> None:
        self._check_open()
        rows = [(line[: self._cols]).ljust(self._cols) for line in list(lines)[: self._rows]]
        rows += [" " * self._cols] * (self._rows - len(rows))
        with i2c_errors(self._what):
            for r, new in enumerate(rows):
                old = self._shown[r]
                if old == new:
                    continue
                first, last = 0, self._cols - 1
                if old is not None:
                    while old[first] == new[first]:
                        first += 1
                    while old[last] == new[last]:
                        last -= 1
                self._shown[r] = None  # unknown until the write completes
                self._send(_SET_DDRAM | (self._row_address(r) + first))
                for ch in new[first : last + 1]:
                    self._send(_lcd_code(ch), rs=True)
                self._shown[r] = new

    def set_backlight(self, on: bool) -> None:
        self._check_open()
        self._backlight = on
        with i2c_errors(self._what):
            self._bus.write_byte(self._addr, self._light())  # E stays low: nothing clocked
