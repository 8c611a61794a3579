"""pytest options of the drill suite (run by hil/drills.sh with labgrid's --lg-env)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("drills")
    group.addoption("--drills", default="", help="comma-separated drill names (default: all)")
    group.addoption("--drill-out", default="drill-report", help="where the reports go")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "drill_name" in metafunc.fixturenames:
        from hil.drills.catalogue import BY_NAME, DRILLS

        only = [n for n in metafunc.config.getoption("drills").split(",") if n]
        unknown = sorted(set(only) - set(BY_NAME))
        if unknown:
            raise pytest.UsageError(f"no such drill: {', '.join(unknown)}; known: "
                                    f"{', '.join(BY_NAME)}")  # fmt: skip
        names = only or [d.name for d in DRILLS]
        metafunc.parametrize("drill_name", names, ids=names)


@pytest.fixture(scope="session")
def drill_out(request: pytest.FixtureRequest) -> Path:
    out = Path(request.config.getoption("drill_out"))
    out.mkdir(parents=True, exist_ok=True)
    return out
