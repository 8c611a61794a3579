"""Serial UPS emulators that speak Megatec/Q1 or APC Smart on a pty.

Anything that opens a serial port (our driver, NUT's nutdrv_qx) can talk to them, so a test
checks the driver against the wire protocol and checks the emulator against NUT."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from dataclasses import dataclass, fields, replace
from typing import Self


@dataclass
class UpsState:
    """What the emulated unit would measure; flags are what its firmware would report."""

    on_battery: bool = False
    low_battery: bool = False
    replace_battery: bool = False
    charge_percent: float = 100.0
    battery_voltage: float = 27.2
    load_percent: float = 25.0
    input_voltage: float = 230.0
    output_voltage: float = 230.0
    frequency: float = 50.0
    temperature: float = 30.0
    runtime_seconds: float = 2520.0


_MEASURED = frozenset(f.name for f in fields(UpsState) if f.type == "float")


class _PtyEmulator:
    """A unit on the far end of a pty: a daemon thread reads commands from the master side
    and answers them; tests script the state from their own thread."""

    garbage: bytes = b""
    """What a garbled unit sends instead of an answer."""

    def __init__(self, state: UpsState | None = None) -> None:
        self._master, self._slave = os.openpty()
        # Raw: no echo or CR/NL translation before a driver sets its own termios. The slave
        # stays open here so the master never sees EIO while no driver has the port open.
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.state = state or UpsState()
        self.commands: list[str] = []
        """Every command received, in order, without its terminator."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._muted = False
        self._garble_left: int | None = 0  # None: garble every answer
        self._closed = False
        self._mains_voltage = self.state.input_voltage

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"{type(self).__name__}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if not self._closed:
            self._closed = True
            os.close(self._master)
            os.close(self._slave)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting --------------------------------------------------------------------------
    def snapshot(self) -> UpsState:
        with self._lock:
            return replace(self.state)

    def set(self, **values: float) -> None:
        """Change measured values, e.g. set(charge_percent=40, runtime_seconds=600)."""
        with self._lock:
            for name, value in values.items():
                if name not in _MEASURED:
                    raise TypeError(f"no UPS measurement {name!r}; flags have their own methods")
                setattr(self.state, name, float(value))

    def mains_fail(self) -> None:
        """The utility goes away: input reads 0 V, the inverter carries the load."""
        with self._lock:
            if self.state.on_battery:
                return
            self._mains_voltage = self.state.input_voltage
            self.state.on_battery = True
            self.state.input_voltage = 0.0
        self._unsolicited(b"!")

    def mains_back(self) -> None:
        with self._lock:
            if not self.state.on_battery:
                return
            self.state.on_battery = False
            self.state.input_voltage = self._mains_voltage
        self._unsolicited(b"$")

    def low_battery(self, on: bool = True) -> None:
        with self._lock:
            changed = self.state.low_battery != on
            self.state.low_battery = on
        if changed:
            self._unsolicited(b"%" if on else b"+")

    def replace_battery(self, on: bool = True) -> None:
        with self._lock:
            changed = self.state.replace_battery != on
            self.state.replace_battery = on
        if changed and on:
            self._unsolicited(b"#")

    def mute(self, on: bool = True) -> None:
        """Stop answering (a unit that hung or a cable that fell out)."""
        with self._lock:
            self._muted = on

    def garble(self, on: bool = True, times: int | None = None) -> None:
        """Answer nonsense: always, or only the next `times` answers (a noisy line)."""
        with self._lock:
            self._garble_left = times if on else 0

    # -- protocol hooks ---------------------------------------------------------------------
    def _split(self, pending: bytearray) -> list[str]:
        """Take whole commands off the front of pending."""
        raise NotImplementedError

    def _answer(self, command: str, state: UpsState) -> bytes:
        raise NotImplementedError

    def _unsolicited(self, data: bytes) -> None:
        """Protocols without unsolicited messages send nothing."""

    def _write(self, data: bytes) -> None:
        if data and not self._closed:
            with contextlib.suppress(OSError):  # stopped meanwhile
                os.write(self._master, data)

    # -- the unit's firmware ----------------------------------------------------------------
    def _serve(self) -> None:
        pending = bytearray()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                pending += os.read(self._master, 1024)
            except OSError:
                return  # closed under us by stop()
            for command in self._split(pending):
                with self._lock:
                    self.commands.append(command)
                    if self._muted:
                        continue
                    state = replace(self.state)
                    garbled = self._garble_left is None or self._garble_left > 0
                    if self._garble_left:
                        self._garble_left -= 1
                answer = self.garbage if garbled else self._answer(command, state)
                self._write(answer)


class MegatecEmulator(_PtyEmulator):
    """A line-interactive Megatec/Q1 unit, 24 V battery, 230 V / 50 Hz."""

    garbage = b"(23@.0 1X5.0 ###.# 0?5 5.0 27 00100\r"

    def __init__(
        self,
        state: UpsState | None = None,
        company: str = "EMU",
        model: str = "LI-1000",
        version: str = "V1.0",
    ) -> None:
        super().__init__(state)
        self.identity = f"#{company:<15.15} {model:<10.10} {version:<10.10}\r".encode()

    def _split(self, pending: bytearray) -> list[str]:
        out = []
        while b"\r" in pending:
            line, _, rest = bytes(pending).partition(b"\r")
            pending[:] = rest
            out.append(line.decode("ascii", "replace"))
        return out

    def _answer(self, command: str, s: UpsState) -> bytes:
        if command == "Q1":
            bits = "".join(
                "1" if b else "0"
                for b in (s.on_battery, s.low_battery, False, False, True, False, False, True)
            )
            batt = (
                f"{s.battery_voltage:04.1f}"
                if s.battery_voltage >= 10
                else f"{s.battery_voltage:.2f}"
            )
            return (
                f"({s.input_voltage:05.1f} {s.input_voltage:05.1f} {s.output_voltage:05.1f} "
                f"{round(s.load_percent):03d} {s.frequency:04.1f} {batt} {s.temperature:04.1f} "
                f"{bits}\r"
            ).encode()
        if command == "F":
            return b"#230.0 004 024.0 50.0\r"
        if command == "I":
            return self.identity
        if command in ("Q", "C", "CT") or command[:1] in ("S", "T"):
            return b""  # actions: a real unit acts and says nothing
        return command.encode() + b"\r"  # unknown: echoed back, as these units do


APC_STATUS_ONLINE, APC_STATUS_ON_BATTERY = 0x08, 0x10
APC_STATUS_LOW_BATTERY, APC_STATUS_REPLACE_BATTERY = 0x40, 0x80


class ApcEmulator(_PtyEmulator):
    """An APC Smart-UPS on its smart-signalling cable: one-character commands, answers end in
    CR LF, nothing answered before `Y` puts it in smart mode, and events sent unasked."""

    garbage = b"Zq@x~\r\n"

    def __init__(self, state: UpsState | None = None, model: str = "Smart-UPS 1500") -> None:
        super().__init__(state)
        self.model = model
        self._smart = False
        self._inject = b""

    def inject(self, chars: bytes) -> None:
        """Splice these unsolicited characters into the middle of the next answer."""
        with self._lock:
            self._inject += chars

    def _unsolicited(self, data: bytes) -> None:
        with self._lock:
            if self._muted:
                return
        self._write(data)

    def _split(self, pending: bytearray) -> list[str]:
        out = [chr(b) for b in pending]
        pending.clear()
        return out

    def _answer(self, command: str, s: UpsState) -> bytes:
        if command == "Y":
            self._smart = True
            text = "SM"
        elif not self._smart:
            return b""
        elif command == "R":  # back to dumb mode
            self._smart = False
            text = "BYE"
        else:
            text = self._value(command, s)
        with self._lock:
            inject, self._inject = self._inject, b""
        body = text.encode()
        mid = len(body) // 2
        return body[:mid] + inject + body[mid:] + b"\r\n"

    def _value(self, command: str, s: UpsState) -> str:
        if command == "Q":
            status = APC_STATUS_ON_BATTERY if s.on_battery else APC_STATUS_ONLINE
            status |= APC_STATUS_LOW_BATTERY if s.low_battery else 0
            status |= APC_STATUS_REPLACE_BATTERY if s.replace_battery else 0
            return f"{status:02X}"
        values = {
            "f": f"{s.charge_percent:05.1f}",
            "B": f"{s.battery_voltage:05.2f}",
            "L": f"{s.input_voltage:05.1f}",
            "O": f"{s.output_voltage:05.1f}",
            "P": f"{s.load_percent:05.1f}",
            "F": f"{s.frequency:05.2f}",
            "C": f"{s.temperature:05.1f}",
            "j": f"{int(s.runtime_seconds // 60):04d}:",
            "\x01": self.model,
        }
        return values.get(command, "NA")
