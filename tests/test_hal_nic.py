"""One contract for NICs: the simulated backend always, the Linux one in real namespaces."""

from __future__ import annotations

import socket
import subprocess
import uuid

import pytest
from pyroute2.netns import popns, pushns

from hal.errors import Unavailable
from hal.linux.nic import LinuxNic
from hal.nic import garp_frame
from hal.sim.nic import SimNic

VIP = "192.0.2.100/24"
ETH_P_ARP = 0x0806


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

    def listen(self) -> socket.socket:
        pushns(self.lan)
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        finally:
            popns()
        s.bind(("lan0", ETH_P_ARP))
        s.settimeout(3)
        return s

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
