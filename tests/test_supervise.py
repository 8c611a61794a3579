"""No thread or task of the firmware ends unseen: each runs under keep_running, and a failure is
an alert (or a counted error) and a restart. Checked on the mechanism and where the firmware
starts its parts: the recorder's event pump, the hardware monitors, the election's actions."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from conftest import wait_until
from test_hw_monitor import hardware
from test_pair_token import board, config, key_file  # noqa: F401 (a fixture)

from firmware.alert_ids import AlertId
from firmware.alerts import Alerts
from firmware.config import RecorderConfig
from firmware.failover.election import TakeVIP
from firmware.recorder.supervisor import Recorder
from firmware.supervise import keep_running, keep_running_async


def flaky(fails: int, then=None):
    """A body that raises `fails` times, then does `then` (or returns); counts its calls."""
    calls = []

    def body(*args):
        calls.append(args)
        if len(calls) <= fails:
            raise RuntimeError(f"failure {len(calls)}")
        return then(*args) if then else None

    return body, calls


def test_a_failing_thread_is_reported_and_run_again_until_it_returns():
    body, calls = flaky(2)
    seen: list[tuple[str, str]] = []
    keep_running("the part", body, threading.Event(), lambda w, e: seen.append((w, str(e))),
                 retry_s=0.01)  # fmt: skip
    assert len(calls) == 3
    assert seen == [("the part", "failure 1"), ("the part", "failure 2")]


def test_a_stop_ends_the_retries():
    stop = threading.Event()
    body, calls = flaky(10**6)
    t = threading.Thread(target=keep_running, args=("x", body, stop, lambda w, e: None, 0.01))
    t.start()
    wait_until(lambda: len(calls) >= 3, 5, "a few retries")
    stop.set()
    t.join(5)
    assert not t.is_alive()


def test_a_failing_task_is_reported_and_run_again():
    async def run() -> tuple[int, list[str]]:
        seen: list[str] = []
        calls = []

        async def body() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise OSError("gone")

        await keep_running_async("task", body, asyncio.Event(), lambda w, e: seen.append(str(e)),
                                 retry_s=0.01)  # fmt: skip
        return len(calls), seen

    assert asyncio.run(run()) == (2, ["gone"])


def test_the_recorders_event_pump_that_fails_is_an_alert_and_runs_again(tmp_path):
    alerts = Alerts()
    rec = Recorder(tmp_path, "a", RecorderConfig(), [], alerts)
    body, calls = flaky(1, then=rec._consume)
    rec._consume = body  # type: ignore[method-assign]
    rec.start()
    try:
        wait_until(lambda: len(calls) >= 2, 10, "the event pump running again")
        alert = alerts.get(AlertId.TASK_FAILED)
        assert alert is not None and "recorder event pump" in alert.text
    finally:
        rec.stop()


def test_a_hardware_monitor_that_fails_is_an_alert_and_runs_again(tmp_path):
    hw = hardware(tmp_path, [time.monotonic()])
    seen = []

    def panel(loop: asyncio.AbstractEventLoop) -> None:  # the panel's thread
        seen.append(1)
        if len(seen) == 1:
            raise ValueError("bad panel reply")
        hw._stop_threads.wait()

    hw._panel_thread = panel  # type: ignore[method-assign]

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(hw.run(stop))
        for _ in range(200):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.02)  # yields to the monitors; the count is what is waited for
        stop.set()
        await task

    asyncio.run(run())
    assert len(seen) == 2
    alert = hw.alerts.get(AlertId.TASK_FAILED)
    assert alert is not None and "front panel" in alert.text and "bad panel reply" in alert.text


def test_an_election_action_that_fails_leaves_the_election_ticking(tmp_path, key_file):  # noqa: F811
    """A failing action (the VIP could not be added) goes to the loop's handler; the election's
    next timer is set all the same, or the board would stop advertising."""
    b = board(config(tmp_path, "a", key_file))
    fo = b.failover
    assert fo is not None

    def broken_take() -> None:
        raise OSError("RTNETLINK answers: Operation not permitted")

    fo.vip.take = broken_take  # type: ignore[method-assign]

    async def run() -> None:
        fo._loop = asyncio.get_running_loop()  # nothing is opened or sent: no run()
        fo.election.start(fo._loop.time())
        with pytest.raises(OSError):
            fo._apply([TakeVIP(1)])
        assert fo._timer is not None and fo.election.deadline is not None
        fo._timer.cancel()

    try:
        asyncio.run(run())
    finally:
        b.catalog.close()
