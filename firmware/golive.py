"""Making the wizard's files live on the board without a reboot: networkd takes the new
addresses, chrony its servers, and the firmware restarts on the new config and answers again.

A running firmware restarts in its own process (SIGUSR1, Board.restart): its imports and the
workers' forkserver are kept, which under QEMU without KVM is seconds off every setup. One
still starting is waited for; one that is not running (failed, stopped) is restarted by
systemd.

The wizard needs this twice: before pairing (the two boards reach each other only on the sync
addresses just answered; the image's default gives both boards the same one) and after the
last step. Only the console on a board does it (root, systemd); elsewhere the files wait for
the next boot."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from firmware.apiclient import api_base, fetch_status
from firmware.config import ConfigError, load_config
from firmware.netchange import reload_commands
from firmware.paths import SERVICE
from firmware.provision import Runner, run_command
from firmware.setupfiles import Layout
from firmware.timesync import TAKE_IN

ANSWER_S = 90.0
"""How long the restarted firmware may take to answer (a slow board's start, migrations)."""
DATA_OWNER = Path("/usr/lib/nvr/data-owner")
"""Gives the firmware's user what the console wrote as root; nvr.service runs it before every
start, and the restart in the firmware's process needs it too."""


@dataclass
class GoLive:
    layout: Layout
    config: Path
    runner: Runner = run_command
    answer_s: float = ANSWER_S
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __call__(self, changed: Iterable[Path]) -> str | None:
        """None once the changed files are live and the firmware answers; else what failed."""
        changed = list(changed)
        try:
            net = load_config(self.config).network
        except ConfigError as e:
            return str(e)
        steps: list[list[str]] = []
        if any(p.parent == self.layout.network_dir for p in changed):
            steps += reload_commands([net.lan_interface, net.sync_interface])
        if any(self.layout.chrony_dir in p.parents for p in changed):
            steps.append(TAKE_IN)
        return self._run(steps) or self.restart()

    def _run(self, steps: Iterable[list[str]]) -> str | None:
        """Each program in turn; what failed, or None."""
        for argv in steps:
            done = self.runner(argv)
            if done.returncode != 0:
                return f"{' '.join(argv)}: {done.last_line}"
        return None

    def restart(self) -> str | None:
        if self.started() != "active":
            return self._run([["systemctl", "restart", SERVICE]]) or self.wait_answer()
        signal = ["systemctl", "kill", "--kill-who=main", "--signal=SIGUSR1", SERVICE]
        return self._run([[str(DATA_OWNER)], signal]) or self.wait_answer(since=self.clock())

    def started(self) -> str:
        """The firmware's state once it is not starting: at first boot it starts beside the
        console's wizard (firmware/firstcpu.py), and is worth waiting for, not starting over."""
        deadline = self.clock() + self.answer_s
        while True:
            state = self.runner(["systemctl", "is-active", SERVICE]).last_line
            if state not in ("activating", "reloading") or self.clock() >= deadline:
                return state
            self.sleep(0.5)

    def wait_answer(self, since: float | None = None) -> str | None:
        """Until the firmware answers; with `since`, a firmware started after it (the old
        board answers until its restart stops it; the new one's uptime is shorter)."""
        deadline = self.clock() + self.answer_s
        last = ""
        while self.clock() < deadline:
            try:
                st = fetch_status(api_base(self.config), timeout=2.0)
                if since is None or float(st.get("uptime_seconds", 0.0)) < self.clock() - since:
                    return None
                last = "the firmware has not restarted yet"
            except (OSError, ConfigError, ValueError) as e:
                last = str(e)
            self.sleep(0.5)
        return f"the firmware did not answer within {self.answer_s:.0f} s: {last}"
