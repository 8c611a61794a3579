"""The installer console's numbered menu, as appliance consoles have it: after the admin
password, a screen of numbered entries (80x24, plain ASCII, no mouse) and the `nvr> ` prompt,
which takes a number or a command word (firmware.console keeps the loop and the older words).

Each entry reuses what the firmware already has: the status text of `nvr status`, the wizard's
camera questions, the commit-confirmed network change of `nvr network`, `nvr pair`,
`nvr handover`, `nvr hw`, the API token of `nvr token`. The API token is the one secret the
console shows, and only when asked for it; the root shell needs the admin password again."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tomlkit
from pydantic import ValidationError

from firmware.answers import CameraAnswers, LanAnswers
from firmware.apiclient import api_base, fetch_status
from firmware.audit import AUDIT_FILE
from firmware.config import Config, ConfigError, config_error, load_config, parse_config
from firmware.paths import FACTORY_CONFIG, SERVICE
from firmware.provision import NOT_FOUND, write_file_atomic
from firmware.setupfiles import Layout, camera_url, lan_network

if TYPE_CHECKING:
    from firmware.console import Console
    from firmware.netchange import NetChange
    from firmware.wizard import Ask

WIDTH, ROWS = 80, 24
PAGE_ROWS = ROWS - 2
"""Rows of output before the pager asks: the question and the prompt stay on the screen."""
LOG_LINES = 20
"""`logs` and `audit` without a count: one screen."""
LOGIN_STATE = "nvr-console-login"
"""Under /run: the login's back-off (firmware.wizard.login), which the root shell shares."""


@dataclass(frozen=True)
class Entry:
    number: int
    word: str
    """The command word the entry runs (typed, it does the same)."""
    label: str


MENU: tuple[Entry, ...] = (
    Entry(1, "status", "status"),
    Entry(2, "cameras", "cameras"),
    Entry(3, "network", "network (commit confirmed)"),
    Entry(4, "pair", "pair"),
    Entry(5, "handover", "planned handover, and back"),
    Entry(6, "logs", "logs"),
    Entry(7, "audit", "audit log"),
    Entry(8, "token", "API token"),
    Entry(9, "hw", "diagnostics (nvr hw)"),
    Entry(10, "update", "update from the USB stick"),
    Entry(11, "factory-reset", "factory reset"),
    Entry(12, "reboot", "reboot"),
    Entry(13, "poweroff", "power off"),
    Entry(14, "shell", "root shell"),
    Entry(15, "locks", "evidence locks"),
    Entry(0, "exit", "exit"),
)
BY_NUMBER = {str(e.number): e for e in MENU}
MENU_HINT = "a number or a command (help lists them); Enter shows this menu"


def menu_lines() -> list[str]:
    """Two columns of numbered entries, exit last: 9 rows of at most 80 columns."""
    entries = [e for e in MENU if e.number]
    half = (len(entries) + 1) // 2
    left, right = entries[:half], entries[half:]
    lines = []
    for i, e in enumerate(left):
        cell = f"{e.number:>2}) {e.label}"
        if i < len(right):
            cell = f"{cell:<40}{right[i].number:>2}) {right[i].label}"
        lines.append(cell)
    lines += [f"{BY_NUMBER['0'].number:>2}) {BY_NUMBER['0'].label}", MENU_HINT]
    return lines


def plain(text: str) -> str:
    """What a plain ASCII terminal can show: other characters and controls as `?`."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def show(con: Console, lines: list[str]) -> None:
    """Lines paged to the screen: after each screenful, Enter goes on and q stops."""
    rows = 0
    for line in lines:
        need = max(1, -(-len(line) // WIDTH))
        if rows + need > PAGE_ROWS:
            more = con.ask("-- more: Enter, q stops -- ")
            if more is None or more.lower().startswith("q"):
                return
            rows = 0
        con.say(line)
        rows += need


def yes(con: Console, question: str) -> bool:
    return (con.ask(f"{question} (y/n) ") or "").lower() in ("y", "yes")


def _cfg(con: Console) -> Config:
    return load_config(con.config)


# --- status ---------------------------------------------------------------------------------


def more_status_lines(st: dict) -> list[str]:
    """What the console adds to `nvr status`'s text: mirror lag and the UPS, when reported."""
    out = []
    if st.get("mirror_lag_seconds") is not None:
        out.append(f"mirror lag: {st['mirror_lag_seconds']:.1f} s")
    ups = (st.get("hardware") or {}).get("ups")
    if ups:
        r = ups.get("reading")
        if r:
            power = "ON BATTERY" if r.get("on_battery") else "on mains"
            charge = r.get("battery_charge_percent")
            low = ", battery LOW" if r.get("low_battery") else ""
            out.append(
                f"UPS: {power}{low}" + (f", charge {charge:.0f} %" if charge is not None else "")
            )
        else:
            out.append(f"UPS: no reading ({ups.get('error') or 'none yet'})")
    return out


# --- cameras --------------------------------------------------------------------------------


def camera_states(con: Console) -> dict[str, str]:
    """name -> recording or not, from the running firmware; {} when it does not answer."""
    try:
        st = fetch_status(api_base(con.config), timeout=2.0)
    except (ConfigError, OSError):
        return {}
    return {
        c["name"]: "recording" if c.get("recording") else "NOT recording"
        for c in st.get("cameras", [])
    }


def _add_or(con: Console, verb: str, which: str) -> list[str]:
    """The list screens' question, "a) add  r) VERB  Enter) back": the words typed as a
    command would give them (["add"], [verb, NAME]), or [] for back."""
    what = (con.ask(f"a) add  r) {verb}  Enter) back: ") or "").lower()
    if what in ("a", "add"):
        return ["add"]
    if what in ("r", verb):
        name = con.ask(which)
        return [verb, name] if name else []
    return []


def cameras(con: Console, args: list[str]) -> int:
    """List with state; `cameras add` asks as the wizard does, `cameras remove NAME`."""
    from firmware.recorder.events import redact

    cfg = _cfg(con)
    if not args:
        states = camera_states(con)
        lines = []
        for c in cfg.camera:
            state = states.get(c.name, "state unknown") if c.enabled else "disabled"
            lines.append(plain(f"  {c.name}: {state}  {redact(c.url)}"))
        if not cfg.camera:
            lines.append("  no cameras configured")
        elif not states:
            lines.append("  (the firmware does not answer: recording state unknown)")
        show(con, lines)
        args = _add_or(con, "remove", "camera to remove: ")
        if not args:
            return 0
    if args == ["add"]:
        return _add_cameras(con, cfg)
    if len(args) == 2 and args[0] == "remove":
        return _remove_camera(con, args[1])
    con.say("usage: cameras [add | remove NAME]")
    return 2


def wizard_ask(con: Console) -> Ask:
    """The wizard's Ask on the console's line: a refused answer is said (its key named) and
    asked again; EOFError when the line is gone."""

    def ask(question: str, check: Callable[[str], str | None] | None, secret: bool,
            default: str) -> str:  # fmt: skip
        while True:
            shown = f"{question} [{default}]: " if default and not secret else f"{question}: "
            answer = con.ask_secret(shown) if secret else con.ask(shown)
            if answer is None:
                raise EOFError
            answer = answer or default
            why = check(answer) if check else None
            if not why:
                return answer
            con.say(why)

    return ask


def _add_cameras(con: Console, cfg: Config) -> int:
    from firmware.wizard import Wizard

    wizard = Wizard(Layout(con.data_root), FACTORY_CONFIG, con.config, wizard_ask(con), con.say)
    try:
        new = wizard.cameras()
    except EOFError:
        con.say("cameras: nothing added")
        return 1
    if not new:
        con.say("cameras: nothing added")
        return 0
    have = {c.name for c in cfg.camera}
    for cam in new:
        if cam["name"] in have:
            con.say(f"camera.name: {cam['name']!r} is configured already; nothing added")
            return 2
    try:
        urls = [(c["name"], camera_url(CameraAnswers.model_validate(c))) for c in new]
    except ValidationError as e:
        con.say(str(config_error(e, {"camera": new}, "refused")))
        return 2

    def add(doc: tomlkit.TOMLDocument) -> None:
        aot = doc.get("camera")
        if aot is None:
            aot = tomlkit.aot()
            doc["camera"] = aot
        for name, url in urls:
            t = tomlkit.table()
            t["name"], t["url"] = name, url
            aot.append(t)

    if not edit_config(con, add):
        return 2
    names = ", ".join(n for n, _ in urls)
    con.audit("camera-added", cameras=[n for n, _ in urls])
    con.say(f"cameras: added {names}; the firmware takes the config up by itself")
    return 0


def _remove_camera(con: Console, name: str) -> int:
    if name not in {c.name for c in _cfg(con).camera}:
        con.say(f"camera.name: no camera {name!r} in {con.config}")
        return 2

    def remove(doc: tomlkit.TOMLDocument) -> None:
        aot = doc.get("camera") or []
        keep = [t for t in aot if t.get("name") != name]
        if len(keep) == len(aot):
            raise ConfigError(f"camera.name: no camera {name!r} in {con.config}")
        del doc["camera"]
        if keep:
            new = tomlkit.aot()
            for t in keep:
                new.append(t)
            doc["camera"] = new

    if not yes(con, f"remove camera {name} from the config?"):
        con.say("cameras: nothing removed")
        return 1
    if not edit_config(con, remove):
        return 2
    con.audit("camera-removed", camera=name)
    con.say(f"cameras: removed {name}; its recordings stay until retention removes them")
    return 0


def edit_config(con: Console, change: Callable[[tomlkit.TOMLDocument], None]) -> bool:
    """The config file edited in place (comments and other keys kept), checked by the
    firmware's own loader, then written atomically (0600: it holds credentials). A refused
    change is said with its key and nothing is written."""
    try:
        text = con.config.read_bytes().decode("utf-8-sig")
        doc = tomlkit.parse(text)
        change(doc)
        new = tomlkit.dumps(doc)
        parse_config(new, str(con.config))
    except ConfigError as e:
        con.say(f"refused: {e}; the config is unchanged")
        return False
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.TOMLKitError) as e:
        con.say(f"{con.config}: {e}; the config is unchanged")
        return False
    write_file_atomic(con.config, new.encode(), 0o600)
    return True


# --- network --------------------------------------------------------------------------------


def network(con: Console, args: list[str]) -> int:
    """Show the LAN settings and a pending change; `network change` applies a new one that
    rolls back unless confirmed (`network confirm`) within the window."""
    from firmware.netchange import NetChange, NetChangeError

    layout = Layout(con.data_root)
    nc = NetChange(layout, con.runner, con.clock, con.net_window)
    if not args:
        show(con, network_lines(con, nc))
        what = (con.ask("c) change  y) confirm the pending change  Enter) back: ") or "").lower()
        args = {"c": ["change"], "y": ["confirm"]}.get(what[:1], [])
        if not args:
            return 0
    try:
        if args == ["change"]:
            return _network_change(con, nc)
        if args == ["confirm"]:
            return _network_confirm(con, nc)
        if args == ["status"]:
            show(con, network_lines(con, nc))
            return 0
    except (NetChangeError, OSError) as e:
        con.say(f"network: {e}")
        return 1
    con.say("usage: network [change | confirm | status]")
    return 2


def network_lines(con: Console, nc: NetChange) -> list[str]:
    lines = []
    try:
        iface = _cfg(con).network.lan_interface
    except ConfigError as e:
        iface = f"unknown ({e.args[0].splitlines()[0]})"
    lan = Layout(con.data_root).network_dir / "10-lan.network"
    try:
        kept = [
            ln
            for ln in lan.read_text(errors="replace").splitlines()
            if ln.split("=")[0] in ("Address", "Gateway", "DNS", "DHCP")
        ]
        lines.append(f"LAN {iface}: {', '.join(kept) or 'no address in ' + str(lan)}")
    except FileNotFoundError:
        lines.append(f"LAN {iface}: the image's default (no {lan})")
    res = nc.tick()
    if res.rolled_back:
        lines.append("network: not confirmed in time: the previous settings are back")
    left = nc.seconds_left()
    if left is not None:
        lines.append(f"network: change pending, rolls back in {left:.0f} s unless confirmed")
    else:
        lines.append("network: no change pending")
    back = nc.rolled_back()
    if back is not None:
        lines.append(f"network: {back}")
    return lines


def lan_answers(con: Console, cfg: Config) -> LanAnswers | None:
    """The LAN settings, asked one by one, each checked by the setup's rule (a refused answer
    names its key and is asked again), then the pair's addresses kept reachable. None when
    the installer goes back (an empty first answer) or the line is gone."""
    from firmware.wizard import field_check, split_list

    ask = wizard_ask(con)

    def optional(check: Callable[[str], str | None]) -> Callable[[str], str | None]:
        return lambda t: None if not t else check(t)

    try:
        how = ask("LAN by DHCP or static (empty: back)",
                  lambda t: None if t.lower() in ("", "dhcp", "static") else "lan: dhcp or static",
                  False, "").lower()  # fmt: skip
        if not how:
            return None
        raw: dict = {"dhcp": True}
        if how == "static":
            raw = {"address": ask("LAN address/prefix", field_check(LanAnswers, "lan", "address",
                                                                     {}), False, "")}  # fmt: skip
            gw = ask(
                "gateway (empty: none)",
                optional(field_check(LanAnswers, "lan", "gateway", {})),
                False,
                "",
            )
            dns = ask(
                "DNS servers (empty: none)",
                field_check(LanAnswers, "lan", "dns", {}, True),
                False,
                "",
            )
            raw |= {"gateway": gw} if gw else {}
            raw |= {"dns": split_list(dns)} if dns else {}
    except EOFError:
        return None
    try:
        lan = LanAnswers.model_validate(raw)
    except ValidationError as e:
        con.say(str(config_error(e, {"lan": raw}, "refused")))
        return None
    why = lan_problem(lan, cfg)
    if why:
        con.say(why)
        return None
    return lan


def lan_problem(lan: LanAnswers, cfg: Config) -> str | None:
    """The cross-checks of the setup's answers that a LAN change alone can break."""
    if lan.address is None:
        return None
    net = lan.address.network
    if net.num_addresses == 1:
        return f"lan.address: /{net.prefixlen} leaves no network"
    if lan.gateway is not None and (lan.gateway not in net or lan.gateway == lan.address.ip):
        return f"lan.gateway: must be another address in {net}"
    if cfg.pair is not None:
        for key, ip in (("pair.virtual_ip", cfg.pair.virtual_ip.ip),
                        ("pair.peer_lan_address", cfg.pair.peer_lan_address)):  # fmt: skip
            if ip not in net or ip == lan.address.ip:
                return f"lan.address: {key} {ip} must be another address in {net}"
    return None


def _network_change(con: Console, nc: NetChange) -> int:
    from firmware.netconfirm import CONFIRM_SECONDS, NetFile

    cfg = _cfg(con)
    lan = lan_answers(con, cfg)
    if lan is None:
        con.say("network: nothing changed")
        return 1
    window = CONFIRM_SECONDS if nc.window is None else nc.window
    path = Layout(con.data_root).network_dir / "10-lan.network"
    data = lan_network(lan, cfg.network.lan_interface)
    con.say(f"new LAN {cfg.network.lan_interface}: {'DHCP' if lan.dhcp else lan.address}"
            + (f" gateway {lan.gateway}" if lan.gateway else ""))  # fmt: skip
    if not yes(con, f"apply now? it rolls back in {window:.0f} s unless confirmed"):
        con.say("network: nothing changed")
        return 1
    res = nc.apply([NetFile(path, data, 0o644)], (cfg.network.lan_interface,))
    if res.rolled_back:
        con.say("network: an earlier change had lapsed and was rolled back first")
    con.audit("network-change-applied", source="console")
    con.say(f"network: applied {path}")
    con.say(f"network: confirm within {window:.0f} s: entry 3 then y, or type `network confirm`;")
    con.say("network: not confirmed, the previous settings come back by themselves")
    con.watch_network(nc)
    return 0


def _network_confirm(con: Console, nc: NetChange) -> int:
    res = nc.confirm()
    if res.rolled_back:
        con.say("network: too late: the change was rolled back")
        return 3
    if res.confirmed:
        con.audit("network-change-confirmed", source="console")
        con.say("network: change confirmed")
    else:
        con.say("network: no change pending")
    return 0


def network_deadline(con: Console, nc: NetChange, stop: threading.Event) -> None:
    """Until the pending change is confirmed or rolled back: at its deadline, roll it back and
    say so on the console (the running firmware keeps the same deadline)."""
    while not stop.is_set():
        left = nc.seconds_left()
        if left is None:  # confirmed, or rolled back by the firmware (which notes it)
            back = nc.rolled_back()
            if back is not None:
                con.say("")
                con.say(f"network: {back}")
            return
        stop.wait(min(left, 1.0))
        if nc.tick().rolled_back:
            con.audit("network-rolled-back", reason="not confirmed in time")
            con.say("")
            con.say("network: not confirmed in time: the previous settings are back")
            return


# --- pair and handover ----------------------------------------------------------------------


@contextlib.contextmanager
def to_console(con: Console) -> Iterator[None]:
    """The `nvr` commands print; on the console their words go to its line."""
    with contextlib.redirect_stdout(con.out), contextlib.redirect_stderr(con.out):
        yield


def pair(con: Console, args: list[str]) -> int:
    """The pairing state; `pair code` shows a one-time code, `pair join CODE` joins."""
    from firmware import paircli

    if _cfg(con).pair is None:
        con.say("pair: no [pair] in the config (a single board): set the pair's addresses "
                "first (`nvr setup`, docs/INSTALL.md)")  # fmt: skip
        return 1
    try:
        st = fetch_status(api_base(con.config), timeout=2.0)
    except OSError as e:
        con.say(f"pair: {e}; pairing goes through the running firmware")
        return 1
    fp = st.get("pair_fingerprint")
    if not args:
        con.say(f"pair: board {st['board']} is {st['role']}"
                + (f", pair key fingerprint {fp}" if fp else ", not paired"))  # fmt: skip
        what = con.ask("c) show a pairing code  j) join with a code  Enter) back: ") or ""
        if what.lower().startswith("c"):
            args = ["code"]
        elif what.lower().startswith("j"):
            code = con.ask("pairing code: ")
            if not code:
                return 0
            args = ["join", code]
        else:
            return 0
    replace = False
    if fp:
        if not yes(con, "this board is paired: pair anew, replacing the key?"):
            con.say("pair: nothing changed")
            return 1
        replace = True
    ns = argparse.Namespace(config=con.config, url=None, replace=replace, no_wait=False, code="")
    with to_console(con):
        if args == ["code"]:
            return paircli.cmd_pair_code(ns)
        if len(args) == 2 and args[0] == "join":
            ns.code = args[1]
            return paircli.cmd_pair_join(ns)
    con.say("usage: pair [code | join CODE]")
    return 2


def handover(con: Console, args: list[str]) -> int:
    """Planned handover: the active board gives the VIP to the standby; on the standby, the
    active peer is asked to hand over, so the pair comes back here (`nvr handover`)."""
    from firmware.cli import cmd_handover

    cfg = _cfg(con)
    if cfg.pair is None:
        con.say("handover: no [pair] in the config: nothing to hand over")
        return 1
    try:
        st = fetch_status(api_base(con.config), timeout=2.0)
    except OSError as e:
        con.say(f"handover: {e}")
        return 1
    role = st.get("role")
    if role == "active":
        question = f"hand the VIP over to the standby {(st.get('peer') or {}).get('board', '')}?"
        url = None
    elif role == "standby":
        question = f"take the pair back: ask the active board at {cfg.pair.peer_lan_address}"
        question += " to hand over?"
        url = f"http://{cfg.pair.peer_lan_address}:{cfg.api.listen_port}"
    else:
        con.say(f"handover: this board is {role}: only a paired active or standby board can")
        return 1
    if not yes(con, question):
        con.say("handover: nothing done")
        return 1
    con.audit("handover-requested", source="console", board_role=role)
    with to_console(con):
        return cmd_handover(argparse.Namespace(config=con.config, url=url))


def drill(con: Console, args: list[str]) -> int:
    """The handover drill (`nvr drill handover`): over to the standby and back, measured; the
    result on the screen and in the audit log."""
    from firmware.drillcli import drill_handover

    if _cfg(con).pair is None:
        con.say("drill: no [pair] in the config: a single board has no drill")
        return 1
    if not yes(con, "drill: hand the pair over to the standby and back, and measure it?"):
        con.say("drill: nothing done")
        return 1
    con.say("drill: running (seconds on a healthy pair; it gives up after a few minutes)")
    try:
        with to_console(con):
            return drill_handover(con.config, audit=lambda _t, event, **f: con.audit(event, **f))
    except (ConfigError, OSError) as e:
        con.say(f"drill: {e}")
        return 1


# --- logs, audit log, diagnostics -----------------------------------------------------------


def _count(con: Console, args: list[str], name: str) -> int | None:
    if not args:
        return LOG_LINES
    if len(args) == 1 and args[0].isdigit() and 0 < int(args[0]) <= 10000:
        return int(args[0])
    con.say(f"usage: {name} [LINES]  (1 to 10000; default {LOG_LINES}, one screen)")
    return None


def logs(con: Console, args: list[str]) -> int:
    """The firmware's journal, the last lines (paged)."""
    n = _count(con, args, "logs")
    if n is None:
        return 2
    done = con.external(["journalctl", "-u", SERVICE, "-n", str(n), "--no-pager", "-o",
                         "short-iso"])  # fmt: skip
    if done.returncode == NOT_FOUND:
        con.say("logs: journalctl not installed")
        return 1
    if done.returncode != 0:
        con.say(f"logs: journalctl failed: {done.last_line}")
        return 1
    show(con, [plain(ln) for ln in done.output.splitlines()[-n:]] or ["logs: no entries"])
    return 0


def audit_lines(path: Path, n: int, tail_bytes: int = 1 << 20) -> list[str]:
    """The last n events of the audit log, one line each (time, event, fields)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - tail_bytes))
        raw = f.read().decode("utf-8", "replace").splitlines()
    if size > tail_bytes:
        raw = raw[1:]  # the first line read may be cut
    out = []
    for line in raw[-n:]:
        try:
            ev = json.loads(line)
            rest = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("time", "event"))
            out.append(plain(f"{ev.get('time', '?')} {ev.get('event', '?')} {rest}".rstrip()))
        except (ValueError, AttributeError):
            out.append(plain(line))
    return out


def audit(con: Console, args: list[str]) -> int:
    n = _count(con, args, "audit")
    if n is None:
        return 2
    path = _cfg(con).board.data_dir / AUDIT_FILE
    try:
        lines = audit_lines(path, n)
    except FileNotFoundError:
        con.say(f"audit: {path}: no audit log yet")
        return 0
    except OSError as e:
        con.say(f"audit: {path}: {e.strerror}")
        return 1
    show(con, lines or ["audit: no events"])
    return 0


HW_DEVICES = ("ups", "disks", "nics", "watchdog", "panel")


def hw(con: Console, args: list[str]) -> int:
    """One reading of a device, as `nvr hw DEVICE`."""
    from firmware.hw.report import cmd_hw

    if not args:
        choices = "  ".join(f"{i}) {d}" for i, d in enumerate(HW_DEVICES, 1))
        pick = con.ask(f"{choices}  Enter) back: ")
        if not pick:
            return 0
        args = [HW_DEVICES[int(pick) - 1]] if pick in ("1", "2", "3", "4", "5") else [pick]
    if len(args) != 1 or args[0] not in HW_DEVICES:
        con.say(f"usage: hw DEVICE  (one of {', '.join(HW_DEVICES)})")
        return 2
    ns = argparse.Namespace(device=args[0], config=con.config, json=False, port=None,
                            protocol=None)  # fmt: skip
    with to_console(con):
        return cmd_hw(ns)


def storage(con: Console, args: list[str]) -> int:
    """The recording drives, as `nvr storage`: status, make the volume, replace a drive."""
    from firmware.storagecli import console_storage, storage_for

    return console_storage(storage_for(con.config, con.data_root), args, con.ask, con.say)


# --- API token ------------------------------------------------------------------------------


def token_source(cfg: Config) -> tuple[str, Path | None]:
    """Where the API token comes from, and the file a rotation writes (None: derived)."""
    from firmware.datadir import unpaired

    if cfg.pair is None or (unpaired(cfg) and cfg.api.token_file is None):
        return f"this board's token file {cfg.token_file}", cfg.token_file
    if cfg.api.token_file is None:
        return "derived from the pair key (the same on both boards)", None
    return f"the token file {cfg.api.token_file} (the same file on both boards)", cfg.api.token_file


def token(con: Console, args: list[str]) -> int:
    """Where the token comes from; shown on explicit request only (`token show`), and
    rotated (`token rotate`) where it is a file."""
    from firmware.datadir import api_token

    cfg = _cfg(con)
    where, path = token_source(cfg)
    if not args:
        con.say(f"API token: {where}")
        what = (con.ask("s) show it  r) rotate it  Enter) back: ") or "").lower()
        args = {"s": ["show"], "r": ["rotate"]}.get(what[:1], [])
        if not args:
            return 0
    if args == ["show"]:
        try:
            secret = api_token(cfg, board=False)
        except (ConfigError, OSError) as e:
            con.say(f"token: {e}")
            return 1
        con.audit("api-token-shown", source="console")
        con.say(f"API token: {secret}")
        con.ask("Enter clears the screen ")
        con.clear()
        return 0
    if args == ["rotate"]:
        return _rotate(con, cfg, path)
    con.say("usage: token [show | rotate]")
    return 2


def _rotate(con: Console, cfg: Config, path: Path | None) -> int:
    if path is None:
        con.say("token: the pair's token is derived from the pair key: pair anew (entry 4, "
                "replacing the key) to change it")  # fmt: skip
        return 1
    if not yes(con, "rotate the API token? clients with the old one get 401"):
        con.say("token: unchanged")
        return 1
    write_file_atomic(path, (secrets.token_urlsafe(32) + "\n").encode(), 0o600)
    con.audit("api-token-rotated", source="console")
    con.say(f"token: a new token is in {path}; show it with `token show`")
    if cfg.pair is not None:
        con.say("token: copy the same file to the other board")
    done = con.external(["systemctl", "restart", SERVICE])
    if done.returncode not in (0, NOT_FOUND):
        con.say(f"token: restart of {SERVICE} failed: {done.last_line}; it takes the new "
                "token at its next start")  # fmt: skip
        return 1
    return 0


# --- root shell -----------------------------------------------------------------------------


def shell(con: Console, args: list[str]) -> int:
    """A root shell, only after the admin password again (the login's back-off, shared)."""
    from firmware.wizard import PasswordCheck, admin_try, load_backoff

    state = con.run / LOGIN_STATE
    check = admin_try(con.data_root, con.inp, con.out, load_backoff(state), con.monotonic,
                      con.sleep, state)  # fmt: skip
    if check is PasswordCheck.WRONG:
        con.audit("console-shell-refused", reason="wrong password")
        con.say("no shell")
    if check is not PasswordCheck.RIGHT:
        return 1
    con.audit("console-shell", source="console")
    con.say("root shell: exit (or Ctrl-D) comes back to the console")
    return run_shell(con)


def run_shell(con: Console) -> int:
    """The shell on the console's own line. Ctrl-C belongs to the shell: the console only
    waits (a handler, not SIG_IGN, so the shell starts with Ctrl-C as usual)."""
    try:
        fds = {"stdin": con.inp.fileno(), "stdout": con.out.fileno(), "stderr": con.out.fileno()}
    except (AttributeError, OSError, ValueError):
        con.say("shell: the console is not on a terminal")
        return 1
    old = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        done = subprocess.run(list(con.shell), **fds, check=False)
    except OSError as e:
        con.say(f"shell: {con.shell[0]}: {e.strerror}")
        return 1
    finally:
        signal.signal(signal.SIGINT, old)
    con.say(f"root shell ended (status {done.returncode})")
    return 0


# --- evidence locks ----------------------------------------------------------------------------


def lock_lines(locks: list) -> list[str]:
    """One line a lock: id, camera, range, reason (and the release of a released one)."""
    from firmware.timefmt import iso

    lines = []
    for lk in locks:
        state = "" if lk.active else f"  released {iso(lk.released_us)}: {lk.release_reason}"
        lines.append(plain(f"  {lk.id}  {lk.camera or '(all cameras)'}  {iso(lk.start_us)} .. "
                           f"{iso(lk.end_us)}  {lk.reason}{state}"))  # fmt: skip
    return lines or ["  no active evidence locks"]


def locks(con: Console, args: list[str]) -> int:
    """Evidence locks (firmware/evidence/locks.py): list the active ones; `locks add` asks
    camera, start, end and reason; `locks release ID` asks why."""
    from firmware.catalog import CATALOG_FILE, Catalog

    cfg = _cfg(con)
    data = cfg.board.data_dir
    if not (data / CATALOG_FILE).exists():
        con.say(f"locks: nothing recorded in {data} yet (no catalog)")
        return 1
    cat = Catalog(data)
    try:
        if not args:
            show(con, lock_lines(cat.locks()))
            args = _add_or(con, "release", "lock to release (its id): ")
            if not args:
                return 0
        if args == ["add"]:
            return _add_lock(con, cfg, cat)
        if len(args) == 2 and args[0] == "release":
            return _release_lock(con, cat, args[1])
        con.say("usage: locks [add | release ID]")
        return 2
    finally:
        cat.close()


def _add_lock(con: Console, cfg: Config, cat) -> int:
    from firmware.evidence.locks import LOCK_EVENT, LockError, lock_fields, make_lock, parse_local
    from firmware.timefmt import now_us

    names = {c.name for c in cfg.camera} | set(cat.cameras())
    camera = (con.ask(f"camera ({', '.join(sorted(names)) or 'none'}; * = every camera): ")
              or "").strip()  # fmt: skip
    start_text = con.ask("start (local time like 2026-11-30T14:05, or 'last 30 minutes'): ")
    if not camera or not start_text:
        con.say("locks: nothing locked")
        return 0
    now = now_us()
    try:
        start = parse_local(start_text, now)
        end_text = con.ask("end [now]: ") or "now"
        end = parse_local(end_text, now)
        reason = con.ask("reason (a case number, a ticket): ") or ""
        lock = make_lock(None if camera == "*" else camera, start, end, reason, now, names)
        lock = cat.add_lock(lock)
    except LockError as e:
        con.say(f"locks: {e}; nothing locked")
        return 2
    con.audit(LOCK_EVENT, **lock_fields(lock, "console"))
    con.say(f"locks: {lock.id} keeps this footage from retention until released")
    return 0


def _release_lock(con: Console, cat, lock_id: str) -> int:
    from firmware.evidence.locks import UNLOCK_EVENT, LockError, check_reason, release_fields
    from firmware.timefmt import now_us

    lk = cat.lock(lock_id)
    if lk is None or not lk.active:
        con.say(f"locks: no active lock {lock_id!r}")
        return 2
    try:
        reason = check_reason(con.ask("why is it released: ") or "")
        lock = cat.release_lock(lock_id, reason, now_us())
    except LockError as e:
        con.say(f"locks: {e}; not released")
        return 2
    con.audit(UNLOCK_EVENT, **release_fields(lock, "console"))
    con.say(f"locks: {lock.id} released; retention may delete that footage again")
    return 0


NEW_COMMANDS: tuple[tuple[str, str, str, Callable[[Console, list[str]], int], int], ...] = (
    ("cameras", "[add|remove NAME]", "cameras and their state; add, remove", cameras, 2),
    ("network", "[change|confirm|status]", "LAN settings; commit-confirmed change", network, 1),
    ("pair", "[code|join CODE]", "pairing state; show a code or join with one", pair, 2),
    ("handover", "", "planned handover to the standby, or back", handover, 0),
    ("drill", "", "handover drill: over and back, measured", drill, 0),
    ("logs", "[LINES]", "the firmware's journal, last lines", logs, 1),
    ("audit", "[LINES]", "the audit log, last events", audit, 1),
    ("token", "[show|rotate]", "the API token: where from; show or rotate", token, 1),
    ("hw", "[DEVICE]", "diagnostics: one reading of a device", hw, 1),
    ("storage", "[list|init|replace]", "recording drives: status, make, replace", storage, 1),
    ("shell", "", "root shell (asks the admin password again)", shell, 0),
    ("locks", "[add|release ID]", "evidence locks: list, add, release", locks, 2),
)
"""(word, arguments, help, function, most arguments): the menu's commands beyond the first."""
