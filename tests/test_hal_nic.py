"""One contract for NICs: the simulated backend always, the Linux one in real namespaces."""

from __future__ import annotations

import socket
import subprocess
import threading
import uuid

import pytest
from pyroute2.netns import popns, pushns

from hal.errors import Unavailable
from hal.linux.nic import LinuxNic
from hal.nic import AddressEvent, LinkEvent, garp_frame, na_message
from hal.sim.nic import SimNic
from tests.conftest import wait_until

VIP = "192.0.2.100/24"
VIP6 = "2001:db8::100/64"
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD


class LinuxRig:
    """Two namespaces joined by a veth pair: the board's eth0 and a listener on the LAN."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.board, self.lan = f"nic-{tag}-b", f"nic-{tag}-l"
        for ns in (self.board, self.lan):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", self.board, "link", "add", "eth0", "type", "veth", "peer",
                        "name", "lan0", "netns", self.lan], check=True)  # fmt: skip
        subprocess.run(["ip", "-n", self.board, "link", "set", "eth0", "up"], check=True)
        subprocess.run(["ip", "-n", self.lan, "link", "set", "lan0", "up"], check=True)
        self.nic = LinuxNic(netns=self.board)

    def listen(self, proto: int = ETH_P_ARP) -> socket.socket:
        pushns(self.lan)
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        finally:
            popns()
        s.bind(("lan0", proto))
        s.settimeout(3)
        return s

    def cable(self, connected: bool) -> None:
        """The far end goes away (or comes back): eth0 loses (or regains) its carrier."""
        state = "up" if connected else "down"
        subprocess.run(["ip", "-n", self.lan, "link", "set", "lan0", state], check=True)

    def close(self) -> None:
        for ns in (self.board, self.lan):
            subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture(params=["sim", "linux"])
def backend(request):
    if request.param == "sim":
        nic = SimNic({"eth0": "02:00:00:00:00:01"})
        yield nic, None
        return
    rig = LinuxRig()
    try:
        yield rig.nic, rig
    finally:
        rig.close()


def test_vip_add_and_remove_are_idempotent(backend):
    nic, _ = backend
    assert nic.add_address("eth0", VIP) is True
    assert nic.add_address("eth0", VIP) is False
    assert VIP in nic.addresses("eth0")
    assert nic.remove_address("eth0", VIP) is True
    assert nic.remove_address("eth0", VIP) is False
    assert VIP not in nic.addresses("eth0")


def test_link_facts(backend):
    nic, _ = backend
    link = nic.link("eth0")
    assert link.up and len(link.mac.split(":")) == 6
    with pytest.raises(Unavailable):
        nic.link("nope0")


def test_gratuitous_arp_reaches_the_lan(backend):
    nic, rig = backend
    nic.add_address("eth0", VIP)
    mac = nic.link("eth0").mac
    want = garp_frame(mac, "192.0.2.100")
    if rig is None:
        nic.announce("eth0", "192.0.2.100")
        assert nic.sent == [("eth0", want)]
        return
    with rig.listen() as s:
        nic.announce("eth0", "192.0.2.100")
        while True:
            frame = s.recv(2048)
            if frame[12:14] == b"\x08\x06":
                break
    assert frame[: len(want)] == want  # sender and target are the VIP, sender MAC is eth0's


def test_ipv6_vip_is_usable_at_once_and_announced(backend):
    nic, rig = backend
    assert nic.add_address("eth0", VIP6, dad=False) is True
    assert VIP6 in nic.addresses("eth0")
    mac = nic.link("eth0").mac
    want = na_message(mac, "2001:db8::100")
    if rig is None:
        nic.announce("eth0", "2001:db8::100")
        assert nic.sent == [("eth0", want)]
        return
    # Not tentative: binding to it works only once duplicate address detection is skipped.
    out = subprocess.run(["ip", "-n", rig.board, "-6", "addr", "show", "dev", "eth0"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "2001:db8::100/64" in out and "tentative" not in out.split("2001:db8::100/64")[1][:60]
    with rig.listen(ETH_P_IPV6) as s:
        nic.announce("eth0", "2001:db8::100")
        while True:
            frame = s.recv(2048)
            ip6, icmp = frame[14:54], frame[54:]
            if ip6[6] == socket.IPPROTO_ICMPV6 and icmp[0] == 136:
                break
    assert ip6[7] == 255  # hop limit: neighbours ignore neighbour discovery otherwise
    assert ip6[24:40] == socket.inet_pton(socket.AF_INET6, "ff02::1")
    assert icmp[4:] == want[4:]  # override flag, target = the VIP, our MAC as link-layer option


def test_watch_reports_carrier_and_address_events(backend):
    nic, rig = backend
    stop = threading.Event()
    seen: list = []

    def collect() -> None:
        for ev in nic.watch(stop):
            seen.append(ev)

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    try:
        wait_until(lambda: LinkEvent("eth0", True, True) in seen, 5, "current state of eth0")
        nic.add_address("eth0", VIP)
        wait_until(lambda: AddressEvent("eth0", VIP, True) in seen, 5, "address added event")
        nic.remove_address("eth0", VIP)
        wait_until(lambda: AddressEvent("eth0", VIP, False) in seen, 5, "address removed event")
        if rig is None:
            nic.set_carrier("eth0", False)
        else:
            rig.cable(False)
        wait_until(lambda: LinkEvent("eth0", True, False) in seen, 5, "carrier lost event")
        if rig is None:
            nic.set_carrier("eth0", True)
        else:
            rig.cable(True)
        wait_until(lambda: seen[-1] == LinkEvent("eth0", True, True), 5, "carrier back event")
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()
