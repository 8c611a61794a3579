"""Network interfaces: link facts and the floating-IP operations failover needs."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LinkState:
    name: str
    up: bool
    """Administratively up."""
    carrier: bool
    """A cable is in and the other end answers."""
    mac: str
    speed_mbps: int | None = None


@dataclass(frozen=True)
class LinkEvent:
    """An interface changed: cable in or out, set up or down."""

    ifname: str
    up: bool
    carrier: bool


@dataclass(frozen=True)
class AddressEvent:
    """An address appeared on or vanished from an interface (ours or somebody else's doing)."""

    ifname: str
    cidr: str
    present: bool


NicEvent = LinkEvent | AddressEvent


class Nic(Protocol):
    def link(self, ifname: str) -> LinkState: ...

    def addresses(self, ifname: str) -> list[str]:
        """Addresses as 'addr/prefix'."""
        ...

    def add_address(self, ifname: str, cidr: str, dad: bool = True) -> bool:
        """Idempotent: True if it was added, False if it was already there. dad=False skips
        IPv6 duplicate address detection, so the address is usable at once."""
        ...

    def remove_address(self, ifname: str, cidr: str) -> bool:
        """Idempotent: True if it was removed, False if it was not there."""
        ...

    def announce(self, ifname: str, address: str) -> None:
        """Tell the LAN the address now lives here: gratuitous ARP (IPv4) or unsolicited
        neighbour advertisement (IPv6)."""
        ...

    def watch(self, stop: threading.Event) -> Iterator[NicEvent]:
        """The current links and addresses as events, then changes as they happen, until stop
        is set (checked often)."""
        ...


def split_cidr(cidr: str) -> tuple[str, int]:
    iface = ipaddress.ip_interface(cidr)
    return str(iface.ip), iface.network.prefixlen


def garp_frame(mac: str, address: str) -> bytes:
    """A gratuitous ARP request: sender and target are both the address being claimed."""
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = ipaddress.IPv4Address(address).packed
    eth = b"\xff" * 6 + hw + b"\x08\x06"
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + hw + ip + b"\x00" * 6 + ip
    return eth + arp


ND_NEIGHBOR_ADVERT = 136
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LINKADDR = 2


def na_message(mac: str, address: str) -> bytes:
    """An unsolicited ICMPv6 neighbour advertisement (RFC 4861 7.2.6) with the override flag,
    so neighbours replace their cached link-layer address. The kernel fills the checksum."""
    hw = bytes.fromhex(mac.replace(":", ""))
    target = ipaddress.IPv6Address(address).packed
    head = bytes([ND_NEIGHBOR_ADVERT, 0, 0, 0]) + NA_FLAG_OVERRIDE.to_bytes(4, "big")
    return head + target + bytes([ND_OPT_TARGET_LINKADDR, 1]) + hw
