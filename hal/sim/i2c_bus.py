"""An I2C bus in memory with register-level fake chips, for driver tests and the sim board.

Every transaction is logged as it crossed the wire, so a test checks the exact words a driver
wrote (byte order included) rather than the driver's own arithmetic. The chips decode what
they receive the way the datasheets describe and note protocol violations in `violations`
instead of guessing what a sloppy driver meant."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from hal.i2c import swap16

SMBUS_BLOCK_MAX = 32
"""smbus2 refuses longer block writes (ValueError); so does this bus."""

_WIRE_BYTES = {"read_byte": 2, "write_byte": 2, "read_word": 5, "write_word": 4}


def _oserror(code: int, detail: str = "") -> OSError:
    msg = os.strerror(code) + (f" ({detail})" if detail else "")
    return OSError(code, msg)


@dataclass(frozen=True)
class Transfer:
    """One SMBus transaction. `value` is what smbus2 takes or returns: for a word the low
    byte is the first on the wire, so a big-endian chip register appears byte-swapped."""

    op: str
    """read_byte, write_byte, read_word, write_word or write_block."""
    addr: int
    register: int | None
    value: int | tuple[int, ...] | None
    """None for a read that failed."""
    error: int | None = None
    """errno the transaction failed with."""

    @property
    def wire(self) -> bytes:
        """The payload bytes after the register, in the order they crossed the bus."""
        if self.value is None:
            return b""
        if isinstance(self.value, tuple):
            return bytes(self.value)
        if self.op.endswith("word"):
            return bytes((self.value & 0xFF, self.value >> 8))
        return bytes((self.value,))


class FakeClock:
    """Time that passes only when told: sleep() and bus transfers advance it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("negative sleep")
        self.slept.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeDevice:
    """A chip on the fake bus; transfers it does not implement fail as a real chip's NAK."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def _unsupported(self, what: str) -> OSError:
        self.violations.append(f"{what} not supported by {type(self).__name__}")
        return _oserror(errno.EIO, what)

    def read_byte(self) -> int:
        raise self._unsupported("read_byte")

    def write_byte(self, value: int) -> None:
        raise self._unsupported("write_byte")

    def read_word(self, register: int) -> int:
        raise self._unsupported("read_word_data")

    def write_word(self, register: int, value: int) -> None:
        raise self._unsupported("write_word_data")

    def write_block(self, register: int, data: list[int]) -> None:
        raise self._unsupported("write_i2c_block_data")


D = TypeVar("D", bound=FakeDevice)


class FakeI2cBus:
    """Implements hal.i2c.I2cBus. An address with no chip fails with ENXIO, as i2c-dev does
    when nothing ACKs it; fail() injects other errors."""

    def __init__(self, clock: FakeClock | None = None, hz: int = 100_000) -> None:
        """clock: advanced by each transfer's duration at `hz`, for chips that check timing."""
        self.devices: dict[int, FakeDevice] = {}
        self.log: list[Transfer] = []
        self.closed = False
        self.clock = clock
        self.hz = hz
        self._faults: dict[int, list[int]] = {}
        self._lock = threading.Lock()

    def attach(self, addr: int, device: D) -> D:
        self.devices[addr] = device
        return device

    def detach(self, addr: int) -> None:
        self.devices.pop(addr, None)

    def fail(self, addr: int, code: int = errno.EIO, times: int = 1) -> None:
        """The next `times` transfers to addr fail with this errno."""
        self._faults.setdefault(addr, []).extend([code] * times)

    def transfers(self, addr: int | None = None, op: str | None = None) -> list[Transfer]:
        return [
            t for t in self.log if (addr is None or t.addr == addr) and (op is None or t.op == op)
        ]

    def _do(
        self,
        op: str,
        addr: int,
        register: int | None,
        value: int | tuple[int, ...] | None,
        call: Callable[[FakeDevice], Any],
    ) -> Any:
        with self._lock:
            if self.closed:
                raise _oserror(errno.EBADF, "bus closed")
            if self.clock is not None:
                nbytes = _WIRE_BYTES.get(op) or 2 + len(value if isinstance(value, tuple) else ())
                self.clock.advance(nbytes * 9 / self.hz)
            faults = self._faults.get(addr)
            code = faults.pop(0) if faults else None
            dev = self.devices.get(addr)
            if code is None and dev is None:
                code = errno.ENXIO
            if code is not None:
                self.log.append(Transfer(op, addr, register, value, code))
                raise _oserror(code, f"addr {addr:#04x}")
            assert dev is not None
            try:
                result = call(dev)
            except OSError as e:
                self.log.append(Transfer(op, addr, register, value, e.errno))
                raise
            self.log.append(Transfer(op, addr, register, value if result is None else result))
            return result

    @staticmethod
    def _check(value: int, bits: int, what: str) -> None:
        if not 0 <= value < (1 << bits):
            raise ValueError(f"{what} {value!r} does not fit in {bits} bits")

    def read_byte(self, addr: int) -> int:
        return self._do("read_byte", addr, None, None, lambda d: d.read_byte())

    def write_byte(self, addr: int, value: int) -> None:
        self._check(value, 8, "byte")
        self._do("write_byte", addr, None, value, lambda d: d.write_byte(value))

    def read_word_data(self, addr: int, register: int) -> int:
        self._check(register, 8, "register")
        return self._do("read_word", addr, register, None, lambda d: d.read_word(register))

    def write_word_data(self, addr: int, register: int, value: int) -> None:
        self._check(register, 8, "register")
        self._check(value, 16, "word")
        self._do("write_word", addr, register, value, lambda d: d.write_word(register, value))

    def write_i2c_block_data(self, addr: int, register: int, data: list[int]) -> None:
        self._check(register, 8, "register")
        if len(data) > SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {SMBUS_BLOCK_MAX} bytes")
        for b in data:
            self._check(b, 8, "byte")
        block = tuple(data)
        self._do(
            "write_block", addr, register, block, lambda d: d.write_block(register, list(block))
        )

    def close(self) -> None:
        self.closed = True


# --- word-register chips ----------------------------------------------------------------


class _BigEndianChip(FakeDevice):
    """16-bit registers sent MSB first; SMBus takes the first byte as the low one."""

    def register(self, reg: int) -> int:
        raise _oserror(errno.EIO, f"no register {reg:#04x}")

    def write_register(self, reg: int, value: int) -> None:
        raise _oserror(errno.EIO, f"no register {reg:#04x}")

    def read_word(self, register: int) -> int:
        return swap16(self.register(register))

    def write_word(self, register: int, value: int) -> None:
        self.write_register(register, swap16(value))


def _u16(value: int) -> int:
    return value & 0xFFFF


class FakeIna219(_BigEndianChip):
    """TI INA219 current/power monitor. Current and power are derived from the shunt and bus
    voltages through the calibration register exactly as the datasheet's formulas do, so a
    driver with a wrong calibration reads wrong currents here too."""

    CONFIG, SHUNT, BUS, POWER, CURRENT, CALIBRATION = range(6)
    POR_CONFIG = 0x399F
    _PGA_COUNTS = (4000, 8000, 16000, 32000)  # +-40/80/160/320 mV at 10 uV per count

    def __init__(self, shunt_ohms: float = 0.1) -> None:
        super().__init__()
        self.shunt_ohms = shunt_ohms
        self.bus_volts = 0.0
        self.shunt_volts = 0.0
        self.resets = 0
        self.power_cycle()

    def power_cycle(self) -> None:
        """A brownout: configuration and calibration back to their power-on values."""
        self.config = self.POR_CONFIG
        self.calibration = 0

    def set_bus_voltage(self, volts: float) -> None:
        self.bus_volts = volts

    def set_shunt_voltage(self, volts: float) -> None:
        self.shunt_volts = volts

    def set_current(self, amps: float) -> None:
        """Positive flows from IN+ to IN-."""
        self.shunt_volts = amps * self.shunt_ohms

    def _shunt_counts(self) -> int:
        limit = self._PGA_COUNTS[(self.config >> 11) & 3]
        return max(-limit, min(limit, round(self.shunt_volts / 10e-6)))

    def _bus_counts(self) -> int:
        full_scale = 32.0 if self.config & 0x2000 else 16.0
        volts = max(0.0, min(full_scale, self.bus_volts))
        return min(0x1FFF, round(volts / 0.004))

    def _current_power(self) -> tuple[int, int, bool]:
        current = int(self._shunt_counts() * self.calibration / 4096)  # truncates toward 0
        power = int(abs(current) * self._bus_counts() / 5000)
        overflow = not -0x8000 <= current <= 0x7FFF or power > 0xFFFF
        return current, power, overflow

    def register(self, reg: int) -> int:
        if reg == self.CONFIG:
            return self.config
        if reg == self.CALIBRATION:
            return self.calibration
        if reg == self.SHUNT:
            return _u16(self._shunt_counts())
        current, power, overflow = self._current_power()
        if reg == self.BUS:
            return (self._bus_counts() << 3) | 0x02 | int(overflow)  # CNVR set, OVF
        if reg == self.CURRENT:
            return _u16(current)
        if reg == self.POWER:
            return power & 0xFFFF
        return super().register(reg)

    def write_register(self, reg: int, value: int) -> None:
        if reg == self.CONFIG:
            if value & 0x8000:
                self.resets += 1
                self.power_cycle()
            else:
                self.config = value
        elif reg == self.CALIBRATION:
            self.calibration = value & 0xFFFE  # bit 0 is void, always reads 0
        elif reg in (self.SHUNT, self.BUS, self.POWER, self.CURRENT):
            self.violations.append(f"write {value:#06x} to read-only register {reg:#04x}")
        else:
            super().write_register(reg, value)


class FakeMax17048(_BigEndianChip):
    """Maxim MAX17048 fuel gauge. A reset (CMD 0x5400) is not ACKed by the chip, so the
    write fails on the bus after it took effect, as on hardware."""

    VCELL, SOC, MODE, VERSION, HIBRT, CONFIG = 0x02, 0x04, 0x06, 0x08, 0x0A, 0x0C
    VALRT, CRATE, VRESET, STATUS, CMD = 0x14, 0x16, 0x18, 0x1A, 0xFE
    _POR: ClassVar[dict[int, int]] = {
        MODE: 0x0000,
        HIBRT: 0x8030,
        CONFIG: 0x971C,
        VALRT: 0x00FF,
        VRESET: 0x9600,
    }
    _READ_ONLY = (VCELL, SOC, VERSION, CRATE)

    def __init__(self, version: int = 0x0012) -> None:
        super().__init__()
        self.version = version
        self.vcell_raw = 0
        self.soc_raw = 0
        self.crate_raw = 0
        self.quick_starts = 0
        self.resets = 0
        self.regs: dict[int, int] = {}
        self._por()

    def _por(self) -> None:
        self.regs = dict(self._POR)
        self.regs[self.STATUS] = 0x0100  # RI: reset indicator

    def set_cell_voltage(self, volts: float) -> None:
        self.vcell_raw = round(volts / 78.125e-6)

    def set_soc(self, percent: float) -> None:
        self.soc_raw = round(percent * 256)

    def _quick_start(self) -> None:
        """Re-estimate SOC from the voltage alone (the fake's crude linear model)."""
        volts = self.vcell_raw * 78.125e-6
        self.set_soc(max(0.0, min(100.0, (volts - 3.0) / 1.2 * 100)))
        self.quick_starts += 1

    def register(self, reg: int) -> int:
        fixed = {
            self.VCELL: self.vcell_raw,
            self.SOC: self.soc_raw,
            self.VERSION: self.version,
            self.CRATE: _u16(self.crate_raw),
        }
        if reg in fixed:
            return fixed[reg]
        if reg in self.regs:
            return self.regs[reg]
        if reg == self.CMD:
            return 0xFFFF
        return super().register(reg)

    def write_register(self, reg: int, value: int) -> None:
        if reg in self._READ_ONLY:
            self.violations.append(f"write {value:#06x} to read-only register {reg:#04x}")
        elif reg == self.MODE:
            if value & 0x4000:
                self._quick_start()
            self.regs[reg] = value & ~0x4000
        elif reg == self.CMD:
            if value != 0x5400:
                self.violations.append(f"unknown command {value:#06x}")
                return
            self.resets += 1
            self._por()
            raise _oserror(errno.EREMOTEIO, "MAX17048 resets without ACK")
        elif reg in self.regs:
            self.regs[reg] = value
        else:
            super().write_register(reg, value)


# --- PCF8574 expanders ------------------------------------------------------------------


class FakePcf8574Input(FakeDevice):
    """A PCF8574 with buttons to ground: a pressed button reads 0. Pins are quasi-
    bidirectional, so a pin the driver wrote 0 reads 0 whatever the button does."""

    def __init__(self, names: dict[str, int] | None = None) -> None:
        """names: button name -> pin, so tests can press by name."""
        super().__init__()
        self.names = dict(names or {})
        self.latch = 0xFF
        self.held: set[int] = set()

    def _pin(self, button: str | int) -> int:
        return self.names[button] if isinstance(button, str) else button

    def press(self, button: str | int) -> None:
        self.held.add(self._pin(button))

    def release(self, button: str | int) -> None:
        self.held.discard(self._pin(button))

    def read_byte(self) -> int:
        levels = 0xFF
        for pin in self.held:
            levels &= ~(1 << pin)
        return self.latch & levels

    def write_byte(self, value: int) -> None:
        self.latch = value


_LCD_PIN_MAPS: dict[str, dict[str, Any]] = {
    # bits of D4..D7, RS, RW, E, backlight, backlight active low
    "common": {"data": (4, 5, 6, 7), "rs": 0, "rw": 1, "e": 2, "bl": 3, "bl_low": False},
    "lcdproc": {"data": (0, 1, 2, 3), "rs": 4, "rw": 5, "e": 6, "bl": 7, "bl_low": True},
}
_INIT_NIBBLES = (0x3, 0x3, 0x3, 0x2)
_INIT_WAITS = (4.1e-3, 100e-6, 37e-6, 37e-6)  # datasheet minimum after each init nibble
_EXEC_S = 37e-6
_CLEAR_S = 1.52e-3


def _rom_a00(code: int) -> str:
    """HD44780 character ROM A00 (the common Japanese one)."""
    special = {0x5C: "¥", 0x7E: "→", 0x7F: "←", 0xFF: "█"}
    if code in special:
        return special[code]
    return chr(code) if 0x20 <= code <= 0x7D else "\ufffd"


class FakePcf8574Lcd(FakeDevice):
    """An HD44780 character LCD behind a PCF8574 backpack, wired per pin_map. Decodes the
    expander writes: data and RS are latched on E falling, must be steady across that edge,
    and nothing is accepted before the 4-bit initialisation (3, 3, 3, 2) has been clocked.
    With a clock it also checks the datasheet's minimum waits."""

    def __init__(
        self,
        cols: int = 16,
        rows: int = 2,
        pin_map: str = "common",
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.cols, self.rows = cols, rows
        self.map = _LCD_PIN_MAPS[pin_map]
        self.clock = clock
        self.pins = 0xFF  # PCF8574 outputs are high after power-on
        self.ddram = bytearray(b"\xff" * 0x80)  # garbage until cleared
        self.nibbles: list[tuple[int, int]] = []
        """(RS, nibble) clocked in, in order."""
        self.instructions: list[tuple[int, int]] = []
        """(RS, byte) executed, in order."""
        self.initialised = False
        self._init_step = 0
        self._eight_bit = True
        self._high: int | None = None
        self._power_on = clock() if clock else 0.0
        self._busy_until = self._power_on + 40e-3
        self.address = 0
        self.increment = True
        self.display_on = self.cursor_on = self.blink = self.two_line = False

    # expander side

    def _bit(self, name: str) -> int:
        return 1 << self.map[name]

    @property
    def backlight(self) -> bool:
        level = bool(self.pins & self._bit("bl"))
        return level != self.map["bl_low"]

    def read_byte(self) -> int:
        return self.pins

    def write_byte(self, value: int) -> None:
        old, self.pins = self.pins, value
        e = self._bit("e")
        if not (old & e and not value & e):
            return
        steady = self._bit("rs") | self._bit("rw") | sum(1 << b for b in self.map["data"])
        if (old ^ value) & steady:
            self.violations.append(f"data changed with E falling ({old:#04x} -> {value:#04x})")
        if old & self._bit("rw"):
            self.violations.append("read cycle (RW high) clocked; not supported")
            return
        nibble = sum(1 << i for i, b in enumerate(self.map["data"]) if old & (1 << b))
        self._clock_nibble(int(bool(old & self._bit("rs"))), nibble)

    # controller side

    def _clock_nibble(self, rs: int, nibble: int) -> None:
        now = self.clock() if self.clock else None
        if now is not None and now < self._busy_until:
            late = f"{now * 1e3:.3f} ms, busy until {self._busy_until * 1e3:.3f} ms"
            self.violations.append(f"nibble {nibble:#x} at {late}")
        self.nibbles.append((rs, nibble))
        if not self.initialised:
            step = self._init_step
            if rs or nibble != _INIT_NIBBLES[step]:
                self.violations.append(f"rs={rs} nibble {nibble:#x} before the 4-bit init sequence")
                self._init_step = 0
                return
            self._init_step += 1
            self._execute(0, nibble << 4)
            if now is not None:
                self._busy_until = now + _INIT_WAITS[step]
            self.initialised = self._init_step == len(_INIT_NIBBLES)
            return
        if self._eight_bit:
            self._run(rs, nibble << 4, now)
        elif self._high is None:
            self._high = nibble
        else:
            byte, self._high = (self._high << 4) | nibble, None
            self._run(rs, byte, now)

    def _run(self, rs: int, byte: int, now: float | None) -> None:
        self._execute(rs, byte)
        if now is not None:
            slow = not rs and byte in (0x01, 0x02, 0x03)
            self._busy_until = now + (_CLEAR_S if slow else _EXEC_S)

    def _step_address(self) -> None:
        a = self.address + (1 if self.increment else -1)
        if self.two_line:
            if a == 0x28:
                a = 0x40
            elif a == 0x68:
                a = 0x00
            elif a == 0x3F:
                a = 0x27
            elif a == -1:
                a = 0x67
        else:
            a %= 0x50
        self.address = a

    def _execute(self, rs: int, byte: int) -> None:
        self.instructions.append((rs, byte))
        if rs:
            self.ddram[self.address] = byte
            self._step_address()
        elif byte & 0x80:
            self.address = byte & 0x7F
        elif byte & 0x40:
            self.violations.append("CGRAM address set; custom characters are not modelled")
        elif byte & 0x20:
            self._eight_bit = bool(byte & 0x10)
            self._high = None
            if self.initialised:  # D3..D0 float while the init nibbles are clocked
                self.two_line = bool(byte & 0x08)
        elif byte & 0x10:
            if byte & 0x08:
                self.violations.append("display shift is not modelled")
            else:
                self.increment, saved = bool(byte & 0x04), self.increment
                self._step_address()
                self.increment = saved
        elif byte & 0x08:
            self.display_on, self.cursor_on, self.blink = (bool(byte & b) for b in (4, 2, 1))
        elif byte & 0x04:
            self.increment = bool(byte & 0x02)
            if byte & 0x01:
                self.violations.append("entry-mode display shift is not modelled")
        elif byte & 0x02:
            self.address = 0
        elif byte == 0x01:
            self.ddram[:] = b" " * len(self.ddram)
            self.address = 0
            self.increment = True

    # what the glass shows

    def row_address(self, row: int) -> int:
        return (0x00, 0x40, self.cols, 0x40 + self.cols)[row]

    def lines(self) -> list[str]:
        """DDRAM text per row; a row driven only in two-line mode is blank in one-line mode."""
        out = []
        for row in range(self.rows):
            start = self.row_address(row)
            if start >= 0x40 and not self.two_line:
                out.append(" " * self.cols)
                continue
            out.append("".join(_rom_a00(c) for c in self.ddram[start : start + self.cols]))
        return out

    @property
    def cursor(self) -> tuple[int, int] | None:
        """(column, row) of the address counter when it falls on the glass."""
        for row in range(self.rows):
            start = self.row_address(row)
            if start <= self.address < start + self.cols:
                return self.address - start, row
        return None


# --- SSD1306 ------------------------------------------------------------------------------

_SSD1306_ARGS = {
    0x20: 1, 0x21: 2, 0x22: 2, 0x26: 6, 0x27: 6, 0x29: 5, 0x2A: 5, 0x81: 1, 0x8D: 1,
    0xA3: 2, 0xA8: 1, 0xD3: 1, 0xD5: 1, 0xD9: 1, 0xDA: 1, 0xDB: 1,
}  # fmt: skip
_SSD1306_SINGLE = {0x2E, 0x2F, 0xA0, 0xA1, 0xA4, 0xA5, 0xA6, 0xA7, 0xAE, 0xAF, 0xC0, 0xC8, 0xE3}


class FakeSsd1306(FakeDevice):
    """SSD1306 OLED controller on I2C: each transfer is a control byte (the SMBus register)
    then a stream of commands (0x00) or display data (0x40). Display RAM is 8 pages of 128
    column bytes, bit 0 the top row of a page; it holds a pattern at power-on, as real RAM
    holds noise."""

    def __init__(self, width: int = 128, height: int = 64) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.gddram = [bytearray(b"\xa5" * 128) for _ in range(8)]
        self.display_on = False
        self.mode = 2  # page addressing after reset
        self.col_start, self.col_end, self.page_start, self.page_end = 0, 127, 0, 7
        self.col = self.page = 0
        self.settings: dict[int, tuple[int, ...]] = {}
        """Last arguments of each configuration command (0xA8 multiplex, 0x8D pump, ...)."""
        self.seg_remap = self.com_reverse = self.inverted = False
        self.commands: list[tuple[int, ...]] = []
        self._pending: list[int] = []

    def read_byte(self) -> int:
        return 0x40 if not self.display_on else 0x00  # status: D6 = display off

    def write_word(self, register: int, value: int) -> None:
        self.write_block(register, [value & 0xFF, value >> 8])

    def write_block(self, register: int, data: list[int]) -> None:
        if register == 0x00:
            for b in data:
                self._command_byte(b)
        elif register == 0x40:
            if self._pending:
                self.violations.append(f"data while command {self._pending[0]:#04x} lacks args")
                self._pending = []
            for b in data:
                self._data_byte(b)
        else:
            self.violations.append(f"control byte {register:#04x} (only 0x00 and 0x40 streams)")

    def _command_byte(self, b: int) -> None:
        if not self._pending:
            if b in _SSD1306_ARGS:
                self._pending = [b]
                return
            self._command((b,))
            return
        self._pending.append(b)
        if len(self._pending) == _SSD1306_ARGS[self._pending[0]] + 1:
            cmd, self._pending = tuple(self._pending), []
            self._command(cmd)

    def _command(self, cmd: tuple[int, ...]) -> None:
        self.commands.append(cmd)
        op, args = cmd[0], cmd[1:]
        if op <= 0x0F and self.mode == 2:
            self.col = (self.col & 0xF0) | op
        elif 0x10 <= op <= 0x1F and self.mode == 2:
            self.col = (self.col & 0x0F) | ((op & 0x0F) << 4)
        elif 0xB0 <= op <= 0xB7:
            self.page = op & 7
        elif op == 0x20:
            if args[0] & 3 == 3:
                self.violations.append("addressing mode 3 is invalid")
            else:
                self.mode = args[0] & 3
        elif op == 0x21:
            self.col_start, self.col_end = args[0] & 0x7F, args[1] & 0x7F
            self.col = self.col_start
        elif op == 0x22:
            self.page_start, self.page_end = args[0] & 7, args[1] & 7
            self.page = self.page_start
        elif op in (0xAE, 0xAF):
            self.display_on = op == 0xAF
        elif op in (0xA0, 0xA1):
            self.seg_remap = op == 0xA1
        elif op in (0xC0, 0xC8):
            self.com_reverse = op == 0xC8
        elif op in (0xA6, 0xA7):
            self.inverted = op == 0xA7
        elif op in _SSD1306_ARGS:
            self.settings[op] = args
        elif op in _SSD1306_SINGLE or 0x40 <= op <= 0x7F:
            self.settings[op] = ()
        else:
            self.violations.append(f"unknown command {op:#04x}")

    def _data_byte(self, b: int) -> None:
        self.gddram[self.page][self.col] = b
        if self.mode == 0:
            self.col += 1
            if self.col > self.col_end:
                self.col = self.col_start
                self.page = self.page + 1 if self.page < self.page_end else self.page_start
        elif self.mode == 1:
            self.page += 1
            if self.page > self.page_end:
                self.page = self.page_start
                self.col = self.col + 1 if self.col < self.col_end else self.col_start
        else:
            self.col = (self.col + 1) % 128

    def pixel(self, x: int, y: int) -> bool:
        """In RAM order, which is upright on common modules with the usual 0xA1/0xC8 setup."""
        return bool(self.gddram[y // 8][x] >> (y % 8) & 1)

    def lit(self, x0: int = 0, y0: int = 0, x1: int | None = None, y1: int | None = None) -> int:
        """Lit pixels in [x0, x1) x [y0, y1) of the visible area."""
        x1 = self.width if x1 is None else x1
        y1 = self.height if y1 is None else y1
        return sum(self.pixel(x, y) for y in range(y0, y1) for x in range(x0, x1))

    def page_bytes(self, page: int, x0: int = 0, n: int | None = None) -> bytes:
        n = self.width - x0 if n is None else n
        return bytes(self.gddram[page][x0 : x0 + n])
