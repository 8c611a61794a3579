"""The admin password: strength rule, salted hash in a 0600 file, and the login back-off."""

from __future__ import annotations

import stat
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import adminpw
from firmware.adminpw import Backoff
from firmware.paths import password_path


def test_weak_passwords_are_refused_with_the_reason() -> None:
    assert adminpw.weakness("Ab1") == "at least 8 characters"
    assert adminpw.weakness("password") is not None  # one kind only
    assert adminpw.weakness("12345678") is not None
    assert adminpw.weakness("pass\tword1") == "printable characters only"
    assert adminpw.weakness("password1") is None
    assert adminpw.weakness("pass word") is None  # lower + other


def test_only_a_salted_hash_is_stored_0600(tmp_path: Path) -> None:
    adminpw.save(tmp_path, "Install3r")
    path = password_path(tmp_path)
    stored = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "Install3r" not in stored
    assert adminpw.verify(stored, "Install3r") and not adminpw.verify(stored, "Install3R")
    assert adminpw.hash_password("Install3r") != adminpw.hash_password("Install3r")  # salted
    assert not adminpw.verify("garbage", "Install3r") and not adminpw.verify("", "x")


def test_backoff_doubles_after_the_free_tries_and_resets() -> None:
    b = Backoff()
    assert [b.failed(100.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert b.wait(100.5) == 0.5 and b.wait(101.0) == 0.0
    assert b.failed(101.0) == 2.0 and b.failed(103.0) == 4.0
    b.succeeded()
    assert b.wait(103.0) == 0.0 and b.failed(103.0) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=40))
def test_backoff_is_bounded_and_never_negative(times: list[float]) -> None:
    b, now = Backoff(), 0.0
    for dt in times:
        now += dt
        wait = b.failed(now)
        assert 0.0 <= wait <= b.max_s
