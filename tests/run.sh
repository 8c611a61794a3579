#!/usr/bin/env bash
# Command two: set up (Debian packages + .venv), lint, and run the default test suite.
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$top/hil/bootstrap.sh"
cd "$top"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Tests with a command of their own (the QEMU image test and its rollback drill:
# bash image/test.sh; the drill rig's driver checks: bash hil/drills.sh --checks; the long
# variants of rig tests: bash tests/run.sh -m long, a later -m wins) are deselected.
# The slowest tests are listed at the end: the suite is kept under 20 minutes.
exec .venv/bin/python -m pytest -p no:cacheprovider -m "not drill and not image and not hil and not long" \
    --durations=30 "$@"
