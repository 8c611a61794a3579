"""The slice of an I2C/SMBus adapter that our drivers use (smbus2.SMBus has it, and so has
the simulated bus), and the byte-order rule of register words."""

from __future__ import annotations

from typing import Protocol

from hal.errors import Unavailable


class I2cBus(Protocol):
    def read_byte(self, addr: int) -> int: ...

    def write_byte(self, addr: int, value: int) -> None: ...

    def read_word_data(self, addr: int, register: int) -> int: ...

    def write_word_data(self, addr: int, register: int, value: int) -> None: ...

    def write_i2c_block_data(self, addr: int, register: int, data: list[int]) -> None: ...

    def close(self) -> None: ...


def swap16(word: int) -> int:
    """SMBus words are little-endian on the wire; INA219 and MAX17048 registers are
    big-endian, so every word read or written is byte-swapped."""
    return ((word & 0xFF) << 8) | (word >> 8)


class I2cDevice:
    """A chip on a bus this driver may own: close() closes the bus too unless it was given
    with close_bus=False (shared with other chips), and a closed device refuses work."""

    def __init__(self, bus: I2cBus, addr: int, what: str, close_bus: bool) -> None:
        self._bus, self._addr, self._what, self._close_bus = bus, addr, what, close_bus
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(f"{self._what}: closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._close_bus:
            self._bus.close()
