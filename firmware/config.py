"""Board configuration: one TOML file, validated into typed settings.

The key names are a contract (installers' files and docs rely on them), so unknown keys are
rejected instead of ignored: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyInterface,
    ValidationError,
    field_validator,
)

from firmware.failover.advert import Health
from firmware.failover.election import DEFAULT_WEIGHTS, PRIORITY_MAX, PRIORITY_MIN

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class ConfigError(Exception):
    """A config that cannot be used; the message names the file, the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(v: str) -> str:
    if not NAME.match(v):
        raise ValueError("must be 1-63 letters, digits, '-' or '_'")
    return v


Name = Annotated[str, AfterValidator(_check_name)]
"""Board and camera names: they end up in file names, segment ids and metric labels."""


class BoardConfig(_Section):
    name: Name = "single"
    data_dir: Path = Path("/var/lib/nvr")


class NetworkConfig(_Section):
    lan_interface: str = "eth0"
    sync_interface: str = "eth1"


Weight = Annotated[int, Field(ge=0, le=PRIORITY_MAX - PRIORITY_MIN)]


class HealthWeights(_Section):
    """How much each fault lowers this board's priority, so the healthier board is active;
    the defaults are the election's."""

    recorder_unhealthy: Weight = DEFAULT_WEIGHTS[Health.RECORDER_UNHEALTHY]
    disk_failed: Weight = DEFAULT_WEIGHTS[Health.DISK_FAILED]
    disk_full: Weight = DEFAULT_WEIGHTS[Health.DISK_FULL]
    lan_down: Weight = DEFAULT_WEIGHTS[Health.LAN_DOWN]
    ups_on_battery: Weight = DEFAULT_WEIGHTS[Health.UPS_ON_BATTERY]
    ups_low: Weight = DEFAULT_WEIGHTS[Health.UPS_LOW]
    mirror_behind: Weight = DEFAULT_WEIGHTS[Health.MIRROR_BEHIND]
    """Still fetching what the peer recorded meanwhile: not the board to preempt with."""
    sync_down: Weight = DEFAULT_WEIGHTS[Health.SYNC_DOWN]


class PairConfig(_Section):
    peer_lan_address: IPvAnyAddress
    peer_sync_address: IPvAnyAddress
    virtual_ip: IPvAnyInterface
    """With its prefix, e.g. 192.0.2.100/24; an IPv6 VIP is announced by unsolicited NA."""
    priority: Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)] = 100
    advert_interval_ms: Annotated[int, Field(ge=10, le=10000)] = 100
    key_file: Path = Path("/etc/nvr/pair.key")
    advert_port: Annotated[int, Field(ge=1, le=65535)] = 5405
    """UDP port of the adverts, the same on both paths and both boards."""
    preempt: bool = False
    """A returning board with higher priority takes the VIP back (after preempt_delay)."""
    preempt_delay_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    gateway: IPvAnyAddress | None = None
    """Tie-breaker besides the cameras: with every advert path silent, a standby takes over
    only if it can reach one of them."""
    serial_port: str | None = None
    """Optional serial crosslink to the peer (e.g. /dev/ttyS1) as a third advert path."""
    serial_baud: Annotated[int, Field(ge=1200, le=4000000)] = 115200
    garp_count: Annotated[int, Field(ge=1, le=20)] = 5
    garp_spacing_ms: Annotated[int, Field(ge=10, le=10000)] = 200
    garp_refresh_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0
    """0 = no periodic refresh."""
    health_weights: HealthWeights = HealthWeights()
    fault_hold_down_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0
    """A fault counts until it has been gone this long, so a flapping cable or camera does
    not bounce the pair: the board keeps advertising it and is not handed the role back."""
    camera_stale_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    """A camera whose recorder worker has not reported on it this long is not live on this
    board (a hung or stopped worker); a lost camera path shows as a session the recorder
    ended for lack of data ([recorder] stall_seconds)."""
    camera_confirm_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    takeover_dwell_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    """A board that took the pair over from a live peer keeps it this long against the camera
    and battery rules (a board that cannot work at all still hands over at once)."""
    """The standby must have more cameras live this long before the active board hands over."""
    sync_carrier_grace_ms: Annotated[int, Field(ge=0, le=10000)] | None = None
    """After the sync cable's carrier drops, how long the active peer has to say it saw the
    drop too before the standby takes it for dead; default one advert interval, 0 = off."""
    mirror_port: Annotated[int, Field(ge=1, le=65535)] = 5406
    """TCP port of the mirror (segments and catalog rows between the boards)."""
    mirror_order: Literal["oldest", "newest"] = "oldest"
    """After an outage, fetch the oldest missing footage first or the newest."""
    mirror_transfers: Annotated[int, Field(ge=1, le=16)] = 4
    """Segments fetched at once."""
    mirror_lag_alert_seconds: Annotated[float, Field(ge=0, le=86400)] = 0.0
    """Alert when the standby's copy is further behind; 0 = 2 x segment + 5 s."""


class RecorderConfig(_Section):
    segment_seconds: Annotated[float, Field(gt=0.5, le=600)] = 4.0
    workers: Annotated[int, Field(ge=0, le=64)] = 0
    """Worker processes for ingest; 0 = one per CPU core, never more than cameras."""
    retention_days: Annotated[float, Field(gt=0)] = 30.0
    min_free_percent: Annotated[float, Field(ge=0, lt=90)] = 5.0
    min_free_mb: Annotated[float, Field(ge=0)] = 256.0
    open_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    stall_seconds: Annotated[float, Field(gt=0, le=120)] = 5.0
    max_drift_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    reconnect_min_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_max_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    standby_ring_seconds: Annotated[float, Field(ge=0, le=600)] = 0.0
    """Seconds of each camera a hot standby holds in memory; 0 = 2 x segment + 10 s, enough
    to cover a camera-path fault's detection on the active board ([pair] camera_stale_seconds
    + camera_confirm_seconds + a margin; see docs/FAILOVER.md)."""


class ApiConfig(_Section):
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    listen_address: str = "0.0.0.0"
    token_file: Path | None = None
    """Defaults to <data_dir>/api.token, generated on first start."""


class UpsConfig(_Section):
    """The board's UPS or battery gauge; what to do about it is the power policy's."""

    backend: Literal["none", "sim", "serial", "i2c"] = "none"
    """sim: a Megatec UPS emulated on a pty inside the firmware, read by the real driver."""
    port: str | None = None
    """Serial device, e.g. /dev/ttyUSB0 (backend serial)."""
    protocol: Literal["megatec", "apc"] = "megatec"
    i2c_bus: int = 1
    i2c_address: Annotated[int, Field(ge=0x03, le=0x77)] = 0x42
    chip: Literal["ina219", "max17048"] = "ina219"
    poll_seconds: Annotated[float, Field(ge=0.2, le=60)] = 2.0
    low_charge_percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    """On battery below this charge counts as low battery even if the UPS does not say so."""
    low_runtime_seconds: Annotated[float, Field(ge=0, le=86400)] = 180.0
    """On battery with less runtime left counts as low battery (where the UPS tells runtime)."""
    handover_after_seconds: Annotated[float, Field(ge=0, le=3600)] = 5.0
    """On battery this long (a blip rides through) with a healthy peer on mains: hand over."""
    shutdown_command: str = "systemctl poweroff"
    """Run after the firmware has committed everything on low battery; empty = only stop."""
    unreachable_alert_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0


class DisksConfig(_Section):
    backend: Literal["linux", "sim"] = "linux"
    poll_seconds: Annotated[float, Field(ge=0.2, le=60)] = 1.0
    smart_poll_seconds: Annotated[float, Field(ge=10, le=86400)] = 3600.0
    require_mount: bool = False
    """The data directory must be a mount point of its own (a separate data disk): if it is
    on the root filesystem, nothing is recorded."""


class WatchdogConfig(_Section):
    backend: Literal["none", "linux", "sim"] = "none"
    """linux: /dev/watchdog held by the firmware; none leaves it to systemd (RuntimeWatchdogSec)."""
    device: str = "/dev/watchdog"
    timeout_seconds: Annotated[int, Field(ge=2, le=600)] = 30
    stall_seconds: Annotated[float, Field(ge=1, le=600)] = 10.0
    """A firmware service silent this long counts as hung: pings stop and the board resets."""


class PanelConfig(_Section):
    backend: Literal["none", "sim", "hd44780", "ssd1306"] = "none"
    i2c_bus: int = 1
    i2c_address: Annotated[int, Field(ge=0x03, le=0x77)] | None = None
    """Default by backend: 0x27 (PCF8574 backpack), 0x3C (SSD1306)."""
    pin_map: Literal["common", "lcdproc"] = "common"
    columns: Annotated[int, Field(ge=8, le=40)] = 16
    """hd44780 only; an SSD1306 shows 21 columns and 8 rows (4 on 128x32)."""
    rows: Literal[1, 2, 4] = 2
    buttons_address: Annotated[int, Field(ge=0x03, le=0x77)] | None = None
    refresh_seconds: Annotated[float, Field(ge=0.2, le=60)] = 1.0


class CameraConfig(_Section):
    name: Name
    url: str
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^(rtsp|rtsps|file)://", v):
            raise ValueError("must be an rtsp:// (or rtsps://, file://) URL")
        return v


class Config(_Section):
    board: BoardConfig = BoardConfig()
    network: NetworkConfig = NetworkConfig()
    pair: PairConfig | None = None
    recorder: RecorderConfig = RecorderConfig()
    api: ApiConfig = ApiConfig()
    ups: UpsConfig = UpsConfig()
    disks: DisksConfig = DisksConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    panel: PanelConfig = PanelConfig()
    camera: list[CameraConfig] = []

    @field_validator("camera")
    @classmethod
    def _unique(cls, v: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for cam in v:
            if cam.name in seen:
                raise ValueError(f"camera name {cam.name!r} is used twice")
            seen.add(cam.name)
        return v

    @property
    def token_file(self) -> Path:
        return self.api.token_file or self.board.data_dir / "api.token"


def _where(loc: tuple[int | str, ...], raw: dict) -> str:
    """Turn pydantic's location into the TOML key an installer sees, e.g. camera[2].url."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            name = ""
            if parts and parts[-1] == "camera":
                cams = raw.get("camera") or []
                if 0 <= item < len(cams) and isinstance(cams[item], dict):
                    name = f" ({cams[item].get('name', '?')})"
            parts[-1] = f"{parts[-1]}[{item + 1}]{name}" if parts else str(item)
        else:
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return validate_config(raw, source)


def validate_config(raw: dict, source: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling against the documented example)"
            lines.append(f"{source}: {_where(err['loc'], raw)}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: Path) -> Config:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse_config(text, str(path))
