"""Filling a disk as a runaway writer would, for the disk-full faults of the rig and tests."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fill(path: Path) -> None:
    """Take every free block of the filesystem holding path: the bulk at once (fallocate,
    leaving room for its extent tree), the rest write by write until ENOSPC."""
    st = os.statvfs(path.parent)
    bulk = st.f_bfree * st.f_frsize - (2 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        if bulk > 0:
            os.posix_fallocate(fd, 0, bulk)
        for chunk in (1 << 16, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
