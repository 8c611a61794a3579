#!/usr/bin/env bash
# Builds the flashable image, the signed update bundle and their checksums of one board into
# image/out/BOARD/ (as root, on Debian 12 amd64). Installs the build tools it needs first.
# Arguments go to build.py (the command defaults to image):
#   bash image/build.sh                          development build of qemu-x86_64
#   bash image/build.sh --board qemu-arm64       the same for the arm64 board (image/boards/)
#   bash image/build.sh image --board B --release --keys DIR --version 1.2.0
#   bash image/build.sh tools                    only install the build tools (and QEMU, for tests)
# Another architecture's root is built under qemu-user (binfmt): mmdebstrap runs its programs
# through qemu-user-static.
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$top/hil/bootstrap.sh"
tools=(mmdebstrap genimage rauc squashfs-tools dosfstools mtools grub-common e2fsprogs openssl
       git qemu-user-static binfmt-support arch-test libengine-pkcs11-openssl)
[ "${1:-}" = tools ] && tools+=(qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64)
bash "$top/hil/apt-ensure.sh" "${tools[@]}"
[ "${1:-}" = tools ] && exit 0
case "${1:-}" in
  image | bundle | keys) ;;
  *) set -- image "$@" ;;
esac
exec /usr/bin/python3 "$top/image/build.py" "$@"
