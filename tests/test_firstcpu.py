"""At first boot the console puts the firmware on the idle CPU weight until its wizard is up
(firmware/firstcpu.py): the two systemctl calls, in order, the second after the first ended;
and only while no setup is done (`nvr console` on a board)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from firmware.firstcpu import FirstCpu, weight


class Spawned:
    def __init__(self) -> None:
        self.procs: list[tuple[list[str], subprocess.Popen]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.Popen:
        # A real child that ends only when told: done() must wait for the idle weight.
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE)  # fmt: skip
        self.procs.append((list(argv), proc))
        return proc


def test_the_firmware_is_idle_weighted_until_the_wizard_is_up_then_itself_again():
    spawn = Spawned()
    first = FirstCpu(spawn)
    first.yield_()
    assert [a for a, _ in spawn.procs] == [
        ["systemctl", "set-property", "--runtime", "nvr.service", "CPUWeight=idle"]
    ]
    idle = spawn.procs[0][1]
    assert idle.stdin is not None
    idle.stdin.close()  # systemctl ends
    first.done()
    assert idle.poll() is not None  # reaped before the weight is put back
    assert [a for a, _ in spawn.procs][1] == weight("")
    assert weight("") == ["systemctl", "set-property", "--runtime", "nvr.service", "CPUWeight="]
    last = spawn.procs[1][1]
    assert last.stdin is not None
    last.stdin.close()
    last.wait(10)
