"""Codec tests: a hostile network must only ever produce AdvertError, never a crash."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.failover.advert import (
    BODY_SIZE,
    MAGIC,
    WIRE_SIZE,
    Advert,
    AdvertError,
    Health,
    decode,
    encode,
)

KEY = b"k" * 32


def make(**kw: object) -> Advert:
    fields: dict[str, object] = {
        "pair_id": "pair-1",
        "board_id": "board-a",
        "priority": 150,
        "state": "active",
        "epoch": 7,
        "seq": 42,
        "interval_ms": 100,
        "health": Health.DISK_FULL | Health.UPS_ON_BATTERY,
        "newest_segment": "cam1/2026/11/26/14-00-00.mp4",
        "cameras": 3,
    }
    fields.update(kw)
    return Advert(**fields)  # type: ignore[arg-type]


def text(max_bytes: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=min_size,
        max_size=max_bytes,
    ).filter(lambda s: len(s.encode("utf-8")) <= max_bytes)


adverts = st.builds(
    Advert,
    pair_id=text(32, 1),
    board_id=text(32, 1),
    priority=st.integers(0, 255),
    state=st.sampled_from(["init", "standby", "active"]),
    epoch=st.integers(0, 2**64 - 1),
    seq=st.integers(0, 2**64 - 1),
    interval_ms=st.integers(1, 2**32 - 1),
    health=st.integers(0, 255).map(Health),
    newest_segment=text(96),
    cameras=st.integers(0, 255),
)


def reason(data: bytes, key: bytes = KEY) -> str:
    with pytest.raises(AdvertError) as info:
        decode(data, key)
    return info.value.reason


def test_layout_is_fixed_size_with_magic_and_version_first() -> None:
    wire = encode(make(), KEY)
    assert len(wire) == WIRE_SIZE == BODY_SIZE + 32
    assert wire[:4] == MAGIC
    assert wire[4] == 2
    assert wire[7] == make().cameras
    assert decode(wire, KEY) == make()


def test_camera_count_travels_and_is_bounded() -> None:
    assert decode(encode(make(cameras=255), KEY), KEY).cameras == 255
    assert decode(encode(make(cameras=0), KEY), KEY).cameras == 0


def test_health_is_an_intflag_with_eight_flags() -> None:
    names = {f.name for f in Health if f}
    assert names == {
        "RECORDER_UNHEALTHY",
        "DISK_FAILED",
        "DISK_FULL",
        "LAN_DOWN",
        "UPS_ON_BATTERY",
        "UPS_LOW",
        "MIRROR_BEHIND",
        "SYNC_DOWN",
    }


@settings(max_examples=100, deadline=None)
@given(adverts)
def test_round_trip_is_identity(advert: Advert) -> None:
    assert decode(encode(advert, KEY), KEY) == advert


def test_reasons() -> None:
    wire = encode(make(), KEY)
    assert reason(b"") == "short"
    assert reason(wire[:3]) == "short"
    assert reason(wire[:-1]) == "short"
    assert reason(b"XXXX" + wire[4:]) == "magic"
    assert reason(wire[:4] + b"\x01" + wire[5:]) == "version"
    assert reason(wire, b"other key") == "hmac"
    assert reason(wire + b"\x00") == "malformed"


def test_well_signed_garbage_is_malformed() -> None:
    """Fields are re-validated after the HMAC so a buggy or hostile peer cannot crash us."""
    import hashlib
    import hmac

    def signed(body: bytes) -> bytes:
        return body + hmac.new(KEY, body, hashlib.sha256).digest()

    body = bytearray(encode(make(), KEY)[:BODY_SIZE])
    for offset, value in [(5, 3), (32, 33), (65, 0), (98, 97)]:
        bad = bytearray(body)
        bad[offset] = value
        assert reason(signed(bytes(bad))) == "malformed", offset
    bad = bytearray(body)
    struct.pack_into(">I", bad, 24, 0)  # interval 0
    assert reason(signed(bytes(bad))) == "malformed"
    bad = bytearray(body)
    struct.pack_into(">I", bad, 28, 256)  # unknown health bit
    assert reason(signed(bytes(bad))) == "malformed"
    bad = bytearray(body)
    bad[33:35] = b"\xff\xfe"  # invalid utf-8 in pair_id
    assert reason(signed(bytes(bad))) == "malformed"
    bad = bytearray(body)
    bad[32 + 1 + 31] = 1  # non-zero padding after pair_id
    assert reason(signed(bytes(bad))) == "malformed"


@pytest.mark.parametrize(
    "kw",
    [
        {"priority": 256},
        {"priority": -1},
        {"state": "master"},
        {"board_id": ""},
        {"board_id": "x" * 33},
        {"pair_id": "é" * 17},
        {"newest_segment": "s" * 97},
        {"seq": 2**64},
        {"epoch": -1},
        {"interval_ms": 0},
        {"health": 256},
        {"cameras": 256},
        {"cameras": -1},
        {"version": 1},
        {"board_id": "a\x00b"},
    ],
)
def test_constructor_rejects_what_cannot_be_encoded(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make(**kw)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=WIRE_SIZE + 8))
def test_random_bytes_only_raise_advert_error(data: bytes) -> None:
    with pytest.raises(AdvertError):
        decode(data, KEY)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=WIRE_SIZE))
def test_random_tail_after_valid_magic(tail: bytes) -> None:
    data = MAGIC + b"\x01" + tail
    try:
        got = decode(data, KEY)
    except AdvertError:
        return
    assert data == encode(got, KEY)  # only a correctly signed advert gets through


@settings(max_examples=100, deadline=None)
@given(adverts, st.data())
def test_truncations_raise(advert: Advert, data: st.DataObject) -> None:
    wire = encode(advert, KEY)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(AdvertError) as info:
        decode(wire[:cut], KEY)
    assert info.value.reason in {"short", "magic", "version"}


@settings(max_examples=100, deadline=None)
@given(adverts, st.data())
def test_single_bit_flips_raise(advert: Advert, data: st.DataObject) -> None:
    wire = bytearray(encode(advert, KEY))
    bit = data.draw(st.integers(0, len(wire) * 8 - 1))
    wire[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AdvertError) as info:
        decode(bytes(wire), KEY)
    expected = "magic" if bit < 32 else "version" if bit < 40 else "hmac"
    assert info.value.reason == expected


def test_every_bit_flip_of_one_advert_is_caught() -> None:
    wire = encode(make(), KEY)
    for bit in range(len(wire) * 8):
        flipped = bytearray(wire)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AdvertError):
            decode(bytes(flipped), KEY)


def test_accepts_bytearray_and_rejects_non_bytes() -> None:
    wire = encode(make(), KEY)
    assert decode(bytearray(wire), KEY) == make()
    assert reason("not bytes") == "malformed"  # type: ignore[arg-type]


def test_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        AdvertError("nope")
