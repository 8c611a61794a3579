"""The console's admin password: a salted scrypt hash in a 0600 file on /data, a strength rule
and a login back-off. There is no default password; the first-boot wizard sets it.

`Backoff` is sans-IO (failures and `now` in, the wait out) so the console and tests share it."""

from __future__ import annotations

import hashlib
import hmac
import os
import string
from dataclasses import dataclass
from pathlib import Path

from firmware.paths import password_path
from firmware.provision import write_file_atomic

MIN_LENGTH = 8
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
"""16 MiB and ~50 ms on the board: slow for a guesser, quick for an installer."""
CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits)


def weakness(password: str) -> str | None:
    """Why the password is refused, or None. Two classes of lower, upper, digit, other."""
    if len(password) < MIN_LENGTH:
        return f"at least {MIN_LENGTH} characters"
    if any(not c.isprintable() for c in password):
        return "printable characters only"
    classes = {next((i for i, k in enumerate(CLASSES) if c in k), len(CLASSES)) for c in password}
    if len(classes) < 2:
        return "at least two kinds of: lower case, upper case, digits, other characters"
    return None


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify(stored: str, password: str) -> bool:
    """False for a wrong password and for a stored line that is not ours (never raises)."""
    try:
        kind, n, r, p, salt, digest = stored.strip().split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=2**26)  # fmt: skip
        return hmac.compare_digest(got, bytes.fromhex(digest))
    except ValueError:
        return False


def save(data_root: Path, password: str) -> None:
    """Only the hash is written, 0600, atomically (a power cut leaves the old or the new)."""
    path = password_path(data_root)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file_atomic(path, (hash_password(password) + "\n").encode(), 0o600)


@dataclass
class Backoff:
    """Failed logins double the wait (1 s after the 3rd, up to 5 min); a success resets it."""

    free: int = 3
    first_s: float = 1.0
    max_s: float = 300.0
    failures: int = 0
    until: float = 0.0

    def wait(self, now: float) -> float:
        """Seconds before the next try is taken (0: now)."""
        return max(0.0, self.until - now)

    def failed(self, now: float) -> float:
        self.failures += 1
        over = self.failures - self.free
        if over >= 0:
            self.until = now + min(self.max_s, self.first_s * 2**over)
        return self.wait(now)

    def succeeded(self) -> None:
        self.failures, self.until = 0, 0.0
