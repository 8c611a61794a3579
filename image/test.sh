#!/usr/bin/env bash
# The image test of one board alone: installs the build tools and QEMU, builds the board's
# image and its bundles (the update, one signed by another key, one made for another board),
# boots the image under QEMU and updates it over the serial console, then drills a rollback
# from an update that never becomes healthy (tests/test_image.py); then, for qemu-x86_64, the
# drill rig's QEMU drivers on two boards from image/out/qemu-x86_64 (tests/test_lab_qemu.py:
# build it first).
#   bash image/test.sh [--board NAME] [PYTEST ARGS...]     NAME: image/boards/NAME.toml
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
board=qemu-x86_64
if [ "${1:-}" = --board ]; then
  [ $# -ge 2 ] || { echo "usage: image/test.sh [--board NAME] [PYTEST ARGS...]" >&2; exit 2; }
  board="$2"
  shift 2
fi
[ -f "$top/image/boards/$board.toml" ] || { echo "no board profile image/boards/$board.toml" >&2; exit 2; }
bash "$top/image/build.sh" tools
cd "$top"
tests=(tests/test_image.py)
[ "$board" = qemu-x86_64 ] && tests+=(tests/test_lab_qemu.py)  # the rig's board
export NVR_BOARD="$board"
exec .venv/bin/python -m pytest -p no:cacheprovider -v "${tests[@]}" "$@"
