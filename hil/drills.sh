#!/usr/bin/env bash
# The failover drill suite on labgrid (docs/DRILLS.md).
#   bash hil/drills.sh [--env netns|qemu|FILE] [--only a,b] [--out DIR] [PYTEST ARGS...]
#   bash hil/drills.sh --checks    the rig drivers' own checks (tests marked hil)
# netns: the twin pair in network namespaces (root); qemu: two QEMU boards from the built image
# (builds it first when image/out/qemu-x86_64/disk.img is missing); FILE: a labgrid
# environment of your own, e.g. a copy of hil/env/lab-example.yaml for a real pair. Writes
# DIR/<drill>.json, DIR/<drill>.png and DIR/report.md (default DIR: drill-report/<env>).
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env=netns
only=""
out=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) env="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --checks)
      bash "$top/hil/bootstrap.sh"
      cd "$top"
      exec .venv/bin/python -m pytest -p no:cacheprovider -m hil tests/ ;;
    -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done
case "$env" in
  netns|qemu) file="$top/hil/env/$env.yaml" ;;
  *) file="$(realpath "$env")" ;;
esac
# A drill's own deadlines bound it; pytest's per-test timeout only catches a hung rig (a QEMU
# board's update drill builds a bundle and boots twice under TCG).
timeout=900
[ "$env" = netns ] || timeout=3600
[ -f "$file" ] || { echo "no labgrid environment file: $file" >&2; exit 2; }
out="$(realpath -m "${out:-drill-report/$(basename "$file" .yaml)}")"
if [ "$env" = qemu ]; then
  bash "$top/image/build.sh" tools
  img="$top/image/out/qemu-x86_64"  # the rig's board (hil/env/qemu.yaml)
  [ -f "$img/disk.img" ] || bash "$top/image/build.sh" --board qemu-x86_64
  built="$(sed -n 's/.*"git_revision": *"\([0-9a-f]*\).*/\1/p' "$img/build.json")"
  head="$(git -C "$top" rev-parse HEAD 2>/dev/null || true)"
  case "$head" in "$built"*) ;; *)
    echo "note: image/out/qemu-x86_64 was built from ${built:-?}, this checkout is ${head:-?}:" \
         "rebuild it (bash image/build.sh) to drill this firmware" >&2 ;; esac
else
  bash "$top/hil/bootstrap.sh"
fi
cd "$top"
exec .venv/bin/python -m pytest -p no:cacheprovider -rs -v --timeout "$timeout" hil/drills/test_drills.py \
  --lg-env "$file" --drill-out "$out" ${only:+--drills "$only"} "${extra[@]}"
