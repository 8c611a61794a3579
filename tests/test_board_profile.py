"""Board profiles drive the hal: each shipped profile and a made-up third board (I2C panel, APC
UPS, md RAID data) become the firmware's device set, the image's files and the board's config,
and what the set names opens through the real hal drivers against simulated devices."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit
from test_panel_menu import status

from firmware.alert_ids import AlertId
from firmware.alerts import Alert, Alerts
from firmware.config import ConfigError, load_config, parse_config
from firmware.hw import boardfiles
from firmware.hw.boardconfig import apply_profile
from firmware.hw.devices import open_leds, open_panel, open_ups
from firmware.hw.leds import wanted
from firmware.hw.profile import (
    DataKind,
    Question,
    device_set,
    load_profile,
    parse_profile,
)
from firmware.provision import firstboot
from firmware.roles import RecorderMode, Role
from hal.errors import Unavailable
from hal.lcd import Hd44780Panel
from hal.linux.leds import SysfsLed
from hal.sim.i2c_bus import FakeI2cBus, FakePcf8574Input, FakePcf8574Lcd
from hal.sim.leds import SimLed
from hal.sim.ups_emulator import ApcEmulator
from hil.wait import wait_until_async

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ROOT / "image" / "boards"
FACTORY = ROOT / "rootfs" / "etc" / "nvr" / "nvr.toml"
SHIPPED = sorted(p.stem for p in BOARDS.glob("*.toml"))

ACME = """
# A made-up vendor board: character LCD and buttons on I2C, an APC UPS on a USB serial cable,
# its footage on an md RAID1 of two SATA disks.
[board]
name = "acme-nvr4"
description = "ACME NVR-4"

[brand]
product = "acme-vision"
banner = "ACME Vision NVR-4"

[image]
arch = "arm64"
kernel = "linux-image-arm64"
console = "ttyS2"
packages = ["i2c-tools"]

[nic.lan]
mac = "00:1B:21:*"

[nic.sync]
path = "platform-fe300000.ethernet"

[ups]
backend = "serial"
port = "/dev/ttyUSB0"
protocol = "apc"

[panel]
type = "hd44780"
i2c_bus = 2
address = 0x27
columns = 20
rows = 4

[panel.buttons]
address = 0x21
pins = { "4" = "up", "5" = "down", "6" = "ok", "7" = "back" }

[watchdog]
device = "/dev/watchdog1"
owner = "firmware"

[leds]
active = "acme:green:active"
alert = "acme:red:alert"

[disks]
data = "md"
device = "/dev/md/nvr-data"
members = ["/dev/disk/by-path/platform-fe330000.sata-ata-1",
           "/dev/disk/by-path/platform-fe330000.sata-ata-2"]

[qemu]
binary = "qemu-system-aarch64"
machine = "virt"
code = "/usr/share/AAVMF/AAVMF_CODE.fd"
vars = "/usr/share/AAVMF/AAVMF_VARS.fd"
"""


def test_both_reference_boards_are_shipped():
    assert {"qemu-x86_64", "qemu-arm64"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_profile_gives_the_reference_board_s_device_set(name: str):
    p = load_profile(BOARDS / f"{name}.toml")
    assert p.board.name == name and p.compatible == f"nvr-pair-{name}"
    ds = device_set(p)
    assert (ds.network.lan_interface, ds.network.sync_interface) == ("lan0", "sync0")
    assert ds.lan.path and ds.sync.path and ds.lan.path != ds.sync.path
    # No UPS, no panel, no LEDs on a QEMU board; PID 1 holds the watchdog.
    assert ds.ups.backend == "none" and ds.panel.backend == "none" and ds.leds.backend == "none"
    assert ds.watchdog.backend == "none" and p.watchdog.device == "/dev/watchdog0"
    assert ds.data.kind is DataKind.SYSTEM and not ds.disks.require_mount
    assert ds.questions == {Question.RECORDING_DRIVES}  # the installer picks recording drives
    assert p.qemu is not None and p.qemu.binary.startswith("qemu-system-")
    expect = {"qemu-x86_64": ("amd64", "ttyS0"), "qemu-arm64": ("arm64", "ttyAMA0")}
    if name in expect:
        assert (p.image.arch, p.image.console) == expect[name]


def test_every_board_has_its_own_compatible():
    compat = [load_profile(BOARDS / f"{n}.toml").compatible for n in SHIPPED]
    assert len(set(compat)) == len(compat)


def test_a_made_up_board_gets_an_i2c_panel_an_apc_ups_and_md_raid():
    p = parse_profile(ACME, "acme.toml")
    ds = device_set(p)
    assert p.compatible == "acme-vision-acme-nvr4"
    assert (ds.ups.backend, ds.ups.protocol, ds.ups.port) == ("serial", "apc", "/dev/ttyUSB0")
    assert (ds.panel.backend, ds.panel.i2c_bus, ds.panel.i2c_address) == ("hd44780", 2, 0x27)
    assert (ds.panel.columns, ds.panel.rows, ds.panel.buttons_address) == (20, 4, 0x21)
    assert ds.panel.button_pins == {"4": "up", "5": "down", "6": "ok", "7": "back"}
    assert (ds.watchdog.backend, ds.watchdog.device) == ("linux", "/dev/watchdog1")
    assert (ds.leds.active, ds.leds.alert) == ("acme:green:active", "acme:red:alert")
    assert ds.data.kind is DataKind.MD and ds.data.device == "/dev/md/nvr-data"
    assert len(ds.data.members) == 2 and ds.disks.require_mount
    assert ds.questions == frozenset()  # nothing left to the installer
    assert p.packages == ["i2c-tools", "mdadm"]  # md needs mdadm in the image
    assert ds.lan.matches("", "00:1b:21:aa:bb:cc") and not ds.lan.matches("", "00:1b:22:00:00:01")
    assert ds.sync.matches("platform-fe300000.ethernet", "")


def test_the_made_up_board_s_devices_open_through_the_real_drivers(monkeypatch):
    """The device set, not a hand-written config, picks the drivers: the APC driver answers an
    APC emulator on a pty, the HD44780 driver writes the 20x4 glass and reads the buttons on
    the profile's pins."""
    ds = device_set(parse_profile(ACME, "acme.toml"))
    with ApcEmulator() as apc:
        ups = open_ups(ds.ups.model_copy(update={"port": apc.port}))
        try:
            reading = ups.read()
        finally:
            ups.close()
    assert reading.on_battery is False and reading.battery_charge_percent is not None
    bus = FakeI2cBus()
    glass = bus.attach(0x27, FakePcf8574Lcd(20, 4, "common"))
    keys = bus.attach(0x21, FakePcf8574Input({"up": 4, "down": 5, "ok": 6, "back": 7}))
    opened: list[int] = []
    monkeypatch.setattr("hal.linux.i2c.open_bus", lambda n: opened.append(n) or bus)
    panel = open_panel(ds.panel)
    assert isinstance(panel, Hd44780Panel) and opened == [2]
    panel.show(["ACME Vision", "", "", "NVR-4"])
    assert [ln.rstrip() for ln in glass.lines()] == ["ACME Vision", "", "", "NVR-4"]
    keys.press("ok")
    assert panel.buttons() == ["ok"]
    panel.close()


def test_boardfiles_name_the_ports_and_hand_the_watchdog_and_the_data_array_over():
    files = {str(f.path): f for f in boardfiles.render(ACME, "acme.toml")}
    rules = files["/usr/lib/udev/rules.d/81-nvr-nics.rules"].text
    assert 'ATTR{address}=="00:1b:21:*", NAME="lan0"' in rules  # as the kernel writes it
    assert 'ENV{ID_PATH}=="platform-fe300000.ethernet", NAME="sync0"' in rules
    assert 'IMPORT{builtin}="path_id"' in rules  # ID_PATH known whatever the rules' order
    dog = files["/etc/systemd/system.conf.d/nvr.conf"].text
    assert "RuntimeWatchdogSec=off" in dog  # the firmware holds /dev/watchdog1, not PID 1
    mount = files["/usr/lib/systemd/system/data-nvr.mount"].text
    assert "What=/dev/md/nvr-data" in mount and "Where=/data/nvr" in mount
    assert files["/usr/lib/systemd/system/local-fs.target.wants/data-nvr.mount"].symlink
    assert "ARRAY /dev/md/nvr-data" in files["/etc/mdadm/mdadm.conf"].text
    board = files["/usr/share/nvr/board.toml"].text
    assert "[qemu]" not in board and parse_profile(board, "image").compatible.startswith("acme")


def test_a_reference_board_s_files_leave_the_watchdog_to_pid_1(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "firmware.hw.boardfiles", str(BOARDS / "qemu-arm64.toml"),
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    conf = (tmp_path / "etc/systemd/system.conf.d/nvr.conf").read_text()
    assert "WatchdogDevice=/dev/watchdog0" in conf and "RuntimeWatchdogSec=30s" in conf
    assert not (tmp_path / "usr/lib/systemd/system/data-nvr.mount").exists()
    assert load_profile(tmp_path / "usr/share/nvr/board.toml").qemu is None
    facts = subprocess.run(
        [sys.executable, "-m", "firmware.hw.boardfiles", "--check",
         str(BOARDS / "qemu-arm64.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert json.loads(facts) | {"packages": []} == {
        "board": "qemu-arm64", "arch": "arm64", "bootloader": "grub-efi",
        "kernel": "linux-image-arm64", "console": "ttyAMA0", "packages": [],
        "compatible": "nvr-pair-qemu-arm64", "product": "nvr-pair",
    }  # fmt: skip


def test_a_board_that_names_its_root_s_modules_gets_an_initramfs_of_those_only():
    """qemu-x86_64 names them (virtio disk, squashfs root); a board that does not keeps
    initramfs-tools' default of every storage driver (its root may sit behind anything)."""
    files = {
        str(f.path): f.text for f in boardfiles.render((BOARDS / "qemu-x86_64.toml").read_text())
    }
    assert "MODULES=list" in files["/etc/initramfs-tools/conf.d/nvr-board.conf"]
    listed = [ln for ln in files["/etc/initramfs-tools/modules"].splitlines() if ln[:1] != "#"]
    assert listed == ["virtio_pci", "virtio_blk", "squashfs"]
    acme = {str(f.path) for f in boardfiles.render(ACME, "acme.toml")}
    assert not any(p.startswith("/etc/initramfs-tools/") for p in acme)
    bad = ACME.replace("packages = [", 'initramfs_modules = ["mmc block"]\npackages = [', 1)
    assert bad != ACME
    with pytest.raises(ConfigError, match=r"initramfs_modules.*kernel module"):
        parse_profile(bad, "bad.toml")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (('[nic.lan]\nmac = "00:1B:21:*"\n', ""), "nic.lan: Field required"),
        (('console = "ttyS2"', 'console = "/dev/ttyS2"'), "image.console: must be a serial"),
        (('protocol = "apc"', 'protocol = "nut"'), "ups.protocol:"),
        (
            ('members = ["/dev/disk/by-path/platform-fe330000.sata-ata-1",\n', "members = [\n"),
            'disks: Value error, data = "md" needs two or more members',
        ),
        (('type = "hd44780"', 'type = "hd44780"\ncolour = "blue"'), "panel.colour: unknown key"),
    ],
)
def test_a_broken_profile_fails_the_build_naming_the_key(tmp_path: Path, change, says):
    text = ACME.replace(*change)
    assert text != ACME
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_profile(bad)
    assert f"{bad}: " in str(e.value) and says.removeprefix("disks: Value error, ") in str(e.value)
    done = subprocess.run(
        [sys.executable, "-m", "firmware.hw.boardfiles", "--check", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == "" and "board profile: " in done.stderr


def test_first_boot_writes_the_profile_s_hardware_into_the_config_once(tmp_path: Path):
    """The factory config names eth0-era ports and no UPS: the profile's device set wins for
    the keys it fixes; comments, cameras and other keys stay; a second boot writes nothing."""
    board = tmp_path / "board.toml"
    board.write_text(ACME)
    factory = tmp_path / "factory.toml"
    factory.write_text(
        FACTORY.read_text().replace('lan_interface = "lan0"', 'lan_interface = "eth0"')
        + '\n[[camera]]\nname = "door"\nurl = "rtsp://192.0.2.31:8554/door"\n'
    )
    config = tmp_path / "data" / "nvr.toml"
    config.parent.mkdir()
    text = factory.read_text().replace('data_dir = "/var/lib/nvr"', f'data_dir = "{tmp_path}/d"')
    factory.write_text(text)
    out, err = _Sink(), _Sink()
    assert firstboot(factory, config, out, err, board) == 0, err.text
    cfg = load_config(config)
    assert (cfg.network.lan_interface, cfg.ups.backend, cfg.ups.protocol) == (
        "lan0",
        "serial",
        "apc",
    )
    assert (cfg.panel.backend, cfg.panel.i2c_address, cfg.watchdog.backend) == (
        "hd44780",
        0x27,
        "linux",
    )
    assert cfg.disks.require_mount and cfg.leds.alert == "acme:red:alert"
    factory_cams = [c.name for c in parse_config(factory.read_text()).camera]
    assert [c.name for c in cfg.camera] == factory_cams and "door" in factory_cams
    assert cfg.ups.poll_seconds == 2.0
    assert "# Board configuration of the NVR pair firmware" in config.read_text()
    assert "board profile acme-nvr4" in out.text and "[ups] protocol = 'apc'" in out.text
    before = config.read_bytes(), config.stat().st_mtime_ns
    out2 = _Sink()
    assert firstboot(factory, config, out2, _Sink(), board) == 0
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before
    assert "config already matches" in out2.text


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_profile_on_a_board_is_said_and_the_board_records_on(tmp_path: Path, damage):
    """The build checked the profile, so a damaged one means a damaged root: first boot says
    it and keeps the config's hardware, and the firmware starts with board-profile-damaged
    instead of not starting at all."""
    from test_pair_token import write_config

    from firmware.board import Board

    config = write_config(tmp_path, "a", None)
    before = config.read_bytes()
    board = tmp_path / "board.toml"
    board.write_bytes(ACME.encode()[:200] if damage == "truncated" else bytes(range(256)))
    out, err = _Sink(), _Sink()
    assert firstboot(FACTORY, config, out, err, board) == 0, err.text
    assert config.read_bytes() == before
    assert f"{board}:" in err.text and "the config keeps the hardware it has" in err.text
    assert "board 'a' ready" in out.text
    b = Board(load_config(config), serve_api=False, board_file=board)
    alert = b.alerts.get(AlertId.BOARD_PROFILE_DAMAGED)
    assert alert is not None and alert.severity == "critical" and str(board) in alert.text
    assert b.recorder.mode is RecorderMode.RECORD
    board.write_text(ACME)
    good = Board(load_config(config), serve_api=False, board_file=board)
    assert good.alerts.get(AlertId.BOARD_PROFILE_DAMAGED) is None


def test_an_open_ups_question_keeps_the_installer_s_answer(tmp_path: Path):
    """protocol = "ask": the profile sets the port and leaves backend and protocol to the
    wizard; a later boot does not take the answer back."""
    ask = ACME.replace('protocol = "apc"', 'protocol = "ask"')
    ds = device_set(parse_profile(ask, "ask.toml"))
    assert Question.UPS_PROTOCOL in ds.questions
    base = FACTORY.read_text()
    text, cfg, _ = apply_profile(base, ds, "c")
    assert (cfg.ups.backend, cfg.ups.port) == ("none", "/dev/ttyUSB0")
    doc = tomlkit.parse(text)
    doc["ups"]["backend"], doc["ups"]["protocol"] = "serial", "megatec"  # the wizard's answer
    answered = tomlkit.dumps(doc)
    _, cfg2, changed = apply_profile(answered, ds, "c")
    assert (cfg2.ups.backend, cfg2.ups.protocol) == ("serial", "megatec") and changed == []


def test_leds_follow_the_role_and_the_alerts():
    assert wanted(status(Role.ACTIVE)) == wanted(status(Role.SINGLE))
    assert wanted(status(Role.ACTIVE)).active and not wanted(status(Role.STANDBY)).active
    alert = Alert("disk-full", "critical", "full", 1)
    assert wanted(status(Role.STANDBY, alerts=(alert,))).alert
    assert not wanted(status(Role.STANDBY)).alert


@pytest.mark.parametrize("backend", ["sim", "linux"])
def test_led_contract(tmp_path: Path, monkeypatch, backend: str):
    """The same contract over the simulated LED and the kernel's LED class (a sysfs tree laid
    out as the kernel's; the kernel's own needs an LED device, which this host has none of)."""
    if backend == "linux":
        for name in ("g", "r"):
            d = tmp_path / name
            d.mkdir()
            (d / "brightness").write_text("0\n")
            (d / "max_brightness").write_text("255\n")
            (d / "trigger").write_text("none [heartbeat]\n")
        monkeypatch.setattr("hal.linux.leds.SYS_CLASS_LEDS", tmp_path)
        monkeypatch.setattr(SysfsLed.__init__, "__defaults__", (tmp_path,))
    cfg = parse_config(f'[leds]\nbackend = "{backend}"\nactive = "g"\nalert = "r"\n')
    leds = open_leds(cfg.leds)
    assert leds is not None and leds.active is not None and leds.alert is not None
    assert not leds.active.is_on()
    leds.active.set(True)
    assert leds.active.is_on() and not leds.alert.is_on()
    leds.active.set(False)
    assert not leds.active.is_on()
    if backend == "linux":
        assert (tmp_path / "g" / "trigger").read_text() == "none"  # taken from the kernel
        assert (tmp_path / "g" / "brightness").read_text() == "0"
        with pytest.raises(Unavailable):
            SysfsLed("missing", tmp_path)


def test_the_board_s_leds_show_its_status_and_a_failing_led_is_an_alert(tmp_path: Path):
    """Hardware.run: the LED thread follows the board's status; an LED that fails raises
    led-unavailable, and it clears once the LED is written again."""
    from firmware.datadir import prepare
    from firmware.hw.monitor import BoardHooks, Hardware
    from firmware.hw.panelrun import PanelHooks
    from firmware.timefmt import now_us

    cfg = parse_config(f"""
[board]
data_dir = "{tmp_path}"
[disks]
backend = "sim"
[leds]
backend = "sim"
active = "green"
alert = "red"
""")
    role = [Role.STANDBY]
    hooks = BoardHooks(apply=lambda a: None, fact=lambda f: None, status=dict,
                       recorder_beat=lambda: 1e12,
                       panel=PanelHooks(snapshot=lambda: status(role[0])))  # fmt: skip
    alerts = Alerts()
    hw = Hardware(cfg, prepare(tmp_path, "a", now_us())["id"], alerts, hooks)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(hw.run(stop))

        await wait_until_async(
            lambda: hw.leds is not None and hw.leds_shown is not None, 10, "LEDs shown"
        )
        green = hw.leds.active
        assert isinstance(green, SimLed) and not green.on
        role[0] = Role.ACTIVE
        await wait_until_async(lambda: green.on, 10, "the active LED lit")
        green.broken = True
        role[0] = Role.STANDBY
        await wait_until_async(
            lambda: alerts.is_active(AlertId.LED_UNAVAILABLE), 10, "led-unavailable"
        )
        await wait_until_async(
            lambda: hw.leds is not None and hw.leds.active is not green, 10, "reopened"
        )
        await wait_until_async(lambda: not alerts.is_active(AlertId.LED_UNAVAILABLE), 10, "cleared")
        stop.set()
        await task

    asyncio.run(main())


class _Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_the_wizard_asks_only_what_the_profile_leaves_open(tmp_path: Path):
    """A board whose UPS port is open gets the UPS question in step 2 and its answer in the
    config; a board whose data lives on its own md array gets no recording-drives step."""
    from firmware.answers import Answers
    from firmware.setupfiles import Layout, render_config
    from firmware.wizard import Wizard

    asked: list[str] = []
    answers = {"board A or B": "b", "board name": "gate", "UPS on /dev/ttyUSB0": "APC"}

    def ask(question: str, check, secret: bool, default: str) -> str:
        asked.append(question)
        text = answers[question.split(" (")[0]]
        assert check is None or check(text) is None, check(text)
        return text

    said: list[str] = []
    open_ups = parse_profile(ACME.replace('protocol = "apc"', 'protocol = "ask"'), "a.toml")
    touched: list[bool] = []
    wiz = Wizard(Layout(tmp_path), FACTORY, tmp_path / "c.toml", ask, said.append,
                 storage=lambda: touched.append(True), profile=open_ups)  # fmt: skip
    raw = wiz.board()
    assert (
        raw["ups"] == {"protocol": "apc"} and asked[-1] == "UPS on /dev/ttyUSB0 (none/megatec/apc)"
    )
    wiz.drives()
    assert touched == [] and said[-1] == "recording drives: the board's own md /dev/md/nvr-data"
    base, _, _ = apply_profile(FACTORY.read_text(), device_set(open_ups), "factory")
    raw |= {"lan": {"dhcp": True}, "pair": {"virtual_ip": "192.0.2.100/24",
                                             "peer_lan_address": "192.0.2.11"}}  # fmt: skip
    _, cfg = render_config(Answers.model_validate(raw), base, "setup")
    assert (cfg.ups.backend, cfg.ups.protocol, cfg.ups.port) == ("serial", "apc", "/dev/ttyUSB0")
    # The shipped boards: no UPS question, and the drives step runs (their data is open).
    asked.clear()
    ref = Wizard(Layout(tmp_path), FACTORY, tmp_path / "c.toml", ask, said.append,
                 profile=load_profile(BOARDS / "qemu-x86_64.toml"))  # fmt: skip
    assert "ups" not in ref.board() and not any(q.startswith("UPS") for q in asked)
