"""The drills: one fault each, with the outcome the pair must show. Every drill starts from
the same state (the pair whole, board a active, b standby) and ends healed; run.py measures.

Names are stable (reports and hil/drills/thresholds.toml use them).
"""

from __future__ import annotations

import json

from labgrid.protocol import PowerProtocol

from firmware.alert_ids import AlertId
from hil.drills.run import Ctx, Drill, DrillFailed, NotPossible, pair_whole
from hil.lab.protocols import (
    CableProtocol,
    ClockProtocol,
    DiskFaultProtocol,
    HangProtocol,
    HeartbeatProtocol,
    Link,
    PartitionProtocol,
    UpdateProtocol,
    UpsProtocol,
)
from hil.wait import holds

TAKEOVER_S = 20.0
"""Deadline for a takeover to show (the thresholds judge the time; this only bounds waits)."""
QUIET_S = 8.0
"""How long nothing may move after a fault that must not move the VIP."""
HANDOVER = "/api/v1/pair/handover"
SPLIT_S = 6.0
"""How long a partition lasts once both boards are active (three segments of the rig)."""


def _alerts(ctx: Ctx, board: str) -> set[str]:
    try:
        return {a["id"] for a in json.loads(ctx.boards[board].api("/api/v1/status"))["alerts"]}
    except (OSError, ValueError):
        return set()


def _raised(ctx: Ctx, board: str, alert: AlertId, timeout: float = TAKEOVER_S) -> None:
    ctx.wait(lambda: alert.value in _alerts(ctx, board), timeout, f"{alert.value} on {board}")


def _power(ctx: Ctx, board: str) -> PowerProtocol:
    return ctx.driver(PowerProtocol, board)


def _restart(ctx: Ctx, board: str) -> None:
    power = _power(ctx, board)
    power.off()
    power.on()


# --- the board, its power and its firmware ---------------------------------------------------


def _power_cut_a(ctx: Ctx) -> None:
    _power(ctx, "a").off()


def _failback_setup(ctx: Ctx) -> None:
    """The failover a failback undoes: a's power cut, b takes over, a back as standby."""
    _power(ctx, "a").off()
    ctx.takes_over("b", TAKEOVER_S)
    _power(ctx, "a").on()
    ctx.wait(lambda: pair_whole(ctx) == "b", 90, "b active with a back as its synced standby")


def _hang_a(ctx: Ctx) -> None:
    ctx.driver(HangProtocol, "a").hang()


def _update_b(ctx: Ctx) -> None:
    slot = ctx.driver(UpdateProtocol, "b").update_and_fail()
    ctx.notes.append(f"b booted slot {slot} after the failed update")


# --- cables and heartbeats ---------------------------------------------------------------------


def _cable(board: str, link: Link, connected: bool):
    return lambda ctx: ctx.driver(CableProtocol, board).cable(link, connected)


def _adverts(blocked: bool):
    def act(ctx: Ctx) -> None:
        for board in ("a", "b"):
            hb = ctx.driver(HeartbeatProtocol, board)
            for link in Link:
                hb.block_adverts(link, blocked)

    return act


def _serial_crosslink(ctx: Ctx) -> None:
    _adverts(False)(ctx)
    if not ctx.driver(HeartbeatProtocol, "a").has_serial_crosslink():
        raise NotPossible("the boards have no serial cross-link on this target")


def _partition(split: bool):
    return lambda ctx: ctx.driver(PartitionProtocol).partition(split)


def _both_active(ctx: Ctx) -> None:
    """Both take the pair (neither can tell the other is alive) and record on their own for
    a while: what they recorded apart must come together after the heal."""
    ctx.wait(lambda: ctx.is_active("a") and ctx.is_active("b"), TAKEOVER_S,
             "both boards active while they cannot see each other")  # fmt: skip
    try:
        holds(lambda: ctx.is_active("a") and ctx.is_active("b"), SPLIT_S,
              "both boards staying active while split", every=0.1)  # fmt: skip
    except AssertionError as e:
        raise DrillFailed(str(e)) from None


# --- cameras -------------------------------------------------------------------------------------


def _camera_reboot(ctx: Ctx) -> None:
    before = {c: ctx.camera.frame_clock(c) for c in ctx.cameras}
    ctx.camera.reboot(3.0)
    after = {c: ctx.camera.frame_clock(c) for c in ctx.cameras}
    for c in ctx.cameras:
        ctx.away.setdefault(c, []).append((before[c], after[c]))


def _camera_jump(ctx: Ctx) -> None:
    for c in ctx.cameras:
        ctx.camera.jump(c, 3600.0)


def _camera_cut_a(cut: bool):
    return lambda ctx: ctx.camera.cut_off("a", cut)


# --- disks, power supply, clock --------------------------------------------------------------


def _disk(board: str, what: str):
    return lambda ctx: getattr(ctx.driver(DiskFaultProtocol, board), what)()


def _disk_back(ctx: Ctx) -> None:
    """A replaced disk is taken in at boot."""
    _power(ctx, "a").off()
    ctx.driver(DiskFaultProtocol, "a").heal()
    _power(ctx, "a").on()


def _mains(on: bool):
    return lambda ctx: ctx.driver(UpsProtocol, "a").mains(on)


def _battery_low(ctx: Ctx) -> None:
    ups = ctx.driver(UpsProtocol, "a")
    ups.mains(False)
    ups.battery_low(True)


def _battery_back(ctx: Ctx) -> None:
    ups = ctx.driver(UpsProtocol, "a")
    ups.battery_low(False)
    ups.mains(True)
    _restart(ctx, "a")


def _shut_down(ctx: Ctx) -> None:
    ctx.takes_over("b", TAKEOVER_S)
    ctx.wait(lambda: not _answers(ctx, "a"), 60, "a shutting itself down")


def _answers(ctx: Ctx, board: str) -> bool:
    s = ctx.sample(board)
    return bool(s and s.answered)


def _clock(step: float):
    return lambda ctx: ctx.driver(ClockProtocol, "b").step(step)


def _skew_seen(ctx: Ctx) -> None:
    ctx.wait(lambda: AlertId.PAIR_CLOCK_SKEW.value in _alerts(ctx, "a") | _alerts(ctx, "b"),
             60, "pair-clock-skew raised")  # fmt: skip
    ctx.stays("a", QUIET_S)


def _takes_over_b(ctx: Ctx) -> None:
    ctx.takes_over("b", TAKEOVER_S)


def _stays_a(ctx: Ctx) -> None:
    ctx.stays("a", QUIET_S)


def _takes_over_b_alerting(alert: AlertId, timeout: float = TAKEOVER_S):
    def outcome(ctx: Ctx) -> None:
        ctx.takes_over("b", timeout)
        if alert.value not in _alerts(ctx, "a") and _answers(ctx, "a"):
            raise DrillFailed(f"a handed over without raising {alert.value}")

    return outcome


def _takes_over_a(ctx: Ctx) -> None:
    ctx.takes_over("a", TAKEOVER_S)


def _planned(board: str):
    return lambda ctx: ctx.api_post(board, HANDOVER)


def _hang_outcome(ctx: Ctx) -> None:
    ctx.takes_over("b", 60)


DRILLS: tuple[Drill, ...] = (
    Drill("power-cut-active", "power cut of the active board a",
          "b takes the VIP and records; a comes back as standby; no frame lost",
          _power_cut_a, _takes_over_b, lambda ctx: _power(ctx, "a").on(),
          needs=((PowerProtocol, "a"),)),
    Drill("planned-handover", "planned handover from a to b (the operator's request)",
          "b takes the VIP and records; no frame lost or recorded twice",
          _planned("a"), _takes_over_b),
    Drill("failback", "planned handover back to a after a failed over to b and came back",
          "a takes the VIP back and records; no frame lost over the failover and the failback",
          _planned("b"), _takes_over_a, setup=_failback_setup, needs=((PowerProtocol, "a"),)),
    Drill("lan-pull-active", "LAN cable of the active board a pulled",
          "b takes the VIP and records; a, plugged back, is standby",
          _cable("a", Link.LAN, False), _takes_over_b, _cable("a", Link.LAN, True),
          needs=((CableProtocol, "a"),)),
    Drill("lan-pull-standby", "LAN cable of the standby board b pulled",
          "nothing moves: a keeps the VIP and records; b never claims it",
          _cable("b", Link.LAN, False), _stays_a, _cable("b", Link.LAN, True),
          needs=((CableProtocol, "b"),)),
    Drill("sync-pull", "the sync cable between the boards pulled",
          "nothing moves (the LAN still carries heartbeats and the mirror)",
          _cable("a", Link.SYNC, False), _stays_a, _cable("a", Link.SYNC, True),
          needs=((CableProtocol, "a"),)),
    Drill("heartbeats-but-serial", "adverts dropped on the LAN and the sync link of both boards",
          "nothing moves: the serial cross-link alone carries the heartbeat",
          _adverts(True), _stays_a, _adverts(False), setup=_serial_crosslink,
          needs=((HeartbeatProtocol, "a"), (HeartbeatProtocol, "b"))),
    Drill("partition-heal", "no path between the boards (each still reaches cameras and clients)",
          "both record while split; after healing exactly one is active; nothing lost",
          _partition(True), _both_active, _partition(False),
          needs=((PartitionProtocol, None),)),
    Drill("camera-path-lost-active", "the active board a loses its path to the cameras",
          "b, which still reaches them, takes over; no frame lost",
          _camera_cut_a(True), _takes_over_b, _camera_cut_a(False), first_start=True),
    Drill("data-disk-missing", "the data disk of the active board a pulled while recording",
          "a raises disk-missing and hands over; b records; nothing lost",
          _disk("a", "pull"), _takes_over_b_alerting(AlertId.DISK_MISSING), _disk_back,
          needs=((DiskFaultProtocol, "a"), (PowerProtocol, "a"))),
    Drill("disk-full", "the data disk of the active board a filled by something else",
          "a raises a disk-full alert and hands over; b records; nothing lost",
          _disk("a", "fill"), _takes_over_b, _disk_back,
          needs=((DiskFaultProtocol, "a"), (PowerProtocol, "a"))),
    Drill("ups-on-battery", "mains fail on the active board a's UPS",
          "a hands over after its on-battery delay; b records; mains back, a is standby",
          _mains(False), _takes_over_b_alerting(AlertId.UPS_ON_BATTERY, 40), _mains(True),
          first_start=True, needs=((UpsProtocol, "a"),)),
    Drill("ups-battery-low", "a's UPS on battery, then its battery low",
          "a commits its open segments, hands over and shuts down; b records; nothing lost",
          _battery_low, _shut_down, _battery_back,
          needs=((UpsProtocol, "a"), (PowerProtocol, "a"))),
    Drill("camera-reboot", "every camera reboots (3 s away)",
          "nothing moves; every frame the cameras sent is kept",
          _camera_reboot, _stays_a),
    Drill("camera-time-jump", "every camera's clock jumps one hour ahead",
          "nothing moves; every frame is kept",
          _camera_jump, _stays_a),
    Drill("clock-step", "the standby board b's wall clock stepped 10 s ahead",
          "pair-clock-skew raised; nothing moves; nothing lost",
          _clock(10.0), _skew_seen, _clock(-10.0), needs=((ClockProtocol, "b"),)),
    Drill("firmware-hang", "the active board a's firmware hangs (stopped, not exited)",
          "b takes over; the service manager's watchdog restarts a, which comes back standby",
          _hang_a, _hang_outcome, needs=((HangProtocol, "a"),)),
    Drill("update-rollback", "the standby b updated to slot B with a bundle that never gets "
          "healthy", "b rolls back to its old slot and is standby again; a records throughout",
          _update_b, _stays_a, needs=((UpdateProtocol, "b"),)),
)  # fmt: skip

BY_NAME = {d.name: d for d in DRILLS}
