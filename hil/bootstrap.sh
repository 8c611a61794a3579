#!/usr/bin/env bash
# Installs everything the firmware, the rig and the tests need on a fresh Debian 12 (as root):
# Debian packages, then a virtual environment in .venv with the project installed in it.
# Idempotent: a second run only checks.
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$top"

apt_packages=(
  python3 python3-venv python3-gi
  gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  ffmpeg iproute2 iputils-ping util-linux procps sqlite3 ca-certificates
  keepalived nftables socat
  nut-server nut-client smartmontools btrfs-progs e2fsprogs libudev1
  prometheus
  rauc squashfs-tools openssl softhsm2 libengine-pkcs11-openssl
)
bash "$top/hil/apt-ensure.sh" "${apt_packages[@]}"
# rauc, squashfs-tools, softhsm2 and the pkcs11 engine: the bundle signing tests
# (tests/test_image_build.py, tests/test_release_pkcs11.py), without building an image.
# The prometheus package is here for promtool (tests/test_prometheus_rules.py); the package
# enables its server and may start it. Nothing here needs one running: stopped and disabled.
if [ -d /run/systemd/system ]; then
  if systemctl is-enabled --quiet prometheus 2>/dev/null \
    || systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
else  # no systemd running (a container): the init script may have started it
  if [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
  if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet prometheus 2>/dev/null
  then
    systemctl disable prometheus >/dev/null 2>&1 || true
  fi
fi

# Debian's python3: GStreamer's Python bindings (python3-gi) come from Debian, so the
# environment sees system site-packages.
py=/usr/bin/python3
stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv --system-site-packages .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
