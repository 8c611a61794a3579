"""VIP takeover after a power cut of the active board: nvr against keepalived (VRRPv3).

Both run in the same twin-board rig, in the same run, at the same advert interval and the same
priorities (a=150, b=100, no preemption). Each cut kills the active board's process group and
takes its links down; the clock stops when a client in the client namespace gets an HTTP answer
from the standby through the floating IP (nvr: its API; keepalived: a static HTTP server on each
board serving the same path). The restarted board comes back as standby, so cuts alternate
between a->b and b->a, the same for both.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from hil.twin import API_PORT, VIP_CIDR, TwinBoards
from hil.wait import wait_until

PRIORITY = {"a": 150, "b": 100}
PROBE_TIMEOUT_S = 0.02
"""Each request to the VIP (connect and answer) is given up after this long and retried: the
resolution of the measurement. A longer limit measures something else: a request that got
stuck on the dying board right after the cut waits out its whole timeout."""


def other(host: str) -> str:
    return "b" if host == "a" else "a"


class Nvr:
    name = "nvr"

    def start(self, tb: TwinBoards, host: str) -> None:
        tb.start(host, PRIORITY[host])

    def is_standby(self, tb: TwinBoards, host: str) -> bool:
        """Standby, hearing the active board, and healthy: a board still connecting to its
        camera has a lower effective priority and so a longer skew, which would be its own
        (start-up) measurement, not the takeover's."""
        st = tb.status(host)
        peer = st["peer"]
        return (
            st["role"] == "standby"
            and not st["failover"]["health"]
            and peer is not None
            and peer["role"] == "active"
        )


class Keepalived:
    name = "keepalived"

    def start(self, tb: TwinBoards, host: str) -> None:
        d = tb.workdir / f"ka-{host}"
        (d / "www" / "api" / "v1").mkdir(parents=True, exist_ok=True)
        (d / "www" / "api" / "v1" / "status").write_text(json.dumps({"board": host}))
        notify = d / "notify.sh"
        notify.write_text(f'#!/bin/sh\necho "$3" > {d}/state\n')
        notify.chmod(0o755)
        # A power cut leaves pid files behind; keepalived refuses to start if a recycled pid
        # in one of them belongs to a live process.
        for stale in ("state", "k.pid", "v.pid", "c.pid"):
            (d / stale).unlink(missing_ok=True)
        (d / "keepalived.conf").write_text(
            "global_defs {\n"
            f"  router_id board_{host}\n"
            "  vrrp_version 3\n"
            "  script_user root\n"
            "  enable_script_security\n"
            "}\n"
            "vrrp_instance pair {\n"
            "  state BACKUP\n"
            "  nopreempt\n"
            "  interface eth0\n"
            "  virtual_router_id 51\n"
            f"  priority {PRIORITY[host]}\n"
            f"  advert_int {tb.advert_interval_ms / 1000}\n"
            f"  notify {notify}\n"
            f"  virtual_ipaddress {{\n    {VIP_CIDR} dev eth0\n  }}\n"
            "}\n"
        )
        log = open(d / "keepalived.log", "ab")  # noqa: SIM115 - the process owns it
        tb.rig.start(host, ["keepalived", "-n", "-l", "-G", "-P", "-f", str(d / "keepalived.conf"),
                            "-p", str(d / "k.pid"), "-r", str(d / "v.pid"),
                            "-c", str(d / "c.pid")], stdout=log, stderr=log)  # fmt: skip
        tb.rig.start(host, [sys.executable, "-m", "http.server", str(API_PORT), "--directory",
                            str(d / "www")], stdout=log, stderr=log)  # fmt: skip

    def state(self, tb: TwinBoards, host: str) -> str:
        path = tb.workdir / f"ka-{host}" / "state"
        return path.read_text().strip() if path.exists() else ""

    def is_standby(self, tb: TwinBoards, host: str) -> bool:
        return self.state(tb, host) == "BACKUP"


def measure(
    impl: Nvr | Keepalived, cuts: int, workdir: Path, interval_ms: int, seed: int
) -> list[float]:
    times: list[float] = []
    with TwinBoards(workdir / impl.name, camera=True, advert_interval_ms=interval_ms) as tb:
        impl.start(tb, "a")
        wait_until(lambda: tb.vip_holders() == ["a"], 60, "a holding the VIP")
        impl.start(tb, "b")
        wait_until(lambda: impl.is_standby(tb, "b"), 60, "b standby")
        active = "a"
        tb.wait_vip(active, 30, PROBE_TIMEOUT_S)
        rng = random.Random(seed)
        for i in range(cuts):
            standby = other(active)
            # Cut at a random phase of the advert interval, the same sequence for both.
            time.sleep(rng.uniform(0.5, 1.5))
            t0 = time.monotonic()
            tb.power_cut(active)
            t1 = tb.wait_vip(standby, 10, PROBE_TIMEOUT_S)
            times.append(t1 - t0)
            print(f"{impl.name} cut {i + 1}: {active}->{standby} {t1 - t0:.3f} s", flush=True)
            tb.power_back(active)
            impl.start(tb, active)
            wait_until(lambda h=active: impl.is_standby(tb, h), 60, f"{active} back as standby")
            active = standby
            tb.wait_vip(active, 30, PROBE_TIMEOUT_S)
    return times


def summary(times: list[float]) -> dict:
    return {
        "cuts": len(times),
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
        "min_s": round(min(times), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cuts", type=int, default=10)
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nvr-bench-failover"))
    args = ap.parse_args()
    results = {}
    for impl in (Nvr(), Keepalived()):
        times = measure(impl, args.cuts, args.workdir, args.interval_ms, args.seed)
        results[impl.name] = summary(times)
    ratio = results["nvr"]["median_s"] / results["keepalived"]["median_s"]
    print(json.dumps({**results, "median_ratio": round(ratio, 2)}, indent=1))
    print("\n| implementation | cuts | median s | max s | min s | median ratio to keepalived |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        rr = 1.0 if name == "keepalived" else ratio
        print(f"| {name} | {r['cuts']} | {r['median_s']:.3f} | {r['max_s']:.3f} | "
              f"{r['min_s']:.3f} | {rr:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
