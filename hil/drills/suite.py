"""A drill session on one labgrid environment: the target, its strategy, the thresholds, and
the reports written as each drill ends (so a run cut short still leaves what it measured)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labgrid.strategy import StrategyError

from hil.drills import report as reports
from hil.drills.model import DrillReport
from hil.drills.run import BOARDS, Drill, pair_view, run_drill
from hil.drills.run import whole as _whole
from hil.drills.thresholds import judge, load_thresholds
from hil.lab.protocols import BoardProtocol
from hil.wait import holds, wait_until

TARGET = "pair"
STEADY_S = 3.0
"""How long the pair must stay as it is before a drill starts."""


def _active(boards: dict) -> str | None:
    """The board active while the other is standby (no mirror or camera condition)."""
    view = pair_view(boards)
    return view.active if view is not None else None


class RigBroken(Exception):
    """The rig could not put the pair into the state a drill starts from."""


class Suite:
    def __init__(self, env: Any, out: Path, thresholds: Path | None = None) -> None:
        self.env = env
        self.name = Path(env.config_file).stem
        self.out = out
        self.target = env.get_target(TARGET)
        self.strategy = self.target.get_strategy()
        self.boards = {b: self.target.get_driver(BoardProtocol, name=b) for b in BOARDS}
        self.thresholds = load_thresholds(thresholds) if thresholds else load_thresholds()
        self.reports: list[DrillReport] = []

    def run(self, drill: Drill) -> DrillReport:
        report = run_drill(self.target, drill, self.name, self.thresholds, judge, self._to_a_active)
        self.reports.append(report)
        reports.write(report, self.out)
        reports.write_index(reports.load_dir(self.out), self.out)
        return report

    def _to_a_active(self, first_start: bool = False) -> None:
        """The known state every drill starts from: a active, b its synced standby, and the
        pair steady (a heal's fault hold-down can still move it). first_start: from both
        boards off (see Drill.first_start)."""
        if first_start:
            self.strategy.transition("off")
        why: object = None
        for _ in range(3):
            try:
                self.strategy.transition("a_active")
                # Whole once, then steady in its roles (a slow board's mirror may fall a
                # segment behind and catch up again meanwhile: that is no move).
                wait_until(lambda: _whole(self.boards) == "a", 60, "a active, b synced")
                holds(lambda: _active(self.boards) == "a", STEADY_S, "a active and b standby")
                return
            except StrategyError as e:
                why = e.__cause__ or e
                self.strategy.broken = None  # the next try starts from both boards off
                self.strategy.transition("off")
            except AssertionError as e:  # not steady yet
                why = e
        raise RigBroken(f"the pair did not come to a active and steady: {why}")

    def close(self) -> None:
        self.target.cleanup()
