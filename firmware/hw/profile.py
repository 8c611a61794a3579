"""A board profile (image/boards/<name>.toml, docs/VENDOR.md): what a vendor's board *is*, written
once and built into its image as /usr/share/nvr/board.toml.

The build reads the [image] part; the firmware turns the rest into its device set (`device_set`)
at first boot, the one place where a profile becomes the board's hardware config
(firmware/hw/boardconfig.py). Validated as strictly as the config: a typo in a vendor's profile
must fail the build, not a board in the field.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from firmware.config import (
    ButtonPins,
    Device,
    DisksConfig,
    I2cAddress,
    I2cBus,
    Int,
    LedsConfig,
    NetworkConfig,
    PanelConfig,
    Text,
    UpsConfig,
    WatchdogConfig,
    _Section,
    load_file,
    read_toml,
    validate_as,
)
from firmware.paths import BOARD_FILE

LAN_NAME, SYNC_NAME = "lan0", "sync0"
"""The image's names for the two ports, whatever the kernel called them."""
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")
TTY = re.compile(r"^tty[A-Za-z0-9]{1,16}$")
MAC_GLOB = re.compile(r"^[0-9a-f*?]{1,2}(:[0-9a-f*?]{1,2}){0,5}[*]?$")
PATH_GLOB = re.compile(r"^[A-Za-z0-9:._*?/+-]{1,200}$")
DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
KERNEL_MODULE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _slug(v: str) -> str:
    if not SLUG.fullmatch(v):
        raise ValueError("must be 1-41 lower-case letters, digits, '-' or '_'")
    return v


def _tty(v: str) -> str:
    if not TTY.fullmatch(v):
        raise ValueError("must be a serial line's name under /dev, e.g. ttyS0 or ttyAMA0")
    return v


def _package(v: str) -> str:
    if not DEBIAN_PACKAGE.fullmatch(v):
        raise ValueError("must be a Debian package name")
    return v


def _module(v: str) -> str:
    if not KERNEL_MODULE.fullmatch(v):
        raise ValueError("must be a kernel module's name")
    return v


def _lower(v: object) -> object:
    return v.lower() if isinstance(v, str) else v


def _banner(v: str) -> str:
    if not v.isprintable() or len(v) > 78:
        raise ValueError("must be one printable line of at most 78 characters")
    return v


Slug = Annotated[str, AfterValidator(_slug)]
Banner = Annotated[str, AfterValidator(_banner)]


class BoardSection(_Section):
    name: Slug
    """Also names the board's bundles: RAUC's compatible is "<product>-<name>"."""
    description: Banner = ""


class BrandSection(_Section):
    product: Slug = "nvr-pair"
    banner: Banner = "nvr-pair network video recorder"
    """The first line of the serial console and of the panel's start screen."""


class ImageSection(_Section):
    arch: Literal["amd64", "arm64"]
    """Debian's name of the architecture."""
    bootloader: Literal["grub-efi"] = "grub-efi"
    """RAUC's A/B switch lives in GRUB's environment (docs/IMAGE.md)."""
    kernel: Annotated[str, AfterValidator(_package)]
    console: Annotated[str, AfterValidator(_tty)]
    packages: tuple[Annotated[str, AfterValidator(_package)], ...] = ()
    initramfs_modules: tuple[Annotated[str, AfterValidator(_module)], ...] = ()
    """The modules that reach the root (disk controller, squashfs): the initramfs then holds
    only these, a few MB instead of every storage driver (tens of MB to load and unpack at
    every boot). Empty: every storage driver, whatever the board has."""


class NicMatch(_Section):
    """One port, found by where it sits (udev's ID_PATH) or by its burnt-in MAC, each a glob:
    the kernel's probe order is not a promise, a slot or an address range is."""

    path: Annotated[str, Field(pattern=PATH_GLOB.pattern)] | None = None
    mac: Annotated[str, BeforeValidator(_lower), Field(pattern=MAC_GLOB.pattern)] | None = None
    """Lower-cased: the kernel shows addresses so (udev's ATTR{address})."""

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.path is None) == (self.mac is None):
            raise ValueError("give exactly one of path (udev ID_PATH) or mac")
        return self

    def matches(self, id_path: str, mac: str) -> bool:
        if self.path is not None:
            return fnmatch.fnmatchcase(id_path, self.path)
        return fnmatch.fnmatchcase(mac.lower(), self.mac or "")


class NicSection(_Section):
    lan: NicMatch
    sync: NicMatch


class UpsProfile(_Section):
    backend: Literal["none", "serial", "i2c"] = "none"
    port: Device | None = None
    protocol: Literal["megatec", "apc", "ask"] = "megatec"
    """ask: the board has the port, the installer says which UPS (if any) is on it."""
    i2c_bus: I2cBus = 1
    address: I2cAddress = 0x42
    chip: Literal["ina219", "max17048"] = "ina219"

    @model_validator(mode="after")
    def _port(self) -> Self:
        if self.backend == "serial" and not self.port:
            raise ValueError("a serial UPS needs port, e.g. /dev/ttyS1")
        if self.protocol == "ask" and self.backend != "serial":
            raise ValueError('protocol = "ask" is for a serial UPS port')
        return self


class ButtonsProfile(_Section):
    """Buttons on a PCF8574 expander: which pin is which button."""

    address: I2cAddress = 0x20
    pins: ButtonPins = Field(
        default_factory=lambda: {"0": "up", "1": "down", "2": "ok", "3": "back"}
    )


class PanelProfile(_Section):
    type: Literal["none", "hd44780", "ssd1306"] = "none"
    i2c_bus: I2cBus = 1
    address: I2cAddress | None = None
    columns: Annotated[Int, Field(ge=8, le=40)] = 16
    rows: Literal[1, 2, 4] = 2
    pin_map: Literal["common", "lcdproc"] = "common"
    buttons: ButtonsProfile | None = None


class WatchdogProfile(_Section):
    device: Device | None = None
    """None: the board has none (systemd's software watchdog still restarts a hung firmware)."""
    owner: Literal["systemd", "firmware"] = "systemd"
    """systemd: PID 1 holds the device and the firmware answers PID 1; firmware: the firmware
    holds the device itself ([watchdog] backend = "linux")."""


class LedsProfile(_Section):
    """LEDs by their name under /sys/class/leds."""

    active: Annotated[str, Field(pattern=r"^[A-Za-z0-9:._-]{1,64}$")] | None = None
    """Lit while this board records as the pair's active board."""
    alert: Annotated[str, Field(pattern=r"^[A-Za-z0-9:._-]{1,64}$")] | None = None
    """Lit while any alert is raised."""


class DisksProfile(_Section):
    data: Literal["system", "disk", "md"] = "system"
    """system: the system disk's data partition, recording drives chosen at setup; disk: one
    data disk by path; md: an md RAID array the image assembles."""
    device: Device | None = None
    """disk: the filesystem's device by a stable path (/dev/disk/by-path/...-part1); md: the
    array (/dev/md/<name>)."""
    members: tuple[Device, ...] = ()
    """md: the array's member devices by path (shown, and checked at boot)."""
    filesystem: Literal["ext4", "xfs", "btrfs"] = "ext4"

    @model_validator(mode="after")
    def _device(self) -> Self:
        if self.data != "system" and not self.device:
            raise ValueError(f'data = "{self.data}" needs device')
        if self.data == "system" and (self.device or self.members):
            raise ValueError('data = "system" takes no device or members')
        if self.data == "md" and len(self.members) < 2:
            raise ValueError('data = "md" needs two or more members')
        if self.data == "disk" and self.members:
            raise ValueError('data = "disk" takes no members')
        return self


class QemuProfile(_Section):
    """How the lab emulates the board (hil/vm.py); not written into the image."""

    binary: Annotated[str, Field(pattern=r"^qemu-system-[a-z0-9_]+$")]
    machine: Text
    cpu: Text = "max"
    accel: Literal["kvm", "tcg"] = "tcg"
    code: Text
    vars: Text
    watchdog: Text | None = None


class BoardProfile(_Section):
    board: BoardSection
    brand: BrandSection = BrandSection()
    image: ImageSection
    nic: NicSection
    ups: UpsProfile = UpsProfile()
    panel: PanelProfile = PanelProfile()
    watchdog: WatchdogProfile = WatchdogProfile()
    leds: LedsProfile = LedsProfile()
    disks: DisksProfile = DisksProfile()
    qemu: QemuProfile | None = None

    @property
    def compatible(self) -> str:
        """RAUC's compatible: a bundle built for another board is refused."""
        return f"{self.brand.product}-{self.board.name}"

    @property
    def packages(self) -> list[str]:
        """Debian packages the board needs beyond the image's own."""
        extra = ["mdadm"] if self.disks.data == "md" else []
        extra += ["xfsprogs"] if self.disks.filesystem == "xfs" else []
        return sorted(set(self.image.packages) | set(extra))


def parse_profile(data: str | bytes, source: str) -> BoardProfile:
    """Every fault is a ConfigError naming the file and the key."""
    return validate_as(BoardProfile, read_toml(data, source), source)


def load_profile(path: Path) -> BoardProfile:
    return load_file(path, parse_profile)


def installed_profile(path: Path = BOARD_FILE) -> BoardProfile | None:
    """The image's profile; None off a board (a development host, the simulated pair). A
    broken one raises: the build checked it, so it is a damaged root."""
    if not path.exists():
        return None
    return load_profile(path)


# --- the device set --------------------------------------------------------------------------


class Question(enum.Enum):
    """What a profile leaves to the installer's wizard."""

    UPS_PROTOCOL = "ups-protocol"
    RECORDING_DRIVES = "recording-drives"


class DataKind(enum.Enum):
    SYSTEM = "system"
    DISK = "disk"
    MD = "md"


@dataclass(frozen=True)
class DataStorage:
    kind: DataKind
    device: str | None
    members: tuple[str, ...]
    filesystem: str


@dataclass(frozen=True)
class DeviceSet:
    """The board's hardware as the firmware's config sections: what devices.py opens."""

    network: NetworkConfig
    ups: UpsConfig
    panel: PanelConfig
    watchdog: WatchdogConfig
    disks: DisksConfig
    leds: LedsConfig
    data: DataStorage
    lan: NicMatch
    sync: NicMatch
    questions: frozenset[Question]


def device_set(p: BoardProfile) -> DeviceSet:
    """The one mapping from a profile to the firmware's device config."""
    questions: set[Question] = set()
    if p.ups.backend == "serial":
        if p.ups.protocol == "ask":
            questions.add(Question.UPS_PROTOCOL)
            ups = UpsConfig(backend="none", port=p.ups.port)
        else:
            ups = UpsConfig(backend="serial", port=p.ups.port, protocol=p.ups.protocol)
    elif p.ups.backend == "i2c":
        ups = UpsConfig(
            backend="i2c", i2c_bus=p.ups.i2c_bus, i2c_address=p.ups.address, chip=p.ups.chip
        )
    else:
        ups = UpsConfig(backend="none")
    pan = p.panel
    panel = PanelConfig(
        backend=pan.type,
        i2c_bus=pan.i2c_bus,
        i2c_address=pan.address,
        pin_map=pan.pin_map,
        columns=pan.columns,
        rows=pan.rows,
        buttons_address=pan.buttons.address if pan.buttons else None,
        button_pins=dict(pan.buttons.pins) if pan.buttons else None,
    )
    dog = p.watchdog
    if dog.device is not None and dog.owner == "firmware":
        watchdog = WatchdogConfig(backend="linux", device=dog.device)
    else:
        watchdog = WatchdogConfig(backend="none")
    kind = DataKind(p.disks.data)
    if kind is DataKind.SYSTEM:
        questions.add(Question.RECORDING_DRIVES)
    leds = LedsConfig(
        backend="linux" if (p.leds.active or p.leds.alert) else "none",
        active=p.leds.active,
        alert=p.leds.alert,
    )
    return DeviceSet(
        network=NetworkConfig(lan_interface=LAN_NAME, sync_interface=SYNC_NAME),
        ups=ups,
        panel=panel,
        watchdog=watchdog,
        disks=DisksConfig(require_mount=kind is not DataKind.SYSTEM),
        leds=leds,
        data=DataStorage(kind, p.disks.device, p.disks.members, p.disks.filesystem),
        lan=p.nic.lan,
        sync=p.nic.sync,
        questions=frozenset(questions),
    )
