"""The power policy: what the board does about its UPS. Pure (readings and now in, actions out),
so every mains-fail / low-battery / mains-back sequence is tested with a jumped clock.

NUT's rule decides the critical state: on battery and low battery. Low battery is the UPS's own
flag, or charge or runtime under the configured thresholds (for UPSes that flag it late)."""

from __future__ import annotations

from firmware.config import UpsConfig
from firmware.hw.actions import Action, ClearAlert, HandOver, RaiseAlert, ShutDown
from hal.ups import UpsReading

ON_BATTERY = "ups-on-battery"
LOW = "ups-low"
REPLACE = "ups-replace-battery"
UNREACHABLE = "ups-unreachable"


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
        self.on_battery_since: float | None = None
        self.failing_since: float | None = None
        self.handed_over = False
        self.shutting_down = False

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
        active: bool,
        peer_ready: bool,
    ) -> list[Action]:
        """One poll. reading None with error: the UPS did not answer; the last state stands
        (a UPS that stops answering on battery is still on battery)."""
        out: list[Action] = []
        if reading is None:
            if self.failing_since is None:
                self.failing_since = now
            if now - self.failing_since >= self.limits.unreachable_alert_seconds:
                out.append(RaiseAlert(UNREACHABLE, "warning", f"the UPS does not answer: {error}"))
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
                RaiseAlert(REPLACE, "warning", "the UPS asks for its battery to be replaced")
            )
        else:
            out.append(ClearAlert(REPLACE))
        if not r.on_battery:
            self.on_battery_since = None
            self.handed_over = False
            out += [ClearAlert(ON_BATTERY), ClearAlert(LOW)]
            return out
        if self.on_battery_since is None:
            self.on_battery_since = now
        out.append(
            RaiseAlert(ON_BATTERY, "warning", f"mains power lost, on battery: {_describe(r)}")
        )
        if self.critical(r):
            out.append(RaiseAlert(LOW, "critical",
                                  f"battery low ({_describe(r)}): handing over and shutting down "
                                  "cleanly"))  # fmt: skip
            if not self.shutting_down:
                self.shutting_down = True
                if active and peer_ready:
                    out.append(HandOver("UPS battery low"))
                out.append(ShutDown("UPS battery low"))
            return out
        out.append(ClearAlert(LOW))
        due = now - self.on_battery_since >= self.limits.handover_after_seconds
        if active and peer_ready and due and not self.handed_over:
            self.handed_over = True
            out.append(HandOver("on battery; the peer is on mains"))
        return out
