"""Tie-breaker: can this board reach the cameras (or the configured gateway)?

A board cut off from the LAN hears no adverts either, and must not claim the VIP because
of that silence. ICMP echo (icmplib) rather than RTSP connects: cheap for the camera, and the
same probe works for a gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from icmplib import ICMPLibError, SocketPermissionError, async_ping

log = logging.getLogger(__name__)


def camera_hosts(urls: Sequence[str]) -> list[str]:
    hosts: list[str] = []
    for url in urls:
        host = urlsplit(url).hostname
        if host and host not in hosts:
            hosts.append(host)
    return hosts


class Reachability:
    """Probes targets in turn, one answer per round is enough; `ok` says whether an answer
    came recently. No targets (nothing configured to reach) counts as reachable."""

    def __init__(
        self, targets: Sequence[str], period: float = 0.25, timeout: float = 0.2, fresh: float = 1.0
    ) -> None:
        self.targets = list(targets)
        self.period, self.timeout, self.fresh = period, timeout, fresh
        self.last_ok: float | None = None
        self.last_target: str | None = None
        self.probes = 0
        self._next = 0
        self._privileged = True
        """Raw ICMP sockets (CAP_NET_RAW); without it, ICMP datagram sockets, which the kernel
        allows to groups in net.ipv4.ping_group_range."""
        self.denied: str | None = None
        """Why no probe can be sent at all (said once in the log, not at every probe)."""

    def ok(self, now: float) -> bool:
        if not self.targets:
            return True
        return self.last_ok is not None and now - self.last_ok <= self.fresh

    async def _probe(self, host: str) -> bool:
        self.probes += 1
        try:
            reply = await async_ping(
                host, count=1, timeout=self.timeout, privileged=self._privileged
            )
        except SocketPermissionError:
            if self._privileged:
                self._privileged = False
                log.warning(
                    "no CAP_NET_RAW for raw ICMP: reachability probes use ICMP datagram sockets "
                    "(net.ipv4.ping_group_range must hold this process's group)"
                )
                return await self._probe(host)
            if self.denied is None:
                self.denied = (
                    "reachability probes cannot be sent: no CAP_NET_RAW, and this process's "
                    "group is outside net.ipv4.ping_group_range; the tie-breaker never answers"
                )
                log.error("%s", self.denied)
            return False
        except (ICMPLibError, OSError) as e:
            log.debug("reachability probe of %s failed: %s", host, e)
            return False
        return reply.is_alive

    async def run(self, stop: asyncio.Event) -> None:
        if not self.targets:
            return
        while not stop.is_set():
            started = time.monotonic()
            for k in range(len(self.targets)):
                host = self.targets[(self._next + k) % len(self.targets)]
                if await self._probe(host):
                    self.last_ok = time.monotonic()
                    self.last_target = host
                    self._next = (self._next + k) % len(self.targets)
                    break
            delay = self.period - (time.monotonic() - started)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
