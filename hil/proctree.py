"""Processes under a board's main process, read from /proc: the recorder's workers are its
grandchildren (forked by the forkserver, firmware/recorder/procs.py) and name themselves
nvr-<cameras> (firmware/recorder/worker.py)."""

from __future__ import annotations

WORKER_PREFIX = "nvr-"
"""The start of a recorder worker's comm (the kernel keeps 15 characters of its name)."""


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:  # it exited meanwhile
        return []


def descendants(pid: int) -> list[int]:
    kids = children(pid)
    return kids + [d for k in kids for d in descendants(k)]


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def recorder_workers(main: int) -> list[int]:
    """The recorder worker processes under a board's (or `nvr record`'s) main process."""
    return [p for p in descendants(main) if comm(p).startswith(WORKER_PREFIX)]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def forkserver(main: int) -> int | None:
    """The forkserver the main process's workers fork from, if it runs."""
    found = [p for p in children(main) if "multiprocessing.forkserver" in cmdline(p)]
    return found[0] if found else None
