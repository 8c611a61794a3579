"""A front panel in memory: the sim board shows it as text, tests press its buttons."""

from __future__ import annotations

import threading

from hal.errors import Unavailable


class SimPanel:
    def __init__(self, cols: int = 20, rows: int = 4) -> None:
        if cols < 1 or rows < 1:
            raise ValueError("a panel needs at least one row and column")
        self._cols, self._rows = cols, rows
        self._lines = [" " * cols] * rows
        self._pressed: list[str] = []
        self._lock = threading.Lock()  # press() comes from another thread (web UI, tests)
        self.closed = False

    @property
    def size(self) -> tuple[int, int]:
        return self._cols, self._rows

    @property
    def lines(self) -> list[str]:
        """What the screen shows, each row padded to the width."""
        return list(self._lines)

    def _check_open(self) -> None:
        if self.closed:
            raise Unavailable("simulated panel closed")

    def show(self, lines: list[str]) -> None:
        self._check_open()
        rows = [line[: self._cols].ljust(self._cols) for line in list(lines)[: self._rows]]
        self._lines = rows + [" " * self._cols] * (self._rows - len(rows))

    def render(self) -> str:
        """The screen in a frame, for logs and the sim board's console."""
        edge = "+" + "-" * self._cols + "+"
        return "\n".join([edge, *(f"|{line}|" for line in self._lines), edge])

    def press(self, name: str) -> None:
        with self._lock:
            self._pressed.append(name)

    def buttons(self) -> list[str]:
        self._check_open()
        with self._lock:
            out, self._pressed = self._pressed, []
        return out

    def close(self) -> None:
        self.closed = True
