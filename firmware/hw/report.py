"""`nvr hw`: one reading of each device through the configured backend, for installers and QA.
Every device gets a few seconds; one that does not answer is a clear error and exit code 1."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.configfile import ConfigError
from firmware.hw.screen import panel_lines
from hal.errors import HalError

if TYPE_CHECKING:
    from firmware.config import Config

DEVICE_TIMEOUT_S = 8.0


class HwError(Exception):
    pass


def _config(path: Path) -> Config:
    """The board's config; without one (a board not set up yet) the defaults."""
    # pydantic and the device backends here, not at the top: every command's parser (and so
    # `nvr --help`) imports this module for add_parser.
    from firmware.config import Config, load_config

    if not path.exists():
        return Config()
    return load_config(path)


def _bounded(fn: Callable[[], dict], what: str) -> dict:
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn).result(timeout=DEVICE_TIMEOUT_S)
    except FutureTimeout:
        raise HwError(f"{what}: no answer within {DEVICE_TIMEOUT_S:g} s") from None
    except (HalError, OSError, ValueError) as e:
        raise HwError(f"{what}: {e}") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def ups(cfg: Config, args: argparse.Namespace) -> dict:
    from firmware.hw.devices import open_ups

    def read() -> dict:
        dev = open_ups(cfg.ups, args.port, args.protocol)
        if dev is None:
            raise HwError("no UPS configured ([ups] backend = none); give --port DEV "
                          "--protocol megatec|apc for one that is not set up yet")  # fmt: skip
        try:
            return dev.read().to_json()
        finally:
            dev.close()

    return _bounded(read, f"UPS {args.port or cfg.ups.port or cfg.ups.backend}")


def disks(cfg: Config, args: argparse.Namespace) -> dict:
    from firmware.hw.devices import open_disks

    def read() -> dict:
        d = open_disks(cfg.disks)
        data = cfg.board.data_dir
        where = data if data.exists() else next(p for p in data.parents if p.exists())
        mount = d.mount_state(where)
        smart = None
        if mount.device and mount.device.startswith("/dev/"):
            try:
                smart = d.smart(mount.device).to_json()
            except HalError as e:
                smart = {"error": str(e)}
        return {
            "data_dir": str(data),
            "mount": mount.to_json(),
            "smart": smart,
            "raid": [r.to_json() for r in d.raid()],
            "devices": [b.to_json() for b in d.devices()],
        }

    return _bounded(read, "disks")


def nics(cfg: Config, args: argparse.Namespace) -> dict:
    def read() -> dict:
        from hal.linux.nic import LinuxNic

        nic = LinuxNic()
        out = {}
        for role, name in (("lan", cfg.network.lan_interface),
                           ("sync", cfg.network.sync_interface)):  # fmt: skip
            try:
                st = nic.link(name)
                out[role] = {
                    "name": name,
                    "up": st.up,
                    "carrier": st.carrier,
                    "mac": st.mac,
                    "speed_mbps": st.speed_mbps,
                    "addresses": nic.addresses(name),
                }
            except HalError as e:
                out[role] = {"name": name, "error": str(e)}
        return out

    return _bounded(read, "NICs")


def watchdog(cfg: Config, args: argparse.Namespace) -> dict:
    def read() -> dict:
        from hal.linux.watchdog import describe_watchdogs

        return {"configured": cfg.watchdog.backend, "device": cfg.watchdog.device,
                "timeout_seconds": cfg.watchdog.timeout_seconds,
                "devices": describe_watchdogs()}  # fmt: skip

    return _bounded(read, "watchdog")


def panel(cfg: Config, args: argparse.Namespace) -> dict:
    """Shows what the firmware would show (its live status if it runs, else the board name)."""
    import urllib.request

    from firmware.hw.devices import open_panel

    def read() -> dict:
        status: dict = {"board": cfg.board.name, "role": "not running", "cameras": []}
        try:
            url = f"http://127.0.0.1:{cfg.api.listen_port}/api/v1/status"
            with urllib.request.urlopen(url, timeout=2) as r:
                status = json.load(r)
        except (OSError, ValueError):
            pass
        p = open_panel(cfg.panel)
        if p is None:
            raise HwError("no front panel configured ([panel] backend = none)")
        try:
            cols, rows = p.size
            lines = panel_lines(status, cols, rows)
            p.show(lines)
            return {"backend": cfg.panel.backend, "columns": cols, "rows": rows, "lines": lines}
        finally:
            p.close()

    return _bounded(read, "front panel")


READERS = {"ups": ups, "disks": disks, "nics": nics, "watchdog": watchdog, "panel": panel}


def _text(what: str, data: dict) -> str:
    if what == "panel":
        w = data["columns"]
        edge = "+" + "-" * w + "+"
        return "\n".join([edge, *(f"|{ln}|" for ln in data["lines"]), edge])
    return "\n".join(f"{k}: {json.dumps(v)}" for k, v in data.items())


def cmd_hw(args: argparse.Namespace) -> int:
    try:
        cfg = _config(args.config)
        data = READERS[args.device](cfg, args)
    except (ConfigError, HwError) as e:
        print(f"nvr hw {args.device}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=1) if args.json else _text(args.device, data))
    return 0


def add_parser(sub, default_config: Path) -> None:
    r = sub.add_parser("hw", help="one reading of a device: ups, disks, nics, watchdog, panel")
    r.add_argument("device", choices=sorted(READERS))
    r.add_argument("--config", type=Path, default=default_config)
    r.add_argument("--json", action="store_true")
    r.add_argument("--port", help="ups: a serial UPS that is not configured yet")
    r.add_argument("--protocol", choices=["megatec", "apc"], help="ups: with --port")
    r.set_defaults(func=cmd_hw)
