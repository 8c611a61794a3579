"""The slice of an I2C/SMBus adapter that our drivers use (smbus2.SMBus has it, and so has
the simulated bus), and the byte-order rule of register words."""

from __future__ import annotations

from typing import Protocol


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
