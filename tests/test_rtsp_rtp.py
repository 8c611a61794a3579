"""The RTP depacketizers against reference packetizers written here: whatever the packetization
(single NAL units, aggregation, fragmentation at any MTU; several AAC frames a packet or one
over several), what goes in comes out byte for byte; with packets lost, only the units that
lost one are missing or flagged; and no bytes make them raise."""

from __future__ import annotations

import base64
import itertools
import random
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from firmware.rtsp.rtp import (
    MAX_AU_SIZE,
    START,
    AacDepacketizer,
    AacParams,
    AccessUnit,
    ChannelUnit,
    H264Depacketizer,
    H265Depacketizer,
    RtpPacket,
    TimestampUnwrapper,
    UnsupportedStream,
    aac_config,
    aac_params,
    annexb,
    depacketizer_for,
    h264_parameter_sets,
    h265_parameter_sets,
    parse_rtp,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SSRC = 0x1234ABCD


# --- reference packetizers ---------------------------------------------------------------------


def _split(body: bytes, rng: random.Random, most: int, pieces_min: int = 2) -> list[bytes]:
    """body in pieces of at most `most` octets, at least pieces_min of them, at random cuts."""
    assert most >= 1 and len(body) >= pieces_min
    out = []
    pos = 0
    while pos < len(body):
        left = len(body) - pos
        cap = min(most, left - (pieces_min - len(out) - 1))  # leave enough for the rest
        size = rng.randint(1, max(1, cap))
        out.append(body[pos : pos + size])
        pos += size
    assert len(out) >= pieces_min and b"".join(out) == body
    return out


def packetize_nals(nals: list[bytes], mtu: int, rng: random.Random, h265: bool) -> list[bytes]:
    """RTP payloads of one access unit: RFC 6184 (single, STAP-A, FU-A) or RFC 7798 (single,
    AP, FU), each choice at random where the MTU allows more than one."""
    hl = 2 if h265 else 1  # NAL header length
    fu_over = hl + 1  # FU indicator/payload header and FU header
    out: list[bytes] = []
    i = 0
    while i < len(nals):
        nal = nals[i]
        fits = len(nal) <= mtu
        can_fu = len(nal) - hl >= 2
        if not fits or (can_fu and rng.random() < 0.25):
            body = nal[hl:]
            pieces = _split(body, rng, mtu - fu_over)
            for k, piece in enumerate(pieces):
                flags = (0x80 if k == 0 else 0) | (0x40 if k == len(pieces) - 1 else 0)
                if h265:
                    t = (nal[0] >> 1) & 0x3F
                    head = bytes(((nal[0] & 0x81) | (49 << 1), nal[1], flags | t))
                else:
                    head = bytes(((nal[0] & 0xE0) | 28, flags | (nal[0] & 0x1F)))
                out.append(head + piece)
            i += 1
            continue
        # aggregate nals[i:j] if more than one fits, or now and then a single one
        agg_head = hl
        j = i
        size = agg_head
        while j < len(nals) and size + 2 + len(nals[j]) <= mtu:
            size += 2 + len(nals[j])
            j += 1
        if j > i and rng.random() < 0.5:
            j = rng.randint(i + 1, j)
            group = nals[i:j]
            nri = max(n[0] & 0x60 for n in group)
            head = bytes((48 << 1, 1)) if h265 else bytes((nri | 24,))
            out.append(head + b"".join(struct.pack("!H", len(n)) + n for n in group))
            i = j
        else:
            out.append(nal)
            i += 1
    return out


def h264_nal(rng: random.Random, t: int, size: int) -> bytes:
    return bytes(((rng.randint(0, 3) << 5) | t,)) + rng.randbytes(size)


def h265_nal(rng: random.Random, t: int, size: int) -> bytes:
    """A NAL unit header of any layer and temporal id (not 0), a body of random octets."""
    layer = rng.choice((0, 0, 1, 63))
    return bytes(((t << 1) | layer >> 5, (layer & 31) << 3 | rng.randint(1, 7))) + rng.randbytes(
        size
    )


def nal_size(rng: random.Random) -> int:
    r = rng.random()
    return rng.randint(0, 40) if r < 0.4 else rng.randint(41, 1500) if r < 0.9 else 5000


def h264_au(rng: random.Random) -> list[bytes]:
    nals = []
    if rng.random() < 0.3:
        nals.append(h264_nal(rng, 9, 1))  # AUD
    key = rng.random() < 0.3
    if key or rng.random() < 0.1:
        nals += [h264_nal(rng, 7, rng.randint(5, 30)), h264_nal(rng, 8, rng.randint(2, 6))]
    if rng.random() < 0.3:
        nals.append(h264_nal(rng, 6, rng.randint(1, 50)))
    for _ in range(rng.randint(1, 3)):
        nals.append(h264_nal(rng, 5 if key else 1, nal_size(rng)))
    if rng.random() < 0.1:
        nals.append(h264_nal(rng, 12, rng.randint(1, 20)))  # filler after the picture
    return nals


def h265_au(rng: random.Random) -> list[bytes]:
    nals = []
    if rng.random() < 0.3:
        nals.append(h265_nal(rng, 35, 1))  # AUD
    key = rng.random() < 0.3
    if key:
        nals += [h265_nal(rng, t, rng.randint(5, 30)) for t in (32, 33, 34)]
    if rng.random() < 0.3:
        nals.append(h265_nal(rng, 39, rng.randint(1, 50)))  # prefix SEI
    kind = rng.choice((19, 20, 21, 16)) if key else rng.choice((0, 1, 8, 9))
    for _ in range(rng.randint(1, 3)):
        nals.append(h265_nal(rng, kind, nal_size(rng)))
    if rng.random() < 0.2:
        nals.append(h265_nal(rng, 40, rng.randint(1, 30)))  # suffix SEI
    return nals


def rtp(payload: bytes, seq: int, ts: int, marker: bool, ssrc: int = SSRC) -> RtpPacket:
    return RtpPacket(96, marker, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload)


def video_stream(
    aus: list[list[bytes]], mtu: int, rng: random.Random, h265: bool, seq0: int, ts0: int
) -> tuple[list[RtpPacket], list[int]]:
    """Packets of the access units (3000 ticks apart, marker on each one's last) and, for
    each packet, the index of its unit."""
    pkts: list[RtpPacket] = []
    owner: list[int] = []
    for k, nals in enumerate(aus):
        payloads = packetize_nals(nals, mtu, rng, h265)
        for i, pl in enumerate(payloads):
            pkts.append(rtp(pl, seq0 + len(pkts), ts0 + 3000 * k, i == len(payloads) - 1))
            owner.append(k)
    return pkts, owner


def run(dep, pkts: list[RtpPacket]) -> list[AccessUnit]:
    out: list[AccessUnit] = []
    for p in pkts:
        out += dep.push(p)
    return out + dep.flush()


def keyframe(nals: list[bytes], h265: bool) -> bool:
    if h265:
        return any(16 <= (n[0] >> 1) & 0x3F <= 21 for n in nals)
    return any(n[0] & 0x1F == 5 for n in nals)


# --- video: round trip and loss ----------------------------------------------------------------


@FUZZ
@given(
    seed=st.integers(0, 2**32),
    count=st.integers(1, 12),
    mtu=st.integers(60, 1500),
    h265=st.booleans(),
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
)
def test_video_round_trip_is_exact(seed, count, mtu, h265, seq0, ts0):
    rng = random.Random(seed)
    aus = [(h265_au if h265 else h264_au)(rng) for _ in range(count)]
    pkts, _ = video_stream(aus, mtu, rng, h265, seq0, ts0)
    dep = H265Depacketizer() if h265 else H264Depacketizer()
    out = run(dep, pkts)
    assert [o.data for o in out] == [annexb(n) for n in aus]
    assert [o.keyframe for o in out] == [keyframe(n, h265) for n in aus]
    assert [o.timestamp for o in out] == [ts0 + 3000 * k for k in range(count)]
    assert not any(o.after_loss for o in out)
    assert (dep.lost, dep.dropped, dep.malformed) == (0, 0, 0)


@FUZZ
@given(
    seed=st.integers(0, 2**32),
    count=st.integers(1, 12),
    mtu=st.integers(60, 1500),
    h265=st.booleans(),
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
    loss=st.floats(0.0, 0.5),
)
def test_video_loss_costs_only_the_units_that_lost_a_packet(
    seed, count, mtu, h265, seq0, ts0, loss
):
    rng = random.Random(seed)
    aus = [(h265_au if h265 else h264_au)(rng) for _ in range(count)]
    pkts, owner = video_stream(aus, mtu, rng, h265, seq0, ts0)
    # the last packet arrives: a loss is seen by the packet after it (flush has its own tests)
    gone = {i for i in range(len(pkts) - 1) if rng.random() < loss}
    kept = [i for i in range(len(pkts)) if i not in gone]
    damaged = {owner[i] for i in gone}
    seen = {owner[i] for i in kept}
    dep = H265Depacketizer() if h265 else H264Depacketizer()
    dep.expect_seq(seq0)
    out = run(dep, [pkts[i] for i in kept])

    by_ts = {(ts0 + 3000 * k) & 0xFFFFFFFF: k for k in range(count)}
    got = [by_ts[o.timestamp & 0xFFFFFFFF] for o in out]
    assert got == sorted(set(got)), "out of order or twice"
    offsets = {o.timestamp - (ts0 + 3000 * k) for o, k in zip(out, got, strict=True)}
    assert len(offsets) <= 1 and all(off % 2**32 == 0 for off in offsets)
    for o, k in zip(out, got, strict=True):
        whole = annexb(aus[k])
        if k not in damaged:
            assert o.data == whole
            assert o.keyframe == keyframe(aus[k], h265)
        else:  # only a unit that lost its first packets, flagged, with the rest whole
            event("a unit that lost its head comes out flagged")
            assert o.after_loss
            assert any(o.data == annexb(aus[k][j:]) for j in range(1, len(aus[k])))
    assert set(range(count)) - damaged <= set(got), "a whole unit is missing"
    assert dep.lost == len(gone)
    assert dep.dropped == len(seen - set(got))
    assert dep.malformed == 0
    event(f"units dropped: {min(dep.dropped, 3)}")


def test_the_unit_after_a_loss_is_flagged_and_whole():
    rng = random.Random(1)
    aus = [h264_au(rng) for _ in range(3)]
    pkts, owner = video_stream(aus, 1400, rng, False, 100, 0)
    lose = owner.index(1)  # the first packet of the second unit
    dep = H264Depacketizer()
    out = run(dep, pkts[:lose] + pkts[lose + 1 :])
    assert out[0].timestamp == 0 and out[-1].timestamp == 6000
    assert out[-1].data == annexb(aus[2]) and out[-1].after_loss
    assert not out[0].after_loss and dep.lost == 1


# --- video: boundaries and odd streams ---------------------------------------------------------

SPS = bytes((0x67, 0x42, 0x00, 0x1F))
PPS = bytes((0x68, 0xCE, 0x3C, 0x80))
IDR = bytes((0x65,)) + bytes(range(200))
SLICE = bytes((0x41,)) + bytes(range(100))


def fu_a(nal: bytes, size: int) -> list[bytes]:
    body = nal[1:]
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    out = []
    for k, piece in enumerate(pieces):
        flags = (0x80 if k == 0 else 0) | (0x40 if k == len(pieces) - 1 else 0)
        out.append(bytes(((nal[0] & 0xE0) | 28, flags | (nal[0] & 0x1F))) + piece)
    return out


def stap_a(*nals: bytes) -> bytes:
    return bytes((0x78,)) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def test_a_unit_comes_out_with_its_marker_packet():
    dep = H264Depacketizer()
    frags = fu_a(IDR, 50)
    assert dep.push(rtp(stap_a(SPS, PPS), 1, 90000, False)) == []
    for i, f in enumerate(frags[:-1]):
        assert dep.push(rtp(f, 2 + i, 90000, False)) == []
    (au,) = dep.push(rtp(frags[-1], 1 + len(frags), 90000, True))
    assert au == AccessUnit(annexb([SPS, PPS, IDR]), 90000, True, False)
    assert au.data.startswith(b"\0\0\0\1\x67")


def test_a_timestamp_change_ends_a_unit_without_marker():
    dep = H264Depacketizer()
    assert dep.push(rtp(SLICE, 1, 1000, False)) == []
    assert dep.push(rtp(SLICE[:50], 2, 4000, False)) == [AccessUnit(START + SLICE, 1000, False)]
    # the stream never set a marker: the unit held at the end is whole as far as is known
    assert dep.flush() == [AccessUnit(START + SLICE[:50], 4000, False)]
    assert dep.dropped == 0


def test_flush_drops_a_unit_whose_marker_is_missing_in_a_marking_stream():
    dep = H264Depacketizer()
    assert len(dep.push(rtp(SLICE, 1, 1000, True))) == 1
    assert dep.push(rtp(SLICE, 2, 4000, False)) == []
    assert dep.flush() == [] and dep.dropped == 1


def test_parameter_sets_sent_as_a_frame_of_their_own_go_with_the_next_picture():
    dep = H264Depacketizer()
    assert dep.push(rtp(SPS, 1, 1000, True)) == []
    assert dep.push(rtp(PPS, 2, 1000, True)) == []
    (au,) = dep.push(rtp(IDR, 3, 1000, True))
    assert au == AccessUnit(annexb([SPS, PPS, IDR]), 1000, True, False)
    # and with a timestamp of their own: the picture's is kept
    assert dep.push(rtp(SPS, 4, 3000, True)) == []
    (au,) = dep.push(rtp(SLICE, 5, 4000, True))
    assert au == AccessUnit(annexb([SPS, SLICE]), 4000, False, False)
    assert dep.dropped == 0


def test_a_fragment_whose_start_was_lost_drops_its_unit_and_the_next_start_resumes():
    dep = H264Depacketizer()
    frags = fu_a(IDR, 60)
    assert len(frags) == 4
    out = dep.push(rtp(frags[0], 1, 0, False))
    out += dep.push(rtp(frags[2], 3, 0, False))  # 2 lost
    out += dep.push(rtp(frags[3], 4, 0, True))
    out += dep.push(rtp(frags[1], 6, 3000, False))  # 5 lost: a start lost, a middle one here
    out += dep.push(rtp(frags[2], 7, 3000, False))
    out += dep.push(rtp(frags[3], 8, 3000, True))
    assert out == [] and dep.lost == 2 and dep.dropped == 2 and dep.malformed == 0
    clean = fu_a(SLICE, 40)
    out = [au for i, f in enumerate(clean) for au in dep.push(rtp(f, 9 + i, 6000, f is clean[-1]))]
    assert out == [AccessUnit(START + SLICE, 6000, False, True)]


def test_duplicates_and_old_packets_are_ignored():
    dep = H264Depacketizer()
    frags = fu_a(IDR, 80)
    out = dep.push(rtp(frags[0], 10, 0, False))
    out += dep.push(rtp(frags[0], 10, 0, False))  # duplicate
    out += dep.push(rtp(frags[1], 11, 0, False))
    out += dep.push(rtp(frags[0], 10, 0, False))  # old
    out += dep.push(rtp(frags[2], 12, 0, True))
    assert out == [AccessUnit(START + IDR, 0, True)]
    assert (dep.lost, dep.dropped, dep.malformed) == (0, 0, 0)


def test_sequence_numbers_wrap():
    dep = H264Depacketizer()
    frags = fu_a(IDR, 80)
    pkts = [rtp(f, 0xFFFE + i, 0, i == len(frags) - 1) for i, f in enumerate(frags)]
    assert [p.seq for p in pkts] == [0xFFFE, 0xFFFF, 0]
    assert run(dep, pkts) == [AccessUnit(START + IDR, 0, True)] and dep.lost == 0


def test_a_restart_of_the_numbering_resynchronises():
    dep = H264Depacketizer()
    assert len(dep.push(rtp(SLICE, 30000, 0, True))) == 1
    assert dep.push(rtp(SLICE, 5, 3000, True)) == []  # far behind: maybe a restart
    assert dep.push(rtp(SLICE, 6, 6000, True)) == [AccessUnit(START + SLICE, 6000, False, True)]
    assert dep.push(rtp(SLICE, 7, 9000, True)) == [AccessUnit(START + SLICE, 9000, False)]
    assert dep.lost == 1


def test_a_new_ssrc_is_a_new_stream():
    dep = H264Depacketizer()
    assert dep.push(rtp(SLICE, 100, 0, False)) == []  # held, its marker never comes
    (au,) = dep.push(rtp(SLICE, 7, 5000, True, ssrc=99))
    assert au.after_loss and au.data == START + SLICE and dep.dropped == 1 and dep.lost == 0
    assert dep.push(rtp(SLICE, 8, 8000, True, ssrc=99))[0].after_loss is False


def test_expect_seq_counts_packets_missing_at_the_start():
    dep = H264Depacketizer()
    dep.expect_seq(65534)
    (au,) = dep.push(rtp(SLICE, 1, 0, True))
    assert dep.lost == 3 and au.after_loss


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "empty"),
        (bytes((0x7C,)), "FU-A without its header"),
        (bytes((0x79, 0, 5, 1, 2)), "STAP-B"),
        (bytes((0x7A, 0, 0)), "MTAP16"),
        (bytes((0x7D, 0x85, 1)), "FU-B"),
        (bytes((0x60, 1)), "type 0"),
        (bytes((0x7E, 1)), "type 30"),
        (stap_a(SLICE)[:-1], "STAP-A overrun"),
    ],
)
def test_h264_malformed_packets_drop_their_unit(payload, why):
    dep = H264Depacketizer()
    out = dep.push(rtp(SPS, 1, 0, False))
    out += dep.push(rtp(payload, 2, 0, False))
    out += dep.push(rtp(SLICE, 3, 0, True))
    assert out == [] and dep.malformed == 1 and dep.dropped == 1, why
    (au,) = dep.push(rtp(SLICE, 4, 3000, True))
    assert au.after_loss and au.data == START + SLICE


def test_an_fu_without_end_or_a_start_inside_another_is_malformed():
    frags = fu_a(IDR, 80)
    dep = H264Depacketizer()
    out = dep.push(rtp(frags[0], 1, 0, False))
    out += dep.push(rtp(SLICE, 2, 0, True))  # FU never ended
    out += dep.push(rtp(frags[0], 3, 3000, False))
    out += dep.push(rtp(frags[0], 4, 3000, True))  # a second start
    assert out == [] and dep.dropped == 2 and dep.malformed == 2


def test_an_fu_with_start_and_end_is_taken_whole():
    dep = H264Depacketizer()
    pl = bytes((0x7C, 0xC5)) + IDR[1:]
    assert dep.push(rtp(pl, 1, 0, True)) == [AccessUnit(START + IDR, 0, True)]


def test_an_oversized_unit_is_dropped_and_memory_stays_bounded():
    dep = H264Depacketizer()
    chunk = bytes(1398)
    first = bytes((0x7C, 0x85)) + chunk
    mid = bytes((0x7C, 0x05)) + chunk
    out = dep.push(rtp(first, 0, 0, False))
    n = MAX_AU_SIZE // len(chunk) + 10
    for i in range(1, n):
        out += dep.push(rtp(mid, i, 0, False))
        assert dep._size <= MAX_AU_SIZE + len(mid) + 4
    out += dep.push(rtp(bytes((0x7C, 0x45)) + chunk, n, 0, True))
    assert out == [] and dep.dropped == 1 and not dep._parts
    # just under the limit passes
    dep = H264Depacketizer()
    big = bytes((0x65,)) + bytes(MAX_AU_SIZE - 1000)
    frags = fu_a(big, 60000)
    out = [au for i, f in enumerate(frags) for au in dep.push(rtp(f, i, 0, f is frags[-1]))]
    assert len(out) == 1 and out[0].data == START + big


def test_h265_packet_kinds():
    vps, sps, pps = (bytes(((t << 1), 1)) + bytes(range(10)) for t in (32, 33, 34))
    idr = bytes(((19 << 1), 1)) + bytes(range(256)) * 3
    trail = bytes(((1 << 1), 1)) + bytes(range(90))
    ap = bytes(((48 << 1), 1)) + b"".join(struct.pack("!H", len(n)) + n for n in (vps, sps, pps))
    dep = H265Depacketizer()
    body = idr[2:]
    fus = [
        bytes(((49 << 1), 1, 0x80 | 19)) + body[:300],
        bytes(((49 << 1), 1, 19)) + body[300:600],
        bytes(((49 << 1), 1, 0x40 | 19)) + body[600:],
    ]
    out = dep.push(rtp(ap, 1, 0, False))
    for i, f in enumerate(fus):
        out += dep.push(rtp(f, 2 + i, 0, i == 2))
    out += dep.push(rtp(trail, 5, 3000, True))
    assert out == [
        AccessUnit(annexb([vps, sps, pps, idr]), 0, True),
        AccessUnit(START + trail, 3000, False),
    ]


def test_what_is_left_of_a_picture_after_a_loss_is_not_carried_into_the_next():
    idr = bytes((19 << 1, 1)) + bytes(range(200))
    sei = bytes((40 << 1, 1)) + b"suffix"  # after the picture, as RFC 7798 allows
    trail = bytes((1 << 1, 1)) + bytes(30)
    dep = H265Depacketizer()
    out = dep.push(rtp(trail, 1, 0, True))
    # seq 2 (the picture, whole in one packet) lost
    out += dep.push(rtp(sei, 3, 3000, True))
    out += dep.push(rtp(trail, 4, 6000, True))
    assert [o.data for o in out] == [START + trail] * 2 and out[1].after_loss
    assert dep.dropped == 1 and dep.lost == 1
    # without the loss, the suffix SEI goes out with its picture
    out = dep.push(rtp(idr, 5, 9000, False)) + dep.push(rtp(sei, 6, 9000, True))
    assert out == [AccessUnit(annexb([idr, sei]), 9000, True, False)]


@pytest.mark.parametrize(
    ("t", "key"), [(1, False), (15, False), (16, True), (21, True), (22, False)]
)
def test_h265_keyframes_are_irap_pictures(t, key):
    dep = H265Depacketizer()
    (au,) = dep.push(rtp(bytes((t << 1, 1, 0xAA)), 1, 0, True))
    assert au.keyframe is key


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (bytes(((50 << 1), 1, 0, 0)), "PACI"),
        (bytes(((55 << 1), 1, 0)), "undefined"),
        (bytes(((1 << 1), 0, 0)), "TemporalId 0"),
        (bytes(((49 << 1), 1)), "FU without its header"),
        (bytes(((48 << 1), 1, 0, 9, 2, 1)), "AP overrun"),
        (b"\x02", "short"),
    ],
)
def test_h265_malformed_packets_drop_their_unit(payload, why):
    dep = H265Depacketizer()
    out = dep.push(rtp(payload, 1, 0, False))
    out += dep.push(rtp(bytes(((1 << 1), 1, 7)), 2, 0, True))
    assert out == [] and dep.malformed == 1 and dep.dropped == 1, why


# --- AAC ---------------------------------------------------------------------------------------


class _Bits:
    def __init__(self) -> None:
        self.value = 0
        self.n = 0

    def put(self, v: int, width: int) -> None:
        assert 0 <= v < (1 << width) or (width == 0 and v == 0)
        self.value = (self.value << width) | v
        self.n += width

    def octets(self) -> bytes:
        pad = -self.n % 8
        return (self.value << pad).to_bytes((self.n + pad) // 8, "big")


def aac_payload(sizes: list[int], datas: list[bytes], pr: AacParams, rng: random.Random) -> bytes:
    """One RFC 3640 payload: a header per AU (size as given: a fragment's is its AU's), the
    auxiliary section if the layout has one, then the data."""
    h = _Bits()
    for k, size in enumerate(sizes):
        h.put(size, pr.size_length)
        h.put(0, pr.index_length if k == 0 else pr.index_delta_length)
        for width in (pr.cts_delta_length, pr.dts_delta_length):
            if width:
                flag = rng.random() < 0.5
                h.put(flag, 1)
                if flag:
                    h.put(rng.randrange(1 << width), width)
        if pr.random_access_indication:
            h.put(1, 1)
        h.put(rng.randrange(1 << pr.stream_state_indication), pr.stream_state_indication)
    aux = b""
    if pr.auxiliary_data_size_length:
        a = _Bits()
        nbits = rng.randrange(min(40, (1 << pr.auxiliary_data_size_length)))
        a.put(nbits, pr.auxiliary_data_size_length)
        a.put(rng.getrandbits(nbits) if nbits else 0, nbits)
        aux = a.octets()
    return struct.pack("!H", h.n) + h.octets() + aux + b"".join(datas)


def aac_stream(
    frames: list[bytes], pr: AacParams, mtu: int, rng: random.Random, seq0: int, ts0: int
) -> tuple[list[RtpPacket], list[list[int]]]:
    """Packets of the AUs: several to a packet where they fit (at random), a larger one over
    several; the frames each packet carries."""
    pkts: list[RtpPacket] = []
    owners: list[list[int]] = []
    i = 0
    while i < len(frames):
        ts = ts0 + i * pr.frame_samples
        if len(frames[i]) > mtu or (rng.random() < 0.1 and len(frames[i]) >= 2):
            pieces = _split(frames[i], rng, mtu)
            for k, piece in enumerate(pieces):
                pl = aac_payload([len(frames[i])], [piece], pr, rng)
                pkts.append(rtp(pl, seq0 + len(pkts), ts, k == len(pieces) - 1))
                owners.append([i])
            i += 1
            continue
        j = i + 1
        total = len(frames[i])
        while j < len(frames) and total + len(frames[j]) <= mtu and rng.random() < 0.7:
            total += len(frames[j])
            j += 1
        group = frames[i:j]
        pl = aac_payload([len(f) for f in group], group, pr, rng)
        pkts.append(rtp(pl, seq0 + len(pkts), ts, True))
        owners.append(list(range(i, j)))
        i = j
    return pkts, owners


aac_layouts = st.one_of(
    st.just(AacParams()),
    st.just(AacParams(6, 2, 2)),
    st.builds(
        AacParams,
        size_length=st.integers(13, 16),
        index_length=st.integers(0, 4),
        index_delta_length=st.integers(0, 4),
        cts_delta_length=st.integers(0, 5),
        dts_delta_length=st.integers(0, 5),
        random_access_indication=st.booleans(),
        stream_state_indication=st.integers(0, 3),
        auxiliary_data_size_length=st.integers(0, 9),
        frame_samples=st.sampled_from((1024, 960, 2048)),
    ),
)


@FUZZ
@given(
    seed=st.integers(0, 2**32),
    count=st.integers(1, 30),
    mtu=st.integers(20, 1400),
    pr=aac_layouts,
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
    loss=st.sampled_from((0.0, 0.0, 0.1, 0.4)),
)
def test_aac_round_trip_and_loss(seed, count, mtu, pr, seq0, ts0, loss):
    rng = random.Random(seed)
    most = min(3000, (1 << pr.size_length) - 1)
    frames = [rng.randbytes(rng.randint(1, most)) for _ in range(count)]
    pkts, owners = aac_stream(frames, pr, mtu, rng, seq0, ts0)
    gone = {i for i in range(len(pkts)) if rng.random() < loss}
    kept = [i for i in range(len(pkts)) if i not in gone]
    damaged = {k for i in gone for k in owners[i]}
    seen = {k for i in kept for k in owners[i]}
    dep = AacDepacketizer(48000, pr)
    dep.expect_seq(seq0)
    out = run(dep, [pkts[i] for i in kept])

    by_ts = {(ts0 + pr.frame_samples * k) & 0xFFFFFFFF: k for k in range(count)}
    got = [by_ts[o.timestamp & 0xFFFFFFFF] for o in out]
    assert got == sorted(set(range(count)) - damaged)
    offsets = {o.timestamp - (ts0 + pr.frame_samples * k) for o, k in zip(out, got, strict=True)}
    assert len(offsets) <= 1 and all(off % 2**32 == 0 for off in offsets)
    assert all(o.data == frames[k] and o.keyframe for o, k in zip(out, got, strict=True))
    assert dep.lost == (max(kept) + 1 - len(kept) if kept else 0)
    fragmented = {o[0] for o in owners if owners.count(o) > 1}
    assert dep.dropped == len(fragmented & seen & damaged)  # once each, whatever it lost
    event(f"AAC units dropped: {min(dep.dropped, 2)}; lost: {min(len(gone), 2)}")
    event(f"AAC packets: {'fragments' if len(set(map(tuple, owners))) < len(owners) else 'whole'}")
    assert dep.malformed == 0
    if not gone:
        assert len(out) == count and not any(o.after_loss for o in out)


def test_aac_several_frames_a_packet_are_timed_one_frame_apart():
    dep = AacDepacketizer(16000, AacParams(frame_samples=1024))
    frames = [b"\x21" * 10, b"\x22" * 20, b"\x23" * 5]
    pl = aac_payload([10, 20, 5], frames, AacParams(), random.Random(0))
    assert pl[:2] == b"\x00\x30"  # 48 bits of AU headers
    out = dep.push(rtp(pl, 1, 0xFFFFFC00, True))
    assert [(o.data, o.timestamp) for o in out] == [
        (frames[0], 0xFFFFFC00),
        (frames[1], 0x100000000),
        (frames[2], 0x100000400),
    ]


def test_aac_a_fragment_lost_drops_the_frame_and_the_rest_come_through():
    pr = AacParams()
    frame = bytes(range(256)) * 12
    frags = [frame[:1000], frame[1000:2000], frame[2000:]]
    pls = [aac_payload([len(frame)], [f], pr, random.Random(0)) for f in frags]
    small = aac_payload([3], [b"abc"], pr, random.Random(0))
    dep = AacDepacketizer(48000)
    out = dep.push(rtp(pls[0], 1, 0, False))
    out += dep.push(rtp(pls[2], 3, 0, True))
    out += dep.push(rtp(small, 4, 1024, True))
    assert [o.data for o in out] == [b"abc"] and out[0].after_loss
    assert dep.dropped == 1 and dep.lost == 1
    # the same with nothing lost
    out = [au for i, pl in enumerate(pls) for au in dep.push(rtp(pl, 5 + i, 2048, i == 2))]
    assert out == [AccessUnit(frame, 2048, True)]
    # the head lost: the size falls short at the marker
    out = dep.push(rtp(pls[1], 10, 4096, False)) + dep.push(rtp(pls[2], 11, 4096, True))
    assert out == [] and dep.dropped == 2


def test_aac_a_fragmented_frame_announced_over_the_limit_is_not_held():
    pr = AacParams(size_length=24, index_length=0, index_delta_length=0)
    dep = AacDepacketizer(48000, pr)
    rng = random.Random(0)
    for i in range(3):
        pl = aac_payload([MAX_AU_SIZE + 1], [bytes(1000)], pr, rng)
        assert dep.push(rtp(pl, i, 0, i == 2)) == []
        assert dep._frag == [] or dep._frag is None
    assert dep.dropped == 1 and dep.malformed == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"\x00\x00abc",  # no AU headers
        b"\x00\x10\x00",  # headers overrun the packet
        b"\x00\x20\x00\x50\x00\x50ab",  # two AUs of 10 in 2 octets
        b"\x00\x0c\x00\x50",  # 12 bits: a 13-bit size does not fit
    ],
)
def test_aac_malformed_payloads_are_counted(payload):
    dep = AacDepacketizer(48000)
    assert dep.push(rtp(payload, 1, 0, True)) == [] and dep.malformed == 1


# --- hostile input -----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200))
def test_parse_rtp_never_raises(data):
    pkt = parse_rtp(data)
    if pkt is not None:
        assert data[0] >> 6 == 2 and len(pkt.payload) <= len(data) - 12
        assert pkt == parse_rtp(memoryview(data)) == parse_rtp(bytearray(data))


packet_bytes = st.one_of(
    st.binary(max_size=60),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=60)).map(
        lambda t: bytes(t[:2]) + t[2]
    ),
)
packets = st.builds(
    RtpPacket,
    payload_type=st.just(96),
    marker=st.booleans(),
    seq=st.integers(0, 12),
    timestamp=st.integers(0, 3),
    ssrc=st.integers(1, 2),
    payload=packet_bytes,
)
depacketizers = st.sampled_from(
    [
        lambda: H264Depacketizer(),
        lambda: H265Depacketizer(),
        lambda: AacDepacketizer(48000),
        lambda: AacDepacketizer(8000, AacParams(6, 2, 2, 3, 2, True, 2, 5)),
    ]
)


@FUZZ
@given(make=depacketizers, pkts=st.lists(packets, max_size=40))
def test_random_packets_never_raise(make, pkts):
    dep = make()
    out = run(dep, pkts)
    for au in out:
        assert isinstance(au.data, bytes) and au.data
    if isinstance(dep, H264Depacketizer | H265Depacketizer):
        assert all(au.data.startswith(START) for au in out)
    assert dep.lost >= 0 and dep.dropped >= 0 and dep.malformed >= 0


@FUZZ
@given(
    seed=st.integers(0, 2**32),
    h265=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cuts=st.lists(st.integers(0, 10**6), max_size=3),
)
def test_damaged_real_streams_never_raise(seed, h265, edits, cuts):
    rng = random.Random(seed)
    aus = [(h265_au if h265 else h264_au)(rng) for _ in range(4)]
    pkts, _ = video_stream(aus, 300, rng, h265, 0, 0)
    for where, value in edits:
        p = pkts[where % len(pkts)]
        if p.payload:
            b = bytearray(p.payload)
            b[where % len(b)] = value
            p.payload = bytes(b)
    for where in cuts:
        p = pkts[where % len(pkts)]
        p.payload = p.payload[: where % (len(p.payload) + 1)]
    dep = H265Depacketizer() if h265 else H264Depacketizer()
    out = run(dep, pkts)
    assert len(out) + dep.dropped <= len(aus) + len(pkts)


@FUZZ
@given(st.dictionaries(st.sampled_from(
    ["mode", "sizelength", "indexlength", "constantduration", "packetization-mode",
     "sprop-max-don-diff", "config", "auxiliarydatasizelength"]
), st.text(max_size=6)), st.sampled_from(["H264", "H265", "MPEG4-GENERIC", "PCMU"]),
    st.integers(-1, 96000))  # fmt: skip
def test_depacketizer_for_refuses_with_a_reason_or_builds(fmtp, encoding, rate):
    try:
        dep = depacketizer_for(encoding, fmtp, rate)
    except UnsupportedStream as e:
        assert str(e)
        return
    assert (dep is None) == (encoding == "PCMU")


# --- RTP header, timestamps --------------------------------------------------------------------


def header(b0: int, b1: int, seq: int = 7, ts: int = 0x01020304, ssrc: int = 0xAABBCCDD) -> bytes:
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc)


def test_parse_rtp_fields_and_what_it_strips():
    pkt = parse_rtp(header(0x80, 0xE0) + b"hello")
    assert pkt == RtpPacket(96, True, 7, 0x01020304, 0xAABBCCDD, b"hello")
    csrc = header(0x82, 0x60) + bytes(8) + b"data"
    assert parse_rtp(csrc).payload == b"data"
    ext = header(0x90, 0x60) + b"\xbe\xde\x00\x02" + bytes(8) + b"data"
    assert parse_rtp(ext).payload == b"data"
    padded = header(0xA0, 0x60) + b"data" + b"\0\0\3"
    assert parse_rtp(padded).payload == b"data"
    all_three = header(0xB1, 0x60) + bytes(4) + b"\0\0\0\1" + bytes(4) + b"x" + b"\2\2"
    assert parse_rtp(all_three).payload == b"x"
    assert parse_rtp(memoryview(b"..." + header(0x80, 0x60) + b"x")[3:]).payload == b"x"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        header(0x80, 0x60)[:11],
        header(0x40, 0x60) + b"v1",
        header(0xC0, 0x60) + b"v3",
        header(0x81, 0x60) + b"abc",  # a CSRC announced, not there
        header(0x90, 0x60) + b"\xbe\xde",  # extension header cut
        header(0x90, 0x60) + b"\xbe\xde\x00\x05abcd",  # extension overruns
        header(0xA0, 0x60) + b"ab\x00",  # padding count 0
        header(0xA0, 0x60) + b"ab\x10",  # padding longer than the packet
    ],
)
def test_parse_rtp_refuses(data):
    assert parse_rtp(data) is None


def test_parse_rtp_takes_an_empty_payload():
    assert parse_rtp(header(0x80, 0x60)).payload == b""


def test_timestamps_unwrap_both_ways():
    u = TimestampUnwrapper()
    assert u.unwrap(0xFFFFFF00) == 0xFFFFFF00
    assert u.unwrap(0x00000100) == 0x100000100  # forwards over the wrap
    assert u.unwrap(0xFFFFFFF0) == 0xFFFFFFF0  # slightly older, back over it: still older
    assert u.unwrap(0x10) == 0x100000010
    for step in range(1, 6):
        assert u.unwrap((0x10 + step * 0x40000000) & 0xFFFFFFFF) == 0x100000010 + step * 2**30
    u = TimestampUnwrapper()
    assert u.unwrap(5) == 5 and u.unwrap(0xFFFFFFFF) == -1


@given(st.integers(0, 2**32 - 1), st.lists(st.integers(-(2**31) + 1, 2**31 - 1), max_size=50))
def test_timestamps_unwrap_any_walk(start, steps):
    u = TimestampUnwrapper()
    value = start
    assert u.unwrap(start) == start
    for step in steps:
        value += step
        assert u.unwrap(value & 0xFFFFFFFF) == value


# --- SDP parameters ----------------------------------------------------------------------------


def test_h264_parameter_sets():
    b64 = base64.b64encode
    fmtp = {"sprop-parameter-sets": f"{b64(SPS).decode()},{b64(PPS).decode()}"}
    assert h264_parameter_sets(fmtp) == [SPS, PPS]
    unpadded = {"sprop-parameter-sets": "Z0IAHw,aM48gA"}  # padding left out, as some do
    assert h264_parameter_sets(unpadded) == [SPS, PPS]
    assert h264_parameter_sets({"sprop-parameter-sets": "Z0IAHw==,"}) == [SPS]
    assert h264_parameter_sets({"sprop-parameter-sets": "Z0IAHw==,!!"}) == []
    assert h264_parameter_sets({"sprop-parameter-sets": "Z"}) == []
    assert h264_parameter_sets({}) == []
    assert annexb(h264_parameter_sets(fmtp)) == START + SPS + START + PPS


def test_h265_parameter_sets_in_order():
    def b(x: bytes) -> str:
        return base64.b64encode(x).decode()

    fmtp = {"sprop-pps": b(b"\x44\x01p"), "sprop-vps": b(b"\x40\x01v"), "sprop-sps": b(b"\x42s")}
    assert h265_parameter_sets(fmtp) == [b"\x40\x01v", b"\x42s", b"\x44\x01p"]
    assert h265_parameter_sets({**fmtp, "sprop-sps": "***"}) == []


def test_aac_config():
    assert aac_config({"config": "1190"}) == b"\x11\x90"
    assert aac_config({"config": "1210 56E5"}) == b"\x12\x10\x56\xe5"
    for bad in ({}, {"config": ""}, {"config": "119"}, {"config": "zz"}):
        with pytest.raises(ValueError):
            aac_config(bad)


def test_depacketizer_for():
    assert isinstance(
        depacketizer_for("H264", {"packetization-mode": "1"}, 90000), H264Depacketizer
    )
    assert isinstance(depacketizer_for("h264", {}, 90000), H264Depacketizer)
    assert isinstance(
        depacketizer_for("H265", {"sprop-max-don-diff": "0"}, 90000), H265Depacketizer
    )
    aac = depacketizer_for(
        "MPEG4-GENERIC",
        {"mode": "AAC-hbr", "sizelength": "13", "indexlength": "3", "indexdeltalength": "3",
         "config": "1190", "constantduration": "960"},
        48000,
    )  # fmt: skip
    assert isinstance(aac, AacDepacketizer) and aac.clock_rate == 48000
    assert aac.params == AacParams(frame_samples=960)
    assert aac_params({"mode": "aac-lbr"}) == AacParams(6, 2, 2)
    assert depacketizer_for("PCMA", {}, 8000) is None
    assert depacketizer_for("MP4A-LATM", {}, 8000) is None
    for enc, fmtp, reason in [
        ("H264", {"packetization-mode": "2"}, "packetization-mode"),
        ("H265", {"sprop-max-don-diff": "2"}, "DONL"),
        ("H265", {"sprop-depack-buf-nalus": "x"}, "not a number"),
        ("MPEG4-GENERIC", {"mode": "CELP-cbr"}, "mode"),
        ("MPEG4-GENERIC", {}, "mode"),
        ("MPEG4-GENERIC", {"mode": "AAC-hbr", "sizelength": "0"}, "sizelength"),
        ("MPEG4-GENERIC", {"mode": "AAC-hbr", "indexlength": "three"}, "indexlength"),
    ]:
        with pytest.raises(UnsupportedStream, match=reason):
            depacketizer_for(enc, fmtp, 90000)
    with pytest.raises(UnsupportedStream, match="clock rate"):
        depacketizer_for("H264", {}, 0)


def wire(p: RtpPacket, extension: bool) -> bytes:
    """The packet as sent: a plain header, or one with an empty header extension."""
    b1 = (0x80 if p.marker else 0) | p.payload_type
    head = struct.pack("!BBHII", 0x90 if extension else 0x80, b1, p.seq, p.timestamp, p.ssrc)
    return head + (b"\xbe\xde\x00\x00" if extension else b"") + p.payload


@FUZZ
@given(
    make=depacketizers,
    items=st.lists(st.tuples(packets, st.booleans()) | st.binary(max_size=30), max_size=40),
)
def test_push_rtp_is_push_of_parse_rtp(make, items):
    """The reader's fast path (no packet object for a plain header) changes nothing: the same
    units, flags and counts as parsing each packet and pushing it, for any packets, plain or
    not, and garbage among them."""
    fast, slow = make(), make()
    got, want = [], []
    for item in items:
        data = item if isinstance(item, bytes) else wire(*item)
        got += fast.push_rtp(data)
        pkt = parse_rtp(data)
        if pkt is not None:
            want += slow.push(pkt)
    assert got == want
    assert (fast.lost, fast.dropped, fast.malformed) == (slow.lost, slow.dropped, slow.malformed)


def test_push_rtp_takes_a_real_stream_whole():
    rng = random.Random(7)
    aus = [h264_au(rng) for _ in range(6)]
    pkts, _ = video_stream(aus, 1400, rng, False, 65530, 2**32 - 6000)
    dep = H264Depacketizer()
    out = [au for p in pkts for au in dep.push_rtp(wire(p, False))] + dep.flush()
    assert [au.data for au in out] == [annexb(nals) for nals in aus]


# --- frames taken in place (the parser's sink) -------------------------------------------------


def interleaved(channel: int, data: bytes) -> bytes:
    return b"$" + bytes((channel,)) + struct.pack("!H", len(data)) + data


def through_parser(make, frames: list[tuple[int, bytes]], cuts: list[int]):
    """What a depacketizer routed as the parser's sink for channel 0 makes of the frames
    (channel 1 is another track, not routed), fed as a stream cut at `cuts`; and the events."""
    from firmware.rtsp.messages import Parser

    dep = make()
    parser = Parser()
    parser.sinks[0] = dep
    stream = b"".join(interleaved(ch, data) for ch, data in frames)
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    out: list = []
    for a, b in itertools.pairwise(bounds):
        parser.feed(stream[a:b], out)
    assert parser.buffered == 0
    return dep, out


@FUZZ
@given(
    make=depacketizers,
    seed=st.integers(0, 2**32),
    mtu=st.integers(40, 1500),
    edits=st.lists(
        st.tuples(st.sampled_from(["drop", "dup", "byte", "ts", "ssrc", "cut", "other"]),
                  st.integers(0, 10**6), st.integers(0, 255)),
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 10**7), max_size=12),
)  # fmt: skip
def test_frames_taken_in_place_are_push_rtp_of_each(make, seed, mtu, edits, cuts):
    """The in-place path (views of the received bytes, no packet object) changes nothing: for
    real streams with lost, repeated, damaged or foreign packets, cut anywhere, the units,
    flags and counts are those of push_rtp on each frame's bytes, and another channel's
    frames pass as Interleaved events in order."""
    from firmware.rtsp.messages import Interleaved

    rng = random.Random(seed)
    probe = make()
    h265 = isinstance(probe, H265Depacketizer)
    if isinstance(probe, AacDepacketizer):
        data = [rng.randbytes(rng.randint(1, 300)) for _ in range(5)]
        pkts = [rtp(b"\x00\x10" + struct.pack("!H", len(d) << 3) + d, k, 1024 * k, True)
                for k, d in enumerate(data)]  # fmt: skip
    else:
        aus = [(h265_au if h265 else h264_au)(rng) for _ in range(5)]
        pkts, _ = video_stream(aus, mtu, rng, h265, rng.randint(0, 0xFFFF), rng.randint(0, 2**32))
    frames = [(0, wire(p, False)) for p in pkts]
    for kind, where, value in edits:
        i = where % len(frames)
        ch, data = frames[i]
        if kind == "drop":
            del frames[i]
        elif kind == "dup":
            frames.insert(i, (ch, data))
        elif kind == "byte":
            if data:  # a frame cut to nothing has no byte to change
                b = bytearray(data)
                b[where % len(b)] = value
                frames[i] = (ch, bytes(b))
        elif kind == "ts":
            frames[i] = (ch, data[:4] + struct.pack("!I", value) + data[8:])
        elif kind == "ssrc":
            frames[i] = (ch, data[:8] + struct.pack("!I", value) + data[12:])
        elif kind == "cut":
            frames[i] = (ch, data[: where % (len(data) + 1)])
        else:
            frames.insert(i, (1, data[: value % 40]))
        if not frames:
            return
    dep, out = through_parser(make, frames, cuts)
    ref = make()
    want = [au for ch, data in frames if ch == 0 for au in ref.push_rtp(data)]
    assert [e.unit for e in out if type(e) is ChannelUnit] == want
    assert all(e.channel == 0 for e in out if type(e) is ChannelUnit)
    assert [e.data for e in out if type(e) is Interleaved] == [d for ch, d in frames if ch == 1]
    assert (dep.lost, dep.dropped, dep.malformed) == (ref.lost, ref.dropped, ref.malformed)
    assert dep.flush() == ref.flush()


@pytest.mark.parametrize("h265", [False, True])
def test_a_clean_stream_is_taken_in_place_but_each_units_first_and_last_packet(h265):
    """The point of the in-place path: a unit's middle packets never go through push_rtp."""
    rng = random.Random(3)
    nal = (h265_nal if h265 else h264_nal)(rng, 1, 12000)
    aus = [[nal]] * 4
    pkts = []
    for k, nals in enumerate(aus):
        body = nals[0][2:] if h265 else nals[0][1:]
        pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        for j, piece in enumerate(pieces):
            s_e = (0x80 if j == 0 else 0) | (0x40 if j == len(pieces) - 1 else 0)
            head = (bytes(((nal[0] & 0x81) | 49 << 1, nal[1], s_e | 1)) if h265
                    else bytes(((nals[0][0] & 0xE0) | 28, s_e | 1)))  # fmt: skip
            pkts.append(rtp(head + piece, 100 + len(pkts), 3000 * k, j == len(pieces) - 1))
    frames = [(0, wire(p, False)) for p in pkts]
    slow = []

    class Counted(H265Depacketizer if h265 else H264Depacketizer):
        __slots__ = ()

        def push_rtp(self, data):
            slow.append(len(data))
            return super().push_rtp(data)

    dep, out = through_parser(Counted, frames, [])
    assert [e.unit.data for e in out] + [au.data for au in dep.flush()] == [START + nal] * 4
    per_unit = len(pkts) // 4
    assert per_unit >= 12 and len(slow) == 4 * 2  # a new timestamp, a marker
