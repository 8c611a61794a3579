"""Board configuration: one TOML file, validated into typed settings.

The key names are a contract (installers' files and docs rely on them), so unknown keys are
rejected instead of ignored: a typo must not silently fall back to a default. ConfigError,
read_toml and load_file live in firmware/configfile.py (no pydantic there) and are re-exported.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path, PurePath
from typing import Annotated, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyInterface,
    Strict,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from firmware.configfile import ConfigError, load_file, read_toml
from firmware.failover.advert import Health
from firmware.failover.election import DEFAULT_WEIGHTS, PRIORITY_MAX, PRIORITY_MIN

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


M = TypeVar("M", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(v: str) -> str:
    if not NAME.fullmatch(v):
        raise ValueError("must be 1-63 letters, digits, '-' or '_'")
    return v


Name = Annotated[str, AfterValidator(_check_name)]
"""Board and camera names: they end up in file names, segment ids and metric labels."""

# The typed checkers every key goes through. A TOML value is taken for what it is: `true` is
# not 1 and "4" is not 4. Numbers are finite and each key has a range both ways (tests check
# this for every key), so no later arithmetic overflows.
Int = Annotated[int, Strict()]
Real = Annotated[float, Strict(), AllowInfNan(False)]
"""An integer or a float; inf and nan are refused."""
Flag = StrictBool
Port = Annotated[Int, Field(ge=1, le=65535)]
I2cBus = Annotated[Int, Field(ge=0, le=1023)]
I2cAddress = Annotated[Int, Field(ge=0x03, le=0x77)]


def _check_text(v: str) -> str:
    if "\0" in v:
        raise ValueError("must not contain a NUL character")
    return v


Text = Annotated[str, AfterValidator(_check_text)]
"""A string handed to the OS (a device, a command): a NUL would only fail when it is used."""


def _check_path(v: object) -> object:
    if isinstance(v, str | PurePath) and not str(v).strip():
        raise ValueError("must not be empty")
    if isinstance(v, str | PurePath) and "\0" in str(v):
        raise ValueError("must not contain a NUL character")
    return v


FsPath = Annotated[Path, BeforeValidator(_check_path)]
Device = Annotated[Text, Field(max_length=4096)]


def _check_ifname(v: str) -> str:
    """The kernel's own rule (dev_valid_name): a bad name only fails when the link is used."""
    if not 0 < len(v) < 16 or v in (".", "..") or any(c in "/:\0" or c.isspace() for c in v):
        raise ValueError("must be a network interface name (1-15 characters, no '/', ':' or space)")
    return v


Interface = Annotated[str, AfterValidator(_check_ifname)]


def _check_ip(v: str) -> str:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise ValueError("must be an IP address, e.g. 0.0.0.0 (every IPv4 address) or ::") from None
    return v


IpText = Annotated[str, AfterValidator(_check_ip)]
"""An IP address kept as text (what the socket layer takes)."""


class BoardConfig(_Section):
    name: Name = "single"
    data_dir: FsPath = Path("/var/lib/nvr")


class NetworkConfig(_Section):
    lan_interface: Interface = "eth0"
    sync_interface: Interface = "eth1"


Weight = Annotated[Int, Field(ge=0, le=PRIORITY_MAX - PRIORITY_MIN)]


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
    priority: Annotated[Int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)] = 100
    advert_interval_ms: Annotated[Int, Field(ge=10, le=10000)] = 100
    key_file: FsPath = Path("/etc/nvr/pair.key")
    advert_port: Port = 5405
    """UDP port of the adverts, the same on both paths and both boards."""
    preempt: Flag = False
    """A returning board with higher priority takes the VIP back (after preempt_delay)."""
    preempt_delay_seconds: Annotated[Real, Field(ge=0, le=3600)] = 60.0
    gateway: IPvAnyAddress | None = None
    """Tie-breaker besides the cameras: with every advert path silent, a standby takes over
    only if it can reach one of them."""
    serial_port: Device | None = None
    """Optional serial crosslink to the peer (e.g. /dev/ttyS1) as a third advert path."""
    serial_baud: Annotated[Int, Field(ge=1200, le=4000000)] = 115200
    garp_count: Annotated[Int, Field(ge=1, le=20)] = 5
    garp_spacing_ms: Annotated[Int, Field(ge=10, le=10000)] = 200
    garp_refresh_seconds: Annotated[Real, Field(ge=0, le=3600)] = 30.0
    """0 = no periodic refresh."""
    health_weights: HealthWeights = HealthWeights()
    fault_hold_down_seconds: Annotated[Real, Field(ge=0, le=3600)] = 10.0
    """A fault counts until it has been gone this long, so a flapping cable or camera does
    not bounce the pair: the board keeps advertising it and is not handed the role back."""
    camera_stale_seconds: Annotated[Real, Field(gt=0, le=60)] = 5.0
    """A camera whose recorder worker has not reported on it this long is not live on this
    board (a hung or stopped worker); a lost camera path shows as a session the recorder
    ended for lack of data ([recorder] stall_seconds)."""
    camera_confirm_seconds: Annotated[Real, Field(ge=0, le=60)] = 1.0
    takeover_dwell_seconds: Annotated[Real, Field(ge=0, le=86400)] = 300.0
    """A board that took the pair over from a live peer keeps it this long against the camera
    and battery rules (a board that cannot work at all still hands over at once)."""
    """The standby must have more cameras live this long before the active board hands over."""
    sync_carrier_grace_ms: Annotated[Int, Field(ge=0, le=10000)] | None = None
    """After the sync cable's carrier drops, how long the active peer has to say it saw the
    drop too before the standby takes it for dead; default one advert interval, 0 = off."""
    mirror_port: Port = 5406
    """TCP port of the mirror (segments and catalog rows between the boards)."""
    mirror_order: Literal["oldest", "newest"] = "oldest"
    """After an outage, fetch the oldest missing footage first or the newest."""
    mirror_transfers: Annotated[Int, Field(ge=1, le=16)] = 4
    """Segments fetched at once."""
    mirror_lag_alert_seconds: Annotated[Real, Field(ge=0, le=86400)] = 0.0
    """Alert when the standby's copy is further behind; 0 = 2 x segment + 5 s."""
    clock_skew_alert_seconds: Annotated[Real, Field(gt=0, le=20)] = 2.0
    """Alert `pair-clock-skew` when the boards' clocks are proven further apart; below the
    mirror's ±30 s replay window, where the boards start refusing each other's requests."""


class RecorderConfig(_Section):
    segment_seconds: Annotated[Real, Field(gt=0.5, le=600)] = 4.0
    workers: Annotated[Int, Field(ge=0, le=64)] = 0
    """Worker processes for ingest; 0 = one per CPU core, never more than cameras."""
    retention_days: Annotated[Real, Field(gt=0, le=3650)] = 30.0
    """Up to ten years."""
    min_free_percent: Annotated[Real, Field(ge=0, lt=90)] = 5.0
    min_free_mb: Annotated[Real, Field(ge=0, le=1_000_000)] = 256.0
    """Up to 1 TB."""
    open_timeout_seconds: Annotated[Real, Field(gt=0, le=120)] = 10.0
    stall_seconds: Annotated[Real, Field(gt=0, le=120)] = 5.0
    max_drift_seconds: Annotated[Real, Field(gt=0, le=3600)] = 5.0
    reconnect_min_seconds: Annotated[Real, Field(gt=0, le=60)] = 0.5
    reconnect_max_seconds: Annotated[Real, Field(gt=0, le=600)] = 10.0
    rtsp_reader: Literal["builtin", "ffmpeg"] = "builtin"
    """Who reads RTSP cameras: the built-in client (a third less CPU: docs/BENCHMARKS.md), or
    FFmpeg's RTSP demuxer, for a camera the built-in client does not read (docs/RECORDER.md).
    Other URLs are always read by FFmpeg."""
    standby_ring_seconds: Annotated[Real, Field(ge=0, le=600)] = 0.0
    """Seconds of each camera a hot standby holds in memory; 0 = 2 x segment + 10 s, enough
    to cover a camera-path fault's detection on the active board ([pair] camera_stale_seconds
    + camera_confirm_seconds + a margin; see docs/FAILOVER.md)."""

    @model_validator(mode="after")
    def _backoff(self) -> Self:
        if self.reconnect_min_seconds > self.reconnect_max_seconds:
            raise ValueError(
                f"reconnect_min_seconds ({self.reconnect_min_seconds:g}) is more than "
                f"reconnect_max_seconds ({self.reconnect_max_seconds:g})"
            )
        return self


class ApiConfig(_Section):
    listen_port: Annotated[Int, Field(ge=0, le=65535)] = 8080
    listen_address: IpText = "0.0.0.0"
    token_file: FsPath | None = None
    """Defaults to <data_dir>/api.token, generated on first start."""


class UpsConfig(_Section):
    """The board's UPS or battery gauge; what to do about it is the power policy's."""

    backend: Literal["none", "sim", "serial", "i2c"] = "none"
    """sim: a Megatec UPS emulated on a pty inside the firmware, read by the real driver."""
    port: Device | None = None
    """Serial device, e.g. /dev/ttyUSB0 (backend serial)."""
    protocol: Literal["megatec", "apc"] = "megatec"
    i2c_bus: I2cBus = 1
    i2c_address: I2cAddress = 0x42
    chip: Literal["ina219", "max17048"] = "ina219"
    poll_seconds: Annotated[Real, Field(ge=0.2, le=60)] = 2.0
    low_charge_percent: Annotated[Real, Field(ge=0, le=100)] = 20.0
    """On battery below this charge counts as low battery even if the UPS does not say so."""
    low_runtime_seconds: Annotated[Real, Field(ge=0, le=86400)] = 180.0
    """On battery with less runtime left counts as low battery (where the UPS tells runtime)."""
    handover_after_seconds: Annotated[Real, Field(ge=0, le=3600)] = 5.0
    """On battery this long (a blip rides through) with a healthy peer on mains: hand over."""
    shutdown_command: Text = "systemctl poweroff"
    """Run after the firmware has committed everything on low battery; empty = only stop."""
    unreachable_alert_seconds: Annotated[Real, Field(ge=0, le=3600)] = 10.0


class DisksConfig(_Section):
    backend: Literal["linux", "sim"] = "linux"
    poll_seconds: Annotated[Real, Field(ge=0.2, le=60)] = 1.0
    smart_poll_seconds: Annotated[Real, Field(ge=10, le=86400)] = 3600.0
    require_mount: Flag = False
    """The data directory must be a mount point of its own (a separate data disk): if it is
    on the root filesystem, nothing is recorded."""


class WatchdogConfig(_Section):
    backend: Literal["none", "linux", "sim"] = "none"
    """linux: /dev/watchdog held by the firmware; none leaves it to systemd (RuntimeWatchdogSec)."""
    device: Device = "/dev/watchdog"
    timeout_seconds: Annotated[Int, Field(ge=2, le=600)] = 30
    stall_seconds: Annotated[Real, Field(ge=1, le=600)] = 10.0
    """A firmware service silent this long counts as hung: pings stop and the board resets."""


def _check_rows(v: int) -> int:
    if v not in (1, 2, 4):
        raise ValueError("must be 1, 2 or 4")
    return v


ButtonPins = dict[Annotated[str, Field(pattern=r"^[0-7]$")], Literal["up", "down", "ok", "back"]]
"""A TOML table's keys are strings: the expander's pin numbers as text."""


class PanelConfig(_Section):
    backend: Literal["none", "sim", "hd44780", "ssd1306"] = "none"
    i2c_bus: I2cBus = 1
    i2c_address: I2cAddress | None = None
    """Default by backend: 0x27 (PCF8574 backpack), 0x3C (SSD1306)."""
    pin_map: Literal["common", "lcdproc"] = "common"
    columns: Annotated[Int, Field(ge=8, le=40)] = 16
    """hd44780 only; an SSD1306 shows 21 columns and 8 rows (4 on 128x32)."""
    rows: Annotated[Int, Field(ge=1, le=4), AfterValidator(_check_rows)] = 2
    buttons_address: I2cAddress | None = None
    button_pins: ButtonPins | None = None
    """PCF8574 pin ("0".."7") -> button; default 0 up, 1 down, 2 ok, 3 back."""
    refresh_seconds: Annotated[Real, Field(ge=0.2, le=60)] = 1.0


class LedsConfig(_Section):
    """The board's LEDs by their name under /sys/class/leds (from the board profile)."""

    backend: Literal["none", "linux", "sim"] = "none"
    active: Annotated[str, Field(pattern=r"^[A-Za-z0-9:._-]{1,64}$")] | None = None
    """Lit while this board records as the pair's active board."""
    alert: Annotated[str, Field(pattern=r"^[A-Za-z0-9:._-]{1,64}$")] | None = None
    """Lit while any alert is raised."""


S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
S3_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,62}){0,3}$")
"""A key prefix safe on every S3-compatible store: 1-4 path parts of letters, digits, '-', '_'
and '.', none starting with a dot (no '..', no leading or trailing '/')."""


class ArchiveConfig(_Section):
    """The archive tier: every committed segment copied to an S3-compatible store
    (docs/ARCHIVE.md). Optional: without this section nothing leaves the pair."""

    endpoint: Text
    """The store's URL, http:// or https://, without credentials (e.g. https://s3.site:8333)."""
    bucket: Annotated[str, Field(pattern=S3_BUCKET.pattern)]
    """An existing bucket; created with Object Lock for retention the store enforces."""
    region: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$")] = "us-east-1"
    credentials_file: FsPath
    """TOML with `access_key = "..."` and `secret_key = "..."`; 0600 or 0400, owned by root
    or the firmware's user. Read at start, never logged or shown."""
    prefix: Annotated[str, Field(pattern=S3_PREFIX.pattern)] | None = None
    """Where this pair's objects go in the bucket; default `pair-<pair key fingerprint>`
    (12 hex digits, the same on both boards) or `board-<board name>` for a single board."""
    local_days: Annotated[Real, Field(gt=0, le=3650)] | None = None
    """Footage stays on the boards at least this long; default [recorder] retention_days."""
    archive_days: Annotated[Real, Field(gt=0, le=36500)] | None = None
    """How long the archive keeps footage: the Object Lock period of each segment (from its
    end) where the bucket has Object Lock. None = the store's own lifecycle decides."""
    bandwidth_mbit: Annotated[Real, Field(ge=0, le=100_000)] = 0.0
    """Upload cap in megabits per second; 0 = no cap."""
    lag_alert_minutes: Annotated[Real, Field(gt=0, le=100_000)] = 30.0
    """Alert `archive-behind` when the oldest segment not yet archived started this long ago."""
    object_lock: Literal["auto", "on", "off"] = "auto"
    """auto: retention where the bucket has Object Lock; on: refuse to upload without it;
    off: never set retention."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (they go in credentials_file)")
        return v.rstrip("/")


class CameraConfig(_Section):
    name: Name
    url: Text
    enabled: Flag = True

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
    leds: LedsConfig = LedsConfig()
    archive: ArchiveConfig | None = None
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

    @model_validator(mode="after")
    def _ports(self) -> Self:
        """The API and the mirror listen on the same address; one TCP port cannot serve both
        (the adverts' port is UDP and may be the same number)."""
        port = self.api.listen_port
        if self.pair is not None and port == self.pair.mirror_port:
            raise ValueError(
                f"api.listen_port: {port} is also [pair] mirror_port; two servers cannot "
                "listen on one TCP port"
            )
        return self

    @property
    def token_file(self) -> Path:
        return self.api.token_file or self.board.data_dir / "api.token"


def _shown(text: object, limit: int = 64) -> str:
    """A key or name from the file as it may appear in a message: one line, printable, short
    (a quoted TOML key can hold a newline or 5 KB)."""
    s = "".join(c if c.isprintable() else "?" for c in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _where(loc: tuple[int | str, ...], raw: dict) -> str:
    """Turn pydantic's location into the TOML key an installer sees, e.g. camera[2].url."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            name = ""
            if parts and parts[-1] == "camera":
                cams = raw.get("camera") or []
                if 0 <= item < len(cams) and isinstance(cams[item], dict):
                    name = f" ({_shown(cams[item].get('name', '?'))})"
            parts[-1] = f"{parts[-1]}[{item + 1}]{name}" if parts else str(item)
        else:
            parts.append(_shown(item))
    return ".".join(parts)


def parse_config(data: str | bytes, source: str = "<config>") -> Config:
    """A config file's contents, as bytes (as read) or text; every fault is a ConfigError."""
    raw = read_toml(data, source)
    if not raw:
        raise ConfigError(
            f"{source}: the file is empty; a board needs at least [board] name and data_dir "
            "(see the documented example, /usr/share/nvr/nvr.toml)"
        )
    return validate_config(raw, source)


def validate_config(raw: dict, source: str) -> Config:
    return validate_as(Config, raw, source)


def validate_as(model: type[M], raw: dict, source: str) -> M:
    """A TOML file's table as one of the project's files (config, answers, board profile)."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise config_error(e, raw, source) from None


def config_error(e: ValidationError, raw: dict, source: str) -> ConfigError:
    """pydantic's findings as an installer reads them: one line each, file, key, problem (never
    the value: it may be a password)."""
    lines = []
    for err in e.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against the documented example)"
        where = _where(err["loc"], raw)
        lines.append(f"{source}: {where}: {msg}" if where else f"{source}: {msg}")
    return ConfigError("\n".join(lines))


def load_config(path: Path) -> Config:
    return load_file(path, parse_config)
