"""The failover adapter's pure parts: serial framing, health mapping, sequence floor, pair
key, config keys, and the floating IP against the simulated NIC."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess

import pytest
from conftest import mounted_tmpfs, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pair_token import board, config, key_file  # noqa: F401 (a fixture)

from firmware.config import ConfigError, HealthWeights, parse_config
from firmware.failover.advert import MAGIC, WIRE_SIZE, Advert, Health, decode, encode
from firmware.failover.daemon import SEEN_FILE, load_seen, next_seq_start, save_seen
from firmware.failover.election import DEFAULT_WEIGHTS, PRIORITY_MAX, Election
from firmware.failover.health import health_names, health_weights
from firmware.failover.transport import DSCP_CS6, TC_PRIO_INTERACTIVE, UdpPath, split_frames
from firmware.failover.vip import FloatingIP
from firmware.pairkey import load_pair_key, make_pair_key
from hal.nic import AddressEvent
from hal.sim.nic import SimNic

KEY = b"k" * 32


def advert(seq: int) -> bytes:
    a = Advert("pair", "a", 100, "active", 1, seq, 100)
    return encode(a, KEY)


def valid(frame: bytes) -> bool:
    try:
        decode(frame, KEY)
    except ValueError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            st.integers(1, 10**9).map(lambda s: ("frame", s)),
            st.binary(max_size=300).map(lambda b: ("noise", b)),
            st.binary(max_size=40).map(lambda b: ("noise", MAGIC + b)),  # fake frame starts
        ),
        max_size=12,
    ),
    chunk=st.integers(1, 500),
)
def test_serial_framing_recovers_every_frame_through_noise(parts, chunk):
    stream = b""
    want = []
    for kind, value in parts:
        if kind == "frame":
            frame = advert(value)
            want.append(frame)
            stream += frame
        else:
            stream += value
    got, buf = [], b""
    for i in range(0, len(stream), chunk):
        frames, buf, _ = split_frames(buf + stream[i : i + chunk], valid)
        got += frames
    # A fake MAGIC less than a frame before a real one can only hide it while the real one
    # is still incomplete; at the end of the stream every real frame has been found.
    assert got == want
    assert len(buf) < WIRE_SIZE


@pytest.mark.skipif(os.geteuid() != 0, reason="binding to an interface needs root")
def test_advert_socket_is_marked_network_control_and_queued_first():
    """A busy sync link carries the mirror's bulk transfer too: adverts must not queue behind
    it on the board (socket priority) nor on the switch (DSCP)."""
    import socket

    async def run() -> tuple[int, int]:
        path = UdpPath("lan", "lo", "127.0.0.1", 0, lambda data, name: None)
        await path.open()
        try:
            assert path.transport is not None
            sock = path.transport.get_extra_info("socket")
            return (sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS),
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY))  # fmt: skip
        finally:
            path.close()

    assert asyncio.run(run()) == (DSCP_CS6, TC_PRIO_INTERACTIVE)


def test_serial_framing_counts_skipped_noise():
    frames, rest, skipped = split_frames(b"xyz" + advert(1) + b"NV", valid)
    assert len(frames) == 1 and rest == b"NV" and skipped == 3


def test_health_names_are_the_flags_in_lower_case():
    assert health_names(Health.LAN_DOWN | Health.UPS_LOW) == ["lan-down", "ups-low"]
    assert health_names(Health.NONE) == []


def test_health_weights_come_from_config_keys():
    w = health_weights(HealthWeights(lan_down=7))
    assert w[Health.LAN_DOWN] == 7 and w[Health.DISK_FAILED] == 100 and len(w) == 8


def test_config_and_election_share_one_table_of_weights_and_priorities():
    assert health_weights(HealthWeights()) == DEFAULT_WEIGHTS
    with pytest.raises(ValueError):
        Election("a", "p", PRIORITY_MAX + 1, 0.1)
    Election("a", "p", PRIORITY_MAX, 0.1)


def test_seq_start_rises_across_restarts_even_if_the_clock_goes_back(tmp_path):
    first = next_seq_start(tmp_path, 2_000_000_000.0)
    second = next_seq_start(tmp_path, 1_000.0)  # clock reset to 1970
    assert second > first + 2**31
    (tmp_path / "failover.json").write_text("garbage")
    assert next_seq_start(tmp_path, 3_000_000_000.0) >= 3_000_000_000 << 32


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3 * WIRE_SIZE), st.binary(max_size=WIRE_SIZE))
def test_serial_framing_of_random_bytes_gives_only_adverts(noise, tail):
    """Whatever the crosslink carries, the splitter hands on only frames that decode, and
    keeps less than a frame for the next read."""
    stream = noise + advert(7) + tail
    frames, rest, skipped = split_frames(stream, valid)
    assert all(isinstance(decode(f, KEY), Advert) for f in frames)
    assert advert(7) in frames
    assert len(rest) < WIRE_SIZE
    assert skipped <= len(stream)


def test_floors_file_round_trips_and_bad_ones_are_ignored(tmp_path):
    assert load_seen(tmp_path) == {}
    save_seen(tmp_path, {"b": 2**64 - 1, "c": 5})
    assert load_seen(tmp_path) == {"b": 2**64 - 1, "c": 5}
    assert stat.S_IMODE(os.stat(tmp_path / SEEN_FILE).st_mode) & 0o022 == 0
    for garbage in ("garbage", "[1, 2]", '{"b": "x", "c": -1, "d": true, "e": 3}'):
        (tmp_path / SEEN_FILE).write_text(garbage)
        assert load_seen(tmp_path) == ({"e": 3} if '"e"' in garbage else {})


def test_a_restarted_board_refuses_adverts_captured_before_it_restarted(tmp_path, key_file):  # noqa: F811
    """The daemon keeps the floors in the data directory while it runs: a board that
    crashed and came back drops every advert it had accepted before, however they return."""
    cfg = config(tmp_path, "a", key_file)
    key = load_pair_key(key_file)
    pair = str(cfg.pair.virtual_ip) if cfg.pair else ""
    captured = [encode(Advert(pair, "b", 200, "active", 1, (7 << 32) + n, 100), key)
                for n in range(30)]  # fmt: skip

    def feed(frames: list[bytes]) -> dict[str, int]:
        b = board(cfg)
        fo = b.failover
        assert fo is not None

        async def run() -> None:
            fo._loop = asyncio.get_running_loop()
            fo.election.start(fo._loop.time())
            for frame in frames:
                fo._rx(frame, "lan")
            if fo._timer is not None:
                fo._timer.cancel()

        try:
            asyncio.run(run())  # waits for the writes it started, as a running board would not
        finally:
            b.catalog.close()
        return fo.election.stats

    first = feed(captured)
    assert first["accepted"] == 30
    wait_until(lambda: load_seen(cfg.board.data_dir).get("b", 0) >= (7 << 32) + 29, 5, "floors")
    # a crash: nothing more was written; the board comes back and hears the recording
    again = feed(captured)
    assert again.get("accepted", 0) == 0
    assert again.get("replay", 0) + again.get("late", 0) == 30
    fresh = encode(Advert(pair, "b", 200, "active", 1, (8 << 32), 100), key)
    assert feed([fresh])["accepted"] == 1


def test_pair_key_is_made_private_and_never_overwritten(tmp_path):
    path = tmp_path / "etc" / "pair.key"
    make_pair_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = load_pair_key(path)
    assert len(key) == 64
    with pytest.raises(FileExistsError):
        make_pair_key(path)
    assert load_pair_key(path) == key


def test_missing_or_weak_pair_key_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nvr pair-key"):
        load_pair_key(tmp_path / "none.key")
    (tmp_path / "weak.key").write_text("short\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_pair_key(tmp_path / "weak.key")


PAIR = """
[pair]
peer_lan_address = "192.0.2.12"
peer_sync_address = "198.51.100.2"
virtual_ip = "{vip}"
{extra}
"""


def test_pair_config_keys_are_checked():
    cfg = parse_config(
        PAIR.format(vip="192.0.2.100/24", extra="[pair.health_weights]\nups_low = 9")
    )
    assert cfg.pair is not None and str(cfg.pair.virtual_ip) == "192.0.2.100/24"
    assert cfg.pair.health_weights.ups_low == 9 and not cfg.pair.preempt
    with pytest.raises(ConfigError, match=r"pair\.virtual_ip"):
        parse_config(PAIR.format(vip="192.0.2.300/24", extra=""), "x.toml")
    with pytest.raises(ConfigError, match=r"pair\.health_weights\.ups_lo.*unknown key"):
        parse_config(PAIR.format(vip="192.0.2.100/24", extra="[pair.health_weights]\nups_lo = 1"))


def test_floating_ip_announces_repeatedly_comes_back_and_releases():
    nic = SimNic({"eth0": "02:00:00:00:00:01"})
    vip = FloatingIP(nic, "eth0", "192.0.2.100/24", count=3, spacing=0.01, refresh=0.05)

    async def scenario() -> None:
        vip.take()
        assert vip.held() and len(nic.sent) == 1
        while len(nic.sent) < 4:  # three spaced, then the periodic refresh
            await asyncio.sleep(0.005)
        nic.remove_address("eth0", "192.0.2.100/24")  # somebody flushed it
        vip.on_event(AddressEvent("eth0", "192.0.2.100/24", False))
        assert vip.held()
        vip.release()
        sent = len(nic.sent)
        await asyncio.sleep(0.1)
        assert len(nic.sent) == sent  # no announcements after release
        assert not vip.held()
        nic.add_address("eth0", "192.0.2.100/24")  # left behind by a crash
        vip.on_event(AddressEvent("eth0", "192.0.2.100/24", True))
        assert not vip.held()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_the_advert_floors_are_never_written_under_a_pulled_disk_s_mount_point(tmp_path):
    """The data disk pulled, before the hardware monitor has said so (state_held): the floors
    do not land in the bare mount point; once the board holds and releases the disk it judged
    its own again, they are written on it."""
    key = tmp_path / "pair.key"
    make_pair_key(key)
    cfg = config(tmp_path, "a", key)
    data = cfg.board.data_dir
    with mounted_tmpfs(data, "8m"):
        fo = board(cfg).failover
        assert fo is not None
        fo._write_floors({"b": 7})
        assert load_seen(data) == {"b": 7}
        subprocess.run(["umount", "-l", str(data)], check=True)  # pulled
        fo._write_floors({"b": 8})
        assert not (data / SEEN_FILE).exists()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)], check=True)
        fo._write_floors({"b": 9})  # another filesystem, not yet judged the board's own
        assert not (data / SEEN_FILE).exists()
        fo.state_held = True  # what the board does on the monitor's word, and then
        fo.state_held = False
        fo._write_floors({"b": 10})
        assert load_seen(data) == {"b": 10}
