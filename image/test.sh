#!/usr/bin/env bash
# The image test alone: installs the build tools and QEMU, builds an image and two bundles,
# boots the image under QEMU and updates it over the serial console, then drills a rollback
# from an update that never becomes healthy (tests/test_image.py); then the drill rig's QEMU
# drivers on two boards from image/out (tests/test_lab_qemu.py: build image/out first).
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$top/image/build.sh" tools
cd "$top"
exec .venv/bin/python -m pytest -p no:cacheprovider -v tests/test_image.py tests/test_lab_qemu.py "$@"
