"""The front panel's thread: reads the buttons, feeds the menu (firmware/panelmenu.py), runs
its actions through the board's callables and shows the lines. A thread, not a task on the
event loop: an I2C transfer that hangs must not stall the board. Run it under
firmware.supervise.keep_running; a panel that fails to show is said through `problem` and
tried again, a button name it does not know is ignored."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from firmware.panelmenu import (
    Answer,
    Button,
    ConfirmNetworkChange,
    Done,
    PairingCode,
    PairingUnavailable,
    PanelMenu,
    PanelView,
    ShowPairingCode,
    StartHandover,
)
from firmware.status import BoardStatus
from hal.errors import HalError
from hal.nic import Nic
from hal.panel import Panel

R = TypeVar("R")

log = logging.getLogger("nvr.panel")

POLL_S = 0.05
"""Buttons are read this often: a short tap is still down when sampled (hal/buttons.py)."""
NO_PAIRING = "pair: console `nvr pair code`"
"""Said when this board cannot show a code itself (no [pair] section yet)."""


@dataclass(frozen=True)
class PanelHooks:
    """What the panel may ask of the board; each is safe to call from this thread."""

    snapshot: Callable[[], BoardStatus]
    addresses: Callable[[], tuple[str, ...]] = lambda: ()
    handover: Callable[[], bool] | None = None
    """True if this board was active and hands over (None: no pair)."""
    pair_code: Callable[[], tuple[str, float]] | None = None
    """A new code as shown and its seconds of validity, as `nvr pair code` gets it; raises
    with the reason when refused (already paired)."""
    network_seconds_left: Callable[[], float | None] = lambda: None
    confirm_network: Callable[[], object] | None = None
    problem: Callable[[str | None], None] = lambda text: None
    """The panel failed (text) or works again (None)."""


class PanelRunner:
    def __init__(
        self, panel: Panel, hooks: PanelHooks, menu: PanelMenu | None = None,
        clock: Callable[[], float] = time.monotonic, poll_s: float = POLL_S,
        refresh_s: float = 1.0,
    ) -> None:  # fmt: skip
        self.panel, self.hooks, self.clock, self.poll_s = panel, hooks, clock, poll_s
        self.refresh_s = refresh_s
        self.menu = menu or PanelMenu(last_press=clock())
        self.shown: list[str] | None = None
        self._view: PanelView | None = None
        self._viewed = 0.0

    def step(self) -> None:
        """One round: presses, their actions, the screen. The board is asked for its status
        every refresh_s and after a press, not at every poll of the buttons."""
        now = self.clock()
        pressed = False
        for name in self.panel.buttons():
            try:
                button = Button(name)
            except ValueError:
                log.warning("front panel: unknown button %r ignored", name)
                continue
            pressed = True
            for action in self.menu.press(button, now):
                self.menu.answer(self._do(action), self.clock())
        if self._view is None or pressed or now - self._viewed >= self.refresh_s:
            self._view = PanelView(self.hooks.snapshot(), self.hooks.addresses(),
                                   self.hooks.network_seconds_left())  # fmt: skip
            self._viewed = now
        cols, rows = self.panel.size
        lines = self.menu.lines(self._view, self.clock(), cols, rows)
        if lines != self.shown:
            self.panel.show(lines)
            self.shown = lines

    def _do(self, action: object) -> Answer:
        h = self.hooks
        if isinstance(action, ShowPairingCode):
            if h.pair_code is None:
                return PairingUnavailable(NO_PAIRING)
            try:
                shown, valid_s = h.pair_code()
            except Exception as e:  # the firmware's refusal, said on the screen
                return PairingUnavailable(str(e))
            return PairingCode(shown, self.clock() + valid_s)
        if isinstance(action, ConfirmNetworkChange):
            if h.confirm_network is None or h.network_seconds_left() is None:
                return Done("nothing to confirm")
            h.confirm_network()
            return Done("confirmed")
        if isinstance(action, StartHandover):
            if h.handover is None or not h.handover():
                return Done("refused: not active")
            return Done("handing over")
        raise TypeError(f"unknown panel action {action!r}")

    def run(self, stop: threading.Event) -> None:
        """Until stop is set; a display that fails is reported and written again next round."""
        failing = False
        while not stop.is_set():
            try:
                self.step()
                if failing:
                    self.hooks.problem(None)
                    failing = False
            except HalError as e:
                self.shown = None
                failing = True
                self.hooks.problem(f"front panel: {e}")
            stop.wait(self.poll_s)


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], R], timeout: float = 5.0) -> R:
    """fn run on the board's event loop (its parts are read there), its answer waited for."""

    async def call() -> R:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)


def threadsafe(hooks: PanelHooks, loop: asyncio.AbstractEventLoop) -> PanelHooks:
    """The board's callables that touch its parts, moved onto its event loop."""

    def moved(fn: Callable[[], R] | None) -> Callable[[], R] | None:
        return None if fn is None else lambda: on_loop(loop, fn)

    snapshot = hooks.snapshot
    return dataclasses.replace(hooks, snapshot=lambda: on_loop(loop, snapshot),
                               handover=moved(hooks.handover),
                               pair_code=moved(hooks.pair_code))  # fmt: skip


def interface_addresses(
    nic: Nic, interfaces: Mapping[str, str], vip: str | None
) -> tuple[str, ...]:
    """("lan 192.0.2.10/24", "sync 198.51.100.1/28"): each interface's addresses but the VIP."""
    out = []
    skip = vip.split("/")[0] if vip else None
    for label, ifname in interfaces.items():
        try:
            found = [a for a in nic.addresses(ifname)
                     if a.split("/")[0] != skip and not a.startswith("fe80:")]  # fmt: skip
        except (HalError, OSError):
            found = []
        out += [f"{label} {a}" for a in found] or [f"{label} ({ifname}) none"]
    return tuple(out)
