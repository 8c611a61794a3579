"""I2C adapters through i2c-dev (smbus2), and what the kernel's errno values mean for us.

The errno mapping lives here because the meanings are Linux's (Documentation/i2c/fault-codes):
the simulated bus raises the same values so the drivers have one mapping to get right."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hal.errors import DeviceIOError, DeviceTimeout, HalError, Unavailable

if TYPE_CHECKING:
    from smbus2 import SMBus

NOT_THERE = frozenset({errno.ENXIO, errno.ENODEV, errno.EREMOTEIO})
"""No ACK to the address (ENXIO on most adapters, EREMOTEIO on the Pi's); i2c-stub: ENODEV."""


def bus_path(bus: int | str) -> str:
    if isinstance(bus, int):
        return f"/dev/i2c-{bus}"
    return f"/dev/i2c-{bus}" if bus.isdigit() else bus


def open_bus(bus: int | str) -> SMBus:
    """bus: the adapter number (1) or its device node ("/dev/i2c-1")."""
    from smbus2 import SMBus

    path = bus_path(bus)
    try:
        return SMBus(path)
    except (FileNotFoundError, PermissionError) as e:
        raise Unavailable(f"I2C bus {path}: {e.strerror}") from e
    except OSError as e:
        raise hal_error(e, f"I2C bus {path}") from e


def hal_error(exc: OSError, what: str) -> HalError:
    """The hal error for an OSError from an I2C transfer; `what` names the chip."""
    reason = exc.strerror or str(exc)
    if exc.errno in NOT_THERE:
        return Unavailable(f"{what}: no answer ({reason})")
    if exc.errno == errno.ETIMEDOUT:
        return DeviceTimeout(f"{what}: bus timeout ({reason})")
    return DeviceIOError(f"{what}: {reason}")


@contextmanager
def i2c_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise hal_error(e, what) from e
