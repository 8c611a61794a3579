"""The config file is watched: an edit (in place, or a temp file renamed over it) is applied as
SIGHUP applies it, once per burst; a bad edit is refused with file, key and problem, and the
last good config keeps recording."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import NVR, ROOT, catalog, holds, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.configwatch import Debounce
from hil.camera import StreamSpec, free_port

# --- the debounce policy ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 0.29), min_size=1, max_size=30))
def test_a_burst_of_events_fires_once_after_the_quiet_time(gaps):
    d = Debounce(quiet_s=0.3, max_wait_s=100)
    now = 0.0
    for gap in gaps:
        now += gap
        d.poke(now)
        assert not d.due(now)
    assert d.wait_s(now) == pytest.approx(0.3)
    assert d.due(now + 0.31)
    assert not d.due(now + 10) and d.wait_s(now + 10) is None  # once per burst


def test_an_endless_burst_still_fires_after_the_longest_wait():
    d = Debounce(quiet_s=0.3, max_wait_s=2)
    fired = []
    for i in range(100):
        d.poke(i * 0.1)
        if d.due(i * 0.1):
            fired.append(i * 0.1)
    assert fired and fired[0] <= 2.0


# --- the watch itself, on a real file --------------------------------------------------------


def _watch(path: Path, on_edit, failures: list):
    from firmware.configwatch import ConfigWatch

    w = ConfigWatch(path, on_edit, lambda what, e: failures.append((what, e)), quiet_s=0.2)
    w.start()
    return w


def test_edits_in_place_and_by_rename_each_give_one_call(tmp_path):
    cfg = tmp_path / "nvr.toml"
    cfg.write_text("one")
    calls: list[str] = []
    failures: list = []
    w = _watch(cfg, lambda: calls.append(cfg.read_text()), failures)
    try:
        (tmp_path / "other.toml").write_text("x")  # another file: nothing
        for i in range(20):  # an editor's burst in place
            cfg.write_text(f"two {i}")
        wait_until(lambda: calls, 10, "the reload of the edit in place")
        holds(lambda: len(calls) == 1, 1.0, "one reload for the burst")
        assert calls == ["two 19"]
        tmp = tmp_path / ".nvr.toml.swp"  # write a temp file, rename it over the config
        tmp.write_text("three")
        os.chmod(tmp, 0o600)
        os.replace(tmp, cfg)
        wait_until(lambda: len(calls) == 2, 10, "the reload of the renamed file")
        assert calls[-1] == "three"
        holds(lambda: len(calls) == 2, 1.0, "one reload for the rename")
    finally:
        w.stop()
    assert not failures


def test_a_failing_reload_is_reported_and_the_watch_goes_on(tmp_path):
    cfg = tmp_path / "nvr.toml"
    cfg.write_text("one")
    calls: list[int] = []
    failures: list = []

    def on_edit():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    w = _watch(cfg, on_edit, failures)
    try:
        cfg.write_text("two")
        wait_until(lambda: failures, 10, "the failure reported")
        assert failures[0][0] == "the config file watch"
        wait_until(w.watching.is_set, 10, "the watch started again")
        cfg.write_text("three")
        wait_until(lambda: len(calls) == 2, 10, "the next edit seen by the restarted watch")
    finally:
        w.stop()
    assert w._thread is not None and not w._thread.is_alive()


# --- a real firmware process on loopback ---------------------------------------------------


def test_edited_config_is_applied_and_a_bad_edit_keeps_the_last_good_one(camera, tmp_path):
    cam = camera(StreamSpec("cam1", gop=10), StreamSpec("cam2", gop=10))
    port = free_port()
    data = tmp_path / "data"
    etc = tmp_path / "etc"
    etc.mkdir()
    (tmp_path / "link").symlink_to(etc)  # /etc/nvr is a symlink into /data on the image
    cfg = tmp_path / "link" / "nvr.toml"
    base = (
        f'[board]\nname = "a"\ndata_dir = "{data}"\n[recorder]\nsegment_seconds = 1\n'
        f'[api]\nlisten_port = {port}\nlisten_address = "127.0.0.1"\n'
        f'[[camera]]\nname = "cam1"\nurl = "{cam.url("cam1")}"\n'
    )
    cfg.write_text(base)
    log = tmp_path / "nvr.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([*NVR, "run", "--config", str(cfg)], cwd=ROOT, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def status():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=2) as r:
            return json.load(r)

    def alerts(alert_id="config-invalid"):
        return [a for a in status()["alerts"] if a["id"] == alert_id]

    def reloads():
        return log.read_text(errors="replace").count("config edited:")

    try:
        wait_until(lambda: status()["cameras"][0]["recording"], 30, "cam1 recording")
        # A bad edit in place: refused, naming file, key and problem; cam1 records on.
        cfg.write_text(base.replace("segment_seconds = 1", "segment_seconds = 'one'"))
        [alert] = wait_until(alerts, 20, "the config-invalid alert")
        assert f"{cfg}: recorder.segment_seconds" in alert["text"]  # the path as configured
        assert "recorder.segment_seconds" in alert["text"] and "number" in alert["text"]
        # the alert is raised inside the reload, its log line written once it returns
        wait_until(lambda: reloads() == 1, 10, "the refused reload logged")
        assert [c["name"] for c in status()["cameras"]] == ["cam1"]
        segs = len(catalog(data)["segments"])
        wait_until(lambda: len(catalog(data)["segments"]) > segs + 1, 20, "cam1 still recording")
        # A good edit by rename (as editors save): applied, and the alert clears.
        tmp = etc / ".nvr.toml.new"
        tmp.write_text(base + f'[[camera]]\nname = "cam2"\nurl = "{cam.url("cam2")}"\n')
        os.replace(tmp, cfg)
        wait_until(
            lambda: [c["recording"] for c in status()["cameras"]] == [True, True],
            40,
            "both cameras recording after the edit",
        )
        assert not alerts()
        wait_until(lambda: reloads() == 2, 10, "the applied reload logged")
        # A bad edit by rename, then a good one in place: refused, then cleared.
        tmp.write_text(base + '[[camera]]\nname = "cam2"\nurl = "http://x"\n')
        os.replace(tmp, cfg)
        [alert] = wait_until(alerts, 20, "the alert for the renamed bad file")
        assert "camera[2] (cam2).url" in alert["text"]
        assert [c["recording"] for c in status()["cameras"]] == [True, True]
        cfg.write_text(base)
        wait_until(lambda: len(status()["cameras"]) == 1 and not alerts(), 40, "cam2 removed")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert not [a for a in status_after(log) if "task-failed" in a]
    assert {s["camera"] for s in catalog(data)["segments"]} == {"cam1", "cam2"}


def status_after(log: Path) -> list[str]:
    """Lines of the firmware's log that raised an alert."""
    return [ln for ln in log.read_text(errors="replace").splitlines() if "alert raised" in ln]


def test_a_reload_as_the_firmware_stops_starts_no_recorder(tmp_path):
    """systemd's stop and an edit at the same moment: the reload comes after the recorder's
    stop (or waited for it), and starts no workers that nobody would stop."""
    import asyncio

    from firmware.board import Board, Reload
    from firmware.config import load_config
    from hil.proctree import recorder_workers

    cfg = tmp_path / "nvr.toml"
    base = (
        f'[board]\nname = "a"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[camera]]\nname = "cam1"\nurl = "rtsp://127.0.0.1:9/cam1"\n'
    )
    cfg.write_text(base)
    board = Board(load_config(cfg), serve_api=False)

    async def serve_then_stop() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(board.serve(stop))
        await asyncio.to_thread(
            wait_until, lambda: len(recorder_workers(os.getpid())) == 1, 30, "cam1's worker"
        )
        stop.set()
        await task

    try:
        asyncio.run(serve_then_stop())
        assert recorder_workers(os.getpid()) == []
        cfg.write_text(base + '[[camera]]\nname = "cam2"\nurl = "rtsp://127.0.0.1:9/cam2"\n')
        assert board.reload(cfg) == Reload.STOPPING
        assert recorder_workers(os.getpid()) == []
        assert "config-applied" not in (tmp_path / "data" / "audit.log").read_text()
    finally:
        board.recorder.stop()
        board.close()


def test_watchdogs_stop_race_error_is_not_logged_and_its_other_errors_are(caplog):
    """watchdog's ERROR for an event that arrives as the observer stops is dropped; anything
    else it says still reaches the log."""
    import logging

    import firmware.configwatch  # noqa: F401  (installs the filter)

    lib = logging.getLogger("watchdog.observers.inotify")
    with caplog.at_level(logging.ERROR, logger="watchdog.observers.inotify"):
        lib.error("InotifyEmitter.queue_events() called when the thread is inactive")
        lib.error("inotify watch limit reached")
    assert [r.getMessage() for r in caplog.records] == ["inotify watch limit reached"]
