"""The front panel's menu core: scripted presses and a fake clock, rendered at the sizes the
panels have (16x2 and 20x4 LCD, 21x8 SSD1306)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.alerts import Alert
from firmware.apiclient import status_lines
from firmware.panelmenu import (
    CONFIRM_S,
    TIMEOUT_S,
    Button,
    ConfirmNetworkChange,
    Done,
    PairingCode,
    PairingUnavailable,
    PanelMenu,
    PanelView,
    Screen,
    ShowPairingCode,
    StartHandover,
)
from firmware.roles import Role
from firmware.status import BoardStatus, PairView
from firmware.statustext import role_line

SIZES = [(16, 2), (20, 4), (21, 8)]


def status(
    role: Role = Role.ACTIVE, alerts: tuple[Alert, ...] = (), held: bool = True
) -> BoardStatus:
    pair = PairView(role=role, epoch=3, effective_priority=100, vip_held=held,
                    role_changes={}, paths=(), dropped={}, peer_heard_seconds=None, peer=None,
                    detail={})  # fmt: skip
    return BoardStatus(
        board="a", role=role, virtual_ip="192.0.2.100/24", version="t", hostname="h",
        uptime_seconds=1.0, data_dir="/d", disk_free_bytes=1, disk_total_bytes=2, cameras=(),
        alerts=alerts, alerts_raised={}, retention_deleted={}, worker_restarts=0,
        writes_held=False, pair=pair, mirror=None, hardware=None,
    )  # fmt: skip


def text(menu: PanelMenu, view: PanelView, now: float, size=(20, 4)) -> str:
    return "\n".join(menu.lines(view, now, *size))


def goto(menu: PanelMenu, screen: Screen, now: float) -> None:
    while menu.screen is not screen:
        assert menu.press(Button.DOWN, now) == []


@pytest.mark.parametrize("size", SIZES)
def test_every_screen_is_reachable_and_fits(size):
    menu, view = PanelMenu(), PanelView(status(), ("lan 192.0.2.10/24",))
    seen = []
    for _ in Screen:
        lines = menu.lines(view, 1.0, *size)
        assert len(lines) == size[1] and all(len(ln) == size[0] for ln in lines)
        seen.append(menu.screen)
        menu.press(Button.DOWN, 1.0)
    assert seen == list(Screen) and menu.screen is Screen.STATUS  # round and back
    menu.press(Button.UP, 1.0)
    assert menu.screen is Screen.HANDOVER


def test_status_and_addresses_use_the_console_role_line():
    view = PanelView(status(), ("lan 192.0.2.10/24", "sync 198.51.100.1"))
    menu = PanelMenu()
    line = role_line("a", "active")
    assert menu.lines(view, 0, 20, 4)[0].rstrip() == line
    console = status_lines(status().to_json())
    assert console[0].startswith(line)
    goto(menu, Screen.ADDRESSES, 0)
    shown = text(menu, view, 0, (21, 8))
    assert "lan 192.0.2.10/24" in shown and "sync 198.51.100.1" in shown
    rows = [ln.rstrip() for ln in shown.splitlines()]
    assert rows[3:5] == ["VIP 192.0.2.100/24", "held here"]


def test_alerts_screen_pages_with_ok():
    alerts = (Alert("disk-failed", "critical", "the data disk failed", 0),
              Alert("ups-on-battery", "warning", "on battery", 0))  # fmt: skip
    menu, view = PanelMenu(), PanelView(status(alerts=alerts))
    assert "! disk-failed" in text(menu, view, 0)
    goto(menu, Screen.ALERTS, 0)
    assert "1/2" in text(menu, view, 0) and "disk-failed" in text(menu, view, 0)
    menu.press(Button.OK, 1)
    assert "2/2" in text(menu, view, 1) and "ups-on-battery" in text(menu, view, 1)
    assert "no alerts" in text(PanelMenu(screen=Screen.ALERTS), PanelView(status()), 0)


def test_inactivity_times_back_to_status():
    menu, view = PanelMenu(), PanelView(status())
    goto(menu, Screen.NETWORK, 10.0)
    menu.lines(view, 10.0 + TIMEOUT_S - 0.1, 16, 2)
    assert menu.screen is Screen.NETWORK
    menu.lines(view, 10.0 + TIMEOUT_S, 16, 2)
    assert menu.screen is Screen.STATUS


def test_back_returns_to_status():
    menu = PanelMenu()
    goto(menu, Screen.ALERTS, 0)
    menu.press(Button.BACK, 0)
    assert menu.screen is Screen.STATUS


def test_handover_needs_the_second_ok():
    menu, view = PanelMenu(), PanelView(status())
    goto(menu, Screen.HANDOVER, 0)
    assert menu.press(Button.OK, 1.0) == []
    assert "OK again" in text(menu, view, 1.0, (16, 2))
    # Too late: the first OK no longer counts, the next one only arms again.
    assert menu.press(Button.OK, 1.0 + CONFIRM_S) == []
    assert menu.press(Button.OK, 2.0 + CONFIRM_S) == [StartHandover()]
    # BACK between the two presses cancels.
    goto(menu, Screen.HANDOVER, 20.0)
    menu.press(Button.OK, 20.0)
    menu.press(Button.BACK, 20.5)
    goto(menu, Screen.HANDOVER, 21.0)
    assert menu.press(Button.OK, 21.0) == []
    menu.answer(Done("handing over"), 22.0)
    assert "handing over" in text(menu, view, 22.0)


def test_handover_on_a_standby_says_so():
    menu, view = PanelMenu(), PanelView(status(Role.STANDBY, held=False))
    goto(menu, Screen.HANDOVER, 0)
    assert "not active (standby)" in text(menu, view, 0)


def test_pairing_code_shown_and_kept_while_valid():
    menu, view = PanelMenu(), PanelView(status(Role.UNPAIRED))
    assert "unpaired" in text(menu, view, 0)
    goto(menu, Screen.PAIR_CODE, 0)
    assert menu.press(Button.OK, 1) == [ShowPairingCode()]
    menu.answer(PairingCode("1234-5678", 1 + 600), 1)
    assert menu.lines(view, 1, 16, 2) == ["pairing code    ", "1234-5678       "]
    assert "10 min left" in text(menu, view, 1)
    # The code stays up past the inactivity timeout, and goes when it expires.
    assert "1234-5678" in text(menu, view, 1 + TIMEOUT_S + 100)
    assert menu.screen is Screen.PAIR_CODE
    text(menu, view, 601)
    assert menu.screen is Screen.STATUS and menu.code is None


def test_pairing_refused_is_said():
    menu, view = PanelMenu(), PanelView(status())
    goto(menu, Screen.PAIR_CODE, 0)
    menu.press(Button.OK, 0)
    menu.answer(PairingUnavailable("already paired"), 0)
    assert "already paired" in text(menu, view, 0)


def test_network_confirm():
    menu = PanelMenu()
    goto(menu, Screen.NETWORK, 0)
    assert "no change pending" in text(menu, PanelView(status()), 0)
    view = PanelView(status(), network_seconds_left=42.4)
    assert "OK: keep (42 s)" in text(menu, view, 0)
    assert menu.press(Button.OK, 0) == [ConfirmNetworkChange()]
    menu.answer(Done("confirmed"), 0)
    assert "confirmed" in text(menu, dataclasses.replace(view, network_seconds_left=None), 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(Button), st.floats(0, 100)), max_size=40),
       st.sampled_from(SIZES))  # fmt: skip
def test_any_presses_keep_the_screen_in_shape(presses, size):
    """Whatever is pressed when, the lines fit and a handover needs two OKs on its screen."""
    menu, view, now = PanelMenu(), PanelView(status()), 0.0
    for button, dt in presses:
        now += dt
        before = (menu.screen, menu.armed_until)
        actions = menu.press(button, now)
        if StartHandover() in actions:
            assert before[0] is Screen.HANDOVER and before[1] is not None and now < before[1]
        lines = menu.lines(view, now, *size)
        assert [len(ln) for ln in lines] == [size[0]] * size[1]
