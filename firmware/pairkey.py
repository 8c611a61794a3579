"""The pair key: the secret both boards of a pair hold. Adverts and mirror traffic are
authenticated with it, and the pair's API token is derived from it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import stat
from pathlib import Path

from firmware.config import ConfigError
from firmware.provision import write_file_atomic

log = logging.getLogger(__name__)

MIN_KEY_BYTES = 16


def read_secret(path: Path, what: str) -> bytes:
    """A secret file's bytes, the file made private first. One that group or others may read
    is set to 0600 with a warning (it may have been read already: a new one is safer); one
    that cannot be fixed (a read-only filesystem) is refused. OSError if it cannot be read."""
    with open(path, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            try:
                os.fchmod(f.fileno(), mode & 0o700)
            except OSError as e:
                raise ConfigError(
                    f"{path}: the {what} is open to others (mode {mode:04o}) and cannot be "
                    f"made private ({e.strerror}): chmod 600 it"
                ) from None
            log.warning(
                "%s: the %s was open to others (mode %04o): made private (0600); it may have "
                "been read meanwhile, so a new one is safer",
                path, what, mode,
            )  # fmt: skip
        return f.read()


def load_pair_key(path: Path) -> bytes:
    """The shared secret both boards hold; a missing or weak key is a config error, because
    a pair that cannot authenticate adverts must not run an election at all."""
    try:
        key = read_secret(path, "pair key").strip()
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read the pair key ({e.strerror}); make one with "
            f"`nvr pair-key {path}` and copy it to both boards"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{path}: the pair key is shorter than {MIN_KEY_BYTES} bytes")
    return key


def make_pair_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(32).hex() + "\n")


PAIR_TOKEN_LABEL = b"nvr-pair api token v1"
"""What the pair key signs to make the pair's API token; a new label (v2) would rotate the
token of every pair without a new key."""


def pair_api_token(key: bytes) -> str:
    """The API token of a pair: HMAC-SHA256 of a fixed label under the pair key, url-safe
    base64 without padding. Both boards hold the key, so both accept the same token and a
    client keeps working after a failover; the token does not reveal the key."""
    mac = hmac.new(key, PAIR_TOKEN_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def key_fingerprint(key: bytes) -> str:
    """A short name of a pair key both boards show, so an installer sees they hold the same
    one; it does not reveal the key (SHA-256 under its own label, 48 bits shown)."""
    digest = hashlib.sha256(b"nvr-pair fingerprint v1\0" + key.strip()).hexdigest()[:12].upper()
    return f"{digest[:4]}-{digest[4:8]}-{digest[8:]}"


def write_pair_key(path: Path, key: bytes, replace: bool = False) -> None:
    """A pair key made by pairing, written whole or not at all and 0600 (through a symlink
    into /data, as firstboot lays it out); FileExistsError if one is there and not `replace`."""
    if len(key.strip()) < MIN_KEY_BYTES:
        raise ValueError(f"a pair key is at least {MIN_KEY_BYTES} bytes")
    if path.exists() and not replace:
        raise FileExistsError(f"{path}: a pair key is already there")
    write_file_atomic(path, key.strip() + b"\n", 0o600)
