"""The data directory: checked before anything is written, marked with an identity file so a
swapped disk or a missing mount is noticed instead of written over. Also the API token, which a
single board keeps in a file there and a pair derives from its key (firmware/pairkey.py)."""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import uuid
from pathlib import Path

from firmware.catalog import set_aside_if_corrupt
from firmware.config import Config, ConfigError
from firmware.fds import out_of_fds
from firmware.pairkey import load_pair_key, pair_api_token, read_secret
from firmware.timefmt import iso

log = logging.getLogger(__name__)

IDENTITY_FILE = "nvr-data.json"
MIN_TOKEN_CHARS = 32
"""A shorter API token can be guessed; the generated and the derived ones have 43."""


class DataDirError(Exception):
    pass


def prepare(data_dir: Path, board: str, now_us: int) -> dict:
    """Create (first start) or read the identity; fail clearly if the directory is unusable."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataDirError(f"data directory {data_dir}: cannot create: {e.strerror}") from None
    probe = data_dir / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as e:
        probe.unlink(missing_ok=True)
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise DataDirError(f"data directory {data_dir}: not writable: {e.strerror}") from None
        # Full, not broken: the board starts, alerts, and records once there is room.
        log.error("data directory %s is full: recording waits for free space", data_dir)
    if (aside := set_aside_if_corrupt(data_dir)) is not None:
        # Recovery rebuilds the catalog from the segment files; the recorder raises the alert.
        log.error("catalog is corrupt (%s): set aside as %s, rebuilt from the files", aside[1],
                  aside[0])  # fmt: skip
    ident = data_dir / IDENTITY_FILE
    if ident.exists():
        try:
            return json.loads(ident.read_text())
        except (OSError, ValueError) as e:
            raise DataDirError(f"{ident}: unreadable identity file: {e}") from None
    info = {"id": str(uuid.uuid4()), "board": board, "created": iso(now_us)}
    tmp = ident.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, ident)
    return info


def read_identity(data_dir: Path) -> str | None:
    """The id in the directory's identity file now; None if it is missing or unreadable (the
    disk was swapped or is gone). Raises OSError when this process is out of file descriptors:
    that is no news about the disk."""
    try:
        return json.loads((data_dir / IDENTITY_FILE).read_text()).get("id")
    except OSError as e:
        if out_of_fds(e):
            raise
        return None
    except (ValueError, AttributeError):
        return None


def api_token(cfg: Config, board: bool = True) -> str:
    """The API token of this config, the one the board accepts and `nvr token` prints.

    `board` is the firmware starting: it makes a single board's token file on first start
    and says when a paired board uses a token file; `nvr token` only reads.

    A board with [pair] but no key file yet (unpaired: `nvr pair`) and no [api] token_file
    keeps a single board's token file until it is paired.

    With [pair] the token is derived from the pair key, unless [api] token_file is set: an
    explicit file wins (an installer's own token), but a paired board never generates it,
    because two boards generating their own would give the pair two tokens again; the same
    file goes on both boards. Raises ConfigError for a missing or weak pair key and for a
    missing explicit file on a paired board, OSError when a single board's file is not there
    yet (not `board`)."""
    if cfg.pair is None or (unpaired(cfg) and cfg.api.token_file is None):
        if board:
            return _make_token_file(cfg.token_file)
        try:
            return _read_token_file(cfg.token_file)
        except OSError as e:
            raise OSError(f"{e} (the board creates it on first start)") from None
    if cfg.api.token_file is None:
        return pair_api_token(load_pair_key(cfg.pair.key_file))
    path = cfg.api.token_file
    if board:
        log.warning(
            "[api] token_file %s is set: the API token is that file's, not the one derived "
            "from the pair key; the peer must hold the same file or clients get 401 there "
            "after a failover",
            path,
        )
    try:
        return _read_token_file(path)
    except OSError as e:
        raise ConfigError(
            f"{e} ([api] token_file on a paired board is never generated: copy the same "
            "token file to both boards, or remove token_file to use the token derived from "
            "the pair key)"
        ) from None


def unpaired(cfg: Config) -> bool:
    """[pair] is configured and its key file is not there yet: the board records alone until
    it is paired (firmware/pairing.py). A key that is there but unreadable or weak stays an
    error: that board was paired."""
    return cfg.pair is not None and not cfg.pair.key_file.exists()


def _read_token_file(path: Path) -> str:
    """The token in a file, the file made private (pairkey.read_secret); OSError naming the
    file when it is missing, unreadable or empty, ConfigError when the token is too short."""
    try:
        token = _token_text(path)
    except OSError as e:
        raise OSError(f"{path}: {e.strerror or e}") from None
    if not token:
        raise OSError(f"{path}: empty token file")
    return _long_enough(path, token)


def _token_text(path: Path) -> str:
    try:
        return read_secret(path, "API token").decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the API token is not text") from None


def _long_enough(path: Path, token: str) -> str:
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{path}: the API token is shorter than {MIN_TOKEN_CHARS} characters; put a "
            "longer one there (or, on a single board, remove the file: a new one is made at "
            "the next start)"
        )
    return token


def _make_token_file(path: Path) -> str:
    """A single board's token: generated once on first start, kept readable by root only."""
    try:
        token = _token_text(path)
        if token:
            return _long_enough(path, token)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # the mode above applies only to a file that was not there
        f.write(token + "\n")
    return token
