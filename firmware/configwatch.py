"""The config file is watched (inotify, through the `watchdog` package): an edit reloads it the
way SIGHUP does, so an installer's change needs no signal and no restart.

Editors save in bursts (truncate and write, or write a temp file and rename it over, often with a
backup and a chmod besides), so one reload follows a burst once the file has been quiet for a
moment: a half-written file is not what gets judged. The directory is watched, not the file, so
a rename over the file (a new inode) is seen as well as an edit in place."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from firmware.supervise import Failure, keep_running

log = logging.getLogger("nvr.configwatch")


class _StopRace(logging.Filter):
    """watchdog (7.x) logs an ERROR when an inotify event arrives as its observer stops: at
    every stop of the firmware with an edit pending, a line an installer would chase. Nothing
    is lost by it, and an emitter that really ends is caught by `ConfigWatch` itself (it
    raises, and the watch is reported and started again)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_StopRace())

QUIET_S = 0.3
"""The file must be this long without an event before it is read."""
MAX_WAIT_S = 3.0
"""An editor that never stops writing still gets its file read this long after the first event."""
ALIVE_CHECK_S = 1.0


@dataclass
class Debounce:
    """Sans-IO: events in (`poke`), at most one firing per burst out (`due`)."""

    quiet_s: float = QUIET_S
    max_wait_s: float = MAX_WAIT_S
    _first: float | None = field(default=None, init=False)
    _last: float = field(default=0.0, init=False)

    def poke(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    def due(self, now: float) -> bool:
        """True once per burst, when it has been quiet long enough (or went on too long)."""
        if self._first is None:
            return False
        if now - self._last >= self.quiet_s or now - self._first >= self.max_wait_s:
            self._first = None
            return True
        return False

    def wait_s(self, now: float) -> float | None:
        """How long until `due` can be true; None when no burst is pending."""
        if self._first is None:
            return None
        return max(0.0, min(self._last + self.quiet_s, self._first + self.max_wait_s) - now)


class _Events(FileSystemEventHandler):
    """From the observer's thread: an event that touches the config file (as its own name, or
    as the name something was renamed to) wakes the watcher."""

    def __init__(self, target: str, wake: Callable[[], None]) -> None:
        self.target = target
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # a reader (the reload itself) is no edit
        paths = (os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or ""))
        if self.target in paths:
            self.wake()


class ConfigWatch:
    """A thread (under keep_running) that calls `on_edit` once per burst of edits of `path`.
    `on_edit` runs in this thread; an exception from it is reported as a failed task."""

    def __init__(
        self, path: Path, on_edit: Callable[[], None], on_failure: Failure,
        quiet_s: float = QUIET_S,
    ) -> None:  # fmt: skip
        self.real = Path(os.path.realpath(path))  # /etc/nvr is a link into /data in the image
        self.on_edit = on_edit
        self.on_failure = on_failure
        self.quiet_s = quiet_s
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._lock = threading.Lock()
        self._pokes = 0
        self._thread: threading.Thread | None = None
        self.watching = threading.Event()
        """Set once inotify watches the directory: edits from then on are seen."""

    def start(self) -> None:
        self._thread = threading.Thread(
            target=keep_running,
            args=("the config file watch", self._run, self._stop, self.on_failure),
            name="config-watch",
            daemon=True,
        )
        self._thread.start()
        self.watching.wait(5)

    def stop(self) -> None:
        self._stop.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join(10)

    def _wake(self) -> None:
        with self._lock:
            self._pokes += 1
        self._woken.set()

    def _run(self) -> None:
        observer = Observer()
        observer.schedule(_Events(str(self.real), self._wake), str(self.real.parent))
        observer.start()
        self.watching.set()
        log.info("watching %s for edits", self.real)
        debounce = Debounce(self.quiet_s)
        try:
            while not self._stop.is_set():
                wait = debounce.wait_s(time.monotonic())
                self._woken.wait(ALIVE_CHECK_S if wait is None else min(wait, ALIVE_CHECK_S))
                self._woken.clear()
                with self._lock:
                    pokes, self._pokes = self._pokes, 0
                now = time.monotonic()
                if pokes:
                    debounce.poke(now)
                if not self._stop.is_set() and debounce.due(now):
                    self.on_edit()
                if not observer.is_alive() or not all(e.is_alive() for e in observer.emitters):
                    raise RuntimeError(f"the inotify watch of {self.real.parent} ended")
        finally:
            self.watching.clear()
            observer.stop()
            observer.join(5)
