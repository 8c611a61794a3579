"""File descriptors are a resource of this process: running out of them (EMFILE, or ENFILE for
the whole system) says nothing about the disk or the device that could not be opened, so it is
told apart from a missing disk and reported as what it is."""

from __future__ import annotations

import errno
import resource

EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})


def out_of_fds(e: BaseException) -> bool:
    """Did this fail only because no file descriptor was left?"""
    return isinstance(e, OSError) and e.errno in EXHAUSTED


def fd_limit() -> int:
    """The soft RLIMIT_NOFILE of this process (what it may hold open)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
