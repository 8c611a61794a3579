"""SSD1306 128x64 / 128x32 OLED on I2C, as a text front panel (6x8 character cells)."""

from __future__ import annotations

from hal.buttons import ButtonSource
from hal.i2c import I2cBus
from hal.linux.i2c import i2c_errors
from hal.panel import I2cPanel

# The classic 5x7 font for printable ASCII from 0x20: five column bytes per glyph, bit 0 on top.
_FONT_HEX = (
    "0000000000 00005f0000 0007000700 147f147f14 242a7f2a12 2313086462",  #  !"#$%
    "3649552250 0005030000 001c224100 0041221c00 14083e0814 08083e0808",  # &'()*+
    "0050300000 0808080808 0060600000 2010080402 3e5149453e 00427f4000",  # ,-./01
    "4261514946 2141454b31 1814127f10 2745454539 3c4a494930 0171090503",  # 234567
    "3649494936 064949291e 0036360000 0056360000 0814224100 1414141414",  # 89:;<=
    "0041221408 0201510906 324979413e 7e1111117e 7f49494936 3e41414122",  # >?@ABC
    "7f4141221c 7f49494941 7f09090901 3e4149497a 7f0808087f 00417f4100",  # DEFGHI
    "2040413f01 7f08142241 7f40404040 7f020c027f 7f0408107f 3e4141413e",  # JKLMNO
    "7f09090906 3e4151215e 7f09192946 4649494931 01017f0101 3f4040403f",  # PQRSTU
    "1f2040201f 3f4038403f 6314081463 0708700807 6151494543 007f414100",  # VWXYZ[
    "0204081020 0041417f00 0402010204 4040404040 0001020400 2054545478",  # \]^_`a
    "7f48444438 3844444420 384444487f 3854545418 087e090102 0c5252523e",  # bcdefg
    "7f08040478 00447d4000 2040443d00 7f10284400 00417f4000 7c04180478",  # hijklm
    "7c08040478 3844444438 7c14141408 081414187c 7c08040408 4854545420",  # nopqrs
    "043f444020 3c4040207c 1c2040201c 3c4030403c 4428102844 0c5050503c",  # tuvwxy
    "4464544c44 0008364100 00007f0000 0041360800 1008081008",  # z{|}~
)
FONT: dict[str, bytes] = {
    chr(0x20 + i): bytes.fromhex(h) for i, h in enumerate(" ".join(_FONT_HEX).split())
}

CELL_WIDTH = 6
"""Five glyph columns and one blank."""
SMBUS_BLOCK_MAX = 32


def _glyph(ch: str) -> bytes:
    return FONT.get(ch, FONT["?"]) + b"\x00"


def render_row(text: str, width: int = 128) -> bytes:
    """One page (8 pixel rows) of display RAM showing text from the left edge."""
    row = b"".join(_glyph(ch) for ch in text[: width // CELL_WIDTH])
    return row.ljust(width, b"\x00")


class Ssd1306Panel(I2cPanel):
    """One text row per 8-pixel page; show() rewrites only the pages that changed.
    close() leaves the picture up and closes the bus unless close_bus=False."""

    def __init__(
        self,
        bus: I2cBus,
        addr: int = 0x3C,
        width: int = 128,
        height: int = 64,
        *,
        buttons: ButtonSource | None = None,
        close_bus: bool = True,
    ) -> None:
        if height not in (32, 64) or not CELL_WIDTH <= width <= 128:
            raise ValueError(f"no SSD1306 layout of {width}x{height}")
        super().__init__(bus, addr, f"OLED at {addr:#04x}", buttons, close_bus)
        self._width, self._height = width, height
        self._pages = height // 8
        self._shown: list[bytes | None] = [None] * self._pages
        with i2c_errors(self._what):
            self._init()

    @property
    def size(self) -> tuple[int, int]:
        return self._width // CELL_WIDTH, self._pages

    def _commands(self, *cmds: int) -> None:
        for i in range(0, len(cmds), SMBUS_BLOCK_MAX):
            self._bus.write_i2c_block_data(self._addr, 0x00, list(cmds[i : i + SMBUS_BLOCK_MAX]))

    def _data(self, data: bytes) -> None:
        for i in range(0, len(data), SMBUS_BLOCK_MAX):
            self._bus.write_i2c_block_data(self._addr, 0x40, list(data[i : i + SMBUS_BLOCK_MAX]))

    def _window(self, first_page: int, last_page: int) -> None:
        self._commands(0x21, 0, self._width - 1, 0x22, first_page, last_page)

    def _init(self) -> None:
        """The usual sequence for modules with the charge pump on board (internal VCC)."""
        self._commands(
            0xAE,  # display off while we set up
            0xD5, 0x80,  # clock divide / oscillator: reset value
            0xA8, self._height - 1,  # multiplex ratio
            0xD3, 0x00,  # no display offset
            0x40,  # start line 0
            0x8D, 0x14,  # charge pump on
            0x20, 0x00,  # horizontal addressing
            0xA1, 0xC8,  # column 127 at SEG0, COM scan reversed: upright on common modules
            0xDA, 0x12 if self._height == 64 else 0x02,  # COM pins
            0x81, 0xCF,  # contrast
            0xD9, 0xF1,  # pre-charge
            0xDB, 0x40,  # VCOMH deselect level
            0xA4,  # show RAM
            0xA6,  # not inverted
            0x2E,  # no scrolling
        )  # fmt: skip
        # RAM holds noise after power-on: clear it before the display is switched on.
        self._window(0, self._pages - 1)
        self._data(bytes(self._width * self._pages))
        self._shown = [bytes(self._width)] * self._pages
        self._commands(0xAF)

    def show(self, lines: list[str]) -> None:
        self._check_open()
        rows = list(lines)[: self._pages]
        rows += [""] * (self._pages - len(rows))
        with i2c_errors(self._what):
            for page, text in enumerate(rows):
                pixels = render_row(text, self._width)
                if self._shown[page] == pixels:
                    continue
                self._shown[page] = None  # unknown until the write completes
                self._window(page, page)
                self._data(pixels)
                self._shown[page] = pixels
