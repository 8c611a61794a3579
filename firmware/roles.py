"""The board's role in the pair and its recorder's mode: typed once, compared everywhere."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    INIT = "init"
    STANDBY = "standby"
    ACTIVE = "active"
    SINGLE = "single"
    """No [pair] section: a recorder on its own."""
    UNPAIRED = "unpaired"
    """A [pair] section but no pair key yet: a recorder on its own until paired."""


class RecorderMode(StrEnum):
    RECORD = "record"
    """Segments to disk."""
    RING = "ring"
    """The cameras held in memory only, ready to take over."""
