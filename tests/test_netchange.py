"""The adapter of the commit-confirmed network change (firmware.netchange, `nvr network`): on a
temp data root with a fake runner, the files come back byte for byte (and mode) on rollback,
networkd is told with the right commands, the pending record survives the process."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from conftest import ROOT, nvr

from firmware.alert_ids import AlertId
from firmware.alerts import Alerts
from firmware.netchange import NetChange, NetChangeError, reload_commands
from firmware.netcli import EXIT_ROLLED_BACK, network_files, wait_confirmed
from firmware.netconfirm import ConfirmSource, NetFile, PeerReached, VipAnswered
from firmware.netwatch import NetWatch
from firmware.provision import Result
from firmware.setupfiles import Layout

EXAMPLE = ROOT / "rootfs" / "usr" / "share" / "nvr" / "answers.toml"
FACTORY = ROOT / "rootfs" / "etc" / "nvr" / "nvr.toml"
OLD_LAN = b"# hand-made\n[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n\xff\n"


class FakeRunner:
    def __init__(self, rc: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.rc = rc

    def __call__(self, argv, on_line=None) -> Result:
        self.calls.append(list(argv))
        return Result(self.rc, "" if self.rc == 0 else "Failed to reload network settings")


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def board(tmp_path: Path):
    layout = Layout(tmp_path / "data")
    layout.network_dir.mkdir(parents=True)
    lan = layout.network_dir / "10-lan.network"
    lan.write_bytes(OLD_LAN)
    os.chmod(lan, 0o640)
    runner, clock = FakeRunner(), Clock()
    return layout, runner, clock, NetChange(layout, runner, clock)


def new_files(layout: Layout) -> list[NetFile]:
    return [NetFile(layout.network_dir / "10-lan.network", b"[Match]\nName=eth0\n"),
            NetFile(layout.network_dir / "20-sync.network", b"[Match]\nName=eth1\n")]  # fmt: skip


def test_apply_writes_the_files_and_reloads_networkd(board):
    layout, runner, _clock, nc = board
    out = nc.apply(new_files(layout), ("eth0", "eth1"))
    assert (layout.network_dir / "10-lan.network").read_bytes() == b"[Match]\nName=eth0\n"
    assert runner.calls == [["networkctl", "reload"], ["networkctl", "reconfigure", "eth0"],
                            ["networkctl", "reconfigure", "eth1"]]  # fmt: skip
    assert AlertId.NETWORK_CHANGE_PENDING in {a.id for a in out.alerts if a.raised}
    assert nc.seconds_left() == 60.0
    assert stat.S_IMODE(os.stat(nc.record).st_mode) == 0o600


def test_no_confirm_swaps_the_files_back_byte_for_byte(board):
    layout, runner, clock, nc = board
    nc.apply(new_files(layout), ("eth0", "eth1"))
    runner.calls.clear()
    clock.t += 59.9
    assert not nc.tick().rolled_back
    clock.t += 0.1
    assert nc.tick().rolled_back
    lan = layout.network_dir / "10-lan.network"
    assert lan.read_bytes() == OLD_LAN and stat.S_IMODE(os.stat(lan).st_mode) == 0o640
    assert not (layout.network_dir / "20-sync.network").exists()  # it did not exist before
    assert runner.calls == reload_commands(("eth0", "eth1"))
    assert not nc.record.exists() and nc.pending() is None
    assert "timeout" in (nc.rolled_back() or "")


def test_confirm_keeps_the_change_and_a_new_apply_clears_the_rolled_back_note(board):
    layout, _runner, clock, nc = board
    nc.apply(new_files(layout), ("eth0",))
    clock.t += 30
    assert nc.confirm().confirmed is ConfirmSource.CONSOLE
    clock.t += 600
    assert not nc.tick().rolled_back
    assert (layout.network_dir / "20-sync.network").exists()
    assert nc.rolled_back() is None


def test_a_restart_while_pending_rolls_back_at_start(board):
    layout, runner, clock, nc = board
    nc.apply(new_files(layout), ("eth0", "eth1"))
    clock.t += 5
    again = NetChange(layout, runner, clock)  # a new process, after a reboot
    assert again.start().rolled_back
    assert (layout.network_dir / "10-lan.network").read_bytes() == OLD_LAN


def test_the_peer_confirms_through_the_adapter(board):
    layout, runner, clock, nc = board
    nc.apply(new_files(layout), ("eth0",))
    assert nc.event(PeerReached()).confirmed is None
    assert NetChange(layout, runner, clock).pending().peer_reached  # persisted across calls
    assert nc.event(VipAnswered()).confirmed is ConfirmSource.PEER
    assert nc.pending() is None


def test_a_late_confirm_is_too_late(board):
    layout, _runner, clock, nc = board
    nc.apply(new_files(layout), ("eth0",))
    clock.t += 61
    out = nc.confirm()
    assert out.rolled_back and out.confirmed is None
    assert (layout.network_dir / "10-lan.network").read_bytes() == OLD_LAN


def test_a_failing_networkctl_still_rolls_back_at_the_deadline(board, caplog):
    layout, _, clock, _ = board
    runner = FakeRunner(rc=1)
    nc = NetChange(layout, runner, clock)
    nc.apply(new_files(layout), ("eth0",))
    assert "Failed to reload" in caplog.text
    clock.t += 60
    assert nc.tick().rolled_back
    assert (layout.network_dir / "10-lan.network").read_bytes() == OLD_LAN


def test_a_corrupt_pending_record_is_said_not_guessed(board):
    layout, _runner, _clock, nc = board
    nc.record.parent.mkdir(parents=True, exist_ok=True)
    nc.record.write_bytes(b"{not json")
    with pytest.raises(NetChangeError, match=r"network-pending\.json"):
        nc.tick()
    assert (layout.network_dir / "10-lan.network").read_bytes() == OLD_LAN


def test_wait_confirmed_rolls_back_at_the_deadline_with_a_fake_clock(board):
    layout, _runner, clock, nc = board
    nc.apply(new_files(layout), ("eth0",))

    def sleep(s: float) -> None:
        clock.t += s

    out, err = io.StringIO(), io.StringIO()
    assert wait_confirmed(nc, out, err, 1.0, sleep) == EXIT_ROLLED_BACK
    assert clock.t == 1060.0
    assert "network-rolled-back" in err.getvalue()
    assert (layout.network_dir / "10-lan.network").read_bytes() == OLD_LAN


def test_wait_confirmed_ends_when_confirmed_elsewhere(board):
    layout, runner, clock, nc = board
    nc.apply(new_files(layout), ("eth0",))
    other = NetChange(layout, runner, clock)

    def sleep(s: float) -> None:
        clock.t += s
        if clock.t >= 1020:
            other.confirm()

    assert wait_confirmed(nc, io.StringIO(), io.StringIO(), 1.0, sleep) == 0
    assert (layout.network_dir / "10-lan.network").read_bytes() == b"[Match]\nName=eth0\n"


def test_the_answers_give_only_the_network_files(tmp_path):
    layout = Layout(tmp_path / "data")
    files, ifaces = network_files(EXAMPLE, layout, FACTORY)
    assert [f.path.name for f in files] == ["10-lan.network", "20-sync.network"]
    assert b"Address=192.0.2.11/24" in files[0].data
    assert ifaces == ("lan0", "sync0")  # the factory config's (the board profile's) names


def test_the_commands_apply_status_confirm(tmp_path, monkeypatch):
    """`nvr network` end to end with a stand-in networkctl first in PATH (the host's is never
    run): --no-wait, then status, then confirm."""
    data = str(tmp_path / "data")
    common = ("--data-root", data, "--config", str(FACTORY))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "networkctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    res = nvr("network", "apply", "--answers", str(EXAMPLE), "--no-wait", *common)
    assert "10-lan.network" in res.stdout
    assert (tmp_path / "calls").read_text().splitlines() == [
        "reload", "reconfigure lan0", "reconfigure sync0"]  # fmt: skip
    res = nvr("network", "status", *common)
    assert "change pending, rolls back in" in res.stdout
    res = nvr("network", "confirm", *common)
    assert "change confirmed" in res.stdout
    res = nvr("network", "status", *common)
    assert "no change pending" in res.stdout


# --- in the running firmware (firmware.netwatch) ---------------------------------------------


class Facts:
    lan = False
    vip = False


def watch(board) -> tuple[NetWatch, Alerts, Facts]:
    _layout, _runner, _clock, nc = board
    alerts, facts = Alerts(), Facts()
    return NetWatch(nc, alerts, lambda: facts.lan, lambda: facts.vip), alerts, facts


def test_the_firmware_confirms_by_the_peer_after_the_change_settles(board):
    layout, _runner, clock, nc = board
    w, alerts, facts = watch(board)
    nc.apply(new_files(layout), ("eth0",))
    facts.lan = facts.vip = True
    clock.t += 5  # adverts heard just before the change are still "fresh": not yet
    w.step()
    assert nc.pending() is not None and alerts.is_active(AlertId.NETWORK_CHANGE_PENDING)
    clock.t += 5
    w.step()
    assert nc.pending() is None and not alerts.is_active(AlertId.NETWORK_CHANGE_PENDING)
    clock.t += 120
    w.step()
    assert (layout.network_dir / "10-lan.network").read_bytes() == b"[Match]\nName=eth0\n"


def test_the_firmware_rolls_back_without_the_vip_and_says_so(board):
    layout, _runner, clock, nc = board
    w, alerts, facts = watch(board)
    nc.apply(new_files(layout), ("eth0",))
    facts.lan = True  # the peer is heard, but no board holds the VIP: not confirmed
    for _ in range(60):
        clock.t += 1
        w.step()
    assert (layout.network_dir / "10-lan.network").read_bytes() == OLD_LAN
    assert alerts.is_active(AlertId.NETWORK_ROLLED_BACK)
    assert not alerts.is_active(AlertId.NETWORK_CHANGE_PENDING)


def test_the_firmware_rolls_back_at_its_start_a_change_left_pending(board):
    layout, _runner, _clock, nc = board
    nc.apply(new_files(layout), ("eth0",))
    w, alerts, _ = watch(board)
    w.start()
    assert (layout.network_dir / "10-lan.network").read_bytes() == OLD_LAN
    assert alerts.is_active(AlertId.NETWORK_ROLLED_BACK)


def test_the_firmware_writes_nothing_when_no_change_is_pending(board):
    layout, runner, _clock, _nc = board
    w, alerts, _facts = watch(board)
    w.start()
    w.step()
    assert not (layout.data_root / "etc" / "nvr").exists() and runner.calls == []
    assert alerts.active() == []


def test_a_bad_answer_applies_nothing(tmp_path):
    data = tmp_path / "data"
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('address = "192.0.2.11/24"', 'address = "nope"'))
    assert bad.read_text() != EXAMPLE.read_text()
    res = nvr("network", "apply", "--answers", str(bad), "--no-wait", "--data-root", str(data),
              "--config", str(FACTORY), check=False)  # fmt: skip
    assert res.returncode == 2 and "lan.address" in res.stderr
    assert not data.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_lock_the_console_makes_first_belongs_to_the_firmware_s_user(board):
    """The console runs as root, the firmware as its own user: a lock root made first must
    still open for the firmware."""
    _layout, _runner, _clock, nc = board
    nc.lock_path.parent.mkdir(parents=True, exist_ok=True)
    os.chown(nc.lock_path.parent, 65534, 65534)  # the firmware's user owns its directory
    nc.tick()
    st = os.stat(nc.lock_path)
    assert (st.st_uid, st.st_gid) == (65534, 65534)
