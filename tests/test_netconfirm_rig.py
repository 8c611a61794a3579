"""Commit-confirmed network change on a real interface, in a network namespace this test makes
(never the host's): a runner stands in for networkd behind the same interface, applying the
.network files' addresses with pyroute2; an unconfirmed change brings the old address back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyroute2 import IPRoute

from firmware.netchange import NetChange
from firmware.netconfirm import NetFile
from firmware.provision import Result
from firmware.setupfiles import Layout


def network_file(address: str) -> bytes:
    return f"[Match]\nName=eth0\n\n[Network]\nAddress={address}\n".encode()


class NetnsNetworkd:
    """`networkctl reconfigure IFACE`: the Address= lines of the file matching IFACE, exactly."""

    def __init__(self, ns: str, network_dir: Path) -> None:
        self.ns, self.dir = ns, network_dir

    def __call__(self, argv: Sequence[str], on_line=None) -> Result:
        if list(argv[:2]) != ["networkctl", "reconfigure"]:
            return Result(0, "")
        iface = argv[2]
        wanted = []
        for f in sorted(self.dir.glob("*.network")):
            lines = f.read_text().splitlines()
            if f"Name={iface}" in lines:
                wanted = [ln.split("=", 1)[1] for ln in lines if ln.startswith("Address=")]
        ip = IPRoute(netns=self.ns)
        try:
            idx = ip.link_lookup(ifname=iface)[0]
            for old in ip.get_addr(index=idx, family=2):
                ip.addr("del", index=idx, address=old.get("IFA_ADDRESS"),
                        prefixlen=old["prefixlen"])  # fmt: skip
            for a in wanted:
                addr, plen = a.split("/")
                ip.addr("add", index=idx, address=addr, prefixlen=int(plen))
        finally:
            ip.close()
        return Result(0, "")


def addresses(ns: str) -> set[str]:
    ip = IPRoute(netns=ns)
    try:
        idx = ip.link_lookup(ifname="eth0")[0]
        found = ip.get_addr(index=idx, family=2)
        return {f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in found}
    finally:
        ip.close()


def test_an_unconfirmed_address_change_is_rolled_back_on_the_interface(lan_ns, tmp_path):
    layout = Layout(tmp_path / "data")
    lan = layout.network_dir / "10-lan.network"
    lan.parent.mkdir(parents=True)
    lan.write_bytes(network_file("192.0.2.11/24"))
    runner = NetnsNetworkd(lan_ns, layout.network_dir)
    runner(["networkctl", "reconfigure", "eth0"])
    assert addresses(lan_ns) == {"192.0.2.11/24"}
    now = [1000.0]
    nc = NetChange(layout, runner, lambda: now[0])
    nc.apply([NetFile(lan, network_file("192.0.2.99/24"))], ("eth0",))
    assert addresses(lan_ns) == {"192.0.2.99/24"}
    now[0] += 60
    assert nc.tick().rolled_back
    assert addresses(lan_ns) == {"192.0.2.11/24"}
    assert lan.read_bytes() == network_file("192.0.2.11/24")
