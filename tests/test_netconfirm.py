"""The commit-confirmed network change core (firmware.netconfirm): with a fake clock, a change
confirmed in time stays; one not confirmed rolls back at 60 s; a restart while pending rolls
back at start; the peer's adverts plus the VIP answering confirm it; a second apply keeps the
last confirmed files as the rollback target."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.alert_ids import AlertId
from firmware.netconfirm import (
    CONFIRM_SECONDS,
    Alert,
    Apply,
    Confirm,
    Confirmed,
    ConfirmSource,
    NetConfirm,
    NetFile,
    PeerReached,
    Persist,
    ReloadNetwork,
    Rollback,
    RollbackReason,
    Start,
    Tick,
    VipAnswered,
    WriteFiles,
)

LAN = Path("/data/etc/systemd/network/10-lan.network")
OLD = (NetFile(LAN, b"old"),)
NEW = (NetFile(LAN, b"new"),)
IFACES = ("eth0", "eth1")


def of(kind, actions):
    return [a for a in actions if isinstance(a, kind)]


def raised(actions) -> set[AlertId]:
    return {a.id for a in of(Alert, actions) if a.raised}


def cleared(actions) -> set[AlertId]:
    return {a.id for a in of(Alert, actions) if not a.raised}


def applied(t0: float = 1000.0) -> tuple[NetConfirm, list]:
    core = NetConfirm()
    return core, core.handle(Apply(NEW, OLD, IFACES, t0))


def test_apply_persists_first_then_writes_reloads_and_raises_pending():
    core, acts = applied()
    assert isinstance(acts[0], Persist) and acts[0].pending == core.pending
    assert of(WriteFiles, acts) == [WriteFiles(NEW)]
    assert of(ReloadNetwork, acts) == [ReloadNetwork(IFACES)]
    assert raised(acts) == {AlertId.NETWORK_CHANGE_PENDING}
    assert core.seconds_left(1000.0) == CONFIRM_SECONDS


def test_confirm_in_time_keeps_the_change():
    core, _ = applied()
    assert core.handle(Tick(1000.0 + CONFIRM_SECONDS - 0.1)) == []
    acts = core.handle(Confirm(ConfirmSource.CONSOLE))
    assert of(Confirmed, acts) == [Confirmed(ConfirmSource.CONSOLE)]
    assert of(Persist, acts) == [Persist(None)]
    assert cleared(acts) == {AlertId.NETWORK_CHANGE_PENDING}
    assert core.handle(Tick(1000.0 + 10 * CONFIRM_SECONDS)) == []  # never rolled back


def test_no_confirm_rolls_back_at_60_s():
    core, _ = applied()
    assert core.handle(Tick(1059.9)) == []
    acts = core.handle(Tick(1060.0))
    assert of(Rollback, acts) == [Rollback(OLD, IFACES, RollbackReason.TIMEOUT)]
    assert of(Persist, acts) == [Persist(None)]
    assert raised(acts) == {AlertId.NETWORK_ROLLED_BACK}
    assert cleared(acts) == {AlertId.NETWORK_CHANGE_PENDING}
    assert core.pending is None and core.handle(Confirm(ConfirmSource.CONSOLE)) == []


def test_a_restart_while_pending_rolls_back_at_start():
    core, _ = applied()
    after_reboot = NetConfirm()
    acts = after_reboot.handle(Start(1010.0, core.pending))  # well within the window
    assert of(Rollback, acts) == [Rollback(OLD, IFACES, RollbackReason.RESTART)]
    assert raised(acts) == {AlertId.NETWORK_ROLLED_BACK}
    assert NetConfirm().handle(Start(1010.0, None)) == []


def test_the_peer_confirms_only_with_both_adverts_and_the_vip():
    core, _ = applied()
    acts = core.handle(PeerReached())
    assert not of(Confirmed, acts) and core.pending is not None and core.pending.peer_reached
    acts = core.handle(VipAnswered())
    assert of(Confirmed, acts) == [Confirmed(ConfirmSource.PEER)] and core.pending is None
    # VIP first, then the peer: the same.
    core, _ = applied()
    assert not of(Confirmed, core.handle(VipAnswered()))
    assert of(Confirmed, core.handle(PeerReached())) == [Confirmed(ConfirmSource.PEER)]


def test_peer_facts_without_a_pending_change_confirm_nothing_later():
    core = NetConfirm()
    assert core.handle(PeerReached()) == [] and core.handle(VipAnswered()) == []
    core.handle(Apply(NEW, OLD, IFACES, 0.0))
    assert not of(Confirmed, core.handle(PeerReached()))  # the old VIP fact did not count


def test_a_second_apply_keeps_the_confirmed_files_and_restarts_the_window():
    core, _ = applied(1000.0)
    newer = (NetFile(LAN, b"newer"), NetFile(LAN.with_name("20-sync.network"), b"sync"))
    current = (NetFile(LAN, b"new"), NetFile(LAN.with_name("20-sync.network"), None))
    acts = core.handle(Apply(newer, current, ("eth0",), 1030.0))
    assert of(WriteFiles, acts) == [WriteFiles(newer)]
    assert core.handle(Tick(1060.0)) == []  # the first window no longer counts
    acts = core.handle(Tick(1090.0))
    (rb,) = of(Rollback, acts)
    # Back to what was confirmed: the old LAN file, and no sync file (it did not exist).
    assert rb.previous == (NetFile(LAN, b"old"), NetFile(LAN.with_name("20-sync.network"), None))
    assert set(rb.interfaces) == {"eth0", "eth1"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["apply", "confirm", "peer", "vip", "tick", "start"]), max_size=30),
       st.lists(st.floats(0, 100), min_size=30, max_size=30))  # fmt: skip
def test_any_sequence_ends_confirmed_or_with_the_confirmed_files_back(steps, gaps):
    """Whatever happens, a rollback writes the files of the last confirmed state, never an
    unconfirmed one."""
    confirmed = b"0"
    disk = b"0"
    core, now, n = NetConfirm(), 0.0, 0
    for step, gap in zip(steps, gaps, strict=False):
        now += gap
        match step:
            case "apply":
                n += 1
                ev = Apply((NetFile(LAN, str(n).encode()),), (NetFile(LAN, disk),), IFACES, now)
            case "confirm":
                ev = Confirm(ConfirmSource.CONSOLE)
            case "peer":
                ev = PeerReached()
            case "vip":
                ev = VipAnswered()
            case "tick":
                ev = Tick(now)
            case _:
                ev = Start(now, core.pending)
        for a in core.handle(ev):
            match a:
                case WriteFiles(files=files):
                    disk = files[0].data
                case Rollback(previous=prev):
                    disk = prev[0].data
                    assert disk == confirmed
                case Confirmed():
                    confirmed = disk
        if core.pending is None:
            assert disk == confirmed
