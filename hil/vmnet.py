"""The wiring of two board VMs, inside one network namespace this rig makes: a LAN bridge with
one tap per board, the camera simulator's and a client's address; a sync bridge with one tap
per board, which is the direct cable between them. Nothing in the root namespace routes to it,
and `down()` removes the namespace and with it every link."""

from __future__ import annotations

import os
import subprocess

from hil.rig import ns_http
from hil.vm import CAMERA_ADDR, LAN_HOST

BOARDS = ("a", "b")


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


class VmPairNet:
    def __init__(self) -> None:
        self.ns = f"nvrvm{os.getpid()}"

    def taps(self, board: str) -> tuple[str, str]:
        """(LAN tap, sync tap) of a board, for hil.vm.Vm(taps=...)."""
        return f"lan-{board}", f"sync-{board}"

    def up(self) -> VmPairNet:
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        try:
            _ip(self.ns, "link", "set", "lo", "up")
            for br in ("brlan", "brsync"):
                _ip(self.ns, "link", "add", br, "type", "bridge")
                _ip(self.ns, "link", "set", br, "up")
            for board in BOARDS:
                for tap, br in zip(self.taps(board), ("brlan", "brsync"), strict=True):
                    _ip(self.ns, "tuntap", "add", "dev", tap, "mode", "tap")
                    _ip(self.ns, "link", "set", tap, "master", br, "up")
            # The gateway the boards ping, the camera, and the client, all on the LAN bridge.
            for addr in (LAN_HOST, CAMERA_ADDR):
                _ip(self.ns, "address", "add", f"{addr}/24", "dev", "brlan")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def __enter__(self) -> VmPairNet:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def http(self, addr: str, port: int, path: str, timeout: float = 1.0) -> bytes:
        """A client on the LAN asking `addr` (the VIP, a board)."""
        return ns_http(self.ns, addr, port, path, timeout)
