"""The adapter of firmware.netconfirm: reads the files there now, writes the new ones atomically,
reloads systemd-networkd through an injectable runner, and keeps the pending change on the data
partition (`etc/nvr/network-pending.json`, written before the network files) so that any later
command, or the next start, rolls back an unconfirmed change. Calls are serialised by a lock
file: a `confirm` on the console and the deadline of a waiting `apply` cannot both win."""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from firmware.alert_ids import AlertId
from firmware.netconfirm import (
    Action,
    Alert,
    Apply,
    Confirm,
    Confirmed,
    ConfirmSource,
    Event,
    NetConfirm,
    NetFile,
    Pending,
    Persist,
    ReloadNetwork,
    Rollback,
    Start,
    Tick,
    WriteFiles,
)
from firmware.provision import Runner, own_like_directory, run_command, write_file_atomic
from firmware.setupfiles import Layout

log = logging.getLogger(__name__)


class NetChangeError(Exception):
    """The pending record cannot be read: said, never guessed at."""


def reload_commands(interfaces: Sequence[str]) -> list[list[str]]:
    """networkd re-reads its files, then applies them to each interface the change touched."""
    return [["networkctl", "reload"], *(["networkctl", "reconfigure", i] for i in interfaces)]


def _encode_files(files: Sequence[NetFile]) -> list[dict]:
    return [{"path": str(f.path), "mode": f.mode,
             "data": None if f.data is None else base64.b64encode(f.data).decode()}
            for f in files]  # fmt: skip


def _decode_files(items: list) -> tuple[NetFile, ...]:
    return tuple(
        NetFile(Path(i["path"]), None if i["data"] is None else base64.b64decode(i["data"]),
                int(i["mode"]))
        for i in items
    )  # fmt: skip


def encode_pending(p: Pending) -> bytes:
    return json.dumps({"previous": _encode_files(p.previous), "applied": _encode_files(p.applied),
                       "interfaces": list(p.interfaces), "deadline": p.deadline,
                       "peer_reached": p.peer_reached, "vip_answered": p.vip_answered},
                      indent=1).encode()  # fmt: skip


def decode_pending(data: bytes, source: str) -> Pending:
    try:
        d = json.loads(data)
        return Pending(_decode_files(d["previous"]), _decode_files(d["applied"]),
                       tuple(str(i) for i in d["interfaces"]), float(d["deadline"]),
                       bool(d["peer_reached"]), bool(d["vip_answered"]))  # fmt: skip
    except (ValueError, KeyError, TypeError) as e:
        msg = f"{source}: not a pending network change ({e}); the network files stay as they are"
        raise NetChangeError(msg) from e


def read_current(paths: Sequence[Path]) -> tuple[NetFile, ...]:
    out = []
    for p in paths:
        try:
            mode = stat.S_IMODE(os.stat(p).st_mode)
            out.append(NetFile(p, p.read_bytes(), mode))
        except FileNotFoundError:
            out.append(NetFile(p, None))
    return tuple(out)


@dataclass
class Outcome:
    """What one call did, for the command to say."""

    confirmed: ConfirmSource | None = None
    rolled_back: bool = False
    alerts: tuple[Alert, ...] = ()


class NetChange:
    def __init__(
        self,
        layout: Layout,
        runner: Runner = run_command,
        clock: Callable[[], float] = time.time,
        window: float | None = None,
    ) -> None:
        self.layout = layout
        self.runner = runner
        self.clock = clock
        self.window = window
        etc = layout.data_root / "etc" / "nvr"
        self.record = etc / "network-pending.json"
        self.rolled_back_record = etc / "network-rolled-back"
        self.lock_path = etc / ".network.lock"

    @contextmanager
    def _core(self) -> Iterator[NetConfirm]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            own_like_directory(lock.fileno(), self.lock_path.parent)  # the console may be first
            fcntl.flock(lock, fcntl.LOCK_EX)
            core = NetConfirm(self.pending())
            if self.window is not None:
                core.window = self.window
            yield core

    def pending(self) -> Pending | None:
        try:
            data = self.record.read_bytes()
        except FileNotFoundError:
            return None
        return decode_pending(data, str(self.record))

    def rolled_back(self) -> str | None:
        """The text of the last rollback, until the next change is applied."""
        try:
            return self.rolled_back_record.read_text()
        except FileNotFoundError:
            return None

    def _run(self, core: NetConfirm, ev: Event) -> Outcome:
        out = Outcome()
        for a in core.handle(ev):
            out = self._do(a, out)
        return out

    def _do(self, a: Action, out: Outcome) -> Outcome:
        match a:
            case Persist(pending=None):
                self.record.unlink(missing_ok=True)
            case Persist(pending=p):
                write_file_atomic(self.record, encode_pending(p), 0o600)
            case WriteFiles(files=files):
                self._write(files)
            case ReloadNetwork(interfaces=ifaces):
                self._reload(ifaces)
            case Rollback(previous=prev, interfaces=ifaces, reason=reason):
                log.warning("network change not confirmed (%s): rolling back", reason.value)
                self._write(prev)
                self._reload(ifaces)
                out.rolled_back = True
            case Alert(raised=raised, text=text) as alert:
                if alert.id == AlertId.NETWORK_ROLLED_BACK:
                    if raised:
                        write_file_atomic(self.rolled_back_record, text.encode(), 0o644)
                    else:
                        self.rolled_back_record.unlink(missing_ok=True)
                out.alerts += (alert,)
            case Confirmed(source=source):
                out.confirmed = source
        return out

    def _write(self, files: Sequence[NetFile]) -> None:
        for f in files:
            if f.data is None:
                f.path.unlink(missing_ok=True)
            else:
                write_file_atomic(f.path, f.data, f.mode)

    def _reload(self, interfaces: Sequence[str]) -> None:
        for argv in reload_commands(interfaces):
            r = self.runner(argv)
            if r.returncode != 0:  # the deadline still rolls back; say why it may not work
                log.error("%s: %s", " ".join(argv), r.last_line)

    # --- the calls ----------------------------------------------------------------------

    def start(self) -> Outcome:
        """At the firmware's start (each boot): a change still pending is rolled back."""
        with self._core() as core:
            return self._run(core, Start(self.clock(), core.pending))

    def apply(self, files: Sequence[NetFile], interfaces: Sequence[str]) -> Outcome:
        with self._core() as core:
            out = self._run(core, Tick(self.clock()))  # a lapsed change goes first
            ev = Apply(tuple(files), read_current([f.path for f in files]), tuple(interfaces),
                       self.clock())  # fmt: skip
            more = self._run(core, ev)
            return Outcome(None, out.rolled_back, out.alerts + more.alerts)

    def confirm(self, source: ConfirmSource = ConfirmSource.CONSOLE) -> Outcome:
        with self._core() as core:
            out = self._run(core, Tick(self.clock()))
            return out if out.rolled_back else self._run(core, Confirm(source))

    def event(self, ev: Event) -> Outcome:
        """PeerReached / VipAnswered from the firmware, after the deadline check."""
        with self._core() as core:
            out = self._run(core, Tick(self.clock()))
            return out if out.rolled_back else self._run(core, ev)

    def tick(self) -> Outcome:
        with self._core() as core:
            return self._run(core, Tick(self.clock()))

    def seconds_left(self) -> float | None:
        p = self.pending()
        return None if p is None else max(0.0, p.deadline - self.clock())
