"""The data directory: checked before anything is written, marked with an identity file so a
swapped disk or a missing mount is noticed instead of written over."""

from __future__ import annotations

import json
import os
import secrets
import uuid
from pathlib import Path

from firmware.timefmt import iso

IDENTITY_FILE = "nvr-data.json"


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
        raise DataDirError(f"data directory {data_dir}: not writable: {e.strerror}") from None
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
    disk was swapped or is gone)."""
    try:
        return json.loads((data_dir / IDENTITY_FILE).read_text()).get("id")
    except (OSError, ValueError, AttributeError):
        return None


def api_token(path: Path) -> str:
    """The board's API token: generated once on first start, kept readable by root only."""
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
