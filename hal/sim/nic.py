"""Simulated NICs: interfaces in memory, announcements recorded for tests and the sim board."""

from __future__ import annotations

import ipaddress
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from hal.errors import Unavailable
from hal.nic import AddressEvent, LinkEvent, LinkState, NicEvent, garp_frame, na_message, split_cidr


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
        self._events: queue.Queue[NicEvent] = queue.Queue()

    def _get(self, ifname: str) -> _Iface:
        if ifname not in self._ifaces:
            raise Unavailable(f"no network interface {ifname!r}")
        return self._ifaces[ifname]

    def set_carrier(self, ifname: str, carrier: bool) -> None:
        i = self._get(ifname)
        i.carrier = carrier
        self._events.put(LinkEvent(ifname, i.up, carrier))

    def link(self, ifname: str) -> LinkState:
        i = self._get(ifname)
        return LinkState(ifname, i.up, i.carrier, i.mac, None)

    def addresses(self, ifname: str) -> list[str]:
        return list(self._get(ifname).addresses)

    def add_address(self, ifname: str, cidr: str, dad: bool = True) -> bool:
        addr, prefix = split_cidr(cidr)
        i = self._get(ifname)
        key = f"{addr}/{prefix}"
        if key in i.addresses:
            return False
        i.addresses.append(key)
        self._events.put(AddressEvent(ifname, key, True))
        return True

    def remove_address(self, ifname: str, cidr: str) -> bool:
        addr, prefix = split_cidr(cidr)
        i = self._get(ifname)
        key = f"{addr}/{prefix}"
        if key not in i.addresses:
            return False
        i.addresses.remove(key)
        self._events.put(AddressEvent(ifname, key, False))
        return True

    def announce(self, ifname: str, address: str) -> None:
        mac = self._get(ifname).mac
        v6 = ipaddress.ip_address(address).version == 6
        self.sent.append((ifname, na_message(mac, address) if v6 else garp_frame(mac, address)))

    def watch(self, stop: threading.Event) -> Iterator[NicEvent]:
        for name, i in list(self._ifaces.items()):
            yield LinkEvent(name, i.up, i.carrier)
            for cidr in list(i.addresses):
                yield AddressEvent(name, cidr, True)
        while not stop.is_set():
            try:
                yield self._events.get(timeout=0.05)
            except queue.Empty:
                continue
