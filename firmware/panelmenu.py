"""The front panel's menu: button presses and `now` in, the screen's lines and actions out.

Sans-IO, so every screen, the inactivity timeout and the handover confirm are tested with a
fake clock; firmware/hw/panelrun.py reads the buttons, runs the actions and shows the lines.
UP and DOWN move between screens, OK acts on the screen shown, BACK returns to status. The
handover needs OK twice within CONFIRM_S (the buttons report presses, not how long they were
held). A screen left alone for TIMEOUT_S goes back to status, except the pairing code while
it is valid: the installer is walking to the other board."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from firmware.roles import Role
from firmware.status import BoardStatus
from firmware.statustext import UNPAIRED_HINT, role_line, vip_parts

TIMEOUT_S = 30.0
CONFIRM_S = 5.0
NOTE_S = 5.0
"""How long the answer to an action (confirmed, refused) stays on its screen."""


class Button(StrEnum):
    """The names hal/buttons.py and hal/sim/panel.py report."""

    UP = "up"
    DOWN = "down"
    OK = "ok"
    BACK = "back"


class Screen(Enum):
    STATUS = "status"
    ADDRESSES = "addresses"
    ALERTS = "alerts"
    PAIR_CODE = "pair code"
    NETWORK = "network"
    HANDOVER = "handover"


ORDER = tuple(Screen)


# --- actions out ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StartHandover:
    """Planned handover: this active board gives the VIP to the standby."""


@dataclass(frozen=True)
class ShowPairingCode:
    """Ask the firmware for a new one-time pairing code (as `nvr pair code`)."""


@dataclass(frozen=True)
class ConfirmNetworkChange:
    """Keep the pending network change (commit-confirmed) instead of letting it roll back."""


Action = StartHandover | ShowPairingCode | ConfirmNetworkChange


# --- what the adapter feeds back -----------------------------------------------------------


@dataclass(frozen=True)
class PairingCode:
    shown: str
    expires: float
    """On the menu's clock."""


@dataclass(frozen=True)
class PairingUnavailable:
    why: str


@dataclass(frozen=True)
class Done:
    """The outcome of StartHandover or ConfirmNetworkChange, said on the screen that asked."""

    text: str


Answer = PairingCode | PairingUnavailable | Done


@dataclass(frozen=True)
class PanelView:
    """What the screens read: the board's frozen status and what it does not carry."""

    status: BoardStatus
    addresses: tuple[str, ...] = ()
    """This board's own addresses, e.g. "lan 192.0.2.10/24"."""
    network_seconds_left: float | None = None
    """A network change waiting for its confirm, or None."""


@dataclass
class PanelMenu:
    timeout_s: float = TIMEOUT_S
    confirm_s: float = CONFIRM_S
    screen: Screen = Screen.STATUS
    last_press: float = 0.0
    armed_until: float | None = None
    """The handover's first OK was pressed; a second one before this starts it."""
    alert_index: int = 0
    code: PairingCode | None = None
    note: tuple[Screen, str, float] | None = None

    def press(self, button: Button, now: float) -> list[Action]:
        self.tick(now)
        self.last_press = now
        if button is Button.BACK:
            self._go(Screen.STATUS)
            return []
        if button in (Button.UP, Button.DOWN):
            step = 1 if button is Button.DOWN else -1
            self._go(ORDER[(ORDER.index(self.screen) + step) % len(ORDER)])
            return []
        return self._ok(now)

    def _go(self, screen: Screen) -> None:
        self.screen, self.armed_until, self.alert_index, self.note = screen, None, 0, None

    def _ok(self, now: float) -> list[Action]:
        if self.screen is Screen.ALERTS:
            self.alert_index += 1
        elif self.screen is Screen.PAIR_CODE:
            return [ShowPairingCode()]
        elif self.screen is Screen.NETWORK:
            return [ConfirmNetworkChange()]
        elif self.screen is Screen.HANDOVER:
            if self.armed_until is not None and now < self.armed_until:
                self.armed_until = None
                return [StartHandover()]
            self.armed_until = now + self.confirm_s
        return []

    def answer(self, answer: Answer, now: float) -> None:
        """The outcome of an action, from the adapter."""
        if isinstance(answer, PairingCode):
            self.code, self.note = answer, None
        elif isinstance(answer, PairingUnavailable):
            self.code, self.note = None, (Screen.PAIR_CODE, answer.why, now + NOTE_S)
        else:
            self.note = (self.screen, answer.text, now + NOTE_S)

    def tick(self, now: float) -> None:
        if self.armed_until is not None and now >= self.armed_until:
            self.armed_until = None
        if self.note is not None and now >= self.note[2]:
            self.note = None
        if self.code is not None and now >= self.code.expires:
            self.code = None
        waiting = self.screen is Screen.PAIR_CODE and self.code is not None
        if (
            self.screen is not Screen.STATUS
            and not waiting
            and now - self.last_press >= self.timeout_s
        ):
            self._go(Screen.STATUS)

    def lines(self, view: PanelView, now: float, columns: int, rows: int) -> list[str]:
        """The screen, most important line first, cut and padded to the display."""
        self.tick(now)
        out = _SCREENS[self.screen](self, view, now)
        if self.note is not None and self.note[0] is self.screen:
            out = [out[0], self.note[1], *out[1:]]
        out = (out + [""] * rows)[:rows]
        return [ln[:columns].ljust(columns) for ln in out]

    # --- the screens ---------------------------------------------------------------------

    def _status(self, view: PanelView, now: float) -> list[str]:
        st = view.status
        rec = sum(1 for c in st.cameras if c.recording)
        lines = [role_line(st.board, st.role.value), f"cams {rec}/{len(st.cameras)} rec"]
        if st.alerts:
            lines.insert(1, f"! {st.alerts[0].id}")
        if st.role is Role.UNPAIRED:
            lines.append(UNPAIRED_HINT)
        elif st.virtual_ip:
            lines.append(vip_parts(st.virtual_ip, bool(st.pair and st.pair.vip_held))[0])
        return lines

    def _addresses(self, view: PanelView, now: float) -> list[str]:
        st = view.status
        held = bool(st.pair and st.pair.vip_held)
        vip = [p for p in vip_parts(st.virtual_ip, held) if p]
        return [role_line(st.board, st.role.value), *view.addresses, *vip]

    def _alerts(self, view: PanelView, now: float) -> list[str]:
        alerts = view.status.alerts
        if not alerts:
            return ["alerts", "no alerts"]
        a = alerts[self.alert_index % len(alerts)]
        n = f"{self.alert_index % len(alerts) + 1}/{len(alerts)}"
        return [f"alert {n} OK:next", str(a.id), f"{a.severity}: {a.text}"]

    def _pair_code(self, view: PanelView, now: float) -> list[str]:
        if self.code is None:
            return ["pairing code", "OK: show a code"]
        left = max(0.0, self.code.expires - now)
        return ["pairing code", self.code.shown, f"{left / 60:.0f} min left",
                "join it on the other board"]  # fmt: skip

    def _network(self, view: PanelView, now: float) -> list[str]:
        left = view.network_seconds_left
        if left is None:
            return ["network", "no change pending"]
        return ["network change", f"OK: keep ({left:.0f} s)", "else it rolls back"]

    def _handover(self, view: PanelView, now: float) -> list[str]:
        if view.status.role is not Role.ACTIVE:
            return ["handover", f"not active ({view.status.role.value})"]
        if self.armed_until is not None:
            return ["hand over VIP?", "OK again: go", "BACK: cancel"]
        return ["handover", "OK: hand over VIP", "to the standby"]


_SCREENS = {
    Screen.STATUS: PanelMenu._status,
    Screen.ADDRESSES: PanelMenu._addresses,
    Screen.ALERTS: PanelMenu._alerts,
    Screen.PAIR_CODE: PanelMenu._pair_code,
    Screen.NETWORK: PanelMenu._network,
    Screen.HANDOVER: PanelMenu._handover,
}
