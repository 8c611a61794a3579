"""The installer console on the serial line (`nvr console`, run by systemd on ttyS0).

The image has no root password, so these commands are the only way in over serial. After the
admin password it shows a numbered menu (firmware.consolemenu), then reads one line at a time:
a menu number or a command word with its arguments, answered on the next lines, then the
prompt `nvr> ` again (without a newline), so a program on the other end can wait for it. An
empty line shows the menu again. A command's error is printed, never a traceback, and never
ends the console; EOF ends it with status 0.

The commands are the table `COMMANDS`. External programs (systemctl, rauc, mount, umount,
journalctl, networkctl) go through one runner, and /proc, /dev and /run are parameters, so
tests fake all of them."""

from __future__ import annotations

import json
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from firmware import consolemenu
from firmware.apiclient import api_base, fetch_status, status_lines
from firmware.audit import AuditLog
from firmware.config import ConfigError, load_config
from firmware.consolemenu import BY_NUMBER, MENU, menu_lines, more_status_lines
from firmware.datadisk import data_disk_lines
from firmware.hw.profile import BoardProfile
from firmware.netchange import NetChange
from firmware.paths import DATA_ROOT
from firmware.provision import (
    NOT_FOUND,
    SERVICE,
    Result,
    Runner,
    factory_reset,
    run_command,
)
from hal.linux.watchdog import describe_watchdogs

PRODUCT = "nvr-pair"
PROMPT = "nvr> "
UPDATE_LABEL = "NVR-UPDATE"
"""Filesystem label of the USB stick that carries update bundles (*.raucb)."""


def read_release(path: Path) -> dict[str, str]:
    """KEY=value lines, shell-quoted (as /etc/os-release); {} when the file is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for word in words:
            key, sep, value = word.partition("=")
            if sep and key:
                found[key] = value
    return found


def root_mode(proc: Path) -> str:
    """`read-only` or `read-write`: the options of the top mount on / in mountinfo."""
    mode = "unknown"
    try:
        lines = (proc / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return mode
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[4] != "/":
            continue
        opts = set(fields[5].split(","))
        if " - " in line:
            opts |= set(line.split(" - ", 1)[1].split()[-1].split(","))
        mode = "read-only" if "ro" in opts else "read-write"  # the last mount on / is on top
    return mode


def watchdog_holders(proc: Path, dev: Path) -> dict[str, list[tuple[int, str]]]:
    """Each /dev/watchdog* device and the processes (pid, name) that hold it open, found by
    the symlinks in /proc/<pid>/fd. PID 1 is systemd (RuntimeWatchdogSec)."""
    holders: dict[str, list[tuple[int, str]]] = {str(d): [] for d in sorted(dev.glob("watchdog*"))}
    if not holders:
        return holders
    try:
        pids = sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    except OSError:
        return holders
    for pid in pids:
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target in holders and all(p != pid for p, _ in holders[target]):
                holders[target].append((pid, _process_name(proc, pid)))
    return holders


def _process_name(proc: Path, pid: int) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "systemd" if pid == 1 else "?"


def slot_lines(done: Result) -> list[str]:
    """`rauc status --detailed --output-format=json` as `slot: <booted>` and one line per slot."""
    if done.returncode == NOT_FOUND:
        return ["slots: rauc not installed"]
    if done.returncode != 0:
        return [f"slots: rauc status failed: {done.last_line}"]
    status = None
    for chunk in (done.output, *done.output.splitlines()):  # log lines may precede the JSON
        try:
            status = json.loads(chunk)
            break
        except ValueError:
            continue
    if not isinstance(status, dict):
        return ["slots: rauc status gave no JSON"]
    lines = [f"slot: {status.get('booted') or 'unknown'}"]
    for entry in status.get("slots") or []:
        for name, slot in entry.items():
            bundle = slot.get("bundle") or (slot.get("slot_status") or {}).get("bundle") or {}
            version = slot.get("bundle.version") or bundle.get("version") or "-"
            primary = " primary" if name == status.get("boot_primary") else ""
            lines.append(
                f"slot {name}: bootname={slot.get('bootname') or '-'} "
                f"state={slot.get('state') or '-'} boot_status={slot.get('boot_status') or '-'} "
                f"version={version}{primary}"
            )
    return lines


def rauc_error(done: Result) -> str:
    """The line of rauc's output that says what went wrong: its last `LastError:` line, else
    the last line naming an error, else its last line."""
    lines = [ln.strip() for ln in done.output.splitlines() if ln.strip()]
    last_error = [ln for ln in lines if ln.startswith("LastError:")]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (last_error or errors or lines or [f"rauc exited with status {done.returncode}"])[-1]


@dataclass(frozen=True)
class Command:
    name: str
    args: str
    help: str
    run: Callable[[Console, list[str]], int]
    max_args: int = 0


@dataclass
class Console:
    config: Path
    release: Path
    inp: TextIO
    out: TextIO
    runner: Runner = run_command
    proc: Path = Path("/proc")
    dev: Path = Path("/dev")
    run: Path = Path("/run")
    data_root: Path = DATA_ROOT
    sys_class_watchdog: Path = Path("/sys/class/watchdog")
    sys_class_block: Path = Path("/sys/class/block")
    profile: BoardProfile | None = None
    """The image's board profile: its banner heads the console."""
    shell: tuple[str, ...] = ("/bin/bash",)
    """The root shell (after the admin password again)."""
    net_window: float | None = None
    """Seconds to confirm a network change; None: firmware.netconfirm's."""
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    done: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _audit: AuditLog | None = field(default=None, init=False, repr=False)
    _net_watch: threading.Thread | None = field(default=None, init=False, repr=False)

    # --- input and output

    def say(self, text: str = "") -> None:
        with self._lock:  # the network deadline speaks from its own thread
            self.out.write(text + "\n")
            self.out.flush()

    def ask(self, question: str) -> str | None:
        """One answer line (stripped); None at EOF."""
        with self._lock:
            self.out.write(question)
            self.out.flush()
        line = self.inp.readline()
        return line.strip() if line else None

    def ask_secret(self, question: str) -> str | None:
        """As ask, without echo on a terminal."""
        from firmware.wizard import read_secret

        answer = read_secret(self.inp, self.out, question)  # not under the lock: it waits
        self.say()
        return answer

    def clear(self) -> None:
        """A terminal's screen cleared (VT100), e.g. after a secret was shown; a pipe gets
        nothing."""
        if self.out.isatty():
            with self._lock:
                self.out.write("\x1b[H\x1b[2J")
                self.out.flush()

    def audit(self, event: str, quiet: bool = False, **fields: object) -> None:
        """An event in the board's audit log, as the firmware writes it; a failure is said
        (quiet: only logged; the login prompt is no place for it)."""
        from firmware.audit import AUDIT_FILE
        from firmware.timefmt import now_us

        if self._audit is None:  # opened once, as the firmware does
            try:
                self._audit = AuditLog(load_config(self.config).board.data_dir / AUDIT_FILE)
            except (ConfigError, OSError) as e:
                if quiet:
                    logging.getLogger("nvr.console").warning("audit log: %s", e)
                else:
                    self.say(f"audit log: {e}")
                return
        self._audit.append(now_us(), event, **fields)

    def watch_network(self, nc: NetChange) -> None:
        """The deadline of a network change applied here, kept in a thread of the console."""
        from firmware.supervise import keep_running

        def failed(what: str, e: Exception) -> None:
            self.say(f"{what}: {e}; the firmware keeps the deadline too")

        if self._net_watch is not None and self._net_watch.is_alive():
            return  # it reads the (new) deadline from the record each second
        self._net_watch = threading.Thread(
            target=keep_running,
            args=("network deadline", lambda: consolemenu.network_deadline(self, nc, self._stop),
                  self._stop, failed, 10.0),
            name="network-deadline", daemon=True,
        )  # fmt: skip
        self._net_watch.start()

    def menu(self) -> None:
        for line in menu_lines():
            self.say(line)

    def banner(self) -> None:
        rel = read_release(self.release)
        try:
            board = load_config(self.config).board.name
        except ConfigError as e:
            board = f"unknown ({e.args[0].splitlines()[0]})"
        if self.profile is not None:
            self.say(self.profile.brand.banner)
        self.say(f"{PRODUCT if self.profile is None else self.profile.brand.product} console")
        for label, key in (("name", "NAME"), ("version", "VERSION"), ("revision", "GIT_REVISION")):
            self.say(f"{label}: {rel.get(key) or 'unknown'}")
        self.say(f"board: {board}")
        if self.profile is not None:
            self.say(f"hardware: {self.profile.board.name} ({self.profile.image.arch})")

    def loop(self) -> int:
        """Banner and menu, then entries and commands until EOF or `exit`."""
        try:
            return self._loop()
        finally:
            self._stop.set()

    def _loop(self) -> int:
        self.banner()
        self.menu()
        while not self.done:
            self.out.write(PROMPT)
            self.out.flush()
            try:
                line = self.inp.readline()
            except KeyboardInterrupt:
                self.say()
                continue
            except OSError as e:  # the serial line went away
                self.say(f"console: input: {e.strerror}")
                return 1
            if not line:
                self.say()
                return 0
            try:
                self.execute(line)
            except KeyboardInterrupt:
                self.say("interrupted")
        return 0

    def execute(self, line: str) -> int:
        """Run one command line; its status (0 = ok). Errors are printed, never raised."""
        try:
            words = shlex.split(line)
        except ValueError as e:
            self.say(f"error: {e}")
            return 2
        if not words:
            self.clear()
            self.banner()
            self.menu()
            return 0
        if words[0] in BY_NUMBER:
            words[0] = BY_NUMBER[words[0]].word
        elif words[0].isdigit():
            self.say(f"no entry {words[0]}: the entries are 0 to {max(BY_NUMBER, key=int)}")
            return 2
        cmd = COMMANDS.get(words[0])
        if cmd is None:
            self.say(f"unknown command: {words[0]} (a menu number, or type help)")
            return 2
        if len(words) - 1 > cmd.max_args:
            self.say(f"usage: {cmd.name} {cmd.args}".rstrip())
            return 2
        try:
            return cmd.run(self, words[1:])
        except Exception as e:  # a failing command must not end the only way in
            self.say(f"{cmd.name}: error: {e}")
            return 1

    def external(self, argv: list[str], stream: bool = False) -> Result:
        return self.runner(argv, self.say if stream else None)


# --- the commands ----------------------------------------------------------------------------


def _help(con: Console, args: list[str]) -> int:
    """Every command, its menu number first where it has one."""
    numbers = {e.word: str(e.number) for e in MENU}
    width = max(len(f"{c.name} {c.args}") for c in COMMANDS.values())
    for c in COMMANDS.values():
        con.say(f"{numbers.get(c.name, ''):>2}  {f'{c.name} {c.args}':<{width}}  {c.help}")
    return 0


def _status(con: Console, args: list[str]) -> int:
    if args not in ([], ["--json"]):
        con.say("usage: status [--json]")
        return 2
    try:
        st = fetch_status(api_base(con.config))
    except (ConfigError, OSError) as e:
        con.say(f"nvr: {e}")
        return 2 if isinstance(e, ConfigError) else 1
    for line in [json.dumps(st, indent=1)] if args else status_lines(st) + more_status_lines(st):
        con.say(line)
    return 0


def _release(con: Console, args: list[str]) -> int:
    try:
        text = con.release.read_text(errors="replace")
    except OSError as e:
        con.say(f"release: {con.release}: {e.strerror}")
        return 1
    con.say(text.rstrip("\n"))
    return 0


def _system(con: Console, args: list[str]) -> int:
    con.say(f"root: {root_mode(con.proc)}")
    done = con.external(["systemctl", "is-active", SERVICE])
    state = done.output.strip().splitlines()[0] if done.output.strip() else "unknown"
    con.say(f"service: {'systemctl not installed' if done.returncode == NOT_FOUND else state}")
    holders = watchdog_holders(con.proc, con.dev)
    if not holders:
        con.say("watchdog: none")
    kinds = {
        Path(w["device"]).name: w["identity"]
        for w in describe_watchdogs(str(con.sys_class_watchdog))
        if w["identity"]
    }
    if "watchdog0" in kinds:  # the legacy node is the first watchdog's
        kinds["watchdog"] = f"watchdog0, {kinds['watchdog0']}"
    for device, procs in holders.items():
        who = ", ".join(f"{name} (pid {pid})" for pid, name in procs)
        kind = kinds.get(Path(device).name)
        label = f"{device} ({kind})" if kind else device
        con.say(f"watchdog: {label} {'held by ' + who if procs else 'not held'}")
    for line in slot_lines(con.external(["rauc", "status", "--detailed", "--output-format=json"])):
        con.say(line)
    for line in data_disk_lines(con.dev, con.sys_class_block):  # none off a board
        con.say(line)
    return 0


def _update(con: Console, args: list[str]) -> int:
    name = args[0] if args else None
    if name is not None and os.path.isabs(name):
        return _install(con, Path(name))
    device = con.dev / "disk" / "by-label" / UPDATE_LABEL
    if not device.exists():
        con.say(f"update failed: no USB stick labelled {UPDATE_LABEL} ({device} missing)")
        return 1
    mnt = con.run / "nvr" / "update"
    mnt.mkdir(parents=True, exist_ok=True)
    done = con.external(["mount", "-o", "ro", str(device), str(mnt)])
    if done.returncode != 0:
        con.say(f"update failed: cannot mount {device}: {done.last_line}")
        return 1
    try:
        bundles = sorted(p.name for p in mnt.glob("*.raucb"))
        for b in bundles:
            con.say(f"bundle: {b}")
        if name is not None:
            chosen = mnt / name
        elif len(bundles) == 1:
            chosen = mnt / bundles[0]
        elif not bundles:
            con.say(f"update failed: no *.raucb bundle on {UPDATE_LABEL}")
            return 1
        else:
            con.say(
                f"update failed: {len(bundles)} bundles on {UPDATE_LABEL}; name one: update FILE"
            )
            return 1
        return _install(con, chosen)
    finally:
        done = con.external(["umount", str(mnt)])
        if done.returncode != 0:
            con.say(f"update: umount {mnt}: {done.last_line}")


def _install(con: Console, bundle: Path) -> int:
    if not bundle.is_file():
        con.say(f"update failed: {bundle}: no such file")
        return 1
    con.say(f"update: installing {bundle}")
    done = con.external(["rauc", "install", str(bundle)], stream=True)
    if done.returncode == 0:
        con.say(f"update: installed {bundle.name}, type reboot to start it")
        con.audit("update-installed", quiet=True, bundle=bundle.name, source="console")
        return 0
    reason = "rauc not installed" if done.returncode == NOT_FOUND else rauc_error(done)
    con.say(f"update failed: {reason}")
    con.audit("update-failed", quiet=True, bundle=bundle.name, reason=reason, source="console")
    return 1


def _systemctl(verb: str, saying: str) -> Callable[[Console, list[str]], int]:
    def run(con: Console, args: list[str]) -> int:
        con.say(saying)
        done = con.external(["systemctl", verb])
        if done.returncode != 0:
            con.say(f"{verb} failed: {done.last_line}")
            return 1
        return 0

    return run


def _factory_reset(con: Console, args: list[str]) -> int:
    keep = con.ask("keep footage? [yes/no] ")
    if keep not in ("yes", "no"):
        con.say("factory-reset: cancelled (answer yes or no)")
        return 1
    if con.ask("type RESET to confirm: ") != "RESET":
        con.say("factory-reset: cancelled")
        return 1
    return factory_reset(
        con.config,
        con.data_root,
        wipe_footage=keep == "no",
        reboot=True,
        out=con.out,
        runner=con.runner,
        systemd_runtime=con.run / "systemd" / "system",
    )


def _exit(con: Console, args: list[str]) -> int:
    con.done = True
    return 0


_BASE = (
    Command("help", "", "this list", _help),
    Command("status", "[--json]", "the running firmware, as nvr status", _status, 1),
    Command("release", "", "the release of this image", _release),
    Command("system", "", "root, service, watchdog, slots, disk", _system),
    Command("update", "[FILE]", f"install a bundle from the {UPDATE_LABEL} stick", _update, 1),
    Command("reboot", "", "restart the board", _systemctl("reboot", "rebooting")),
    Command("poweroff", "", "power the board off", _systemctl("poweroff", "powering off")),
    Command("factory-reset", "", "delete configuration and keys (asks first)", _factory_reset),
    Command("exit", "", "leave the console", _exit),
    *(Command(n, a, h, f, m) for n, a, h, f, m in consolemenu.NEW_COMMANDS),
)
_ORDER = [e.word for e in sorted(MENU, key=lambda e: e.number or 99)]
COMMANDS: dict[str, Command] = {
    c.name: c for c in sorted(_BASE, key=lambda c: _ORDER.index(c.name) if c.name in _ORDER else 99)
}
"""In the menu's order, then the commands it has no number for (help, release, system)."""
