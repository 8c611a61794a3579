"""The board profile's device set written into the board's config (at every `nvr firstboot`,
so at first boot and after an update that brings a new profile).

Only the keys the profile fixes are set; everything else in the file (comments, cameras, poll
intervals, an installer's answer to what the profile leaves open) stays. The profile wins over
the factory config for what it fixes: it is the hardware. `apply_profile` is pure.
"""

from __future__ import annotations

import tomlkit
from pydantic import BaseModel

from firmware.config import Config, parse_config
from firmware.hw.profile import DeviceSet, Question

FIXED: dict[str, tuple[str, ...]] = {
    "network": ("lan_interface", "sync_interface"),
    "panel": (
        "backend",
        "i2c_bus",
        "i2c_address",
        "pin_map",
        "columns",
        "rows",
        "buttons_address",
        "button_pins",
    ),
    "watchdog": ("backend", "device"),
    "disks": ("require_mount",),
    "leds": ("backend", "active", "alert"),
}
"""Per config section, the keys a profile always fixes."""
UPS_FIXED = ("backend", "port", "protocol", "i2c_bus", "i2c_address", "chip")
UPS_OPEN = ("port",)
"""With the UPS protocol left to the installer, the profile still says where the port is."""


def fixed_keys(ds: DeviceSet) -> dict[str, dict[str, object]]:
    """Section -> key -> value (None: the key is removed, the config's default applies)."""
    sections: dict[str, BaseModel] = {
        "network": ds.network,
        "panel": ds.panel,
        "watchdog": ds.watchdog,
        "disks": ds.disks,
        "leds": ds.leds,
        "ups": ds.ups,
    }
    keys = dict(FIXED)
    keys["ups"] = UPS_OPEN if Question.UPS_PROTOCOL in ds.questions else UPS_FIXED
    return {name: {k: getattr(sections[name], k) for k in keys[name]} for name in sections}


def _toml_value(v: object) -> object:
    if isinstance(v, dict):
        t = tomlkit.inline_table()
        t.update(v)
        return t
    return v


def apply_profile(base: str, ds: DeviceSet, source: str) -> tuple[str, Config, list[str]]:
    """The config text with the profile's keys set, the parsed config, and one line per key
    that changed (for the console)."""
    now = parse_config(base, source)
    doc = tomlkit.parse(base)
    changed: list[str] = []
    for section, values in fixed_keys(ds).items():
        for key, value in values.items():
            if getattr(getattr(now, section), key) == value:
                continue
            table = doc.setdefault(section, tomlkit.table())
            if value is None:
                table.pop(key, None)
                changed.append(f"[{section}] {key}: removed")
            else:
                table[key] = _toml_value(value)
                changed.append(f"[{section}] {key} = {value!r}")
    text = tomlkit.dumps(doc)
    return text, parse_config(text, source), changed
