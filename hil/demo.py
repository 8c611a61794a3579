"""The main job on its simulated default: the twin pair in network namespaces, one camera.

Brings up the rig (boards a and b, LAN switch, sync link, camera, client), starts `nvr run
--config` on both boards, shows which board is active and what a client on the LAN gets from the
floating IP, then keeps printing the pair's state until Ctrl-C (or --seconds). With
--failover-after N it cuts the active board's power after N seconds, shows the takeover as the
client saw it, and boots the board again. Everything it made is removed on the way out; the
recordings stay in --workdir.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from hil.rig import VIRTUAL_IP
from hil.twin import API_PORT, TwinBoards
from hil.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
PRIORITY = {"a": 150, "b": 100}


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


SIM_HARDWARE = {
    "ups": {"backend": "sim"},
    "panel": {"backend": "sim", "columns": 20, "rows": 4},
}
"""Each board's UPS is a Megatec emulator on a pty, read by the real serial driver."""


def line(tb: TwinBoards) -> str:
    parts = []
    for host in ("a", "b"):
        try:
            st = tb.status(host, timeout=1.0)
        except (OSError, ValueError):
            parts.append(f"{host}: down")
            continue
        cams = st["cameras"]
        if cams and all(c["recording"] for c in cams):
            rec = "recording"
        elif cams and all(c["holding"] for c in cams):
            lag = st["mirror"]["own_lag_seconds"]
            rec = f"holding the cameras in memory, mirror {lag:.1f} s behind"
        else:
            rec = "not recording"
        vip = " +VIP" if st["failover"]["vip_held"] else ""
        ups = ((st.get("hardware") or {}).get("ups") or {}).get("reading")
        power = "" if not ups else ", on battery" if ups["on_battery"] else ", UPS on mains"
        parts.append(f"{host}: {st['role']}{vip} epoch {st['epoch']}, {rec}{power}")
    try:
        client = f"client via {VIRTUAL_IP} -> board {tb.via_vip(0.5)['board']}"
    except (OSError, ValueError):
        client = f"client via {VIRTUAL_IP} -> no answer"
    return " | ".join([*parts, client])


def failover(tb: TwinBoards) -> None:
    active = tb.active()
    if active is None:
        say("no single active board right now; skipping the power cut")
        return
    standby = "b" if active == "a" else "a"
    say(f"cutting the power of the active board {active} ...")
    t0 = time.monotonic()
    tb.power_cut(active)
    t1 = tb.wait_vip(standby, 30)
    say(f"the client reached board {standby} on {VIRTUAL_IP} {t1 - t0:.3f} s after "
        "the power cut")  # fmt: skip
    say(f"booting board {active} again; it comes back as standby")
    tb.power_back(active)
    tb.start(active, PRIORITY[active], SIM_HARDWARE)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", type=Path, default=ROOT / "demo-data")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = Ctrl-C)")
    ap.add_argument(
        "--failover-after",
        type=float,
        default=0,
        help="cut the active board's power after this many seconds (0 = never)",
    )
    args = ap.parse_args()
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    workdir = args.workdir.resolve()
    say("bringing up the twin-board rig (network namespaces) and the simulated camera ...")
    with TwinBoards(workdir, segment_seconds=4) as tb:
        for host in ("a", "b"):
            tb.start(host, PRIORITY[host], SIM_HARDWARE)
        active = wait_until(tb.active, 60, "an active board")
        cli = tb.rig.ns("cli")
        say(f"board {active} is ACTIVE and holds the floating IP {VIRTUAL_IP}; the other board is "
            "standby")  # fmt: skip
        say(f"camera: {tb.camera.url('cam1') if tb.camera else '-'} in namespace "
            f"{tb.rig.ns('cam')}")  # fmt: skip
        say(f"ask the pair as a LAN client would: ip netns exec {cli} {ROOT}/.venv/bin/nvr status "
            f"--url http://{VIRTUAL_IP}:{API_PORT}")  # fmt: skip
        say(f"configs, logs and recordings: {workdir}/a and {workdir}/b")
        say("stop with Ctrl-C" + (f" (or wait {args.seconds:g} s)" if args.seconds else ""))
        started = time.monotonic()
        cut_done = False
        last = 0.0
        while not stop:
            now = time.monotonic() - started
            if args.seconds and now >= args.seconds:
                break
            if args.failover_after and not cut_done and now >= args.failover_after:
                cut_done = True
                failover(tb)
            if now - last >= 2.0:
                last = now
                say(line(tb))
            time.sleep(0.1)
        say("stopping both boards (each commits its open segments) ...")
        for host in ("a", "b"):
            if tb.rig.procs.get(host):
                tb.stop(host)
        counts = {h: len(list((tb.data_dir(h) / "segments").rglob("*.mp4"))) for h in ("a", "b")}
    say(f"segments recorded: board a {counts['a']}, board b {counts['b']}; list them with "
        f"{ROOT}/.venv/bin/nvr catalog --data {workdir}/a/data")  # fmt: skip
    return 0 if sum(counts.values()) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
