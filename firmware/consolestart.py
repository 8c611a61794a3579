"""The console's start at boot: it imports while the boot mounts /data, and at first boot it has
the CPU before the firmware until its wizard is on the screen.

The console's Python start is seconds on a small CPU (under QEMU without KVM, 10-15 s) and
needs /data only once it has imported: so its unit starts early (no default dependencies) and
`DataWait` asks systemd to finish what it needs (`nvr-firstboot.service`, after /data and its
layout) beside the imports, instead of the unit waiting for basic.target first.

The console and the firmware are both Python starts and run side by side. The firmware, which
records nothing before the setup, would not be needed sooner, so at first boot the console
puts the firmware's service on systemd's idle CPU weight (`FirstCpu`) until its first question
is shown: the firmware's start goes on in the CPU time the console leaves (it is up and
restarts in its process in a moment when the setup is applied, firmware/golive.py), and the
wizard comes up as if alone. Only while no setup is done: every later boot starts both as
equals. A console that never gets its question out (a crash) leaves the firmware
idle-weighted, which costs it nothing while the CPU is otherwise free; the next console start
puts it back."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from firmware.paths import SERVICE

Spawn = Callable[[Sequence[str]], subprocess.Popen]


def _spawn(argv: Sequence[str]) -> subprocess.Popen:
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


FIRSTBOOT = "nvr-firstboot.service"
"""Ordered after /data, its layout and basic.target: done, everything the console reads is."""


class DataWait:
    """`start()` first thing, `wait()` once imported."""

    def __init__(self, spawn: Spawn = _spawn) -> None:
        self.spawn = spawn
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._proc = self.spawn(["systemctl", "start", FIRSTBOOT])

    def wait(self) -> None:
        """Until systemd has done it (a failed first boot is the console's to show, as before:
        the console goes on)."""
        if self._proc is not None:
            self._proc.wait()


def weight(value: str) -> list[str]:
    """systemd's runtime CPU weight of the firmware ("" is the unit's own again)."""
    return ["systemctl", "set-property", "--runtime", SERVICE, f"CPUWeight={value}"]


class FirstCpu:
    """`yield_()` when the console starts at first boot, `done()` once its question is up;
    neither waits for systemctl (the console's start is what is being hurried)."""

    def __init__(self, spawn: Spawn = _spawn) -> None:
        self.spawn = spawn
        self._running: list[subprocess.Popen] = []

    def yield_(self) -> None:
        self._running.append(self.spawn(weight("idle")))

    def done(self) -> None:
        for proc in self._running:  # in order: the idle weight is set before it is undone
            proc.wait()
        self._running = [self.spawn(weight(""))]
