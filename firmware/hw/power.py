"""The power policy: what the UPS readings mean. Pure (readings and now in, alerts and a `Power`
fact out), so every mains-fail / low-battery / mains-back sequence is tested with a jumped
clock; the board core decides what the board does about it (hand over, shut down).

NUT's rule decides the critical state: on battery and low battery. Low battery is the UPS's own
flag, or charge or runtime under the configured thresholds (for UPSes that flag it late)."""

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
                                      f"the UPS does not answer: {error}"))  # fmt: skip
            reading = self.last
            if reading is None:
                return out
        else:
            self.failing_since = None
            self.last = reading
            out.append(ClearAlert(UNREACHABLE))
        r = reading
        if r.replace_battery:
            out.append(
                RaiseAlert(REPLACE, Severity.WARNING, "the UPS asks for its battery to be replaced")
            )
        else:
            out.append(ClearAlert(REPLACE))
        self.fact = Power(r.on_battery, self.critical(r), _describe(r))
        if not r.on_battery:
            out += [ClearAlert(ON_BATTERY), ClearAlert(LOW)]
            return out
        out.append(
            RaiseAlert(
                ON_BATTERY, Severity.WARNING, f"mains power lost, on battery: {_describe(r)}"
            )
        )
        if self.critical(r):
            out.append(RaiseAlert(LOW, Severity.CRITICAL,
                                  f"battery low ({_describe(r)}): handing over and shutting down "
                                  "cleanly"))  # fmt: skip
        else:
            out.append(ClearAlert(LOW))
        return out
