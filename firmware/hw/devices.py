"""Opens the configured backend of each device class: the one place where config meets hal, for
the board's monitors and for `nvr hw` alike."""

from __future__ import annotations

from dataclasses import dataclass

from firmware.config import DisksConfig, LedsConfig, PanelConfig, UpsConfig, WatchdogConfig
from hal.disks import Disks
from hal.leds import Led
from hal.panel import Panel
from hal.ups import Ups, UpsReading
from hal.watchdog import Watchdog


class SimUps:
    """A Megatec UPS emulated on a pty, read through the real serial driver: the simulated
    board exercises the same code path as a real UPS."""

    def __init__(self) -> None:
        from hal.linux.ups_serial import open_serial_ups
        from hal.sim.ups_emulator import MegatecEmulator

        self.emulator = MegatecEmulator()
        self.emulator.start()
        self.driver = open_serial_ups(self.emulator.port, "megatec")

    def read(self) -> UpsReading:
        return self.driver.read()

    def close(self) -> None:
        self.driver.close()
        self.emulator.stop()


def open_ups(cfg: UpsConfig, port: str | None = None, protocol: str | None = None) -> Ups | None:
    """None when no UPS is configured (and none given on the command line)."""
    if port is not None or cfg.backend == "serial":
        from hal.linux.ups_serial import open_serial_ups

        dev = port or cfg.port
        if not dev:
            raise ValueError("[ups] backend = serial needs port = the serial device")
        return open_serial_ups(dev, protocol or cfg.protocol)
    if cfg.backend == "sim":
        return SimUps()
    if cfg.backend == "i2c":
        from hal.i2c_ups import Ina219Ups, Max17048Gauge
        from hal.linux.i2c import open_bus

        bus = open_bus(cfg.i2c_bus)
        if cfg.chip == "ina219":
            return Ina219Ups(bus, cfg.i2c_address)
        return Max17048Gauge(bus, cfg.i2c_address)
    return None


def open_disks(cfg: DisksConfig) -> Disks:
    if cfg.backend == "sim":
        from hal.sim.disks import SimDisks

        return SimDisks()
    from hal.linux.disks import LinuxDisks

    return LinuxDisks()


def open_watchdog(cfg: WatchdogConfig) -> Watchdog | None:
    if cfg.backend == "linux":
        from hal.linux.watchdog import LinuxWatchdog

        return LinuxWatchdog(cfg.device)
    if cfg.backend == "sim":
        import time

        from hal.sim.watchdog import SimWatchdog

        return SimWatchdog(time.monotonic)
    return None


def open_panel(cfg: PanelConfig) -> Panel | None:
    if cfg.backend == "sim":
        from hal.sim.panel import SimPanel

        return SimPanel(cfg.columns, cfg.rows)
    if cfg.backend in ("hd44780", "ssd1306"):
        from hal.linux.i2c import open_bus

        bus = open_bus(cfg.i2c_bus)
        buttons = None
        if cfg.buttons_address is not None:
            from hal.buttons import Pcf8574Buttons

            pins = cfg.button_pins and {int(k): v for k, v in cfg.button_pins.items()}
            buttons = Pcf8574Buttons(bus, cfg.buttons_address, pins)
        if cfg.backend == "hd44780":
            from hal.lcd import Hd44780Panel

            return Hd44780Panel(bus, cfg.i2c_address or 0x27, cfg.columns, cfg.rows,
                                cfg.pin_map, buttons=buttons)  # fmt: skip
        from hal.oled import Ssd1306Panel

        return Ssd1306Panel(bus, cfg.i2c_address or 0x3C, buttons=buttons)
    return None


@dataclass(frozen=True)
class Leds:
    active: Led | None
    alert: Led | None

    def close(self) -> None:
        for led in (self.active, self.alert):
            if led is not None:
                led.close()


def open_leds(cfg: LedsConfig) -> Leds | None:
    """None when the board has none; Unavailable when one the profile names is missing."""
    if cfg.backend == "none" or (cfg.active is None and cfg.alert is None):
        return None
    if cfg.backend == "sim":
        from hal.sim.leds import SimLed as Make
    else:
        from hal.linux.leds import SysfsLed as Make
    return Leds(
        active=None if cfg.active is None else Make(cfg.active),
        alert=None if cfg.alert is None else Make(cfg.alert),
    )
