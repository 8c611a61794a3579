"""Network interfaces: link facts and the floating-IP operations failover needs."""

from __future__ import annotations

import ipaddress
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


class Nic(Protocol):
    def link(self, ifname: str) -> LinkState: ...

    def addresses(self, ifname: str) -> list[str]:
        """Addresses as 'addr/prefix'."""
        ...

    def add_address(self, ifname: str, cidr: str) -> bool:
        """Idempotent: True if it was added, False if it was already there."""
        ...

    def remove_address(self, ifname: str, cidr: str) -> bool:
        """Idempotent: True if it was removed, False if it was not there."""
        ...

    def announce(self, ifname: str, address: str) -> None:
        """Tell the LAN the address now lives here: gratuitous ARP (IPv4)."""
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
