"""The running firmware's side of a commit-confirmed network change (firmware.netconfirm): at
start a change left pending is rolled back; while one is pending, the pair's own facts confirm
it (the peer's adverts arrive on the LAN path and the VIP is held by one of the boards) and the
deadline is kept even when no `nvr network apply` waits for it; the alerts follow the record on
the data partition, so a change made by a command shows in the board's status."""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware.alert_ids import AlertId, Severity
from firmware.alerts import Alerts
from firmware.netchange import NetChange
from firmware.netconfirm import CONFIRM_SECONDS, PENDING_TEXT, PeerReached, VipAnswered
from firmware.timefmt import now_us

log = logging.getLogger(__name__)

SETTLE_SECONDS = 10.0
"""Facts count only this long after the change: an advert heard just before it is still 'fresh'
for a few seconds (4 advert intervals) and must not confirm a change that cut the LAN."""


class NetWatch:
    def __init__(
        self,
        nc: NetChange,
        alerts: Alerts,
        lan_fresh: Callable[[], bool],
        vip_answers: Callable[[], bool],
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self.nc = nc
        self.alerts = alerts
        self.lan_fresh = lan_fresh
        self.vip_answers = vip_answers
        self.settle = settle

    def start(self) -> None:
        """A change still pending when the firmware starts was never confirmed: roll it back."""
        if self.nc.record.exists():
            self.nc.start()
        self._alerts()

    def step(self) -> None:
        if self.nc.record.exists():  # only then is anything written (no lock file otherwise)
            p = self.nc.pending()
            out = self.nc.tick()
            if p is not None and not out.rolled_back:
                since = self.nc.clock() - (p.deadline - CONFIRM_SECONDS)
                if since >= self.settle and self.lan_fresh():
                    out = self.nc.event(PeerReached())
                if since >= self.settle and not out.rolled_back and self.vip_answers():
                    out = self.nc.event(VipAnswered())
                if out.confirmed is not None:
                    log.info("network change confirmed by the %s", out.confirmed.value)
        self._alerts()

    def _alerts(self) -> None:
        if not self.nc.record.exists():
            self.alerts.clear(AlertId.NETWORK_CHANGE_PENDING)
        else:
            self.alerts.raise_(AlertId.NETWORK_CHANGE_PENDING, Severity.WARNING, PENDING_TEXT,
                               now_us())  # fmt: skip
        back = self.nc.rolled_back()
        if back is None:
            self.alerts.clear(AlertId.NETWORK_ROLLED_BACK)
        else:
            self.alerts.raise_(AlertId.NETWORK_ROLLED_BACK, Severity.WARNING, back, now_us())
