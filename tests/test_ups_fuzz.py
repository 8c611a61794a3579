"""Whatever comes down the serial line, a UPS driver gives a reading or a hal error with a short
text: the parsers and the whole read() against random and oversized answers, no port needed."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.alerts import Alerts
from firmware.config import UpsConfig, parse_config
from firmware.core.actions import RaiseAlert
from firmware.datadir import prepare
from firmware.hw.monitor import BoardHooks, Hardware
from firmware.hw.power import UNREACHABLE, PowerPolicy
from firmware.timefmt import now_us
from hal.errors import DeviceIOError, Garbled, HalError
from hal.linux import ups_serial
from hal.linux.ups_serial import ApcSmartUps, MegatecUps
from hal.ups import UpsReading

MAX_TEXT = 300
"""An error text quotes a few dozen bytes of the answer, never the answer."""


class FakeLine:
    """A serial port whose unit answers each command with the next scripted answer."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.rx = bytearray()

    @property
    def in_waiting(self) -> int:
        return len(self.rx)

    def write(self, data: bytes) -> int:
        if self.answers:
            self.rx += self.answers.pop(0)
        return len(data)

    def read(self, n: int) -> bytes:
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def reset_input_buffer(self) -> None:
        self.rx.clear()

    def close(self) -> None:
        pass


def driver(cls: type[MegatecUps] | type[ApcSmartUps], answers: list[bytes]):
    class OnFakeLine(cls):  # type: ignore[valid-type, misc]
        def _open(self):
            self._ser = FakeLine(answers)
            return self._ser

    return OnFakeLine("/dev/ttyFAKE", timeout=0.01)


def read_or_error(ups) -> UpsReading | HalError:
    """read(): a reading or a hal error; anything else escapes and fails the test."""
    try:
        return ups.read()
    except HalError as e:
        assert len(str(e)) < MAX_TEXT, str(e)[:500]
        return e


def sane(r: UpsReading) -> None:
    for name in ("battery_charge_percent", "battery_voltage", "load_percent", "input_voltage",
                 "output_voltage", "runtime_seconds"):  # fmt: skip
        value = getattr(r, name)
        assert value is None or (math.isfinite(value) and 0 <= value < 10**7), (name, value)
    assert r.model is None or (len(r.model) <= 40 and r.model.isprintable())


Q1_OK = b"(230.0 230.0 230.0 025 50.0 27.2 30.0 00001001\r"
APC_OK = [b"SM\r\n", b"08\r\n", b"0042:\r\n", b"Smart-UPS 1500\r\n"] + [b"100.0\r\n"] * 5

line_bytes = st.binary(max_size=200)
answer = st.one_of(
    line_bytes,
    line_bytes.map(lambda b: b + b"\r"),
    line_bytes.map(lambda b: b + b"\r\n"),
    st.sampled_from([Q1_OK, *APC_OK, b"NA\r\n"]),
)


@pytest.mark.parametrize("kind", [MegatecUps, ApcSmartUps])
@settings(max_examples=150, deadline=None)
@given(st.lists(answer, max_size=12))
def test_a_read_is_a_reading_or_a_hal_error(kind, answers):
    got = read_or_error(driver(kind, answers))
    if isinstance(got, UpsReading):
        sane(got)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, ups_serial.MegatecRatings(230, 4, 24, 50)]))
def test_q1_parser_gives_a_reading_or_refuses(raw, ratings):
    try:
        r = ups_serial.parse_q1(raw, ratings)
    except ups_serial._Garbled:
        return
    sane(r)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_apc_value_parser_gives_a_bounded_number_or_refuses(text):
    for pattern in (ups_serial._APC_NUMBER, ups_serial._APC_RUNTIME, ups_serial._APC_STATUS):
        try:
            value = ups_serial.apc_value(text, pattern)
        except ups_serial._Garbled:
            continue
        assert value is None or len(value) <= 8


def test_apc_runtime_of_thousands_of_digits_is_a_driver_error_not_a_value_error():
    reading = [b"SM\r\n", b"08\r\n", b"9" * 5000 + b":\r\n", b"Smart-UPS\r\n"] + [b"1.0\r\n"] * 5
    answers = reading * 2  # a whole reading, then its retry
    ups = driver(ApcSmartUps, answers)
    with pytest.raises(Garbled) as info:
        ups.read()
    assert isinstance(info.value, DeviceIOError) and len(str(info.value)) < MAX_TEXT


@pytest.mark.parametrize("cls", [MegatecUps, ApcSmartUps])
def test_a_megabyte_line_gives_a_short_error_and_a_short_alert(cls):
    end = b"\r" if cls is MegatecUps else b"\r\n"
    ups = driver(cls, [b"(" + b"7" * 1_000_000 + end] * 4)
    with pytest.raises(Garbled) as info:
        ups.read()
    text = str(info.value)
    assert len(text) < MAX_TEXT and "bytes more" in text
    assert len(ups._ser.rx) >= 900_000, "the driver stopped reading at its bound"  # type: ignore[union-attr]
    policy = PowerPolicy(UpsConfig(unreachable_alert_seconds=0))
    alerts = [a for a in policy.update(0.0, None, "x" * 1_000_000) if isinstance(a, RaiseAlert)]
    assert [a.id for a in alerts] == [UNREACHABLE] and len(alerts[0].text) < MAX_TEXT


def test_megatec_numbers_of_many_digits_are_garbled():
    huge = b"(" + b"9" * 400 + b".0 230.0 230.0 025 50.0 27.2 30.0 00001001\r"
    with pytest.raises(ups_serial._Garbled):
        ups_serial.parse_q1(huge, None)
    assert ups_serial.parse_q1(Q1_OK, None).input_voltage == 230.0


class ScriptedUps:
    """A UPS that gives these readings or errors in turn, then a low battery for good."""

    def __init__(self, script: list[UpsReading | Exception]) -> None:
        self.script = script

    def read(self) -> UpsReading:
        item = self.script.pop(0) if self.script else LOW_FLAG
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        pass


LOW_FLAG = UpsReading(on_battery=True, low_battery=True, battery_charge_percent=50.0)


def test_the_monitor_counts_garbage_and_confirms_a_low_battery_within_seconds(
    tmp_path, monkeypatch
):
    """However slow the configured poll (60 s), a critical reading is confirmed by the next
    ones a second apart; an answer that did not parse is counted and the state stands."""
    cfg = parse_config(f"""
[board]
data_dir = "{tmp_path}"

[ups]
backend = "serial"
port = "/dev/ttyFAKE"
poll_seconds = 60
""")
    ups = ScriptedUps([LOW_FLAG, LOW_FLAG, Garbled("x" * 1_000_000)])
    monkeypatch.setattr("firmware.hw.monitor.open_ups", lambda c: ups)
    facts: list = []
    hooks = BoardHooks(apply=lambda a: None, fact=facts.append, status=dict,
                       recorder_beat=time.monotonic)  # fmt: skip
    hw = Hardware(cfg, prepare(tmp_path, "a", now_us())["id"], Alerts(), hooks)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        started = loop.time()
        task = asyncio.create_task(hw._ups_loop(stop))
        try:
            while not (facts and facts[-1].low):
                assert loop.time() - started < 15, f"no confirmed low battery: {facts[-1:]}"
                if task.done():
                    task.result()  # the loop died: say why
                await asyncio.sleep(0.05)  # polls the facts; the deadline above bounds it
        finally:
            stop.set()
            await task
        return loop.time() - started

    took = asyncio.run(run())
    assert 2.0 <= took < 10.0
    assert hw.ups_garbled == 1 and hw.status()["ups"]["garbled"] == 1
    assert not any(f.low for f in facts[:2]), "one reading is not believed"
