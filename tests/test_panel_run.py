"""The front panel's thread under keep_running, on the simulated panel and on the real LCD and
button drivers over the fake I2C bus: presses in, rendered rows out."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import wait_until
from test_panel_menu import status

from firmware.hw.panelrun import NO_PAIRING, PanelHooks, PanelRunner
from firmware.pairing import CODE_TTL_S
from firmware.pairing_http import PairingService, PeerAddress
from firmware.roles import Role
from firmware.supervise import keep_running
from hal.buttons import Pcf8574Buttons
from hal.lcd import Hd44780Panel
from hal.sim.i2c_bus import FakeI2cBus, FakePcf8574Input, FakePcf8574Lcd
from hal.sim.panel import SimPanel
from hil.wait import wait_until_async

LCD, KEYS = 0x27, 0x20


@contextmanager
def running(runner: PanelRunner, failures: list) -> Iterator[None]:
    stop = threading.Event()
    t = threading.Thread(target=keep_running, daemon=True, args=(
        "the front panel", lambda: runner.run(stop), stop,
        lambda what, e: failures.append((what, e)), 0.05))  # fmt: skip
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)
        assert not t.is_alive()


def rows(panel: SimPanel) -> list[str]:
    return [ln.rstrip() for ln in panel.lines]


def test_sim_panel_every_screen_pairing_network_and_handover(tmp_path: Path):
    panel = SimPanel(20, 4)
    pairing = PairingService(tmp_path / "pair.key", PeerAddress("198.51.100.2", 8080), print)
    handovers: list[bool] = []
    confirmed: list[bool] = []
    pending: list[float | None] = [57.0]
    hooks = PanelHooks(
        snapshot=lambda: status(),
        addresses=lambda: ("lan 192.0.2.10/24", "sync 198.51.100.1"),
        handover=lambda: handovers.append(True) or True,
        pair_code=lambda: (pairing.show_code().shown, CODE_TTL_S),
        network_seconds_left=lambda: pending[0],
        confirm_network=lambda: confirmed.append(True) or pending.__setitem__(0, None),
    )
    failures: list = []
    with running(PanelRunner(panel, hooks), failures):
        wait_until(lambda: rows(panel)[0] == "board a active", 5, "the status screen")

        def press(button: str, first_row: str) -> None:
            panel.press(button)
            wait_until(lambda: rows(panel)[0] == first_row, 5, f"{first_row!r} after {button}")

        panel.press("down")  # addresses: the same role line, then the addresses
        want = ["board a active", "lan 192.0.2.10/24", "sync 198.51.100.1", "VIP 192.0.2.100/24"]
        wait_until(lambda: rows(panel) == want, 5, "the addresses")
        press("down", "alerts")
        press("down", "pairing code")
        panel.press("ok")
        wait_until(lambda: pairing.waiter is not None, 5, "a code asked of the pairing service")
        wait_until(lambda: rows(panel)[1] == pairing.waiter.shown, 5, "the code on the panel")
        assert rows(panel)[2] == "10 min left"
        press("down", "network change")
        assert rows(panel)[1] == "OK: keep (57 s)"
        panel.press("ok")
        wait_until(lambda: rows(panel)[1] == "confirmed", 5, "the change confirmed")
        assert confirmed == [True]
        press("down", "handover")
        panel.press("ok")
        wait_until(lambda: rows(panel)[0] == "hand over VIP?", 5, "the handover asking again")
        assert handovers == []
        panel.press("ok")
        wait_until(lambda: handovers == [True], 5, "the handover started")
        wait_until(lambda: rows(panel)[1] == "handing over", 5, "the handover said")
        panel.press("back")
        wait_until(lambda: rows(panel)[0] == "board a active", 5, "back to status")
    assert failures == []


def test_no_pairing_here_says_how_to_get_a_code():
    panel = SimPanel(16, 2)
    hooks = PanelHooks(snapshot=lambda: status(Role.SINGLE))
    with running(PanelRunner(panel, hooks), []):
        for button in ("down", "down", "down", "ok"):
            panel.press(button)
        wait_until(lambda: rows(panel) == ["pairing code", NO_PAIRING[:16]], 5, "the hint")


def test_lcd_16x2_with_pcf8574_buttons_and_a_failing_bus():
    bus = FakeI2cBus()
    lcd = bus.attach(LCD, FakePcf8574Lcd(16, 2, "common"))
    keys = bus.attach(KEYS, FakePcf8574Input({"up": 0, "down": 1, "ok": 2, "back": 3}))
    panel = Hd44780Panel(bus, LCD, 16, 2, buttons=Pcf8574Buttons(bus, KEYS), sleep=lambda s: None)
    snap = [status(Role.STANDBY, held=False)]
    problems: list[str | None] = []
    hooks = PanelHooks(snapshot=lambda: snap[0], handover=lambda: False, problem=problems.append)
    glass = lambda: [ln.rstrip() for ln in lcd.lines()]  # noqa: E731

    def tap(button: str, want: list[str]) -> None:
        keys.press(button)
        wait_until(lambda: glass() == want, 5, f"{want} after {button}")
        keys.release(button)

    with running(PanelRunner(panel, hooks), []):
        wait_until(lambda: glass() == ["board a standby", "cams 0/0 rec"], 5, "the status")
        tap("up", ["handover", "not active (stan"])
        tap("ok", ["handover", "not active (stan"])
        # The bus fails once: said, and the screen written again when it answers.
        bus.fail(LCD, times=3)
        snap[0] = dataclasses.replace(snap[0], board="b")
        tap("back", ["board b standby", "cams 0/0 rec"])
        wait_until(lambda: problems and problems[-1] is None, 5, "the panel working again")
        assert problems[0] and problems[0].startswith("front panel: ")


def test_the_board_hardware_runs_the_menu_on_its_own_thread(tmp_path: Path):
    """Hardware.run: the panel thread asks the board on its event loop, under keep_running."""
    import asyncio

    from firmware.alerts import Alerts
    from firmware.config import parse_config
    from firmware.datadir import prepare
    from firmware.hw.monitor import BoardHooks, Hardware
    from firmware.timefmt import now_us

    cfg = parse_config(f"""
[board]
data_dir = "{tmp_path}"
[disks]
backend = "sim"
[panel]
backend = "sim"
columns = 16
rows = 2
refresh_seconds = 0.2
""")
    on_loop: list[bool] = []

    def snapshot():
        asyncio.get_running_loop()  # raises off the loop
        on_loop.append(True)
        return status(Role.ACTIVE)

    handed: list[bool] = []
    panel_hooks = PanelHooks(snapshot=snapshot, handover=lambda: handed.append(True) or True)
    hooks = BoardHooks(apply=lambda a: None, fact=lambda f: None, status=dict,
                       recorder_beat=lambda: 1e12, panel=panel_hooks)  # fmt: skip
    hw = Hardware(cfg, prepare(tmp_path, "a", now_us())["id"], Alerts(), hooks)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(hw.run(stop))

        await wait_until_async(
            lambda: hw.panel_text == ["board a active  ", "cams 0/0 rec    "], 5, "status"
        )
        sim = hw.panel.panel  # the SimPanel open_panel made
        for button in ("up", "ok", "ok"):
            sim.press(button)
        await wait_until_async(lambda: handed == [True], 5, "the handover after two OKs")
        stop.set()
        await task

    asyncio.run(main())
    assert on_loop


def test_addresses_leave_out_the_vip_and_say_a_missing_interface():
    from firmware.hw.panelrun import interface_addresses
    from hal.sim.nic import SimNic

    nic = SimNic({"eth0": "02:00:00:00:00:01"})
    nic.add_address("eth0", "192.0.2.10/24")
    nic.add_address("eth0", "192.0.2.100/32")
    got = interface_addresses(nic, {"lan": "eth0", "sync": "eth1"}, "192.0.2.100/24")
    assert got == ("lan 192.0.2.10/24", "sync (eth1) none")


def test_the_board_s_pairing_code_hook_is_the_pair_code_service(tmp_path: Path):
    """The code the panel shows is the one `nvr pair code` would: the board's PairingService."""
    import pytest
    from test_pair_token import board, config

    from firmware.pairing_http import PairingError
    from hal.sim.nic import SimNic

    nic = SimNic({"eth0": "02:00:00:00:00:01", "eth1": "02:00:00:00:00:02"})
    b = board(config(tmp_path, "a", tmp_path / "a" / "pair.key"))
    hooks = b._panel_hooks(nic)
    assert hooks.pair_code is not None and hooks.handover is None  # unpaired: no election
    shown, valid = hooks.pair_code()
    assert b.pairing is not None and b.pairing.waiter is not None
    assert shown == b.pairing.waiter.shown and valid == CODE_TTL_S
    assert hooks.snapshot().role is Role.UNPAIRED
    key = tmp_path / "b" / "pair.key"
    key.parent.mkdir()
    key.write_bytes(b"0123456789abcdef" * 4 + b"\n")
    paired = board(config(tmp_path / "b", "b", key))._panel_hooks(nic)
    assert paired.pair_code is not None and paired.handover is not None
    with pytest.raises(PairingError, match=r"^paired: \S+"):
        paired.pair_code()
