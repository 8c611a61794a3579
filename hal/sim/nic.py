"""Simulated NICs: interfaces in memory, announcements recorded for tests and the sim board."""

from __future__ import annotations

from dataclasses import dataclass, field

from hal.errors import Unavailable
from hal.nic import LinkState, garp_frame, split_cidr


@dataclass
class _Iface:
    mac: str
    up: bool = True
    carrier: bool = True
    addresses: list[str] = field(default_factory=list)


class SimNic:
    def __init__(self, interfaces: dict[str, str]) -> None:
        """interfaces: name -> MAC address."""
        self._ifaces = {name: _Iface(mac) for name, mac in interfaces.items()}
        self.sent: list[tuple[str, bytes]] = []
        """Frames 'sent' by announce(), as (interface, bytes)."""

    def _get(self, ifname: str) -> _Iface:
        if ifname not in self._ifaces:
            raise Unavailable(f"no network interface {ifname!r}")
        return self._ifaces[ifname]

    def set_carrier(self, ifname: str, carrier: bool) -> None:
        self._get(ifname).carrier = carrier

    def link(self, ifname: str) -> LinkState:
        i = self._get(ifname)
        return LinkState(ifname, i.up, i.carrier, i.mac, None)

    def addresses(self, ifname: str) -> list[str]:
        return list(self._get(ifname).addresses)

    def add_address(self, ifname: str, cidr: str) -> bool:
        addr, prefix = split_cidr(cidr)
        i = self._get(ifname)
        key = f"{addr}/{prefix}"
        if key in i.addresses:
            return False
        i.addresses.append(key)
        return True

    def remove_address(self, ifname: str, cidr: str) -> bool:
        addr, prefix = split_cidr(cidr)
        i = self._get(ifname)
        key = f"{addr}/{prefix}"
        if key not in i.addresses:
            return False
        i.addresses.remove(key)
        return True

    def announce(self, ifname: str, address: str) -> None:
        self.sent.append((ifname, garp_frame(self._get(ifname).mac, address)))
