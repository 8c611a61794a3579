"""The board's hardware monitors: poll hal off the event loop, feed the pure policies on it, and
hand their actions to the board. Thin on purpose: what to do lives in power.py and storage.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from firmware.alert_ids import AlertId
from firmware.alerts import Alerts
from firmware.config import Config
from firmware.core.actions import Action
from firmware.core.facts import Fact
from firmware.datadir import read_identity
from firmware.fds import out_of_fds
from firmware.hw.devices import Leds, open_disks, open_leds, open_panel, open_ups, open_watchdog
from firmware.hw.leds import LedWish, wanted
from firmware.hw.panelrun import PanelHooks, PanelRunner, threadsafe
from firmware.hw.power import PowerPolicy, clip
from firmware.hw.storage import Expected, StoragePolicy, StorageView, health_alerts
from firmware.supervise import keep_running, keep_running_async
from firmware.timefmt import now_us
from hal.disks import Disks, SmartHealth
from hal.errors import Garbled, HalError
from hal.linux.watchdog import SdNotifier
from hal.ups import Ups, UpsReading

log = logging.getLogger("nvr.hw")

WATCHDOG_ALERT = "watchdog-not-armed"
LED_POLL_S = 0.5
RAID_POLL_S = 30.0
"""A degraded array is news within half a minute; SMART is asked less often."""
PANEL_ALERT = "panel-unavailable"


@dataclass
class BoardHooks:
    """What the monitors may ask of the board (called on the event loop)."""

    apply: Callable[[list[Action]], None]
    """Alerts from the policies."""
    fact: Callable[[Fact], None]
    """A reading for the board core (power, storage)."""
    status: Callable[[], dict]
    recorder_beat: Callable[[], float]
    panel: PanelHooks | None = None
    """What the front panel's menu reads and does (firmware/panelmenu.py); None: the panel
    is not opened (tests of the other monitors)."""


class Hardware:
    def __init__(self, cfg: Config, identity: str, alerts: Alerts, hooks: BoardHooks) -> None:
        """identity: the data directory's id as the board found it at start."""
        self.cfg, self.alerts, self.hooks = cfg, alerts, hooks
        self.data_dir = cfg.board.data_dir
        self.ups_reading: UpsReading | None = None
        self.ups_error: str | None = None
        self.ups_garbled = 0
        """Answers from the UPS that did not parse (line noise, a wrong protocol)."""
        self.power = PowerPolicy(cfg.ups)
        self.disks: Disks = open_disks(cfg.disks)
        mount = self.disks.mount_state(self.data_dir)
        self.storage = StoragePolicy(Expected(identity, mount.mount_point, mount.device),
                                     cfg.disks.require_mount)  # fmt: skip
        self.smart: list[SmartHealth] = []
        self.last_beat = time.monotonic()
        self.watchdog_pings = 0
        self.panel: PanelRunner | None = None
        self.leds: Leds | None = None
        self.leds_shown: LedWish | None = None
        self._stop_threads = threading.Event()
        self.restarting = False
        """The stop is an in-process restart (Board.restart): systemd hears RELOADING=1, not
        STOPPING=1, and the new board's READY=1 ends it."""

    # --- UPS -------------------------------------------------------------------------------

    async def _ups_loop(self, stop: asyncio.Event) -> None:
        ups: Ups | None = None
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                reading, error = None, None
                try:
                    if ups is None:
                        ups = await asyncio.to_thread(open_ups, self.cfg.ups)
                    if ups is not None:
                        reading = await asyncio.to_thread(ups.read)
                except (HalError, OSError, ValueError) as e:
                    error = clip(str(e))
                    if isinstance(e, Garbled):
                        self.ups_garbled += 1
                    if ups is not None:
                        with contextlib.suppress(Exception):
                            ups.close()
                    ups = None
                self.ups_reading, self.ups_error = reading, error
                self.hooks.apply(self.power.update(loop.time(), reading, error))
                self.hooks.fact(self.power.fact)
                await _wait(stop, self.power.poll_after(self.cfg.ups.poll_seconds))
        finally:
            if ups is not None:
                await asyncio.to_thread(ups.close)

    # --- data disk -------------------------------------------------------------------------

    def _look(self) -> StorageView:
        try:
            mount = self.disks.mount_state(self.data_dir)
            identity = read_identity(self.data_dir)
        except (HalError, OSError) as e:
            return StorageView(None, None, str(e), out_of_fds=out_of_fds(e))
        return StorageView(identity, mount)

    def _health(self, smart_due: bool) -> list[Action]:
        if smart_due:
            dev = self.storage.expected.device
            self.smart = []
            if dev and dev.startswith("/dev/"):
                try:
                    self.smart = [self.disks.smart(dev)]
                except (HalError, OSError) as e:
                    log.warning("SMART unreadable: %s", e)
        try:
            raids = self.disks.raid()
        except (HalError, OSError) as e:
            log.warning("RAID state unreadable: %s", e)
            raids = []
        return health_alerts(raids, self.smart)

    async def _disk_loop(self, stop: asyncio.Event) -> None:
        last_raid = last_smart = -1e9
        while not stop.is_set():
            view = await asyncio.to_thread(self._look)
            actions = self.storage.update(view)
            now = time.monotonic()
            if now - last_raid > RAID_POLL_S:
                smart_due = now - last_smart > self.cfg.disks.smart_poll_seconds
                last_raid, last_smart = now, now if smart_due else last_smart
                actions += await asyncio.to_thread(self._health, smart_due)
            self.hooks.apply(actions)
            self.hooks.fact(self.storage.fact)
            await _wait(stop, self.cfg.disks.poll_seconds)

    # --- watchdog --------------------------------------------------------------------------

    def healthy(self) -> str | None:
        """Why the firmware counts as hung, or None: the event loop and the recorder's upkeep
        must both have run lately."""
        limit = self.cfg.watchdog.stall_seconds
        now = time.monotonic()
        beats = {"event loop": self.last_beat, "recorder upkeep": self.hooks.recorder_beat()}
        for part, beat in beats.items():
            if now - beat > limit:
                return f"{part} silent for {now - beat:.0f} s"
        return None

    def start_keeper(self) -> threading.Thread:
        """The keeper's thread; an error in it is an alert and it starts again (meanwhile no
        pings: a keeper that keeps failing lets the watchdog reset the board)."""
        args = ("the watchdog keeper", self._keeper, self._stop_threads, self.alerts.task_failed)
        keeper = threading.Thread(target=keep_running, name="nvr-watchdog", daemon=True, args=args)
        keeper.start()
        return keeper

    def _keeper(self) -> None:
        """A thread, so a stuck event loop cannot keep the watchdog fed."""
        notifier = SdNotifier()
        notifier.notify("READY=1")
        dog = open_watchdog(self.cfg.watchdog)
        period = 1.0
        if dog is not None:
            try:
                applied = dog.open(self.cfg.watchdog.timeout_seconds)
                period = max(0.5, applied / 3)
                self.alerts.clear(WATCHDOG_ALERT)
                log.info("watchdog %s armed, %d s", self.cfg.watchdog.device, applied)
            except HalError as e:
                text = f"the hardware watchdog is not armed: {e}"
                self.alerts.raise_(WATCHDOG_ALERT, "warning", text, now_us())
                dog = None
        interval = notifier.watchdog_interval()
        if interval:
            period = min(period, interval)
        warned = False
        try:
            while not self._stop_threads.wait(period):
                why = self.healthy()
                if why is not None:
                    if not warned:
                        log.error("firmware hung (%s): watchdog pings stop", why)
                        warned = True
                    continue
                warned = False
                try:
                    if dog is not None:
                        dog.ping()
                        self.watchdog_pings += 1
                    notifier.notify("WATCHDOG=1")
                except (HalError, OSError) as e:
                    # Said, and tried again next period; pings that keep failing let the
                    # watchdog reset the board, which is what it is for.
                    log.error("watchdog ping failed: %s", e)
                    self.alerts.task_failed("the watchdog ping", e)
        finally:
            if self._stop_threads.is_set():
                notifier.notify("RELOADING=1" if self.restarting else "STOPPING=1")
            if dog is not None:
                dog.close()

    async def _beat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.last_beat = time.monotonic()
            await _wait(stop, 1.0)

    # --- front panel -----------------------------------------------------------------------

    def _panel_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """The panel's own thread (firmware/hw/panelrun.py): a hung I2C transfer stalls the
        panel, not the board."""
        if self.hooks.panel is None:
            return
        try:
            panel = open_panel(self.cfg.panel)
        except (HalError, OSError, ValueError) as e:
            self.alerts.raise_(PANEL_ALERT, "warning", f"front panel: {e}", now_us())
            return
        if panel is None:
            return

        def problem(text: str | None) -> None:
            if text is None:
                self.alerts.clear(PANEL_ALERT)
            else:
                self.alerts.raise_(PANEL_ALERT, "warning", text, now_us())

        hooks = dataclasses.replace(threadsafe(self.hooks.panel, loop), problem=problem)
        self.panel = PanelRunner(panel, hooks, refresh_s=self.cfg.panel.refresh_seconds)
        try:
            self.panel.run(self._stop_threads)
        finally:
            panel.close()

    # --- LEDs -------------------------------------------------------------------------------

    def _led_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """The LEDs follow the board's status in a thread of their own, like the panel: a
        stuck sysfs write stalls the LEDs, not the board. A failing LED is an alert and is
        written again next round."""
        if self.hooks.panel is None or self.cfg.leds.backend == "none":
            return
        snapshot = threadsafe(self.hooks.panel, loop).snapshot
        failed: str | None = None
        while not self._stop_threads.is_set():
            try:
                if self.leds is None:
                    self.leds = open_leds(self.cfg.leds)
                    self.leds_shown = None
                if self.leds is None:
                    return
                wish = wanted(snapshot())
                if wish != self.leds_shown:
                    for led, on in ((self.leds.active, wish.active),
                                    (self.leds.alert, wish.alert)):  # fmt: skip
                        if led is not None:
                            led.set(on)
                    self.leds_shown = wish
                if failed is not None:
                    self.alerts.clear(AlertId.LED_UNAVAILABLE)
                    failed = None
            except (HalError, OSError) as e:
                if str(e) != failed:
                    self.alerts.raise_(AlertId.LED_UNAVAILABLE, "warning", clip(str(e)), now_us())
                failed, self.leds = str(e), None
            self._stop_threads.wait(LED_POLL_S)

    @property
    def panel_text(self) -> list[str]:
        return list(self.panel.shown or []) if self.panel else []

    # --- all of it -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        keeper = self.start_keeper()
        loop = asyncio.get_running_loop()
        panel = threading.Thread(target=keep_running, name="nvr-panel", daemon=True, args=(
            "the front panel", lambda: self._panel_thread(loop), self._stop_threads,
            self.alerts.task_failed))  # fmt: skip
        panel.start()
        leds = threading.Thread(target=keep_running, name="nvr-leds", daemon=True, args=(
            "the LEDs", lambda: self._led_thread(loop), self._stop_threads,
            self.alerts.task_failed))  # fmt: skip
        leds.start()
        loops = [("the event-loop beat", self._beat), ("the data-disk monitor", self._disk_loop)]
        if self.cfg.ups.backend != "none":
            loops.append(("the UPS monitor", self._ups_loop))
        try:
            await asyncio.gather(*(
                keep_running_async(what, lambda body=body: body(stop), stop,
                                   self.alerts.task_failed)
                for what, body in loops
            ))  # fmt: skip
        finally:
            self._stop_threads.set()
            await asyncio.to_thread(keeper.join, 5)
            await asyncio.to_thread(panel.join, 5)
            await asyncio.to_thread(leds.join, 5)
            if self.leds is not None:
                self.leds.close()

    def status(self) -> dict:
        r = self.ups_reading
        return {
            "ups": None if self.cfg.ups.backend == "none" else {
                "reading": r.to_json() if r else None,
                "error": self.ups_error,
                "garbled": self.ups_garbled,
            },
            "data_disk": {
                "expected": asdict(self.storage.expected),
                "holding": self.storage.holding,
            },
            "smart": [s.to_json() for s in self.smart],
            "watchdog_pings": self.watchdog_pings,
            "panel": self.panel_text,
            "leds": None if self.leds_shown is None else asdict(self.leds_shown),
        }  # fmt: skip


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
