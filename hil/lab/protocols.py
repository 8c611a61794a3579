"""What a drill may observe of a pair and do to it, as labgrid protocols.

Every board-bound protocol is implemented once per board; the drivers are named after the
board ("a", "b") in the environment file, so a drill asks for
`target.get_driver(CableProtocol, name="a")`. Power uses labgrid's own PowerProtocol (named the
same way): `off()` is a power cut (everything on the board dies at once), `on()` powers it up
and returns once its firmware answers on its own API.

A target without a driver for a protocol cannot have that fault: the drill says so in its
report instead of being skipped.
"""

from __future__ import annotations

import abc
from enum import StrEnum


class Link(StrEnum):
    """A board's cables: the LAN (cameras, clients, VIP) and the direct sync link."""

    LAN = "lan"
    SYNC = "sync"


class BoardProtocol(abc.ABC):
    """A board's own API, reached on a path that does not depend on its LAN or sync cable
    (loopback in its namespace, a management link, a console), so a drill can read a board
    whose cables it pulled."""

    @abc.abstractmethod
    def api(self, path: str, method: str = "GET", timeout: float = 2.0) -> bytes:
        """The body of an API request with the pair's token sent; OSError when the board does
        not answer or answers with an HTTP error."""

    @abc.abstractmethod
    def audit_log(self) -> list[dict]:
        """The board's audit log records (oldest first); [] when it has none yet."""


class ClientProtocol(abc.ABC):
    """A client on the LAN, as a VMS workstation sees the pair: only the floating IP."""

    @abc.abstractmethod
    def vip(self, path: str, timeout: float = 0.5) -> bytes:
        """GET path from the floating IP; OSError when nothing answers in time."""


class CableProtocol(abc.ABC):
    """Pull and plug a board's cables (both ends go dark, as a pulled plug does)."""

    @abc.abstractmethod
    def cable(self, link: Link, connected: bool) -> None: ...


class HeartbeatProtocol(abc.ABC):
    """Silence the pair's adverts on one path of a board without pulling the cable (a switch
    that drops multicast, a firewall rule); the serial cross-link is a path of its own."""

    @abc.abstractmethod
    def block_adverts(self, link: Link, blocked: bool) -> None: ...

    @abc.abstractmethod
    def has_serial_crosslink(self) -> bool:
        """True when the boards also exchange adverts over a serial cable."""


class PartitionProtocol(abc.ABC):
    """No path at all between the two boards while each still reaches the cameras and the
    clients (the split brain a partition makes)."""

    @abc.abstractmethod
    def partition(self, split: bool) -> None: ...


class CameraProtocol(abc.ABC):
    """The cameras the pair records, with what the drills do to them. On the camera simulator
    every frame carries its number, so frames lost or duplicated are counted exactly."""

    @abc.abstractmethod
    def cameras(self) -> list[str]: ...

    @abc.abstractmethod
    def frame_clock(self, camera: str) -> int:
        """The number of the frame the camera sends now."""

    @abc.abstractmethod
    def reboot(self, down_seconds: float) -> None:
        """The camera goes away for down_seconds and comes back (its numbering goes on)."""

    @abc.abstractmethod
    def jump(self, camera: str, seconds: float) -> None:
        """The camera's own clock (its stream timestamps) jumps by seconds."""

    @abc.abstractmethod
    def cut_off(self, board: str, cut: bool) -> None:
        """The path between one board and the cameras is lost (or back); the other board
        and the clients still reach them."""


class UpsProtocol(abc.ABC):
    """The UPS a board is powered from (NUT/Megatec on a serial line, or its emulator)."""

    @abc.abstractmethod
    def mains(self, on: bool) -> None: ...

    @abc.abstractmethod
    def battery_low(self, low: bool) -> None: ...


class DiskFaultProtocol(abc.ABC):
    """The board's data disk: pulled, or filled by something else, and healed again."""

    @abc.abstractmethod
    def pull(self) -> None: ...

    @abc.abstractmethod
    def fill(self) -> None: ...

    @abc.abstractmethod
    def heal(self) -> None:
        """Undo pull or fill; the board may need its power cycled to take the disk back."""


class ClockProtocol(abc.ABC):
    """The board's wall clock, stepped as a bad NTP answer or an RTC fault would."""

    @abc.abstractmethod
    def step(self, seconds: float) -> None: ...


class HangProtocol(abc.ABC):
    """The firmware stops making progress without exiting (a deadlock); the service manager's
    watchdog is expected to restart it."""

    @abc.abstractmethod
    def hang(self) -> None: ...


class UpdateProtocol(abc.ABC):
    """Install a signed bundle into the other slot, boot it, and see it rolled back when it
    fails its health check."""

    @abc.abstractmethod
    def update_and_fail(self) -> str:
        """Boot a bundle that fails its health check; return the slot booted afterwards."""
