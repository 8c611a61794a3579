"""Front panels on the fake I2C bus: what reaches the HD44780 and SSD1306 controllers, byte
by byte, and one Panel contract for the simulated and the I2C panels."""

from __future__ import annotations

import errno

import pytest

from hal.buttons import Pcf8574Buttons
from hal.errors import DeviceIOError, Unavailable
from hal.lcd import Hd44780Panel
from hal.oled import FONT, Ssd1306Panel
from hal.sim.i2c_bus import (
    FakeClock,
    FakeI2cBus,
    FakePcf8574Input,
    FakePcf8574Lcd,
    FakeSsd1306,
    Transfer,
)
from hal.sim.panel import SimPanel

LCD, OLED, KEYS = 0x27, 0x3C, 0x20
PAD16 = " " * 16
INIT_NIBBLES = [(0, 0x3), (0, 0x3), (0, 0x3), (0, 0x2)]
INIT_COMMANDS = [0x28, 0x0C, 0x01, 0x06]


def _lcd(pin_map: str, cols: int = 16, rows: int = 2, sleep_too: bool = True):
    clock = FakeClock()
    bus = FakeI2cBus(clock=clock)
    fake = bus.attach(LCD, FakePcf8574Lcd(cols, rows, pin_map, clock=clock))
    sleep = clock.sleep if sleep_too else (lambda s: None)
    panel = Hd44780Panel(bus, LCD, cols, rows, pin_map, sleep=sleep)
    return panel, fake, bus, clock


# --- HD44780 ------------------------------------------------------------------------------


@pytest.mark.parametrize("pin_map", ["common", "lcdproc"])
def test_hd44780_shows_text_in_ddram(pin_map):
    panel, fake, _, _ = _lcd(pin_map)
    panel.show(["NVR a", "active"])
    assert fake.lines() == ["NVR a" + PAD16[5:], "active" + PAD16[6:]]
    assert fake.display_on and fake.two_line and not fake.cursor_on and not fake.blink
    assert fake.backlight is True
    assert fake.violations == []


@pytest.mark.parametrize("pin_map", ["common", "lcdproc"])
def test_hd44780_init_sequence_and_waits(pin_map):
    _, fake, _, clock = _lcd(pin_map)
    commands = [(fake.nibbles[i][1] << 4) | fake.nibbles[i + 1][1] for i in range(4, 12, 2)]
    assert fake.nibbles[:4] == INIT_NIBBLES
    assert commands == INIT_COMMANDS
    assert all(rs == 0 for rs, _ in fake.nibbles[:12])
    assert clock.slept == [0.040, 0.0045, 0.0045, 0.0001, 0.002]
    assert fake.violations == []  # each nibble came after the datasheet's minimum wait


def test_hd44780_without_waits_is_caught():
    _, fake, _, _ = _lcd("common", sleep_too=False)
    assert any("busy until 40.000 ms" in v for v in fake.violations)  # power-on wait
    assert any("busy until" in v and "nibble 0x3" in v for v in fake.violations[1:])


@pytest.mark.parametrize(
    ("pin_map", "first_bytes", "light_bit", "light_on_level"),
    [
        # common: D7..D4 on P7..P4, BL P3, E P2: nibble 3 -> 0x30 | BL 0x08 | E 0x04
        ("common", [0x3C, 0x38], 0x08, 0x08),
        # lcdproc: D4..D7 on P0..P3, E P6, BL P7 active low: 0x03 | E 0x40, P7 low
        ("lcdproc", [0x43, 0x03], 0x80, 0x00),
    ],
)
def test_hd44780_raw_bytes_and_backlight_bit(pin_map, first_bytes, light_bit, light_on_level):
    panel, fake, bus, _ = _lcd(pin_map)
    writes = [t.value for t in bus.transfers(LCD, "write_byte")]
    assert writes[:2] == first_bytes
    assert all(w & light_bit == light_on_level for w in writes)
    clocked = len(fake.nibbles)
    panel.set_backlight(False)
    assert bus.log[-1].value & light_bit == light_bit ^ light_on_level
    assert fake.backlight is False
    assert len(fake.nibbles) == clocked  # switching the light clocks nothing in
    panel.show(["dark"])
    assert fake.lines()[0].startswith("dark") and fake.backlight is False


def test_hd44780_20x4_rows():
    panel, fake, _, _ = _lcd("common", cols=20, rows=4)
    lines = ["row zero", "row one", "row two", "row three"]
    panel.show(lines)
    assert [line.rstrip() for line in fake.lines()] == lines
    assert panel.size == (20, 4)


def test_hd44780_rewrites_only_what_changed():
    panel, fake, bus, _ = _lcd("common")
    panel.show(["NVR a", "active"])
    n = len(bus.log)
    panel.show(["NVR a", "active"])
    assert len(bus.log) == n
    panel.show(["NVR b", "active"])
    # one address command and one character: two bytes, two nibbles each, E high then low
    assert len(bus.log) - n == 8
    assert fake.lines()[0].startswith("NVR b ")
    assert fake.cursor == (5, 0)


def test_hd44780_cuts_pads_and_replaces_unknown_characters():
    panel, fake, _, _ = _lcd("common")
    panel.show(["x" * 30, "a\\b é"])
    assert fake.lines() == ["x" * 16, "a?b ?" + PAD16[5:]]
    panel.show([])
    assert fake.lines() == [PAD16, PAD16]


def test_hd44780_reinit_recovers_a_controller_left_mid_byte():
    _, fake, bus, clock = _lcd("common")
    fake.write_byte(0x0C)  # half an instruction clocked (E high...)
    fake.write_byte(0x08)  # (...then low): the controller waits for the second nibble
    panel = Hd44780Panel(bus, LCD, sleep=clock.sleep)
    panel.show(["again"])
    assert fake.lines()[0].startswith("again ")
    assert fake.display_on and fake.two_line


def test_fake_lcd_rejects_writes_before_init():
    fake = FakePcf8574Lcd()
    for b in (0x4D, 0x49, 0x1D, 0x19):  # RS=1, data 0x41 ('A'), common map
        fake.write_byte(b)
    assert fake.ddram[0] == 0xFF and not fake.initialised
    assert len(fake.violations) == 2 and "before the 4-bit init" in fake.violations[0]
    fake.write_byte(0x3C)
    fake.write_byte(0x28)  # data changed while E fell
    assert any("E falling" in v for v in fake.violations)


def test_hd44780_bus_errors():
    bus = FakeI2cBus()
    with pytest.raises(Unavailable):
        Hd44780Panel(bus, LCD, sleep=lambda s: None)
    fake = bus.attach(LCD, FakePcf8574Lcd())
    panel = Hd44780Panel(bus, LCD, sleep=lambda s: None)
    bus.fail(LCD, errno.EIO)
    with pytest.raises(DeviceIOError):
        panel.show(["lost"])
    panel.show(["kept"])  # the failed row is rewritten in full next time
    assert fake.lines()[0].startswith("kept ")
    with pytest.raises(ValueError):
        Hd44780Panel(bus, LCD, pin_map="other")


# --- SSD1306 ------------------------------------------------------------------------------


def _oled(height: int = 64):
    bus = FakeI2cBus()
    fake = bus.attach(OLED, FakeSsd1306(128, height))
    return Ssd1306Panel(bus, OLED, height=height), fake, bus


def test_ssd1306_transfers_start_with_a_control_byte():
    panel, fake, bus = _oled()
    panel.show(["NVR a", "active"])
    assert {t.op for t in bus.log} == {"write_block"}
    assert {t.register for t in bus.log} == {0x00, 0x40}
    assert all(len(t.value) <= 32 for t in bus.log)
    assert fake.violations == []


def test_ssd1306_init():
    _, fake, bus = _oled()
    assert (0xA8, 63) in fake.commands and (0x8D, 0x14) in fake.commands
    assert (0x20, 0x00) in fake.commands and (0xDA, 0x12) in fake.commands
    assert fake.commands[0] == (0xAE,) and fake.commands[-1] == (0xAF,)
    assert fake.display_on and fake.seg_remap and fake.com_reverse
    assert fake.lit() == 0  # power-on noise cleared before the display came on
    assert bus.log[0] == Transfer("write_block", OLED, 0x00, tuple(bus.log[0].value))


def test_ssd1306_draws_text_where_it_belongs():
    panel, fake, _ = _oled()
    panel.show(["NVR a", "active"])
    assert fake.lit(0, 0, 30, 8) > 0 and fake.lit(0, 8, 36, 16) > 0
    assert fake.lit(30, 0, 128, 8) == 0  # 5 cells of 6 pixels on row 0
    assert fake.lit(36, 8, 128, 16) == 0
    assert fake.lit(0, 16, 128, 64) == 0


def test_ssd1306_known_glyph_columns():
    panel, fake, _ = _oled()
    panel.show(["", "  A"])
    # 'A' in the classic 5x7 font, column bytes with bit 0 on top, then a blank column
    assert fake.page_bytes(1, 12, 6) == bytes([0x7E, 0x11, 0x11, 0x11, 0x7E, 0x00])
    assert [fake.pixel(12, y) for y in range(8, 16)] == [0, 1, 1, 1, 1, 1, 1, 0]


def test_ssd1306_128x32():
    panel, fake, _ = _oled(32)
    assert panel.size == (21, 4)
    assert (0xA8, 31) in fake.commands and (0xDA, 0x02) in fake.commands
    panel.show(["a", "b", "c", "d", "e"])
    assert fake.lit(0, 24, 6, 32) > 0
    assert fake.lit(6, 0, 128, 32) == 0
    assert all(fake.page_bytes(p) == b"\xa5" * 128 for p in range(4, 8))  # unseen RAM untouched


def test_ssd1306_rewrites_only_changed_pages():
    panel, _, bus = _oled()
    panel.show(["NVR a", "active"])
    n = len(bus.log)
    panel.show(["NVR a", "active"])
    assert len(bus.log) == n
    panel.show(["NVR a", "standby"])
    new = bus.log[n:]
    assert new[0] == Transfer("write_block", OLED, 0x00, (0x21, 0, 127, 0x22, 1, 1))
    assert [(t.register, len(t.value)) for t in new[1:]] == [(0x40, 32)] * 4


def test_fake_ssd1306_page_and_vertical_addressing():
    bus = FakeI2cBus()
    fake = bus.attach(OLED, FakeSsd1306())
    bus.write_i2c_block_data(OLED, 0x00, [0x20, 0x02, 0xB2, 0x05, 0x10])  # page 2, column 5
    bus.write_i2c_block_data(OLED, 0x40, [0x81, 0x42])
    assert fake.page_bytes(2, 5, 2) == b"\x81\x42"
    bus.write_i2c_block_data(OLED, 0x00, [0x20, 0x01, 0x21, 10, 11, 0x22, 0, 1])
    bus.write_i2c_block_data(OLED, 0x40, [1, 2, 3, 4])  # down a column, then the next
    assert (fake.page_bytes(0, 10, 2), fake.page_bytes(1, 10, 2)) == (b"\x01\x03", b"\x02\x04")
    bus.write_i2c_block_data(OLED, 0x80, [0xAF])
    assert fake.violations and not fake.display_on


# --- buttons ------------------------------------------------------------------------------


@pytest.fixture
def keys():
    bus = FakeI2cBus()
    fake = bus.attach(KEYS, FakePcf8574Input({"up": 0, "down": 1, "ok": 2, "back": 3}))
    return bus, fake


def test_buttons_report_presses_not_levels(keys):
    bus, fake = keys
    buttons = Pcf8574Buttons(bus, KEYS)
    assert bus.log[0] == Transfer("write_byte", KEYS, None, 0xFF)  # pins as inputs
    assert buttons.pressed() == []
    fake.press("ok")
    assert buttons.pressed() == ["ok"]
    assert bus.log[-1] == Transfer("read_byte", KEYS, None, 0xFB)  # pin 2 low
    assert buttons.pressed() == []  # still held
    fake.release("ok")
    assert buttons.pressed() == []
    fake.press("ok")
    fake.press("up")
    assert buttons.pressed() == ["up", "ok"]


def test_buttons_poll_catches_a_short_tap(keys):
    bus, fake = keys
    buttons = Pcf8574Buttons(bus, KEYS)
    fake.press("down")
    buttons.poll()
    fake.release("down")
    assert buttons.pressed() == ["down"]
    fake.press("down")
    fake.release("down")  # between samples: invisible, as on the hardware
    assert buttons.pressed() == []


def test_buttons_held_at_open_and_custom_pins(keys):
    bus, fake = keys
    fake.press(7)
    buttons = Pcf8574Buttons(bus, KEYS, pins={7: "reset", 0: "menu"})
    assert buttons.pressed() == []
    fake.release(7)
    assert buttons.pressed() == []
    fake.press(7)
    fake.press(1)  # not mapped
    assert buttons.pressed() == ["reset"]


def test_buttons_errors(keys):
    bus, _ = keys
    buttons = Pcf8574Buttons(bus, KEYS)
    bus.fail(KEYS, errno.EIO)
    with pytest.raises(DeviceIOError):
        buttons.pressed()
    with pytest.raises(Unavailable):
        Pcf8574Buttons(bus, 0x21)


# --- SimPanel -----------------------------------------------------------------------------


def test_sim_panel_render_and_buttons():
    panel = SimPanel(cols=8, rows=2)
    panel.show(["NVR a", "active standby"])
    assert panel.render() == "+--------+\n|NVR a   |\n|active s|\n+--------+"
    panel.press("ok")
    panel.press("down")
    assert panel.buttons() == ["ok", "down"]
    assert panel.buttons() == []


# --- one contract for every panel ---------------------------------------------------------

_BY_GLYPH = {glyph: ch for ch, glyph in FONT.items()}


def _ocr(fake: FakeSsd1306) -> list[str]:
    """Read the text back from display RAM, cell by cell."""
    cols, rows = fake.width // 6, fake.height // 8
    return [
        "".join(_BY_GLYPH.get(fake.page_bytes(p, c * 6, 5), "\ufffd") for c in range(cols))
        for p in range(rows)
    ]


def test_font_glyphs_are_distinct():
    assert len(_BY_GLYPH) == len(FONT) == 95


@pytest.fixture(params=["sim", "hd44780-common", "hd44780-lcdproc", "ssd1306"])
def any_panel(request):
    """(panel, what the screen shows, press a button, the bus or None)."""
    if request.param == "sim":
        p = SimPanel(20, 4)
        yield p, lambda: p.lines, p.press, None
        return
    bus = FakeI2cBus()
    keys = bus.attach(KEYS, FakePcf8574Input({"up": 0, "down": 1, "ok": 2, "back": 3}))
    buttons = Pcf8574Buttons(bus, KEYS)
    if request.param.startswith("hd44780"):
        pin_map = request.param.split("-")[1]
        lcd = bus.attach(LCD, FakePcf8574Lcd(20, 4, pin_map))
        p = Hd44780Panel(bus, LCD, 20, 4, pin_map, buttons=buttons, sleep=lambda s: None)
        shown = lcd.lines
    else:
        oled = bus.attach(OLED, FakeSsd1306())
        p = Ssd1306Panel(bus, OLED, buttons=buttons)

        def shown() -> list[str]:
            return _ocr(oled)

    def press(name: str) -> None:
        keys.press(name)
        buttons.poll()
        keys.release(name)

    yield p, shown, press, bus


def test_panel_contract(any_panel):
    panel, shown, press, bus = any_panel
    cols, rows = panel.size
    assert cols >= 16 and rows >= 4
    panel.show(["NVR a", "active", "x" * 100, "4th", "beyond the last row"])
    screen = shown()
    assert len(screen) == rows and all(len(line) == cols for line in screen)
    assert screen[:4] == [
        "NVR a".ljust(cols),
        "active".ljust(cols),
        "x" * cols,
        "4th".ljust(cols),
    ]
    panel.show(["only one"])
    assert shown()[0].rstrip() == "only one" and shown()[1:] == [" " * cols] * (rows - 1)
    assert panel.buttons() == []
    press("ok")
    press("down")
    assert panel.buttons() == ["ok", "down"]
    assert panel.buttons() == []
    panel.close()
    panel.close()
    with pytest.raises(Unavailable):
        panel.show(["after close"])
    assert shown()[0].rstrip() == "only one"  # the last text stays up
    if bus is not None:
        assert bus.closed
