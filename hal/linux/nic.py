"""NICs through netlink (pyroute2); gratuitous ARP through a packet socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute, NetlinkError, NetNS
from pyroute2.netns import popns, pushns

from hal.errors import DeviceIOError, Unavailable
from hal.nic import LinkState, garp_frame, split_cidr

EEXIST = 17
EADDRNOTAVAIL = 99


class LinuxNic:
    """netns: operate in that network namespace (the rig's boards); None = this one."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    @contextmanager
    def _rt(self) -> Iterator[IPRoute]:
        rt = NetNS(self.netns) if self.netns else IPRoute()
        try:
            yield rt
        finally:
            rt.close()

    def _index(self, rt: IPRoute, ifname: str) -> int:
        found = rt.link_lookup(ifname=ifname)
        if not found:
            raise Unavailable(f"no network interface {ifname!r}")
        return found[0]

    def link(self, ifname: str) -> LinkState:
        with self._rt() as rt:
            msg = rt.get_links(self._index(rt, ifname))[0]
        flags = msg["flags"]
        speed = None
        if not self.netns:  # /sys shows this process's namespace only
            try:
                with open(f"/sys/class/net/{ifname}/speed") as f:
                    speed = int(f.read())
            except (OSError, ValueError):
                pass
        return LinkState(
            name=ifname,
            up=bool(flags & 1),
            carrier=bool(msg.get("IFLA_CARRIER")),
            mac=msg.get("IFLA_ADDRESS") or "",
            speed_mbps=speed if speed and speed > 0 else None,
        )

    def addresses(self, ifname: str) -> list[str]:
        with self._rt() as rt:
            idx = self._index(rt, ifname)
            return [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in rt.get_addr(index=idx)]

    def add_address(self, ifname: str, cidr: str) -> bool:
        return self._change_address("add", ifname, cidr, already=EEXIST)

    def remove_address(self, ifname: str, cidr: str) -> bool:
        return self._change_address("del", ifname, cidr, already=EADDRNOTAVAIL)

    def _change_address(self, op: str, ifname: str, cidr: str, already: int) -> bool:
        """False when the address already was (or was not) there: idempotent for failover."""
        addr, prefix = split_cidr(cidr)
        with self._rt() as rt:
            try:
                rt.addr(op, index=self._index(rt, ifname), address=addr, prefixlen=prefix)
            except NetlinkError as e:
                if e.code == already:
                    return False
                raise DeviceIOError(f"{ifname}: cannot {op} {cidr}: {e}") from e
        return True

    def announce(self, ifname: str, address: str) -> None:
        frame = garp_frame(self.link(ifname).mac, address)
        with self._packet_socket() as s:
            try:
                s.bind((ifname, 0))
                s.send(frame)
            except OSError as e:
                raise DeviceIOError(f"{ifname}: gratuitous ARP failed: {e}") from e

    @contextmanager
    def _packet_socket(self) -> Iterator[socket.socket]:
        # A socket belongs to the namespace it was made in, so make it there.
        if self.netns:
            pushns(self.netns)
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        finally:
            if self.netns:
                popns()
        with s:
            yield s
