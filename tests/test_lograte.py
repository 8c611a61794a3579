"""Repeated log lines: once per interval, with the count of the ones held back."""

from __future__ import annotations

import logging
import subprocess
import sys

from conftest import ROOT

from firmware.lograte import MAX_KINDS, RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def record(msg: str, *args, line: int = 1, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("nvr.x", level, "/f.py", line, msg, args, None)


def test_a_repeated_line_passes_once_per_interval_with_a_count():
    clock = Clock()
    f = RepeatFilter(10.0, clock)
    assert f.filter(record("accept failed: %s", "EMFILE"))
    assert not any(f.filter(record("accept failed: %s", "EMFILE")) for _ in range(999))
    clock.t += 10.5
    r = record("accept failed: %s", "EMFILE")
    assert f.filter(r)
    assert r.getMessage() == "accept failed: EMFILE (999 more like it in the last 10 s)"
    r = record("accept failed: %s", "EMFILE")
    assert not f.filter(r)  # a new window began with the line just written
    clock.t += 11
    r = record("accept failed: %s", "EMFILE")
    assert (
        f.filter(r) and r.getMessage() == "accept failed: EMFILE (1 more like it in the last 11 s)"
    )


def test_distinct_lines_all_pass():
    f = RepeatFilter(10.0, Clock())
    assert f.filter(record("camera %s down", "a"))
    assert f.filter(record("camera %s down", "b"))  # another camera is other news
    assert f.filter(record("camera %s down", "a", line=2))  # another place
    assert f.filter(record("camera %s down", "a", level=logging.ERROR))


def test_memory_is_bounded_by_distinct_lines():
    clock = Clock()
    f = RepeatFilter(10.0, clock)
    for i in range(MAX_KINDS * 3):
        assert f.filter(record("line %d", i))
    assert len(f._seen) <= MAX_KINDS + 1


def test_the_firmware_log_is_rate_limited():
    """The firmware's logging set-up (`nvr` and each recorder worker) carries the filter: 1000
    identical warnings write one line."""
    code = (
        "import logging; from firmware.lograte import setup_logging; setup_logging(20)\n"
        "for _ in range(1000): logging.getLogger('nvr.test').warning('socket.accept() failed')\n"
        "logging.getLogger('nvr.test').warning('other news')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    lines = out.stderr.splitlines()
    assert len(lines) == 2 and "accept() failed" in lines[0] and "other news" in lines[1], lines
