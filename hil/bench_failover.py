"""Failover benchmark: takeover after a power cut against keepalived (VRRPv3), and false
takeovers when nothing failed (sync-cable pulls, a loaded soak with a jittery LAN).

Three phases, each in its own twin-board rig, all at the same advert interval and priorities
(a=150, b=100, no preemption):

1. cuts: an nvr pair and a keepalived pair run side by side (two rigs) and take turns, cut by
   cut, so load drift on the machine hits both alike. Each cut kills the active board's
   process group and then takes its links down, sync first (`PairRig.power_cut`); the clock
   starts at the kill and stops when a client in the client namespace gets an HTTP answer
   from the standby through the floating IP (nvr: its API; keepalived: a static HTTP server
   on each board serving the same path), probed back to back with a short limit per request.
2. pulls: with the nvr pair steady, the sync cable is pulled (alternately at the active and
   the standby end), held out, plugged back, and the next pull waits until both boards hear
   each other on sync again. Any role change, epoch rise or moment the VIP is anywhere but on
   the active board counts against it. keepalived is not run here: with a unicast or
   multicast peer on the LAN it never uses the sync link, so there is nothing to compare.
3. soak: the nvr pair records 32 cameras (the CPU loaded as in the mirror benchmark) with
   netem on both boards' LAN port (20 ms ± 10 ms; `--no-netem` where the kernel lacks it),
   watched for false takeovers the same way; the machine's load is sampled alongside.

    python -m hil.bench_failover [--cuts 20] [--pulls 20] [--soak-seconds 600]
                                 [--only cuts,pulls,soak] [--json FILE] [--no-netem]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netns import popns, pushns

from hil.rig import PairRig
from hil.twin import API_PORT, BOARDS, VIP_CIDR, TwinBoards
from hil.wait import wait_until

PHASES = ("cuts", "pulls", "soak")
PRIORITY = {"a": 150, "b": 100}
PROBE_TIMEOUT_S = 0.02
"""Each request to the VIP (connect and answer) is given up after this long and retried: the
resolution of the measurement. A longer limit measures something else: a request that got
stuck on the dying board right after the cut waits out its whole timeout."""
SAMPLE_TIMEOUT_S = 0.5
"""Limit for one status request while watching: a board too busy to answer within it is
counted as unanswered, not waited for, so the watch keeps its pace."""
PULL_SAMPLE_EVERY_S = 0.1
SOAK_SAMPLE_EVERY_S = 0.5
RATIO_GOAL = 0.6
MAX_EVENTS = 50
SOAK_STREAM = {"width": 1280, "height": 720, "bitrate": 4000, "pattern": "snow"}
"""The mirror benchmark's cheap-mode cameras: a looped clip, so the simulator stays light and
the boards' demux (and b's ring, a's recording and the mirror) is what loads the CPU."""
LINKWATCH_QUIET_S = 1.1
"""One kernel runs every namespace here, and it holds back a carrier change that comes within a
second of another (see `PairRig.power_cut`); cuts and pulls start only after this much quiet
since this benchmark's last link change, so the peer sees the carrier drop when it happens."""
NETEM_DELAY_MS = 20
NETEM_JITTER_MS = 10


def other(host: str) -> str:
    return "b" if host == "a" else "a"


def fresh_s(interval_ms: int) -> float:
    """A path is fresh when it carried an advert within three intervals (under one
    master-down interval)."""
    return 3 * interval_ms / 1000


def paths_fresh(st: dict, within: float, paths: tuple[str, ...] = ("lan", "sync")) -> bool:
    peer = st.get("peer")
    if peer is None:
        return False
    heard = peer.get("paths", {})
    return all(p in heard and heard[p] <= within for p in paths)


def fresh_dir(path: Path) -> Path:
    """Every phase starts from empty boards: footage and state of an earlier run would
    change start-up (recovery, mirror catch-up), not what is measured."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --- the two implementations ------------------------------------------------------------------


class Nvr:
    name = "nvr"
    camera = True

    def __init__(self, interval_ms: int) -> None:
        self.fresh = fresh_s(interval_ms)

    def start(self, tb: TwinBoards, host: str) -> None:
        tb.start(host, PRIORITY[host])

    def is_standby(self, tb: TwinBoards, host: str) -> bool:
        """Standby, healthy, and hearing the active board on both paths: a board still
        connecting to its camera has a lower effective priority and so a longer skew, and one
        not yet hearing on sync would not see the sync carrier drop; either would be its own
        (start-up) measurement, not the takeover's."""
        st = tb.status(host)
        peer = st["peer"]
        return (
            st["role"] == "standby"
            and not st["failover"]["health"]
            and peer is not None
            and peer["role"] == "active"
            and paths_fresh(st, self.fresh)
        )


class Keepalived:
    name = "keepalived"
    camera = False

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


Impl = Nvr | Keepalived


# --- figures ------------------------------------------------------------------------------------


def spread(times: list[float]) -> dict[str, Any]:
    """Median, p90 (inclusive quantiles, so it lies between samples), max and min."""
    p90 = statistics.quantiles(times, n=10, method="inclusive")[8] if len(times) > 1 else times[0]
    return {
        "n": len(times),
        "median_s": round(statistics.median(times), 3),
        "p90_s": round(p90, 3),
        "max_s": round(max(times), 3),
        "min_s": round(min(times), 3),
    }


def machine() -> dict[str, Any]:
    ka = subprocess.run(["keepalived", "--version"], capture_output=True, text=True, check=False)
    first = (ka.stderr or ka.stdout).splitlines()
    return {
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "keepalived": first[0] if first else None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def loadavg() -> float:
    """The machine's 1-minute load average (not namespaced: the whole machine)."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot; iowait counts as idle."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


# --- watching a pair ------------------------------------------------------------------------------

IFF_UP = 1


class Holders:
    """Which boards' LAN port is up and carries the VIP, as `TwinBoards.vip_holders` sees it,
    over one netlink socket per board opened inside its namespace and kept: vip_holders forks
    a helper per query (tens of ms), and a fork in a process with threads can hang."""

    def __init__(self, tb: TwinBoards) -> None:
        self.rt: dict[str, IPRoute] = {}
        for h in BOARDS:
            pushns(tb.rig.ns(h))
            try:
                rt = IPRoute()
                rt.link_lookup(ifname="eth0")  # the socket is made now, in this namespace
            finally:
                popns()
            self.rt[h] = rt

    def __call__(self) -> list[str]:
        out = []
        for h, rt in self.rt.items():
            idx = rt.link_lookup(ifname="eth0")[0]
            up = rt.get_links(idx)[0]["flags"] & IFF_UP
            addrs = {f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in rt.get_addr(index=idx)}
            if up and VIP_CIDR in addrs:
                out.append(h)
        return out

    def __enter__(self) -> Holders:
        return self

    def __exit__(self, *exc: object) -> None:
        for rt in self.rt.values():
            rt.close()


_ROLE_CHANGES = re.compile(r'^nvr_pair_role_changes_total\{role="(\w+)"\} (\S+)$', re.M)


def role_changes(tb: TwinBoards, host: str, timeout: float) -> dict[str, int]:
    """The board's own count of role changes by role entered (`nvr_pair_role_changes`): it
    misses nothing that happened between two samples."""
    text = tb.rig.http(host, "127.0.0.1", API_PORT, "/metrics", timeout).decode()
    return {role: int(float(n)) for role, n in _ROLE_CHANGES.findall(text)}


def snapshot(tb: TwinBoards) -> dict[str, dict[str, Any]]:
    """Counters of both boards, retried until each answers: the start and end of a window
    must not be missed the way a sample may be."""

    def one(host: str) -> dict[str, Any]:
        st = tb.status(host, 5)
        return {
            "role": st["role"],
            "role_reason": st["failover"].get("role_reason"),
            "epoch": st["epoch"],
            "role_changes": role_changes(tb, host, 5),
            "pid": tb.pid(host),
            "uptime_s": st["uptime_seconds"],
            "timer_lateness_max_s": st["failover"]["timer_lateness_max_seconds"],
            "dropped": st["failover"]["dropped"],
        }

    return {h: wait_until(lambda h=h: one(h), 60, f"counters of {h}", every=0.2) for h in BOARDS}


def delta(before: dict[str, dict], after: dict[str, dict]) -> dict[str, int]:
    """What changed between two snapshots: role changes (all, and into active), the epoch's
    rise, boards that restarted (their counters start again, so they count on their own)."""
    out = {"role_changes": 0, "entered_active": 0, "restarts": 0}
    for h in BOARDS:
        b, a = before[h], after[h]
        if a["pid"] != b["pid"] or a["uptime_s"] < b["uptime_s"]:
            out["restarts"] += 1
            continue
        for role, n in a["role_changes"].items():
            d = n - b["role_changes"].get(role, 0)
            out["role_changes"] += d
            if role == "active":
                out["entered_active"] += d
    out["epoch_increase"] = max(a["epoch"] for a in after.values()) - max(
        b["epoch"] for b in before.values()
    )
    return out


_ROLE_LOG = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*role (\w+) -> (\w+) \(([^)]*)\)", re.M
)


def logged_role_changes(tb: TwinBoards, since: float) -> list[str]:
    """Role changes the boards logged since a wall-clock time, with their reasons: the
    counters say how many, the logs say why."""
    out = []
    for h in BOARDS:
        for stamp, ms, old, new, reason in _ROLE_LOG.findall(tb.log(h)):
            t = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(ms) / 1e3
            if t >= since:
                out.append(f"{stamp[11:]}.{ms} {h}: {old} -> {new} ({reason})")
    return sorted(out)


def disturbed(d: dict[str, int]) -> bool:
    return any(d[k] for k in ("role_changes", "entered_active", "restarts", "epoch_increase"))


def clean(total: dict[str, int], figures: dict[str, Any]) -> bool:
    """Nothing a steady pair would not show: no counter moved, no sample was off."""
    return not disturbed(total) and not (
        figures["vip_mismatch_samples"] or figures["role_mismatch_samples"]
    )


class Watch:
    """Samples both boards' status and which board's LAN port carries the VIP, and counts
    every sample that a steady pair (the expected board active and alone holding the VIP,
    the other standby) would never show."""

    def __init__(self, tb: TwinBoards, holders: Holders) -> None:
        self.tb, self.holders = tb, holders
        self.t0 = time.monotonic()
        self.samples = 0
        self.unanswered = dict.fromkeys(BOARDS, 0)
        self.vip_mismatch = 0
        self.role_mismatch = 0
        self.off = 0
        self.heard_max = dict.fromkeys(BOARDS, 0.0)
        self.events: list[str] = []
        self.label = ""
        self._last = ""
        self._repeats = 0
        self._recorded = False

    def sample(self, active: str) -> dict[str, dict | None]:
        holders = self.holders()
        sts: dict[str, dict | None] = {}
        for h in BOARDS:
            try:
                sts[h] = self.tb.status(h, SAMPLE_TIMEOUT_S)
            except (OSError, ValueError):
                sts[h] = None
                self.unanswered[h] += 1
        self.samples += 1
        wrong = []
        if holders != [active]:
            self.vip_mismatch += 1
            wrong.append(f"VIP on {','.join(holders) or 'no board'}")
        roles = []
        for h, st in sts.items():
            if st is None:
                continue
            expected = "active" if h == active else "standby"
            if st["role"] != expected:
                roles.append(f"{h} {st['role']} ({st['failover'].get('role_reason')})")
            if st["peer"] is not None:
                self.heard_max[h] = max(self.heard_max[h], st["peer"]["heard_seconds_ago"])
        self.role_mismatch += bool(roles)
        wrong += roles
        self.off += bool(wrong)
        self._event(f"{self.label}: {'; '.join(wrong)}" if wrong else "")
        return sts

    def _event(self, what: str) -> None:
        """Log where an off state starts or changes, with how many samples it lasted."""
        if what == self._last:
            self._repeats += 1
            return
        if self._recorded:
            self.events[-1] += f" ({self._repeats} samples)"
        self._last, self._repeats = what, 1
        self._recorded = bool(what) and len(self.events) < MAX_EVENTS
        if self._recorded:
            self.events.append(f"{time.monotonic() - self.t0:.2f} s {what}")

    def run_for(self, seconds: float, active: str, every: float) -> None:
        """Sample at a steady pace for a while."""
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            self.sample(active)
            time.sleep(max(0.0, min(every - (time.monotonic() - now), end - time.monotonic())))

    def until(
        self,
        cond: Callable[[dict[str, dict | None]], bool],
        timeout: float,
        active: str,
        every: float,
        what: str,
    ) -> float:
        """Sample until cond holds on a sample; seconds it took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            now = time.monotonic()
            if cond(self.sample(active)):
                return now - t0
            time.sleep(max(0.0, every - (time.monotonic() - now)))
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    def figures(self) -> dict[str, Any]:
        self._event("")  # closes an episode still open
        return {
            "samples": self.samples,
            "vip_mismatch_samples": self.vip_mismatch,
            "role_mismatch_samples": self.role_mismatch,
            "samples_off": self.off,
            "unanswered_samples": self.unanswered,
            "peer_heard_max_s": {h: round(v, 3) for h, v in self.heard_max.items()},
            "events": self.events,
        }


def steady(tb: TwinBoards, holders: Holders, active: str, within: float) -> bool:
    """The pair as it should be: `active` active and alone holding the VIP, the other
    standby, both healthy and hearing each other on both paths."""
    sa, ss = tb.status(active), tb.status(other(active))
    return (
        sa["role"] == "active"
        and ss["role"] == "standby"
        and not sa["failover"]["health"]
        and not ss["failover"]["health"]
        and paths_fresh(sa, within)
        and paths_fresh(ss, within)
        and holders() == [active]
    )


def nvr_pair_up(tb: TwinBoards, holders: Holders, within: float, timeout: float = 60) -> None:
    """a first, alone, until it is active (and, with cameras, records them all); then b, until
    the pair is steady. Starting b only then keeps a's camera sessions starting from looking
    like a silent board."""
    tb.start("a", PRIORITY["a"])
    wait_until(lambda: tb.role("a") == "active", timeout, "a active")
    wait_until(lambda: not tb.status("a")["failover"]["health"], timeout * 2, "a healthy", 0.5)
    tb.start("b", PRIORITY["b"])
    wait_until(lambda: steady(tb, holders, "a", within), timeout * 2, "a steady pair", 0.2)


# --- phase 1: power cuts ----------------------------------------------------------------------


def quiet_links(since: float) -> None:
    """Sleep out the kernel's hold on carrier changes after the link change at `since`."""
    time.sleep(max(0.0, since + LINKWATCH_QUIET_S - time.monotonic()))


def cut_once(
    impl: Impl, tb: TwinBoards, active: str, pause: float, links_changed: float
) -> tuple[float, float, float]:
    """One cut of the active board: (kill to the standby answering on the VIP, kill to the
    links being down, when the links came back). The board is back as standby on return."""
    standby = other(active)
    quiet_links(links_changed)
    time.sleep(pause)  # lands the cut at a random phase of the advert interval
    t_kill = time.monotonic()
    tb.power_cut(active)  # the processes die first, then the links go down
    t_dark = time.monotonic()
    t_vip = tb.wait_vip(standby, 10, PROBE_TIMEOUT_S)
    tb.power_back(active)
    t_back = time.monotonic()
    impl.start(tb, active)
    wait_until(lambda: impl.is_standby(tb, active), 60, f"{active} back as standby")
    tb.wait_vip(standby, 30, PROBE_TIMEOUT_S)
    return t_vip - t_kill, t_dark - t_kill, t_back


def phase_cuts(args: argparse.Namespace) -> dict[str, Any]:
    impls: list[Impl] = [Nvr(args.interval_ms), Keepalived()]
    times: dict[str, list[float]] = {i.name: [] for i in impls}
    dark: dict[str, list[float]] = {i.name: [] for i in impls}
    with contextlib.ExitStack() as stack:
        rigs: dict[str, TwinBoards] = {}
        for impl in impls:
            tb = TwinBoards(fresh_dir(args.workdir / f"cuts-{impl.name}"), camera=impl.camera,
                            advert_interval_ms=args.interval_ms)  # fmt: skip
            rigs[impl.name] = stack.enter_context(tb)
            holders = stack.enter_context(Holders(tb))
            impl.start(tb, "a")
            wait_until(lambda h=holders: h() == ["a"], 60, f"{impl.name}: a holding the VIP")
            impl.start(tb, "b")
            wait_until(lambda i=impl, tb=tb: i.is_standby(tb, "b"), 60, f"{impl.name}: b standby")
            tb.wait_vip("a", 30, PROBE_TIMEOUT_S)
        active = dict.fromkeys(times, "a")
        # The same pause sequence for both, so both see cuts at the same phases.
        rngs = {name: random.Random(args.seed) for name in times}
        links_changed = time.monotonic()
        for i in range(args.cuts):
            for impl in impls if i % 2 == 0 else impls[::-1]:
                name, was = impl.name, active[impl.name]
                pause = rngs[name].uniform(0.5, 1.5)
                t, d, links_changed = cut_once(impl, rigs[name], was, pause, links_changed)
                times[name].append(t)
                dark[name].append(d)
                active[name] = other(was)
                print(f"cut {i + 1} {name}: {was}->{other(was)} {t:.3f} s", flush=True)
    out: dict[str, Any] = {name: {**spread(ts), "times_s": [round(t, 4) for t in ts]}
                           for name, ts in times.items()}  # fmt: skip
    for name, ds in dark.items():
        out[name]["kill_to_links_down_median_s"] = round(statistics.median(ds), 4)
        out[name]["kill_to_links_down_max_s"] = round(max(ds), 4)
    ratio = out["nvr"]["median_s"] / out["keepalived"]["median_s"]
    out["median_ratio"] = round(ratio, 2)
    out["ratio_goal"] = RATIO_GOAL
    out["ratio_met"] = ratio <= RATIO_GOAL
    return out


# --- phase 2: sync-cable pulls ------------------------------------------------------------------


def phase_pulls(args: argparse.Namespace) -> dict[str, Any]:
    within = fresh_s(args.interval_ms)

    def both_on_sync(sts: dict[str, dict | None]) -> bool:
        return all(st is not None and paths_fresh(st, within, ("sync",)) for st in sts.values())

    def settled() -> str | None:
        return next((h for h in BOARDS if steady(tb, holders, h, within)), None)

    per_pull: list[dict[str, Any]] = []
    rejoin: list[float] = []
    rng = random.Random(args.seed)
    with TwinBoards(fresh_dir(args.workdir / "pulls"), camera=True,
                    advert_interval_ms=args.interval_ms) as tb, Holders(tb) as holders:  # fmt: skip
        nvr_pair_up(tb, holders, within)
        watch = Watch(tb, holders)
        active = "a"
        start, since = snapshot(tb), time.time()
        for i in range(args.pulls):
            end = active if i % 2 == 0 else other(active)
            watch.label = f"pull {i + 1}"
            before, off0 = snapshot(tb), watch.off
            tb.rig.cable(end, "sync", False)
            watch.run_for(args.hold_seconds, active, PULL_SAMPLE_EVERY_S)
            tb.rig.cable(end, "sync", True)
            plugged = time.monotonic()
            took = watch.until(both_on_sync, 30, active, PULL_SAMPLE_EVERY_S, "sync heard again")
            rejoin.append(took)
            after = snapshot(tb)
            d = delta(before, after)
            holder = [h for h in BOARDS if after[h]["role"] == "active"]
            per_pull.append({"end": "active" if end == active else "standby", "board": end,
                             "rejoin_s": round(took, 3), **d,
                             "samples_off": watch.off - off0})  # fmt: skip
            if disturbed(d):
                per_pull[-1]["roles_after"] = {
                    h: f"{after[h]['role']} ({after[h]['role_reason']})" for h in BOARDS
                }
            print(f"pull {i + 1} at {end} ({per_pull[-1]['end']}): sync heard again after "
                  f"{took:.2f} s, {d}, {watch.off - off0} samples off", flush=True)  # fmt: skip
            if disturbed(d) or holder != [active]:
                # Follow the pair wherever it settled, so later pulls still start steady.
                active = wait_until(settled, 60, "a steady pair")
            watch.label = "between pulls"
            # The pair steady for a while, the next pull at a random phase of the adverts.
            quiet = max(0.0, plugged + LINKWATCH_QUIET_S - time.monotonic())
            watch.run_for(quiet + rng.uniform(0.0, 1.0), active, PULL_SAMPLE_EVERY_S)
        end_snap = snapshot(tb)
        logged = logged_role_changes(tb, since)
    total = delta(start, end_snap)
    figures = watch.figures()
    pulls_disturbed = sum(disturbed(p) or p["samples_off"] > 0 for p in per_pull)
    return {
        "pulls": args.pulls,
        "hold_s": args.hold_seconds,
        "false_takeovers": total["entered_active"],
        "pulls_disturbed": pulls_disturbed,
        **total,
        **figures,
        "rejoin_median_s": round(statistics.median(rejoin), 3) if rejoin else None,
        "rejoin_max_s": round(max(rejoin), 3) if rejoin else None,
        "role_changes_logged": logged,
        "met": clean(total, figures) and pulls_disturbed == 0,
        "per_pull": per_pull,
    }


# --- phase 3: soak under load -------------------------------------------------------------------


def netem_missing() -> str | None:
    """Why `tc ... netem` cannot run here (a kernel built without sch_netem), or None. Asked
    in a rig of its own before any phase, so a full run does not stop after its first two."""
    with PairRig() as rig:
        try:
            rig.netem("a", "lan", NETEM_DELAY_MS, NETEM_JITTER_MS)
        except subprocess.CalledProcessError as e:
            return (e.stderr or "").strip() or f"tc exited with {e.returncode}"
    return None


def netem_label(args: argparse.Namespace) -> str:
    if args.no_netem:
        return "none (--no-netem)"
    return f"{NETEM_DELAY_MS} ms ± {NETEM_JITTER_MS} ms on both boards' LAN port"


def phase_soak(args: argparse.Namespace) -> dict[str, Any]:
    within = fresh_s(args.interval_ms)
    workdir = fresh_dir(args.workdir / "soak")
    loads: list[float] = []
    tb = TwinBoards(workdir, cameras=args.soak_cameras, stream=SOAK_STREAM, segment_seconds=4.0,
                    advert_interval_ms=args.interval_ms)  # fmt: skip
    try:
        with tb, Holders(tb) as holders:
            for h in BOARDS if not args.no_netem else ():
                tb.rig.netem(h, "lan", NETEM_DELAY_MS, NETEM_JITTER_MS)
            nvr_pair_up(tb, holders, within, timeout=120)
            time.sleep(args.settle)  # let start-up (mirror catch-up, sessions) calm down
            watch = Watch(tb, holders)
            watch.label = "soak"
            start, since = snapshot(tb), time.time()
            busy0, total0 = cpu_ticks()
            t0 = time.monotonic()
            while (now := time.monotonic()) - t0 < args.soak_seconds:
                watch.sample("a")
                loads.append(loadavg())
                time.sleep(max(0.0, SOAK_SAMPLE_EVERY_S - (time.monotonic() - now)))
            window = time.monotonic() - t0
            busy1, total1 = cpu_ticks()
            end = snapshot(tb)
            logged = logged_role_changes(tb, since)
            cams = tb.status("a", 5)["cameras"], tb.status("b", 5)["cameras"]
    finally:
        for h in BOARDS:  # the footage is large and of no use after the soak; logs stay
            shutil.rmtree(tb.data_dir(h), ignore_errors=True)
    total = delta(start, end)
    figures = watch.figures()
    return {
        "seconds": round(window, 1),
        "cameras": args.soak_cameras,
        "netem": netem_label(args),
        "false_takeovers": total["entered_active"],
        **total,
        **figures,
        "met": clean(total, figures),
        "role_changes_logged": logged,
        "start_up_role_changes": {h: start[h]["role_changes"] for h in BOARDS},
        "epoch_start": max(s["epoch"] for s in start.values()),
        "epoch_end": max(s["epoch"] for s in end.values()),
        "timer_lateness_max_s": {h: end[h]["timer_lateness_max_s"] for h in BOARDS},
        "dropped_late_or_replay": {h: end[h]["dropped"] for h in BOARDS},
        "recording_at_end": sum(c["recording"] for c in cams[0]),
        "holding_at_end": sum(c["holding"] for c in cams[1]),
        "loadavg_1min_median": round(statistics.median(loads), 2) if loads else None,
        "loadavg_1min_max": round(max(loads), 2) if loads else None,
        "cpu_busy_percent": round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
    }


# --- output ---------------------------------------------------------------------------------------


def table(res: dict[str, Any]) -> str:
    """The markdown table of docs/BENCHMARKS.md."""
    rows = ["| measure | nvr | keepalived | goal |", "|---|---|---|---|"]
    if "median_ratio" in (c := res.get("cuts", {})):
        n, k = c["nvr"], c["keepalived"]
        rows += [
            f"| takeover after a power cut, median ({n['n']} cuts each) | {n['median_s']:.3f} s "
            f"| {k['median_s']:.3f} s | |",
            f"| takeover, p90 | {n['p90_s']:.3f} s | {k['p90_s']:.3f} s | |",
            f"| takeover, max | {n['max_s']:.3f} s | {k['max_s']:.3f} s | |",
            f"| median ratio nvr / keepalived | {c['median_ratio']:.2f} | 1.00 | "
            f"<= {RATIO_GOAL}: {'met' if c['ratio_met'] else 'not met'} |",
        ]
    if "false_takeovers" in (p := res.get("pulls", {})):
        rows.append(
            f"| false takeovers, {p['pulls']} sync-cable pulls ({p['hold_s']:g} s out) | "
            f"{p['false_takeovers']} ({p['pulls_disturbed']} pulls disturbed; "
            f"{p['samples_off']} of {p['samples']} samples off) | "
            f"not comparable (no sync link) | 0: {'met' if p['met'] else 'not met'} |"
        )
    if "false_takeovers" in (s := res.get("soak", {})):
        lan = "no LAN delay" if s["netem"].startswith("none") else (
            f"LAN {NETEM_DELAY_MS} ± {NETEM_JITTER_MS} ms")  # fmt: skip
        rows += [
            f"| false takeovers, {s['seconds']:.0f} s soak ({s['cameras']} cameras, {lan}) | "
            f"{s['false_takeovers']} ({s['role_changes']} role changes, epoch "
            f"+{s['epoch_increase']}; {s['samples_off']} of {s['samples']} samples off) | "
            f"not run | 0: {'met' if s['met'] else 'not met'} |",
            f"| machine load during the soak (1-min load average median / max; CPU busy) | "
            f"{s['loadavg_1min_median']} / {s['loadavg_1min_max']}; {s['cpu_busy_percent']} % "
            f"of {res['machine']['cores']} cores | | |",
        ]
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--cuts", type=int, default=20, help="power cuts per implementation")
    ap.add_argument("--pulls", type=int, default=20, help="sync-cable pulls")
    ap.add_argument("--hold-seconds", type=float, default=2.0, help="how long a pull lasts")
    ap.add_argument("--soak-seconds", type=float, default=600, help="soak window")
    ap.add_argument("--soak-cameras", type=int, default=32)
    ap.add_argument("--settle", type=float, default=10, help="seconds before the soak window")
    ap.add_argument("--no-netem", action="store_true",
                    help="soak without the LAN delay (kernels without sch_netem)")  # fmt: skip
    ap.add_argument("--only", default=",".join(PHASES), help="phases to run: cuts,pulls,soak")
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1, help="cut and pull timing")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nvr-bench-failover"))
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    args.phases = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := set(args.phases) - set(PHASES):
        ap.error(f"--only: unknown phase(s) {', '.join(sorted(unknown))} (known: cuts,pulls,soak)")
    counts = {"cuts": args.cuts, "pulls": args.pulls, "soak": args.soak_seconds}
    args.phases = [p for p in PHASES if p in args.phases and counts[p] > 0]
    return args


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every rig is torn down."""
    raise KeyboardInterrupt


def _default_sigterm() -> None:
    """A forked child (a library's helper) must die of SIGTERM as usual: the handler above
    would only run once that child runs Python again, which a stuck child never does."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    os.register_at_fork(after_in_child=_default_sigterm)
    if "soak" in args.phases and not args.no_netem and (why := netem_missing()):
        print(f"soak: tc netem does not work here ({why}); use a kernel with sch_netem, or "
              "--no-netem to soak without the LAN delay", file=sys.stderr)  # fmt: skip
        return 2
    res: dict[str, Any] = {"machine": machine(), "interval_ms": args.interval_ms,
                           "seed": args.seed}  # fmt: skip
    run = {"cuts": phase_cuts, "pulls": phase_pulls, "soak": phase_soak}
    failed = False
    for phase in args.phases:
        t0 = time.monotonic()
        print(f"--- {phase}", flush=True)
        try:
            res[phase] = run[phase](args)
        except Exception as e:  # the other phases' figures are still worth having
            failed = True
            res[phase] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{phase} failed: {e} (board logs under {args.workdir})", file=sys.stderr,
                  flush=True)  # fmt: skip
        res[phase]["phase_seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(res, indent=1))
    print()
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
