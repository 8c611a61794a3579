#!/usr/bin/env bash
# Builds the flashable image, the signed update bundle and their checksums into image/out/
# (as root, on Debian 12). Installs the build tools it needs first. Arguments go to build.py:
#   bash image/build.sh                     development build (development keys, version -dev)
#   bash image/build.sh image --release --keys DIR --version 1.2.0
#   bash image/build.sh tools               only install the build tools (and QEMU, for tests)
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$top/hil/bootstrap.sh"
tools=(mmdebstrap genimage rauc squashfs-tools dosfstools mtools grub-efi-amd64-bin grub-common
       e2fsprogs openssl git)
[ "${1:-}" = tools ] && tools+=(qemu-system-x86 qemu-utils ovmf)
bash "$top/hil/apt-ensure.sh" "${tools[@]}"
[ "${1:-}" = tools ] && exit 0
[ $# -eq 0 ] && set -- image
exec /usr/bin/python3 "$top/image/build.py" "$@"
