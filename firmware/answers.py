"""The setup wizard's answers as a TOML file (`nvr setup --answers FILE`): what a vendor writes
to provision a board in the factory, checked by the same rules as the wizard and the config.

The keys are a contract (docs/INSTALL.md lists them); unknown keys are refused like in the
config. The pair key is never an answer: boards are paired with `nvr pair code` / `join`."""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from firmware.config import (
    Flag,
    Name,
    Text,
    _Section,
    load_file,
    read_toml,
    validate_as,
)
from firmware.timesync import check_server

Address = IPv4Address | IPv6Address
Interface = IPv4Interface | IPv6Interface


class Side(StrEnum):
    """Which board of the pair this is: A and B differ in the sync address and the priority."""

    A = "a"
    B = "b"


SYNC_DEFAULT = {Side.A: IPv4Interface("198.51.100.1/28"), Side.B: IPv4Interface("198.51.100.2/28")}
"""The sync link's addresses when the answers do not say (what the image gives board a)."""
PRIORITY = {Side.A: 150, Side.B: 100}
"""Board A wins an election between two healthy boards; health weights can reverse it."""


Host = Annotated[str, AfterValidator(check_server)]


def _check_secret(v: str) -> str:
    if not v or any(not c.isprintable() for c in v):
        raise ValueError("must be 1 or more printable characters")
    return v


Secret = Annotated[str, Field(max_length=256), AfterValidator(_check_secret)]


class BoardAnswers(_Section):
    side: Side
    name: Name | None = None
    """Defaults to the side ("a" or "b")."""

    @field_validator("side", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v


class LanAnswers(_Section):
    dhcp: Flag = False
    address: Interface | None = None
    """With its prefix, e.g. 192.0.2.11/24."""
    gateway: Address | None = None
    dns: Annotated[list[Address], Field(max_length=8, default_factory=list)]


class SyncAnswers(_Section):
    address: Interface | None = None
    """Default by side: 198.51.100.1/28 (a), 198.51.100.2/28 (b)."""
    peer_address: Address | None = None
    """Default: the other side's default address."""


class PairAnswers(_Section):
    virtual_ip: Interface
    peer_lan_address: Address


class NtpAnswers(_Section):
    servers: Annotated[list[Host], Field(max_length=8, default_factory=list)]
    """Empty: the image's default time sources."""


class CameraAnswers(_Section):
    name: Name
    url: Text
    username: Secret | None = None
    password: Secret | None = None
    enabled: Flag = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("is not a URL") from None
        if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
            raise ValueError("must be an rtsp:// (or rtsps://) URL with a host")
        if "@" in parts.netloc:
            raise ValueError("must not hold credentials; give them as username and password")
        if any(c.isspace() or not c.isprintable() for c in v):
            raise ValueError("must not contain spaces or control characters")
        return v

    @model_validator(mode="after")
    def _both(self) -> Self:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class UpsAnswers(_Section):
    """Which UPS is on the board's UPS port, where its profile leaves that open."""

    protocol: Literal["none", "megatec", "apc"]


class Answers(_Section):
    board: BoardAnswers
    lan: LanAnswers
    sync: SyncAnswers = SyncAnswers()
    pair: PairAnswers
    ntp: NtpAnswers = NtpAnswers()
    camera: list[CameraAnswers] = Field(default_factory=list)
    ups: UpsAnswers | None = None

    @field_validator("camera")
    @classmethod
    def _unique(cls, v: list[CameraAnswers]) -> list[CameraAnswers]:
        names = [c.name for c in v]
        for n in names:
            if names.count(n) > 1:
                raise ValueError(f"camera name {n!r} is used twice")
        return v

    @model_validator(mode="after")
    def _lan(self) -> Self:
        lan = self.lan
        if lan.dhcp and (lan.address or lan.gateway or lan.dns):
            raise ValueError("lan.address, gateway, dns: for a static LAN, not with dhcp = true")
        if not lan.dhcp and lan.address is None:
            raise ValueError("lan.address: needed (e.g. 192.0.2.11/24) unless dhcp = true")
        if lan.address is not None and lan.address.network.num_addresses == 1:
            raise ValueError(f"lan.address: /{lan.address.network.prefixlen} leaves no network")
        gw = lan.gateway
        if (
            gw is not None
            and lan.address is not None
            and (gw not in lan.address.network or gw == lan.address.ip)
        ):
            raise ValueError(f"lan.gateway: must be another address in {lan.address.network}")
        return self

    @model_validator(mode="after")
    def _addresses(self) -> Self:
        """The wizard's cross-checks: each address where it can work and no two the same."""
        own_sync, peer_sync = self.sync_address, self.peer_sync_address
        if peer_sync not in own_sync.network or peer_sync == own_sync.ip:
            raise ValueError(
                f"sync.peer_address: {peer_sync} must be another address in {own_sync.network} "
                f"(this board's sync.address {own_sync})"
            )
        vip, peer_lan, lan = self.pair.virtual_ip, self.pair.peer_lan_address, self.lan.address
        if vip.ip == peer_lan:
            raise ValueError("pair.virtual_ip: must not be the peer's LAN address")
        if lan is not None:
            for key, ip in (("pair.virtual_ip", vip.ip), ("pair.peer_lan_address", peer_lan)):
                if ip not in lan.network or ip == lan.ip:
                    raise ValueError(
                        f"{key}: {ip} must be another address in {lan.network} "
                        f"(this board's lan.address {lan})"
                    )
        if vip.network.overlaps(own_sync.network) or peer_lan in own_sync.network:
            raise ValueError(
                f"pair: LAN addresses must not be in the sync link's {own_sync.network}"
            )
        return self

    @property
    def name(self) -> str:
        return self.board.name or self.board.side.value

    @property
    def sync_address(self) -> Interface:
        return self.sync.address or SYNC_DEFAULT[self.board.side]

    @property
    def peer_sync_address(self) -> Address:
        if self.sync.peer_address is not None:
            return self.sync.peer_address
        other = Side.B if self.board.side is Side.A else Side.A
        return SYNC_DEFAULT[other].ip

    @property
    def priority(self) -> int:
        return PRIORITY[self.board.side]


def parse_answers(data: str | bytes, source: str) -> Answers:
    """Every fault is a ConfigError naming the file, the key and the problem, never a value."""
    return validate_as(Answers, read_toml(data, source), source)


def load_answers(path: Path) -> Answers:
    return load_file(path, parse_answers)
