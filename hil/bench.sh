#!/usr/bin/env bash
# Benchmarks (slow; not part of the default suite). Usage: bash hil/bench.sh recorder|failover|mirror|start|archive|rtsp-read|boot [ARGS...]
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$top/hil/bootstrap.sh"
cd "$top"
what="${1:-recorder}"
shift || true
case "$what" in
  recorder) exec .venv/bin/python -m hil.bench_recorder "$@" ;;
  failover) exec .venv/bin/python -m hil.bench_failover "$@" ;;
  mirror) exec .venv/bin/python -m hil.bench_mirror "$@" ;;
  start) exec .venv/bin/python -m hil.bench_start "$@" ;;
  archive) exec .venv/bin/python -m hil.bench_archive "$@" ;;
  rtsp-read) exec .venv/bin/python -m hil.bench_rtsp_read "$@" ;;
  boot) bash "$top/image/build.sh" tools; exec .venv/bin/python -m hil.bench_boot "$@" ;;
  *) echo "unknown benchmark: $what (known: recorder, failover, mirror, start, archive, rtsp-read, boot)" >&2; exit 2 ;;
esac
