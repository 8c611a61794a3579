"""The drill suite: one test per drill, each writing its report; report.md at the end.

bash hil/drills.sh [--env netns|qemu|FILE] [--only a,b] [--out DIR]
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.drills.catalogue import BY_NAME
from hil.drills.model import DrillReport, Outcome
from hil.drills.suite import Suite


@pytest.fixture(scope="session")
def suite(env: Any, drill_out: Path) -> Iterator[Suite]:
    s = Suite(env, drill_out)
    try:
        yield s
    finally:
        s.close()


def test_drill(suite: Suite, drill_name: str) -> None:
    report: DrillReport = suite.run(BY_NAME[drill_name])
    why = "; ".join(report.failures)
    if report.outcome is Outcome.NOT_POSSIBLE:
        pytest.skip(f"not possible on {report.env}: {why}")
    assert report.outcome is Outcome.PASSED, f"{report.outcome.value}: {why}"
