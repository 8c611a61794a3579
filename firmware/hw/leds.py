"""What the board's LEDs show, from its status: pure, so it is tested without a board.

active: this board records for the pair (the active board, or a recorder on its own).
alert: any alert is raised (the console's `status` and the API say which)."""

from __future__ import annotations

from dataclasses import dataclass

from firmware.roles import Role
from firmware.status import BoardStatus

RECORDING_ROLES = frozenset({Role.ACTIVE, Role.SINGLE, Role.UNPAIRED})


@dataclass(frozen=True)
class LedWish:
    active: bool
    alert: bool


def wanted(status: BoardStatus) -> LedWish:
    return LedWish(active=status.role in RECORDING_ROLES, alert=bool(status.alerts))
