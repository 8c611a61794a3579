"""The floating IP on the LAN interface: add, announce, keep, release (through hal's NIC)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from hal.errors import HalError
from hal.nic import AddressEvent, Nic

log = logging.getLogger(__name__)


class FloatingIP:
    """Holds the VIP while told to. Announcements go out several times, at doubling gaps,
    and then periodically: a switch or client with a stale ARP entry is what makes a moved VIP
    unreachable. If something else removes the VIP while we should hold it, it comes back."""

    def __init__(
        self,
        nic: Nic,
        ifname: str,
        cidr: str,
        count: int = 5,
        spacing: float = 0.2,
        refresh: float = 30.0,
    ) -> None:
        iface = ipaddress.ip_interface(cidr)
        self.nic, self.ifname = nic, ifname
        self.cidr = f"{iface.ip}/{iface.network.prefixlen}"
        self.address = str(iface.ip)
        self.count, self.spacing, self.refresh = count, spacing, refresh
        self.wanted = False
        self.present = False
        """Whether the address is on the interface, as our own calls and the NIC's address
        events last said: status reads this instead of asking the kernel every time."""
        self.announcements = 0
        self.errors = 0
        self.last_error: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def take(self) -> None:
        self.wanted = True
        self._add()
        self._cancel()
        self._announce(self.count)

    def release(self) -> None:
        """First thing a board that stops being active does; safe to call at any time."""
        self.wanted = False
        self._cancel()
        try:
            if self.nic.remove_address(self.ifname, self.cidr):
                log.info("released the floating IP %s", self.cidr)
            self.present = False
        except HalError as e:
            self._error(f"cannot remove {self.cidr}: {e}")

    def held(self) -> bool:
        return self.present

    def on_event(self, event: AddressEvent) -> None:
        if event.ifname != self.ifname or event.cidr != self.cidr:
            return
        self.present = event.present
        if self.wanted and not event.present:
            log.warning(
                "the floating IP %s vanished from %s; adding it back", self.cidr, self.ifname
            )
            self.take()
        elif not self.wanted and event.present:
            log.warning("the floating IP %s appeared on standby; removing it", self.cidr)
            self.release()

    def _add(self) -> None:
        try:
            # No duplicate address detection for an IPv6 VIP: it would stay tentative
            # (unusable) for a second or more after the takeover.
            if self.nic.add_address(self.ifname, self.cidr, dad=False):
                log.info("took the floating IP %s on %s", self.cidr, self.ifname)
            self.present = True
        except HalError as e:
            self._error(f"cannot add {self.cidr}: {e}")

    def _announce(self, left: int) -> None:
        if not self.wanted:
            return
        try:
            self.nic.announce(self.ifname, self.address)
            self.announcements += 1
        except HalError as e:
            self._error(str(e))
        loop = asyncio.get_running_loop()
        if left > 1:
            # Gaps double (0.2, 0.4, 0.8 s, ...): a neighbour ignores a changed address for
            # its locktime (1 s on Linux) after its entry last changed, so at least one
            # announcement must come later than that.
            gap = self.spacing * 2 ** (self.count - left)
            self._timer = loop.call_later(gap, self._announce, left - 1)
        elif self.refresh > 0:
            self._timer = loop.call_later(self.refresh, self._announce, 1)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text
        log.error("floating IP: %s", text)
