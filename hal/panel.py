"""Front panel: a small text display and a few buttons."""

from __future__ import annotations

from typing import Protocol


class Panel(Protocol):
    """Raises hal.errors; a panel that is not there raises Unavailable on open."""

    @property
    def size(self) -> tuple[int, int]:
        """(columns, rows) of text."""
        ...

    def show(self, lines: list[str]) -> None:
        """Replace the screen: one string per row, cut or padded to the width."""
        ...

    def buttons(self) -> list[str]:
        """Names of the buttons pressed since the last call (e.g. "up", "down", "ok")."""
        ...

    def close(self) -> None: ...
