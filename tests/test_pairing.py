"""Pairing by a one-time code, the exchange's state machine alone (no sockets, a fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.pairing import (
    CODE_TTL_S,
    EXCHANGE_S,
    MAX_FRAME,
    MAX_TRIES,
    Challenge,
    CodeState,
    Confirm,
    Done,
    Hello,
    Joiner,
    PairingWireError,
    Refusal,
    Refused,
    Step,
    Waiter,
    decode,
    encode,
    new_code,
    normalize_code,
)
from firmware.pairkey import MIN_KEY_BYTES, key_fingerprint, load_pair_key, write_pair_key

T0 = 1000.0


def wire(msg):
    """Every message crosses the wire encoded, as the adapter carries it."""
    assert msg is not None
    return decode(encode(msg))


def exchange(waiter: Waiter, code: str, now: float = T0) -> tuple[Step, Step]:
    """One whole exchange; the last step on each side."""
    joiner = Joiner(code)
    w = waiter.handle(wire(joiner.hello()), now)
    if w.ended:
        return joiner.handle(wire(w.send)), w
    j = joiner.handle(wire(w.send))
    w = waiter.handle(wire(j.send), now)
    if w.ended and w.key is None:
        return (j if j.ended else joiner.handle(wire(w.send))), w
    return joiner.handle(wire(w.send)), w


def test_the_right_code_gives_both_boards_the_same_key_and_fingerprint(tmp_path):
    waiter = Waiter.new(T0)
    j, w = exchange(waiter, waiter.shown)
    assert j.key is not None and j.key == w.key and j.refusal is None
    assert len(j.key) >= MIN_KEY_BYTES
    for side, key in (("a", w.key), ("b", j.key)):
        write_pair_key(tmp_path / side / "pair.key", key)
        assert (tmp_path / side / "pair.key").stat().st_mode & 0o777 == 0o600
    a, b = (load_pair_key(tmp_path / s / "pair.key") for s in ("a", "b"))
    assert a == b and key_fingerprint(a) == key_fingerprint(b)
    assert waiter.state(T0) is CodeState.USED  # one time only
    j2, w2 = exchange(waiter, waiter.shown)
    assert j2.refusal is w2.refusal is Refusal.NO_CODE and j2.key is None


def test_two_pairings_give_different_keys():
    keys = set()
    for _ in range(2):
        waiter = Waiter.new(T0)
        keys.add(exchange(waiter, waiter.code)[0].key)
    assert len(keys) == 2


def wrong(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def test_a_wrong_code_is_refused_on_both_sides_and_yields_no_key():
    waiter = Waiter.new(T0)
    j, w = exchange(waiter, wrong(waiter.code))
    assert j.refusal is Refusal.WRONG_CODE and w.refusal is Refusal.WRONG_CODE
    assert j.key is None and w.key is None and j.ended and w.ended
    assert waiter.tries_left == MAX_TRIES - 1
    j, w = exchange(waiter, waiter.code)  # the right code still works afterwards
    assert j.key is not None and j.key == w.key


def test_the_code_is_void_after_five_wrong_tries():
    waiter = Waiter.new(T0)
    for _ in range(MAX_TRIES):
        assert exchange(waiter, wrong(waiter.code))[0].refusal is Refusal.WRONG_CODE
    assert waiter.state(T0) is CodeState.VOID
    j, w = exchange(waiter, waiter.code)
    assert j.refusal is w.refusal is Refusal.NO_CODE and j.key is None and w.key is None


def test_an_exchange_broken_off_counts_as_a_try():
    """An attacker learns whether a guess was right from the Challenge: that is the try."""
    waiter = Waiter.new(T0)
    for _ in range(MAX_TRIES):
        hello = Joiner(wrong(waiter.code)).hello()
        assert isinstance(waiter.handle(hello, T0).send, Challenge)
        waiter.abandon(hello)
    assert waiter.state(T0) is CodeState.VOID


def test_a_refused_second_exchange_going_away_leaves_the_first_one_be():
    waiter = Waiter.new(T0)
    joiner = Joiner(waiter.code)
    challenge = waiter.handle(joiner.hello(), T0).send
    intruder = Joiner(waiter.code).hello()
    assert waiter.handle(intruder, T0).refusal is Refusal.BUSY
    waiter.abandon(intruder)  # its connection closes
    w = waiter.handle(joiner.handle(challenge).send, T0)
    assert w.key is not None and joiner.handle(w.send).key == w.key


def test_the_code_expires_after_ten_minutes():
    waiter = Waiter.new(T0)
    assert waiter.state(T0 + CODE_TTL_S - 1) is CodeState.OPEN
    assert waiter.state(T0 + CODE_TTL_S) is CodeState.EXPIRED
    j, w = exchange(waiter, waiter.code, T0 + CODE_TTL_S)
    assert j.refusal is Refusal.NO_CODE and w.key is None


def test_a_code_expiring_during_the_exchange_writes_nothing():
    waiter = Waiter.new(T0)
    joiner = Joiner(waiter.code)
    j = joiner.handle(waiter.handle(joiner.hello(), T0 + CODE_TTL_S - 1).send)
    w = waiter.handle(j.send, T0 + CODE_TTL_S)
    assert w.refusal is Refusal.NO_CODE and w.key is None
    assert joiner.handle(w.send).key is None


def test_one_exchange_at_a_time_and_a_silent_one_is_dropped():
    waiter = Waiter.new(T0)
    assert isinstance(waiter.handle(Joiner(waiter.code).hello(), T0).send, Challenge)
    assert waiter.handle(Joiner(waiter.code).hello(), T0 + 1).refusal is Refusal.BUSY
    late = T0 + EXCHANGE_S + 1
    j, w = exchange(waiter, waiter.code, late)
    assert j.key is not None and j.key == w.key


def test_a_replayed_confirm_is_refused():
    """A proof from an earlier exchange does not fit a new one's session key."""
    waiter = Waiter.new(T0)
    first = Joiner(wrong(waiter.code))
    old = Joiner(waiter.code)
    c = old.handle(Waiter(waiter.code, T0).handle(old.hello(), T0).send).send
    assert isinstance(c, Confirm)
    waiter.handle(first.hello(), T0)
    w = waiter.handle(c, T0)
    assert w.refusal is Refusal.WRONG_CODE and w.key is None


def test_a_replayed_hello_gets_no_key():
    waiter = Waiter.new(T0)
    joiner = Joiner(waiter.code)
    hello = joiner.hello()
    assert joiner.handle(waiter.handle(hello, T0).send).send is not None
    waiter.abandon(hello)
    replay = waiter.handle(hello, T0)  # a listener replays it: a new session key...
    assert isinstance(replay.send, Challenge)
    w = waiter.handle(Confirm(b"\0" * 32), T0)  # ...it cannot prove
    assert w.refusal is Refusal.WRONG_CODE and w.key is None


def test_out_of_order_and_garbled_messages_are_refused():
    waiter = Waiter.new(T0)
    assert waiter.handle(Confirm(b"x" * 32), T0).refusal is Refusal.PROTOCOL
    assert waiter.handle(Done(), T0).refusal is Refusal.PROTOCOL
    bad = waiter.handle(Hello(b"\x41" + b"\xff" * 32), T0)  # not a point on the curve
    assert bad.refusal is Refusal.PROTOCOL and bad.key is None
    joiner = Joiner(waiter.code)
    assert joiner.handle(Done()).refusal is Refusal.PROTOCOL  # Done before any proof
    joiner = Joiner(waiter.code)
    assert joiner.handle(Challenge(b"\x42" + b"\xff" * 32, b"\0" * 32)).key is None
    joiner = Joiner(waiter.code)
    w = Waiter(waiter.code, T0).handle(joiner.hello(), T0)
    tampered = Challenge(w.send.pake, bytes(32))
    assert joiner.handle(tampered).refusal is Refusal.WRONG_CODE


def test_frames_round_trip_and_bad_ones_are_wire_errors():
    for msg in (Hello(b"a" * 33), Challenge(b"b" * 33, b"c" * 32), Confirm(b"d" * 32), Done(),
                Refused(Refusal.BUSY)):  # fmt: skip
        assert decode(encode(msg)) == msg and len(encode(msg)) <= MAX_FRAME
    for frame in (b"", b"\x01", b"\x02\x01" + b"a" * 33, b"\x01\x09", b"\x01\x01" + b"a" * 34,
                  b"\x01\x04x", b"\x01\x05\x63"):  # fmt: skip
        with pytest.raises(PairingWireError):
            decode(frame)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_frame_decodes_or_is_a_wire_error(frame):
    try:
        msg = decode(frame)
    except PairingWireError:
        return
    waiter = Waiter("12345678", T0)
    assert waiter.handle(msg, T0).key is None
    assert Joiner("12345678").handle(msg).key is None


def test_codes_are_eight_digits_and_typing_is_forgiving():
    code = new_code()
    assert len(normalize_code(code)) == 8
    assert normalize_code(" 1234 5678 ") == normalize_code("1234-5678") == "12345678"
    for bad in ("1234567", "123456789", "abcd-efgh", "١٢٣٤٥٦٧٨"):
        with pytest.raises(ValueError):
            normalize_code(bad)


def test_a_key_already_there_is_not_overwritten(tmp_path):
    path = tmp_path / "pair.key"
    write_pair_key(path, b"a" * 64)
    with pytest.raises(FileExistsError):
        write_pair_key(path, b"b" * 64)
    assert load_pair_key(path) == b"a" * 64
    write_pair_key(path, b"b" * 64, replace=True)
    assert load_pair_key(path) == b"b" * 64
    assert [p.name for p in tmp_path.iterdir()] == ["pair.key"]
