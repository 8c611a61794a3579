"""NICs through netlink (pyroute2); gratuitous ARP through a packet socket.

pyroute2 is imported where netlink is first used, not with this module: it takes a good part of
the firmware's start, and a single board opens no NIC until asked (the panel's addresses)."""

from __future__ import annotations

import functools
import ipaddress
import select
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from hal.errors import DeviceIOError, Unavailable
from hal.nic import (
    AddressEvent,
    LinkEvent,
    LinkState,
    NicEvent,
    garp_frame,
    na_message,
    split_cidr,
)

if TYPE_CHECKING:
    from pyroute2 import IPRoute

EEXIST = 17
EADDRNOTAVAIL = 99
IFA_F_NODAD = 0x02
IFF_UP = 1
ALL_NODES = "ff02::1"
WATCH_POLL_S = 0.2


_NETLINK = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nvr-netlink")

P = ParamSpec("P")
R = TypeVar("R")


def _netlink_thread(fn: Callable[P, R]) -> Callable[P, R]:
    """pyroute2's synchronous API runs an asyncio loop of its own and refuses to work in a
    thread whose loop is running (the firmware's), so every netlink call runs in one
    dedicated thread; callers just block for the millisecond it takes."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return _NETLINK.submit(fn, *args, **kwargs).result()

    return call


class LinuxNic:
    """netns: operate in that network namespace (the rig's boards); None = this one."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._packet: dict[str, socket.socket] = {}

    @contextmanager
    def _rt(self) -> Iterator[IPRoute]:
        from pyroute2 import IPRoute

        rt = IPRoute(netns=self.netns) if self.netns else IPRoute()
        try:
            yield rt
        finally:
            rt.close()

    def _index(self, rt: IPRoute, ifname: str) -> int:
        found = rt.link_lookup(ifname=ifname)
        if not found:
            raise Unavailable(f"no network interface {ifname!r}")
        return found[0]

    @_netlink_thread
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
            up=bool(flags & IFF_UP),
            carrier=bool(msg.get("IFLA_CARRIER")),
            mac=msg.get("IFLA_ADDRESS") or "",
            speed_mbps=speed if speed and speed > 0 else None,
        )

    @_netlink_thread
    def addresses(self, ifname: str) -> list[str]:
        with self._rt() as rt:
            idx = self._index(rt, ifname)
            return [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in rt.get_addr(index=idx)]

    def add_address(self, ifname: str, cidr: str, dad: bool = True) -> bool:
        return self._change_address("add", ifname, cidr, already=EEXIST, dad=dad)

    def remove_address(self, ifname: str, cidr: str) -> bool:
        return self._change_address("del", ifname, cidr, already=EADDRNOTAVAIL)

    @_netlink_thread
    def _change_address(
        self, op: str, ifname: str, cidr: str, already: int, dad: bool = True
    ) -> bool:
        """False when the address already was (or was not) there: idempotent for failover."""
        from pyroute2 import NetlinkError

        addr, prefix = split_cidr(cidr)
        extra = {}
        if not dad and ipaddress.ip_address(addr).version == 6:
            extra["IFA_FLAGS"] = IFA_F_NODAD
        with self._rt() as rt:
            try:
                rt.addr(op, index=self._index(rt, ifname), address=addr, prefixlen=prefix, **extra)
            except NetlinkError as e:
                if e.code == already:
                    return False
                raise DeviceIOError(f"{ifname}: cannot {op} {cidr}: {e}") from e
        return True

    def announce(self, ifname: str, address: str) -> None:
        mac = self.link(ifname).mac
        if ipaddress.ip_address(address).version == 6:
            self._announce_v6(ifname, mac, address)
            return
        try:
            sock = self._packet.get(ifname)
            if sock is None:
                # Kept open: closing a packet socket waits for an RCU grace period (~15 ms),
                # which would stall the caller at every announcement.
                sock = self._packet[ifname] = self._new_socket(socket.AF_PACKET, socket.SOCK_RAW)
                sock.bind((ifname, 0))
            sock.send(garp_frame(mac, address))
        except OSError as e:
            dropped = self._packet.pop(ifname, None)
            if dropped is not None:
                dropped.close()
            raise DeviceIOError(f"{ifname}: gratuitous ARP failed: {e}") from e

    def _announce_v6(self, ifname: str, mac: str, address: str) -> None:
        with self._socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
            try:
                index = self._ifindex(ifname)
                # Neighbour discovery is only believed from hop limit 255 (RFC 4861 7.1.2).
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                s.bind((address, 0, 0, index))
                s.sendto(na_message(mac, address), (ALL_NODES, 0, 0, index))
            except OSError as e:
                raise DeviceIOError(f"{ifname}: neighbour advertisement failed: {e}") from e

    @_netlink_thread
    def _snapshot(self) -> list:
        with self._rt() as rt:
            return [*rt.get_links(), *rt.get_addr()]

    @_netlink_thread
    def _ifindex(self, ifname: str) -> int:
        with self._rt() as rt:
            return self._index(rt, ifname)

    def _new_socket(self, *args: int) -> socket.socket:
        # A socket belongs to the namespace it was made in, so make it there.
        if not self.netns:
            return socket.socket(*args)
        from pyroute2.netns import popns, pushns

        pushns(self.netns)
        try:
            return socket.socket(*args)
        finally:
            popns()

    @contextmanager
    def _socket(self, *args: int) -> Iterator[socket.socket]:
        with self._new_socket(*args) as s:
            yield s

    def watch(self, stop: threading.Event) -> Iterator[NicEvent]:
        """Current links and addresses first, then changes as netlink reports them.

        A plain netlink socket parsed by pyroute2's marshal: select() on it is exact, where
        IPRoute buffers messages internally and select() would miss queued events."""
        from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        with self._socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            marshal = MarshalRtnl()
            names: dict[int, str] = {}
            # Bound before the snapshot, so nothing between the two is missed.
            pending = self._snapshot()
            while not stop.is_set():
                for msg in pending:
                    event = self._event(msg, names)
                    if event is not None:
                        yield event
                ready, _, _ = select.select([sock], [], [], WATCH_POLL_S)
                pending = list(marshal.parse(sock.recv(1 << 16))) if ready else []

    @staticmethod
    def _event(msg: dict, names: dict[int, str]) -> NicEvent | None:
        kind = msg.get("event")
        if kind in ("RTM_NEWLINK", "RTM_DELLINK"):
            name = msg.get("IFLA_IFNAME") or names.get(msg["index"], "")
            names[msg["index"]] = name
            gone = kind == "RTM_DELLINK"
            return LinkEvent(
                ifname=name,
                up=not gone and bool(msg["flags"] & IFF_UP),
                carrier=not gone and bool(msg.get("IFLA_CARRIER")),
            )
        if kind in ("RTM_NEWADDR", "RTM_DELADDR"):
            return AddressEvent(
                ifname=names.get(msg["index"], ""),
                cidr=f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}",
                present=kind == "RTM_NEWADDR",
            )
        return None
