"""UPSes on a serial line (pyserial): Megatec/Q1 units and APC Smart-UPS in smart mode.

Every read() runs against one deadline, so a unit that stopped answering costs the caller
`timeout` seconds in total however many commands or retries a reading takes. Answers are
bounded (MAX_ANSWER bytes, numbers of a few digits): whatever the line carries, read() returns
a reading or raises a hal error, and an error's text never carries more than a few dozen bytes
of what came."""

from __future__ import annotations

import errno
import os
import re
import termios
import time
from collections import deque
from dataclasses import dataclass

import serial

from hal.errors import DeviceIOError, DeviceTimeout, Garbled, Unavailable
from hal.ups import Ups, UpsReading

_GONE = frozenset(
    {errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EACCES, errno.ENOTTY, errno.EISDIR}
)


MAX_ANSWER = 128
"""The longest answer either protocol gives is under 50 bytes; more is noise, not an answer."""
SHOWN_BYTES = 48
"""How much of a bad answer an error message quotes."""
MAX_MODEL = 40


def _shown(raw: bytes) -> str:
    more = f" and {len(raw) - SHOWN_BYTES} bytes more" if len(raw) > SHOWN_BYTES else ""
    return f"{raw[:SHOWN_BYTES]!r}{more}"


class _Garbled(Exception):
    """An answer that does not parse; read() retries once before giving up."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(raw)
        self.raw = raw


class _SerialUps:
    """Port handling shared by both protocols: open, deadline-bound reads, errno mapping.

    A port that failed is closed and opened again by the next read(), so a USB serial adapter
    that was replugged comes back without the caller rebuilding the driver."""

    driver = ""
    baudrate = 2400

    def __init__(self, port: str, timeout: float = 2.0) -> None:
        self.port = port
        self.timeout = timeout
        self._ser: serial.Serial | None = None
        self._open()

    def _open(self) -> serial.Serial:
        try:
            self._ser = serial.Serial(self.port, self.baudrate, timeout=0.05, write_timeout=1)
        except serial.SerialException as e:
            # pyserial keeps open()'s errno; tcgetattr() failing (a /dev node without a
            # device behind it, or no tty at all) arrives as a termios.error context.
            no_tty = isinstance(e.__context__, termios.error)
            if no_tty or e.errno in _GONE or not os.path.exists(self.port):
                raise Unavailable(f"serial UPS port {self.port}: {e}") from e
            raise DeviceIOError(f"serial UPS port {self.port}: {e}") from e
        return self._ser

    def close(self) -> None:
        if self._ser is not None:
            ser, self._ser = self._ser, None
            ser.close()

    def read(self) -> UpsReading:
        ser = self._ser or self._open()
        deadline = time.monotonic() + self.timeout
        try:
            try:
                return self._read(ser, deadline)
            except _Garbled:
                return self._read(ser, deadline)  # one retry: a noisy line, not a broken unit
        except _Garbled as e:
            raise Garbled(f"{self.driver} UPS on {self.port}: unparseable {_shown(e.raw)}") from e
        except (OSError, termios.error, serial.SerialException) as e:
            self.close()
            if not os.path.exists(self.port):
                raise Unavailable(f"{self.driver} UPS on {self.port}: port went away") from e
            raise DeviceIOError(f"{self.driver} UPS on {self.port}: {e}") from e

    def _read(self, ser: serial.Serial, deadline: float) -> UpsReading:
        raise NotImplementedError

    def _read_until(self, ser: serial.Serial, end: bytes, deadline: float, what: str) -> bytes:
        """Bytes up to and including `end`; DeviceTimeout (with what came) at the deadline,
        _Garbled when MAX_ANSWER bytes came without `end`."""
        buf = bytearray()
        while True:
            buf += ser.read(max(1, min(ser.in_waiting, MAX_ANSWER + 1 - len(buf))))
            if end in buf:
                return bytes(buf)
            if len(buf) > MAX_ANSWER:
                raise _Garbled(bytes(buf))
            if time.monotonic() >= deadline:
                got = f", got {_shown(bytes(buf))}" if buf else ""
                raise DeviceTimeout(
                    f"{self.driver} UPS on {self.port}: no answer to {what} within "
                    f"{self.timeout:g} s{got}"
                )


@dataclass(frozen=True)
class MegatecRatings:
    """The `F` answer: what the unit is built for."""

    voltage: float
    current: float
    battery_voltage: float
    frequency: float


_N = rb"\d{1,4}\.\d"
_Q1 = re.compile(
    rb"\((%s) (%s) (%s) (\d{3}) (\S{1,8}) (\d{1,4}\.\d{1,3}) (\S{1,8}) ([01]{8})\r" % (_N, _N, _N)
)
_F = re.compile(rb"#(%s) (\d{1,4}(?:\.\d)?) (%s) (%s)\r" % (_N, _N, _N))
_NOT_ASKED = object()


class MegatecUps(_SerialUps):
    """Megatec/Q1 (the `nutdrv_qx` protocol=megatec family): `Q1` gives voltages, load and
    eight status bits; the unit reports no charge, no runtime and no replace-battery flag."""

    driver = "megatec"

    def __init__(self, port: str, timeout: float = 2.0) -> None:
        super().__init__(port, timeout)
        self._model: object = _NOT_ASKED
        self._ratings: object = _NOT_ASKED

    def _ask(self, ser: serial.Serial, command: bytes, deadline: float) -> bytes:
        ser.reset_input_buffer()  # a late answer to an earlier command would misalign us
        ser.write(command)
        return self._read_until(ser, b"\r", deadline, repr(command))

    def _optional(self, ser: serial.Serial, command: bytes, deadline: float) -> bytes | None:
        """Identity and ratings: some units echo the command back or never answer them."""
        try:
            answer = self._ask(ser, command, deadline)
        except DeviceTimeout:
            return None
        return answer if answer.startswith(b"#") else None

    def ratings(self) -> MegatecRatings | None:
        """Asked once (on the first reading); None if the unit does not answer `F`."""
        return self._ratings if isinstance(self._ratings, MegatecRatings) else None

    def _read(self, ser: serial.Serial, deadline: float) -> UpsReading:
        raw = self._ask(ser, b"Q1\r", deadline)
        parse_q1(raw, None)  # before asking anything else: a garbled answer is retried
        if self._ratings is _NOT_ASKED:
            answer = self._optional(ser, b"F\r", deadline)
            self._ratings = parse_ratings(answer) if answer else None
        if self._model is _NOT_ASKED:
            answer = self._optional(ser, b"I\r", deadline)
            self._model = _identity(answer) if answer else None
        return parse_q1(raw, self.ratings(), self._model if isinstance(self._model, str) else None)


def parse_q1(raw: bytes, ratings: MegatecRatings | None, model: str | None = None) -> UpsReading:
    """A `Q1` answer as a reading; _Garbled if it is not one."""
    m = _Q1.search(raw)
    if not m:
        raise _Garbled(raw)
    bits = m.group(8)
    battery = float(m.group(6))
    if battery < 3.0 and ratings and ratings.battery_voltage >= 6:
        battery *= ratings.battery_voltage / 2.0  # some units report volts per 2 V cell
    return UpsReading(
        on_battery=bits[0:1] == b"1",
        low_battery=bits[1:2] == b"1",
        replace_battery=False,
        battery_charge_percent=None,
        battery_voltage=battery,
        load_percent=float(m.group(4)),
        input_voltage=float(m.group(1)),
        output_voltage=float(m.group(3)),
        runtime_seconds=None,
        model=model,
        driver=MegatecUps.driver,
    )


def parse_ratings(answer: bytes) -> MegatecRatings | None:
    """An `F` answer; None if it is not one (the ratings are optional)."""
    f = _F.search(answer)
    return MegatecRatings(*map(float, f.groups())) if f else None


def _identity(answer: bytes) -> str | None:
    """`#Company________ Model_____ Version___`: company and model, blanks dropped."""
    text = answer[1:].rstrip(b"\r").decode("ascii", "replace")
    company, model = text[0:15].strip(), text[16:26].strip()
    name = " ".join(p for p in (company, model) if p.strip("-"))
    return _printable(name)


def _printable(text: str) -> str | None:
    """A model name for the status: printable, at most MAX_MODEL characters, or None."""
    shown = "".join(c for c in text if c.isprintable())[:MAX_MODEL].strip()
    return shown or None


APC_EVENTS = {
    ord("!"): "on_battery",
    ord("$"): "on_line",
    ord("%"): "low_battery",
    ord("+"): "low_battery_cleared",
    ord("#"): "replace_battery",
    ord("?"): "abnormal",
    ord("="): "abnormal_cleared",
    ord("|"): "eeprom_changed",
}
"""Characters a Smart-UPS sends unasked, at any time, even inside an answer."""

_APC_NUMBER = re.compile(r"\d{1,4}(?:\.\d{1,3})?")
_APC_RUNTIME = re.compile(r"(\d{1,5}):")
_APC_STATUS = re.compile(r"[0-9A-Fa-f]{2}")
APC_ON_BATTERY, APC_LOW_BATTERY, APC_REPLACE_BATTERY = 0x10, 0x40, 0x80


class ApcSmartUps(_SerialUps):
    """APC Smart protocol: `Y` to enter smart mode, then one-character queries answered with a
    CR LF line. Unsolicited event characters are taken out of the stream and kept in
    `events` (newest last), so they never break an answer and are not lost either."""

    driver = "apc"

    def __init__(self, port: str, timeout: float = 2.0) -> None:
        super().__init__(port, timeout)
        self._smart = False
        self._model: object = _NOT_ASKED
        self.events: deque[str] = deque(maxlen=64)

    def _take_events(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if b in APC_EVENTS:
                self.events.append(APC_EVENTS[b])
            else:
                out.append(b)
        return bytes(out)

    def _ask(self, ser: serial.Serial, command: bytes, deadline: float) -> str:
        # Whatever waits is either events or the tail of an answer we gave up on.
        self._take_events(ser.read(ser.in_waiting) if ser.in_waiting else b"")
        ser.write(command)
        raw = self._read_until(ser, b"\n", deadline, repr(command))
        line = self._take_events(raw)
        try:
            return line.decode("ascii").strip("\r\n")
        except UnicodeDecodeError:
            raise _Garbled(raw) from None

    def _query(
        self, ser: serial.Serial, command: bytes, deadline: float, pattern: re.Pattern[str]
    ) -> str | None:
        return apc_value(self._ask(ser, command, deadline), pattern)

    def _number(self, ser: serial.Serial, command: bytes, deadline: float) -> float | None:
        value = self._query(ser, command, deadline, _APC_NUMBER)
        return None if value is None else float(value)

    def _read(self, ser: serial.Serial, deadline: float) -> UpsReading:
        try:
            return self._read_smart(ser, deadline)
        except Exception:
            self._smart = False  # the unit may have restarted in dumb mode: say Y again
            raise

    def _read_smart(self, ser: serial.Serial, deadline: float) -> UpsReading:
        if not self._smart:
            answer = self._ask(ser, b"Y", deadline)
            if answer != "SM":
                raise _Garbled(answer.encode())
            self._smart = True
        status_hex = self._query(ser, b"Q", deadline, _APC_STATUS)
        if status_hex is None:
            raise _Garbled(b"NA")
        status = int(status_hex, 16)
        runtime = self._query(ser, b"j", deadline, _APC_RUNTIME)
        if self._model is _NOT_ASKED:
            model = self._ask(ser, b"\x01", deadline)
            self._model = _printable(model) if model != "NA" else None
        return UpsReading(
            on_battery=bool(status & APC_ON_BATTERY),
            low_battery=bool(status & APC_LOW_BATTERY),
            replace_battery=bool(status & APC_REPLACE_BATTERY),
            battery_charge_percent=self._number(ser, b"f", deadline),
            battery_voltage=self._number(ser, b"B", deadline),
            load_percent=self._number(ser, b"P", deadline),
            input_voltage=self._number(ser, b"L", deadline),
            output_voltage=self._number(ser, b"O", deadline),
            runtime_seconds=None if runtime is None else int(runtime) * 60.0,
            model=self._model if isinstance(self._model, str) else None,
            driver=self.driver,
        )


def apc_value(text: str, pattern: re.Pattern[str]) -> str | None:
    """A value in an APC answer, or None when the unit says NA (it lacks that measurement);
    _Garbled if the answer is neither."""
    if text == "NA":
        return None
    m = pattern.fullmatch(text)
    if not m:
        raise _Garbled(text.encode())
    return m.group(m.lastindex or 0)


PROTOCOLS: dict[str, type[_SerialUps]] = {"megatec": MegatecUps, "apc": ApcSmartUps}


def open_serial_ups(port: str, protocol: str, timeout: float = 2.0) -> Ups:
    """protocol: "megatec" (Q1) or "apc" (APC Smart). Raises Unavailable if the port is not
    there; nothing is sent until the first read()."""
    try:
        cls = PROTOCOLS[protocol]
    except KeyError:
        raise ValueError(f"unknown UPS protocol {protocol!r}; known: {sorted(PROTOCOLS)}") from None
    return cls(port, timeout)
