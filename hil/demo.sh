#!/usr/bin/env bash
# Command one: set up (Debian packages + .venv) and run the firmware on its simulated default.
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$top/hil/bootstrap.sh"
cd "$top"
exec .venv/bin/python -m hil.demo "$@"
