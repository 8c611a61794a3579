"""The twin-board rig on one machine: network namespaces for both boards, the LAN switch, the
camera and a client, with the direct sync link between the boards.

    <p>-a  eth0 ─┐                         ┌─ eth0 <p>-cam   192.0.2.31
                 ├── bridge "lan" in <p>-sw ┤
    <p>-b  eth0 ─┘                         └─ eth0 <p>-cli   192.0.2.50
    <p>-a  eth1 ───── direct veth (sync) ───── eth1 <p>-b

LAN 192.0.2.0/24 (a .11, b .12, VIP .100), sync 198.51.100.0/28 (a .1, b .2): documentation
ranges, inside namespaces this rig made; nothing in the root namespace routes to them. Every
rig removes all it made, also when the test using it fails.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyroute2.netns import popns, pushns

LAN_PREFIX = 24
SYNC_PREFIX = 28
ADDRESSES = {
    "a": {"lan": "192.0.2.11", "sync": "198.51.100.1"},
    "b": {"lan": "192.0.2.12", "sync": "198.51.100.2"},
    "cam": {"lan": "192.0.2.31"},
    "cli": {"lan": "192.0.2.50"},
}
VIRTUAL_IP = "192.0.2.100"
HOSTS = ("a", "b", "cam", "cli")


def ns_socket(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM):
    """A socket made in namespace `ns` (sockets keep the namespace they were made in)."""
    pushns(ns)
    try:
        return socket.socket(family, kind)
    finally:
        popns()


def ns_http(ns: str, addr: str, port: int, path: str, timeout: float = 1.0, **kw) -> bytes:
    """GET (or kw method=...) from inside `ns`; OSError when nothing answers or the answer
    is an HTTP error."""
    sock = ns_socket(ns)
    sock.settimeout(timeout)
    try:
        sock.connect((addr, port))
    except OSError:
        sock.close()
        raise
    conn = http.client.HTTPConnection(addr, port, timeout=timeout)
    conn.sock = sock
    try:
        conn.request(kw.get("method", "GET"), path, headers=kw.get("headers", {}))
        resp = conn.getresponse()
        body = resp.read()
        if resp.status >= 400:
            raise OSError(f"HTTP {resp.status}: {body[:200]!r}")
        return body
    finally:
        conn.close()


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20)


@dataclass
class PairRig:
    prefix: str = field(default_factory=lambda: "r" + uuid.uuid4().hex[:6])
    procs: dict[str, list[subprocess.Popen]] = field(default_factory=dict)

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    # --- lifecycle -----------------------------------------------------------------------------

    def up(self) -> PairRig:
        try:
            for name in [self.switch, *(self.ns(h) for h in HOSTS)]:
                _ip("netns", "add", name)
                _ip("link", "set", "lo", "up", ns=name)
            _ip("link", "add", "lan", "type", "bridge", ns=self.switch)
            _ip("link", "set", "lan", "up", ns=self.switch)
            for host in HOSTS:
                port = f"{host}-lan"
                _ip("link", "add", port, "netns", self.switch, "type", "veth", "peer", "name",
                    "eth0", "netns", self.ns(host))  # fmt: skip
                _ip("link", "set", port, "master", "lan", "up", ns=self.switch)
                self._address(host, "eth0", ADDRESSES[host]["lan"], LAN_PREFIX)
            _ip("link", "add", "eth1", "netns", self.ns("a"), "type", "veth", "peer", "name",
                "eth1", "netns", self.ns("b"))  # fmt: skip
            for host in ("a", "b"):
                self._address(host, "eth1", ADDRESSES[host]["sync"], SYNC_PREFIX)
        except BaseException:
            self.down()
            raise
        return self

    def _address(self, host: str, dev: str, addr: str, prefix: int) -> None:
        _ip("addr", "add", f"{addr}/{prefix}", "dev", dev, ns=self.ns(host))
        _ip("link", "set", dev, "up", ns=self.ns(host))

    def down(self) -> None:
        """Kill what runs in the rig, then remove every namespace (and so every link) it made."""
        for host in list(self.procs):
            self.kill(host)
        for name in [self.switch, *(self.ns(h) for h in HOSTS)]:
            _ip("netns", "del", name, check=False)

    def __enter__(self) -> PairRig:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- running things ------------------------------------------------------------------------

    def run(self, host: str, cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *cmd], **kw)

    def start(self, host: str, cmd: Sequence[str], **kw) -> subprocess.Popen:
        """A process on a host, in its own process group so a power cut takes all of it."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *cmd],
                                start_new_session=True, **kw)  # fmt: skip
        self.procs.setdefault(host, []).append(proc)
        return proc

    def kill(
        self, host: str, sig: int = signal.SIGKILL, group: bool = True, timeout: float = 30
    ) -> None:
        """Signal what runs on host (the whole process group, or with group=False only the
        started process, so it can shut its children down itself) and wait; SIGKILL whatever
        is still there after the timeout."""
        for proc in self.procs.pop(host, []):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if group:
                        os.killpg(proc.pid, sig)
                    else:
                        proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    # --- faults --------------------------------------------------------------------------------

    def cable(self, host: str, link: str, connected: bool) -> None:
        """Pull or plug a cable: 'lan' (eth0 at the switch side too) or 'sync' (eth1)."""
        dev = {"lan": "eth0", "sync": "eth1"}[link]
        state = "up" if connected else "down"
        _ip("link", "set", dev, state, ns=self.ns(host))
        if link == "lan":
            _ip("link", "set", f"{host}-lan", state, ns=self.switch)

    def shape(self, host: str, link: str, rate: str | None, burst: str = "1mb") -> None:
        """Limit what the host sends on a link (tc token bucket), e.g. rate="1gbit"; None
        removes the limit. The burst passes at line rate: keep it well below what a drill
        means to slow down."""
        dev = {"lan": "eth0", "sync": "eth1"}[link]
        if rate is None:
            self.run(host, ["tc", "qdisc", "del", "dev", dev, "root"], check=False)
            return
        self.run(host, ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                        "burst", burst, "latency", "50ms"], check=True)  # fmt: skip

    def netem(self, host: str, link: str, delay_ms: float | None, jitter_ms: float = 0.0) -> None:
        """Delay what the host sends on a link by delay_ms ± jitter_ms (tc netem; uniform
        jitter, so packets overtake each other as on a congested LAN); delay_ms=None removes
        it. netem and `shape` both own the link's root qdisc: each replaces the other, so
        a link is either shaped or delayed, never both."""
        dev = {"lan": "eth0", "sync": "eth1"}[link]
        if delay_ms is None:
            self.run(host, ["tc", "qdisc", "del", "dev", dev, "root"], check=False)
            return
        self.run(host, ["tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay",
                        f"{delay_ms:g}ms", f"{jitter_ms:g}ms"], check=True)  # fmt: skip

    def _links(self, host: str) -> tuple[str, ...]:
        return ("lan", "sync") if host in ("a", "b") else ("lan",)

    def power_cut(self, host: str) -> None:
        """Everything on the board dies at once, its links go dark and what it held in RAM
        (addresses it added, such as a floating IP) is gone.

        The links go down sync first. One kernel runs every namespace here, and its linkwatch
        holds back a carrier change that comes within a second of another; on real boards the
        two cables end on different machines (the peer and the switch), so neither waits for
        the other."""
        self.kill(host)
        for link in sorted(self._links(host), key=lambda link: link != "sync"):
            self.cable(host, link, False)
            _ip("addr", "flush", "dev", {"lan": "eth0", "sync": "eth1"}[link], ns=self.ns(host))

    def power_on(self, host: str) -> None:
        """The board boots: its links come up with their configured addresses only."""
        for link in self._links(host):
            dev = {"lan": "eth0", "sync": "eth1"}[link]
            prefix = LAN_PREFIX if link == "lan" else SYNC_PREFIX
            self.cable(host, link, True)
            _ip("addr", "replace", f"{ADDRESSES[host][link]}/{prefix}", "dev", dev,
                ns=self.ns(host))  # fmt: skip

    def ping(self, src: str, dst_addr: str, timeout_s: float = 1.0) -> bool:
        res = self.run(src, ["ping", "-c", "1", "-W", str(max(1, round(timeout_s))), dst_addr])
        return res.returncode == 0

    # --- talking from inside a namespace without spawning a process -------------------------

    def socket(self, host: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM):
        """A socket that lives in the host's namespace, used from this process."""
        return ns_socket(self.ns(host), family, kind)

    def http(self, host: str, addr: str, port: int, path: str, timeout: float = 1.0, **kw) -> bytes:
        """GET (or kw method=...) from host's namespace; raises OSError when nothing answers
        or the answer is an HTTP error."""
        return ns_http(self.ns(host), addr, port, path, timeout, **kw)

    def http_json(
        self, host: str, addr: str, port: int, path: str, timeout: float = 1.0, **kw
    ) -> dict:
        return json.loads(self.http(host, addr, port, path, timeout, **kw))

    def send_udp(self, host: str, addr: str, port: int, data: bytes) -> None:
        with self.socket(host, socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, (addr, port))

    def block(self, host: str, link: str, port: int, blocked: bool, proto: str = "udp") -> None:
        """Block one kind of traffic on a path without pulling its cable: drop `proto` to or
        from `port` on that link in the host's firewall (nftables), both directions."""
        dev = {"lan": "eth0", "sync": "eth1"}[link]
        table = f"rigblock_{dev}_{proto}{port}"
        if not blocked:
            self.run(host, ["nft", "delete", "table", "inet", table], check=False)
            return
        l4 = f"meta l4proto {proto} th"
        rules = (
            f"table inet {table} {{\n"
            f" chain in {{ type filter hook input priority 0; "
            f'iifname "{dev}" {l4} dport {port} drop; iifname "{dev}" {l4} sport {port} drop; }}\n'
            f" chain out {{ type filter hook output priority 0; "
            f'oifname "{dev}" {l4} dport {port} drop; oifname "{dev}" {l4} sport {port} drop; }}\n'
            "}\n"
        )
        self.run(host, ["nft", "-f", "-"], input=rules, check=True)
