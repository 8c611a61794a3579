"""Out of file descriptors is a fault of this process, not a missing disk: the data disk's
check says so with its own alert and keeps its verdict on the disk."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator

from firmware.alert_ids import AlertId
from firmware.alerts import Alerts
from firmware.config import parse_config
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.datadir import prepare
from firmware.hw.monitor import BoardHooks, Hardware
from firmware.timefmt import now_us


@contextlib.contextmanager
def no_descriptors_left() -> Iterator[None]:
    """Lower this process's limit just above what it holds and take the rest; all restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = len(os.listdir("/proc/self/fd"))
    taken: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (held + 16, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def raised(actions) -> set[str]:
    return {str(a.id) for a in actions if isinstance(a, RaiseAlert)}


def test_emfile_on_the_disk_check_is_not_disk_missing(tmp_path):
    cfg = parse_config(f'[board]\ndata_dir = "{tmp_path}"\n')
    identity = prepare(tmp_path, "a", now_us())["id"]
    hooks = BoardHooks(apply=lambda a: None, fact=lambda f: None, status=dict,
                       recorder_beat=lambda: 0.0)  # fmt: skip
    hw = Hardware(cfg, identity, Alerts(), hooks)
    assert raised(hw.storage.update(hw._look())) == set()
    with no_descriptors_left():
        view = hw._look()
    actions = hw.storage.update(view)
    assert raised(actions) == {AlertId.FD_EXHAUSTED.value}, actions
    assert "file descriptors" in next(a.text for a in actions if isinstance(a, RaiseAlert))
    assert hw.storage.fact.fault is None and not hw.storage.holding  # recording goes on
    actions = hw.storage.update(hw._look())
    assert raised(actions) == set()
    assert ClearAlert(AlertId.FD_EXHAUSTED) in actions
