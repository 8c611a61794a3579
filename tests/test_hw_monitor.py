"""The watchdog keeper: it feeds the watchdog only while the firmware's parts are alive."""

from __future__ import annotations

import threading
import time

from conftest import holds, wait_until

from firmware.alerts import Alerts
from firmware.config import parse_config
from firmware.datadir import prepare
from firmware.hw.monitor import BoardHooks, Hardware
from firmware.timefmt import now_us


def hardware(tmp_path, beat: list[float]) -> Hardware:
    cfg = parse_config(f"""
[board]
data_dir = "{tmp_path}"

[watchdog]
backend = "sim"
timeout_seconds = 2
stall_seconds = 1.5
""")
    identity = prepare(tmp_path, "a", now_us())["id"]
    hooks = BoardHooks(apply=lambda a: None, fact=lambda f: None, status=dict,
                       recorder_beat=lambda: beat[0])  # fmt: skip
    return Hardware(cfg, identity, Alerts(), hooks)


def test_health_gate_names_the_silent_part(tmp_path):
    beat = [time.monotonic()]
    hw = hardware(tmp_path, beat)
    assert hw.healthy() is None
    beat[0] -= 10
    assert "recorder" in (hw.healthy() or "")
    beat[0] = time.monotonic()
    hw.last_beat -= 10
    assert "event loop" in (hw.healthy() or "")


def test_a_hung_recorder_stops_the_pings(tmp_path):
    beat = [time.monotonic()]
    hw = hardware(tmp_path, beat)
    keeper = hw.start_keeper()
    try:

        def alive() -> bool:
            beat[0] = hw.last_beat = time.monotonic()
            return hw.watchdog_pings >= 2

        wait_until(alive, 10, "the keeper pinging a healthy firmware")
        beat[0] = time.monotonic() - 60  # the recorder's upkeep stops
        hw.last_beat = time.monotonic() + 60
        wait_until(lambda: hw.healthy() is not None, 2, "the gate noticing")
        time_out = hw.watchdog_pings
        holds(lambda: hw.watchdog_pings == time_out, 2.0, "no pings for a hung recorder")
    finally:
        hw._stop_threads.set()
        keeper.join(5)
    assert not keeper.is_alive()


def test_an_error_in_the_keeper_is_an_alert_and_the_keeper_starts_again(tmp_path):
    beat = [time.monotonic()]
    hw = hardware(tmp_path, beat)
    gate = hw.healthy
    broken = threading.Event()
    broken.set()

    def healthy_once_broken() -> str | None:
        if broken.is_set():
            broken.clear()
            raise RuntimeError("a bug in the health gate")
        return gate()

    hw.healthy = healthy_once_broken  # type: ignore[method-assign]
    keeper = hw.start_keeper()
    try:
        wait_until(lambda: any(a.id == "task-failed" for a in hw.alerts.active()), 10,
                   "the keeper's failure raised as an alert")  # fmt: skip

        def pinging() -> bool:
            beat[0] = hw.last_beat = time.monotonic()
            return hw.watchdog_pings >= 2

        wait_until(pinging, 10, "the restarted keeper pinging again")
    finally:
        hw._stop_threads.set()
        keeper.join(5)
    assert not keeper.is_alive()
