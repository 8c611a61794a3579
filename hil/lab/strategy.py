"""PairStrategy: puts a pair of boards into a known state through labgrid's PowerProtocol and
the drills' BoardProtocol (of boards "a" and "b") and ClientProtocol only, so it runs on any
target that has those drivers, whatever the rig beneath them.

labgrid binds one strategy attribute per supplier; two drivers of the same protocol are told
apart by name: the strategy's bindings are `Driver.NamedBinding`s, and the environment file
names the supplier of each (`bindings: {power_a: a, power_b: b, board_a: a, board_b: b}`).

`paired` and `a_active` look at the boards every time they are asked for, even when the
strategy is in that state already: a drill changes the pair behind the strategy's back, and
asking for `a_active` again is how it gets a healthy pair back (booting only when a board
does not answer).
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import attr
from labgrid.driver import Driver
from labgrid.factory import target_factory
from labgrid.protocol import PowerProtocol
from labgrid.step import step
from labgrid.strategy import Strategy, StrategyError, never_retry

from firmware.roles import Role
from hil.lab.protocols import BoardProtocol, ClientProtocol
from hil.wait import wait_until

STATUS_PATH = "/api/v1/status"
HANDOVER_PATH = "/api/v1/pair/handover"
BOARDS = ("a", "b")
_SOURCE = os.path.realpath(__file__)
T = TypeVar("T")


class Status(enum.Enum):
    unknown = 0
    off = 1
    """Both boards without power."""
    booted = 2
    """Powered on from off, a then b; both answer on their API."""
    paired = 3
    """One active, one standby; every camera recording on the active and held on the
    standby, whose mirror is in sync and has fetched footage (the API's side of
    tests/test_mirror_rig.py's ready())."""
    a_active = 4
    """Paired with a active, and the client reaches a on the floating IP."""


@attr.frozen
class BoardView:
    """What the strategy reads from one board's status (attrs, not dataclasses: labgrid
    runs this file without a module of its own in sys.modules, which dataclasses need)."""

    board: str
    role: Role
    recording: bool
    """Every camera recording (false without cameras)."""
    holding: bool
    """Every camera held in memory, ready to take over (false without cameras)."""
    mirror_synced: bool
    mirrored: bool
    """The mirror has fetched footage from the peer since the board started."""

    @classmethod
    def from_status(cls, st: dict) -> BoardView:
        cams = st.get("cameras") or []
        mirror = st.get("mirror") or {}
        return cls(
            board=str(st["board"]),
            role=Role(st["role"]),
            recording=bool(cams) and all(c["recording"] for c in cams),
            holding=bool(cams) and all(c["holding"] for c in cams),
            mirror_synced=bool(mirror.get("synced")),
            mirrored=int(mirror.get("fetched_segments") or 0) > 0,
        )


@attr.frozen
class PairView:
    a: BoardView
    b: BoardView

    def board(self, name: str) -> BoardView:
        return self.a if name == "a" else self.b

    @property
    def active(self) -> str | None:
        """The single board that says it is active while the other says standby."""
        roles = (self.a.role, self.b.role)
        if roles == (Role.ACTIVE, Role.STANDBY):
            return "a"
        if roles == (Role.STANDBY, Role.ACTIVE):
            return "b"
        return None

    @property
    def paired(self) -> bool:
        active = self.active
        if active is None:
            return False
        standby = self.board("b" if active == "a" else "a")
        return (
            self.board(active).recording
            and standby.holding
            and standby.mirror_synced
            and standby.mirrored
        )

    def __str__(self) -> str:
        return "; ".join(
            f"{v.board}: {v.role} recording={v.recording} holding={v.holding} "
            f"mirror_synced={v.mirror_synced} mirrored={v.mirrored}"
            for v in (self.a, self.b)
        )


def _status(status: enum.Enum | str) -> Status:
    """A Status from its name or from a member of any Status class (this file may be loaded
    twice: by labgrid under its own name and by a drill as hil.lab.strategy)."""
    return Status[status.name if isinstance(status, enum.Enum) else status]


def _registered(cls: type[T]) -> type[T]:
    """Register once per process (labgrid's `imports:` runs this file again for every
    environment it loads; the later runs get the first class)."""
    known = target_factory.all_classes.get(cls.__name__)
    if known is not None and getattr(known, "_lab_source", None) == _SOURCE:
        return known
    cls._lab_source = _SOURCE  # type: ignore[attr-defined]
    return target_factory.reg_driver(cls)


@_registered
@attr.s(eq=False)
class PairStrategy(Strategy):
    """unknown -> off -> booted -> paired -> a_active; every wait has a deadline and fails
    naming what did not happen and what the boards said last."""

    bindings: ClassVar[dict[str, Any]] = {
        "power_a": Driver.NamedBinding(PowerProtocol),
        "power_b": Driver.NamedBinding(PowerProtocol),
        "board_a": Driver.NamedBinding(BoardProtocol),
        "board_b": Driver.NamedBinding(BoardProtocol),
        "client": ClientProtocol,
    }

    status = attr.ib(default=Status.unknown)
    pair_timeout = attr.ib(default=60.0, converter=float)
    """From both boards answering to paired (the standby's mirror needs a segment or two)."""
    handover_timeout = attr.ib(default=20.0, converter=float)
    """From the handover request to a active and reached on the floating IP."""

    # --- what the boards say ------------------------------------------------------------------

    def _power(self, board: str) -> PowerProtocol:
        drv = self.power_a if board == "a" else self.power_b  # type: ignore[attr-defined]
        self.target.activate(drv)
        return drv

    def _board(self, board: str) -> BoardProtocol:
        drv = self.board_a if board == "a" else self.board_b  # type: ignore[attr-defined]
        self.target.activate(drv)
        return drv

    def _client(self) -> ClientProtocol:
        self.target.activate(self.client)  # type: ignore[attr-defined]
        return self.client  # type: ignore[attr-defined]

    def view(self, board: str, timeout: float = 1.0) -> BoardView:
        """The board's status; OSError/ValueError when it does not answer sensibly."""
        return BoardView.from_status(
            json.loads(self._board(board).api(STATUS_PATH, timeout=timeout))
        )

    def pair_view(self) -> PairView:
        return PairView(self.view("a"), self.view("b"))

    def vip_board(self, timeout: float = 0.5) -> str:
        """The board that answers the client on the floating IP."""
        return str(json.loads(self._client().vip(STATUS_PATH, timeout))["board"])

    def _wait(self, cond: Callable[[], object], timeout: float, what: str) -> None:
        last: list[str] = []

        def probe() -> object:
            try:
                last[:] = [str(self.pair_view())]
            except (OSError, ValueError, KeyError) as e:
                last[:] = [f"no status: {e}"]
            return cond()

        try:
            wait_until(probe, timeout, what, every=0.2)
        except AssertionError as e:
            raise StrategyError(f"{e}; the boards said: {last[0] if last else 'nothing'}") from e

    def _answering(self) -> bool:
        try:
            self.pair_view()
        except (OSError, ValueError, KeyError):
            return False
        return True

    # --- transitions --------------------------------------------------------------------------

    @never_retry
    @step(args=["status"])
    def transition(self, status: enum.Enum | str, *, step: Any) -> None:
        status = _status(status)
        if status is Status.unknown:
            raise StrategyError(f"can not transition to {status}")
        if status is Status.off:
            for board in BOARDS:
                self._power(board).off()
        elif status is Status.booted:
            self.transition(Status.off)
            for board in BOARDS:
                self._power(board).on()
        elif status is Status.paired:
            if not self._answering():
                self.transition(Status.booted)
            self._wait(lambda: self.pair_view().paired, self.pair_timeout,
                       "one board active and recording every camera, the other standby "
                       "holding every camera, its mirror in sync with footage fetched")  # fmt: skip
        elif status is Status.a_active:
            self.transition(Status.paired)
            if self.pair_view().active == "b":
                self._board("b").api(HANDOVER_PATH, method="POST", timeout=5.0)
            self._wait(lambda: self.pair_view().active == "a", self.handover_timeout,
                       "a active and b standby after the planned handover")  # fmt: skip
            self._wait(lambda: self.vip_board() == "a", self.handover_timeout,
                       "the client reaching a on the floating IP")  # fmt: skip
            self._wait(
                lambda: self.pair_view().paired,
                self.pair_timeout,
                "b holding every camera with its mirror in sync after the handover",
            )
        else:
            raise StrategyError(f"no transition found from {self.status} to {status}")
        self.status = status

    @never_retry
    @step(args=["status"])
    def force(self, status: enum.Enum | str, *, step: Any) -> None:
        """Take the strategy's word for the state without touching the boards."""
        self.status = _status(status)
