"""Opens the configured backend of each device class: the one place where config meets hal, for
the board's monitors and for `nvr hw` alike."""

from __future__ import annotations

from firmware.config import DisksConfig, PanelConfig, UpsConfig, WatchdogConfig
from hal.disks import Disks
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

            buttons = Pcf8574Buttons(bus, cfg.buttons_address)
        if cfg.backend == "hd44780":
            from hal.lcd import Hd44780Panel

            return Hd44780Panel(bus, cfg.i2c_address or 0x27, cfg.columns, cfg.rows,
                                cfg.pin_map, buttons=buttons)  # fmt: skip
        from hal.oled import Ssd1306Panel

        return Ssd1306Panel(bus, cfg.i2c_address or 0x3C, buttons=buttons)
    return None
