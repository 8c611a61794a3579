"""Commit-confirmed network changes, as network gear does them (`commit confirmed`): a change of
the board's network files is applied at once and rolled back by itself after CONFIRM_SECONDS
unless it is confirmed, on the console or by the pair still working over the new settings (the
peer's adverts arrive on the LAN again and the VIP answers). A board cut off by a wrong address
so comes back by itself.

Sans-IO: events and `now` in, actions out; firmware.netchange writes files and runs networkd.
The pending change is persisted (action Persist) with what it replaced: a board that restarts
while a change is pending rolls it back at start (event Start), it never keeps an unconfirmed
change. A second Apply while pending keeps the rollback target (the last confirmed files) and
starts the window anew."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from firmware.alert_ids import AlertId

CONFIRM_SECONDS = 60.0
"""The time a change has to be confirmed: what an installer needs to look, not long enough to
leave a board unreachable for long."""


@dataclass(frozen=True)
class NetFile:
    path: Path
    data: bytes | None
    """None: the file does not exist (the image's default applies)."""
    mode: int = 0o644


@dataclass(frozen=True)
class Pending:
    """A change applied and not yet confirmed."""

    previous: tuple[NetFile, ...]
    """The last confirmed files: what a rollback writes back, byte for byte."""
    applied: tuple[NetFile, ...]
    interfaces: tuple[str, ...]
    deadline: float
    peer_reached: bool = False
    vip_answered: bool = False


class ConfirmSource(StrEnum):
    CONSOLE = "console"
    PEER = "peer"


class RollbackReason(StrEnum):
    TIMEOUT = "timeout"
    RESTART = "restart"
    """The board restarted while the change was pending."""


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """The firmware or a command starts, with the pending change found on disk (or none)."""

    now: float
    pending: Pending | None


@dataclass(frozen=True)
class Apply:
    files: tuple[NetFile, ...]
    previous: tuple[NetFile, ...]
    """The files there now (read by the adapter)."""
    interfaces: tuple[str, ...]
    now: float


@dataclass(frozen=True)
class Confirm:
    source: ConfirmSource


@dataclass(frozen=True)
class PeerReached:
    """The peer's adverts arrived on the LAN path since the change was applied."""


@dataclass(frozen=True)
class VipAnswered:
    """The virtual IP answered since the change was applied."""


@dataclass(frozen=True)
class Tick:
    now: float


Event = Start | Apply | Confirm | PeerReached | VipAnswered | Tick


# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteFiles:
    files: tuple[NetFile, ...]


@dataclass(frozen=True)
class ReloadNetwork:
    interfaces: tuple[str, ...]


@dataclass(frozen=True)
class Rollback:
    """Write `previous` back and reload the network."""

    previous: tuple[NetFile, ...]
    interfaces: tuple[str, ...]
    reason: RollbackReason


@dataclass(frozen=True)
class Persist:
    pending: Pending | None
    """None: no change pending (remove the record)."""


@dataclass(frozen=True)
class Alert:
    id: AlertId
    raised: bool
    text: str = ""


@dataclass(frozen=True)
class Confirmed:
    source: ConfirmSource


Action = WriteFiles | ReloadNetwork | Rollback | Persist | Alert | Confirmed

PENDING_TEXT = "a network change is applied and rolls back unless confirmed: nvr network confirm"
ROLLED_BACK_TEXT = "a network change was not confirmed and was rolled back ({reason})"


class NetConfirm:
    """The state of one board's network change: none, or one pending."""

    def __init__(self, pending: Pending | None = None, window: float = CONFIRM_SECONDS) -> None:
        self.pending = pending
        self.window = window

    def seconds_left(self, now: float) -> float | None:
        return None if self.pending is None else max(0.0, self.pending.deadline - now)

    def handle(self, ev: Event) -> list[Action]:
        match ev:
            case Start(pending=None):
                self.pending = None
                return []
            case Start(pending=p):
                self.pending = p
                return self._rollback(RollbackReason.RESTART)
            case Apply():
                return self._apply(ev)
            case Confirm(source=source):
                return self._confirm(source)
            case PeerReached() if self.pending is not None:
                self.pending = replace(self.pending, peer_reached=True)
                return self._peer_check()
            case VipAnswered() if self.pending is not None:
                self.pending = replace(self.pending, vip_answered=True)
                return self._peer_check()
            case Tick(now=now) if self.pending is not None and now >= self.pending.deadline:
                return self._rollback(RollbackReason.TIMEOUT)
        return []

    def _apply(self, ev: Apply) -> list[Action]:
        if self.pending is None:
            previous = ev.previous
        else:  # keep the last confirmed files; add those the first change did not touch
            seen = {f.path for f in self.pending.previous}
            previous = self.pending.previous + tuple(f for f in ev.previous if f.path not in seen)
        ifaces = tuple(
            dict.fromkeys(ev.interfaces + (self.pending.interfaces if self.pending else ()))
        )
        self.pending = Pending(previous, ev.files, ifaces, ev.now + self.window)
        return [
            Persist(self.pending),  # first: a power cut during the write still rolls back
            WriteFiles(ev.files),
            ReloadNetwork(ifaces),
            Alert(AlertId.NETWORK_ROLLED_BACK, False),
            Alert(AlertId.NETWORK_CHANGE_PENDING, True, PENDING_TEXT),
        ]

    def _peer_check(self) -> list[Action]:
        assert self.pending is not None
        if self.pending.peer_reached and self.pending.vip_answered:
            return self._confirm(ConfirmSource.PEER)
        return [Persist(self.pending)]

    def _confirm(self, source: ConfirmSource) -> list[Action]:
        if self.pending is None:
            return []
        self.pending = None
        return [Persist(None), Alert(AlertId.NETWORK_CHANGE_PENDING, False), Confirmed(source)]

    def _rollback(self, reason: RollbackReason) -> list[Action]:
        assert self.pending is not None
        p, self.pending = self.pending, None
        return [
            Rollback(p.previous, p.interfaces, reason),
            Persist(None),
            Alert(AlertId.NETWORK_CHANGE_PENDING, False),
            Alert(AlertId.NETWORK_ROLLED_BACK, True, ROLLED_BACK_TEXT.format(reason=reason.value)),
        ]
