"""Failover in the twin-board rig: real namespaces, real `nvr run` processes, real links.

Every scenario starts a=150, b=100 and waits until a holds the VIP; "nothing happens" claims
are checked over an observation window of many master-down intervals, together with proof
that the fault really silenced what it should.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
from datetime import datetime

import pytest
from conftest import NVR, ROOT, holds, wait_until
from pyroute2.netns import popns, pushns

from firmware.failover.advert import WIRE_SIZE, decode, encode
from firmware.pairkey import load_pair_key
from hil.rig import ADDRESSES
from hil.twin import ADVERT_PORT, API_PORT, TwinBoards

ETH_P_ALL = 3
WINDOW_S = 4.0
"""About ten master-down intervals at 100 ms adverts."""


@pytest.fixture
def twin(tmp_path):
    with TwinBoards(tmp_path) as tb:
        tb.start("a", 150)
        try:
            wait_until(lambda: tb.active() == "a", 60, "board a active with the VIP")
            tb.start("b", 100)
            wait_until(lambda: tb.role("b") == "standby"
                       and (tb.status("b")["peer"] or {}).get("role") == "active", 30,
                       "board b standby, hearing a active")  # fmt: skip
            yield tb
        except BaseException:
            print("--- a ---\n" + tb.log("a")[-4000:] + "\n--- b ---\n" + tb.log("b")[-4000:])
            raise


def steady(tb: TwinBoards) -> bool:
    return tb.vip_holders() == ["a"] and tb.role("b") == "standby"


def path_age(tb: TwinBoards, host: str, path: str) -> float:
    return tb.status(host)["peer"]["paths"].get(path, float("inf"))


def test_power_cut_moves_vip_and_client_reaches_standby(twin):
    assert twin.via_vip()["board"] == "a"
    twin.power_cut("a")
    wait_until(lambda: twin.via_vip(0.3)["board"] == "b", 10, "client reaching b on the VIP")
    st = twin.status("b")
    assert st["role"] == "active" and st["epoch"] == 2
    # The sync port lost carrier and a said nothing: once b heard of the drop it was active
    # within the grace (one advert interval), not after three missed adverts. Unless the
    # kernel held the carrier change back (one kernel runs every namespace, and its linkwatch
    # delays a change within a second of another, e.g. a namespace being removed): then b
    # heard of it only after master down had taken over.
    events = {}
    for line in twin.log("b").splitlines():
        for what in ("sync eth1: carrier lost", "role standby -> active"):
            if what in line and what not in events:
                events[what] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    heard, took = events.get("sync eth1: carrier lost"), events["role standby -> active"]
    if heard is not None and heard <= took:
        assert (took - heard).total_seconds() < 0.1 + 0.05, twin.log("b")[-3000:]
        assert st["failover"]["election"]["sync_carrier_lost"] == 1
    else:
        assert st["failover"]["role_reason"] == "master down", twin.log("b")[-3000:]
    assert twin.vip_holders() == ["b"]
    # The client's ARP entry for the VIP was moved by b's gratuitous ARP.
    b_mac = twin.rig.run("b", ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    neigh = twin.rig.run("cli", ["ip", "neigh", "show", "192.0.2.100"]).stdout
    assert b_mac in neigh


def test_pulling_only_the_sync_cable_causes_no_takeover(twin):
    twin.rig.cable("a", "sync", False)
    wait_until(lambda: path_age(twin, "b", "sync") > 1.0, 10, "b no longer hearing a on sync")
    holds(lambda: steady(twin), WINDOW_S, "a active, b standby with the sync cable out")
    # b heard a say it saw the drop too, or a's sync-down reached b before b's own carrier
    # event: either way no sync-carrier takeover was armed to fire.
    election = twin.status("b")["failover"]["election"]
    assert election.get("sync_carrier_takeover", 0) == 0
    assert "sync-down" in twin.status("b")["peer"]["health"]
    assert path_age(twin, "b", "lan") < 0.5  # the LAN carried the adverts all along


def test_blocking_only_the_lan_heartbeat_causes_no_takeover(twin):
    twin.rig.block("a", "lan", ADVERT_PORT, True)
    wait_until(lambda: path_age(twin, "b", "lan") > 1.0, 10, "b no longer hearing a on the LAN")
    holds(lambda: steady(twin), WINDOW_S, "a active, b standby with LAN adverts blocked")
    assert path_age(twin, "b", "sync") < 0.5
    assert twin.via_vip()["board"] == "a"  # only the heartbeat was blocked, not the clients


def test_standby_with_its_lan_cable_out_never_claims_the_vip(twin):
    twin.rig.cable("b", "lan", False)
    wait_until(lambda: not twin.status("b")["failover"]["lan_carrier"], 10, "b sees no carrier")
    assert "lan-down" in twin.status("b")["failover"]["health"]
    assert "nic-down-lan" in {a["id"] for a in twin.status("b")["alerts"]}
    holds(lambda: steady(twin), WINDOW_S, "b standby with its LAN cable out")
    # Now every path is silent for b: it is cut off, and the tie-breaker keeps it standby.
    twin.rig.cable("b", "sync", False)
    wait_until(lambda: twin.status("b")["peer"]["heard_seconds_ago"] > 1.0, 10, "b hears nothing")
    holds(lambda: steady(twin), WINDOW_S, "isolated b stays standby")
    assert twin.status("b")["failover"]["election"].get("withheld_unreachable", 0) > 0
    assert twin.via_vip()["board"] == "a"
    assert "nic-down-sync" in {a["id"] for a in twin.status("b")["alerts"]}
    twin.rig.cable("b", "lan", True)
    wait_until(lambda: "nic-down-lan" not in {a["id"] for a in twin.status("b")["alerts"]}, 10,
               "the LAN alert clearing itself")  # fmt: skip


def test_healed_dual_active_leaves_exactly_one(twin):
    # Partition: no path between the boards, both still reach the camera.
    twin.rig.cable("a", "sync", False)
    for host in ("a", "b"):
        twin.rig.block(host, "lan", ADVERT_PORT, True)
    wait_until(lambda: twin.vip_holders() == ["a", "b"], 10, "both boards active")
    assert twin.status("b")["epoch"] > twin.status("a")["epoch"]
    for host in ("a", "b"):
        twin.rig.block(host, "lan", ADVERT_PORT, False)
    twin.rig.cable("a", "sync", True)
    wait_until(lambda: len(twin.vip_holders()) == 1, 10, "one VIP holder after healing")
    winner = twin.vip_holders()[0]
    assert winner == "b"  # the higher epoch stays
    holds(lambda: twin.vip_holders() == ["b"] and twin.role("a") == "standby", 2.0,
          "b alone active")  # fmt: skip
    wait_until(lambda: twin.via_vip()["board"] == "b", 10, "client reaching b")
    assert twin.status("a")["failover"]["election"].get("released_dual_active", 0) == 1


def test_planned_handover_moves_the_vip_and_a_clean_stop_hands_over(twin):
    cfg = twin.workdir / "a" / "nvr.toml"
    out = twin.rig.run("a", [*NVR, "handover", "--config", str(cfg)], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: twin.active() == "b", 10, "b active after the handover")
    st = twin.status("b")
    assert st["failover"]["role_reason"] == "handover"
    holds(lambda: twin.vip_holders() == ["b"], 2.0, "a does not take the VIP back")
    # A clean stop (SIGTERM) of the active board hands over too.
    twin.start("a", 150)
    wait_until(lambda: twin.role("a") == "standby", 60, "a back as standby")
    twin.stop("b")
    wait_until(lambda: twin.active() == "a", 10, "a active after b stopped")
    assert twin.status("a")["failover"]["role_reason"] == "handover"


def capture_advert(twin: TwinBoards, host: str) -> bytes:
    """A real advert off the wire: sniffed on host's switch port (ETH_P_ALL: a bridge port
    hands frames to the bridge before protocol-specific sockets would see them)."""
    pushns(twin.rig.switch)
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    finally:
        popns()
    source = socket.inet_aton(ADDRESSES[host]["lan"])
    with s:
        s.bind((f"{host}-lan", ETH_P_ALL))
        s.settimeout(5)
        while True:
            frame = s.recv(4096)
            if frame[12:14] != b"\x08\x00" or frame[26:30] != source:
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] == socket.IPPROTO_UDP and int.from_bytes(ip[ihl + 2 : ihl + 4]) == ADVERT_PORT:
                return bytes(ip[ihl + 8 : ihl + 8 + WIRE_SIZE])


def test_forged_garbled_and_replayed_adverts_change_nothing(twin):
    key = load_pair_key(twin.key_file)
    captured = capture_advert(twin, "a")
    assert decode(captured, key).board_id == "a"
    before = {h: twin.status(h) for h in ("a", "b")}
    wait_until(lambda: twin.status("b")["failover"]["election"]["accepted"]
               > before["b"]["failover"]["election"]["accepted"] + 20, 10,
               "a few seconds of newer adverts")  # fmt: skip
    a_now = decode(captured, key)
    forged = encode(dataclasses.replace(a_now, board_id="b", epoch=99, priority=254, seq=2**63),
                    os.urandom(32))  # fmt: skip
    # Forged with the wrong key, claiming to be b, active, epoch 99; to a and to b.
    bad = [forged, os.urandom(WIRE_SIZE), captured[:-1], b"NVRA" + os.urandom(300)]
    flipped = bytearray(captured)
    flipped[20] ^= 0x01
    bad.append(bytes(flipped))
    for host in ("a", "b"):
        for data in [*bad, captured]:  # captured: a replay of a's own real advert
            twin.rig.send_udp("cli", ADDRESSES[host]["lan"], ADVERT_PORT, data)
    wait_until(lambda: sum(twin.status("b")["failover"]["dropped"].values())
               >= sum(before["b"]["failover"]["dropped"].values()) + 6, 5,
               "b counting the bad adverts")  # fmt: skip
    after = {h: twin.status(h) for h in ("a", "b")}
    assert after["a"]["role"] == "active" and after["b"]["role"] == "standby"
    assert after["a"]["epoch"] == before["a"]["epoch"]
    assert twin.vip_holders() == ["a"]
    dropped_b = after["b"]["failover"]["dropped"]
    assert dropped_b.get("hmac", 0) >= 2  # forged + flipped
    assert dropped_b.get("replay", 0) >= 1  # the captured advert, replayed later
    assert dropped_b.get("short", 0) + dropped_b.get("magic", 0) >= 2
    assert after["b"]["peer"]["board"] == "a"
    holds(lambda: steady(twin), 1.0, "nothing changed")
    metrics = twin.rig.http("b", "127.0.0.1", API_PORT, "/metrics").decode()
    assert 'nvr_pair_role{role="standby"} 1.0' in metrics
    hmac_line = next(
        x
        for x in metrics.splitlines()
        if x.startswith('nvr_pair_adverts_dropped_total{reason="hmac"}')
    )
    assert float(hmac_line.split()[-1]) >= 2


def test_serial_crosslink_carries_adverts_when_both_networks_are_silent(tmp_path):
    ttys = tmp_path / "ttyA", tmp_path / "ttyB"
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={ttys[0]}",
                              f"pty,raw,echo=0,link={ttys[1]}"])  # fmt: skip
    try:
        wait_until(lambda: all(t.exists() for t in ttys), 10, "socat's serial pair")
        with TwinBoards(tmp_path / "twin") as tb:
            # One board at a time: preempt is off by default, so two boards started together
            # keep whichever came up first, and a slow start may hand b the VIP.
            tb.start("a", 150, serial_port=str(ttys[0]))
            wait_until(lambda: tb.active() == "a", 60, "a active")
            tb.start("b", 100, serial_port=str(ttys[1]))
            wait_until(lambda: path_age(tb, "b", "serial") < 0.5, 10, "b hearing a on serial")
            tb.rig.cable("a", "sync", False)
            tb.rig.block("a", "lan", ADVERT_PORT, True)
            wait_until(lambda: min(path_age(tb, "b", p) for p in ("lan", "sync")) > 1.0, 10,
                       "LAN and sync paths silent")  # fmt: skip
            holds(lambda: steady(tb), WINDOW_S, "serial alone keeps b standby")
            assert path_age(tb, "b", "serial") < 0.5
    finally:
        socat.terminate()
        socat.wait(10)
