"""The power policy: what the UPS readings mean. Pure (readings and now in, alerts and a `Power`
fact out), so every mains-fail / low-battery / mains-back sequence is tested with a jumped
clock; the board core decides what the board does about it (hand over, shut down).

NUT's rule decides the critical state: on battery and low battery. Low battery is the UPS's own
flag, or charge or runtime under the configured thresholds (for UPSes that flag it late). As
NUT waits for a status to persist, one reading is not believed: the state must hold on two
readings in a row at least CONFIRM_SECONDS apart before the board shuts down, so a glitch on
the serial line or a flag the UPS raises for one poll never powers the board off."""

from __future__ import annotations

from firmware.alert_ids import AlertId, Severity
from firmware.config import UpsConfig
from firmware.core.actions import Action, ClearAlert, RaiseAlert
from firmware.core.facts import Power
from hal.ups import UpsReading

ON_BATTERY = AlertId.UPS_ON_BATTERY
LOW = AlertId.UPS_LOW
REPLACE = AlertId.UPS_REPLACE_BATTERY
UNREACHABLE = AlertId.UPS_UNREACHABLE

CONFIRM_SECONDS = 2.0
"""How long on battery and low battery must hold (over two readings at least) to be critical."""
CONFIRM_POLL_SECONDS = 1.0
"""The poll while a critical reading awaits confirmation, however slow the configured poll."""
MAX_ERROR_TEXT = 200
"""A driver's error goes into an alert and the status: never a megabyte of line noise."""


def clip(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """At most `limit` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _describe(r: UpsReading) -> str:
    parts = []
    if r.battery_charge_percent is not None:
        parts.append(f"charge {r.battery_charge_percent:.0f} %")
    if r.runtime_seconds is not None:
        parts.append(f"runtime {r.runtime_seconds / 60:.1f} min")
    if r.battery_voltage is not None:
        parts.append(f"battery {r.battery_voltage:.1f} V")
    return ", ".join(parts) or "no battery figures from the UPS"


class PowerPolicy:
    def __init__(self, limits: UpsConfig) -> None:
        """limits: the [ups] thresholds (low charge and runtime, handover and alert delays)."""
        self.limits = limits
        self.last: UpsReading | None = None
        self.failing_since: float | None = None
        self.critical_since: float | None = None
        """When the first of the readings that say critical came; None while they do not."""
        self.critical_readings = 0
        self.fact = Power(False, False)
        """The state for the board core; a UPS that stops answering keeps its last state."""

    def critical(self, r: UpsReading) -> bool:
        lim = self.limits
        low = (
            r.low_battery
            or (r.battery_charge_percent is not None
                and r.battery_charge_percent < lim.low_charge_percent)
            or (r.runtime_seconds is not None and r.runtime_seconds < lim.low_runtime_seconds)
        )  # fmt: skip
        return r.on_battery and low

    @property
    def confirming(self) -> bool:
        """A critical reading waits for the next one: poll sooner (CONFIRM_POLL_SECONDS)."""
        return self.critical_readings > 0 and not self.fact.low

    def poll_after(self, poll_seconds: float) -> float:
        """The wait before the next reading."""
        return min(poll_seconds, CONFIRM_POLL_SECONDS) if self.confirming else poll_seconds

    def _confirm(self, now: float, r: UpsReading) -> bool:
        """Critical once it held for two readings in a row and CONFIRM_SECONDS."""
        if not self.critical(r):
            self.critical_since, self.critical_readings = None, 0
            return False
        if self.critical_since is None:
            self.critical_since = now
        self.critical_readings += 1
        return self.critical_readings >= 2 and now - self.critical_since >= CONFIRM_SECONDS

    def update(
        self,
        now: float,
        reading: UpsReading | None,
        error: str | None,
    ) -> list[Action]:
        """One poll. reading None with error: the UPS did not answer; the last state stands
        (a UPS that stops answering on battery is still on battery)."""
        out: list[Action] = []
        if reading is None:
            if self.failing_since is None:
                self.failing_since = now
            if now - self.failing_since >= self.limits.unreachable_alert_seconds:
                out.append(RaiseAlert(UNREACHABLE, Severity.WARNING,
                                      f"the UPS does not answer: {clip(str(error))}"))  # fmt: skip
            reading = self.last
            if reading is None:
                return out
            low = self.fact.low  # a silent UPS neither confirms nor cancels a critical state
        else:
            self.failing_since = None
            self.last = reading
            out.append(ClearAlert(UNREACHABLE))
            low = self._confirm(now, reading)
        r = reading
        if r.replace_battery:
            out.append(
                RaiseAlert(REPLACE, Severity.WARNING, "the UPS asks for its battery to be replaced")
            )
        else:
            out.append(ClearAlert(REPLACE))
        self.fact = Power(r.on_battery, low, _describe(r))
        if not r.on_battery:
            out += [ClearAlert(ON_BATTERY), ClearAlert(LOW)]
            return out
        out.append(
            RaiseAlert(
                ON_BATTERY, Severity.WARNING, f"mains power lost, on battery: {_describe(r)}"
            )
        )
        if low:
            out.append(RaiseAlert(LOW, Severity.CRITICAL,
                                  f"battery low ({_describe(r)}): handing over and shutting down "
                                  "cleanly"))  # fmt: skip
        else:
            out.append(ClearAlert(LOW))
        return out
