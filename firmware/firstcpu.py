"""At first boot the installer's console has the CPU before the firmware, until its wizard is on
the screen.

Both are Python starts of seconds on a small CPU and start together at boot. Side by side, the
wizard comes up as late as the two together, and the firmware, which records nothing before
the setup, would not be needed sooner. So the console puts the firmware's service on systemd's
idle CPU weight as it starts and back once its first question is shown: the firmware's start
goes on in the CPU time the console leaves (it is up and restarts in its process in a moment
when the setup is applied, firmware/golive.py), and the wizard comes up as if alone. Only
while no setup is done: every later boot starts both as equals. A console that never gets
its question out (a crash) leaves the firmware idle-weighted, which costs it nothing while
the CPU is otherwise free; the next console start puts it back."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from firmware.paths import SERVICE

Spawn = Callable[[Sequence[str]], subprocess.Popen]


def _spawn(argv: Sequence[str]) -> subprocess.Popen:
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def weight(value: str) -> list[str]:
    """systemd's runtime CPU weight of the firmware ("" is the unit's own again)."""
    return ["systemctl", "set-property", "--runtime", SERVICE, f"CPUWeight={value}"]


class FirstCpu:
    """`yield_()` when the console starts at first boot, `done()` once its question is up;
    neither waits for systemctl (the console's start is what is being hurried)."""

    def __init__(self, spawn: Spawn = _spawn) -> None:
        self.spawn = spawn
        self._idle: subprocess.Popen | None = None

    def yield_(self) -> None:
        self._idle = self.spawn(weight("idle"))

    def done(self) -> None:
        if self._idle is not None:  # in order: the idle weight is set before it is undone
            self._idle.wait()
            self._idle = None
        self.spawn(weight(""))  # not waited for: reaped when the console next runs a program
