"""The installer's TOML files as read before any model checks them: the one error every config
fault is, the file's table, the file read.

Apart from firmware/config.py (the pydantic models) so that a command which only names
ConfigError or reads a TOML table (`nvr --help`, `nvr catalog`, the parsers of every command)
does not import pydantic; firmware/config.py re-exports all three.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A config that cannot be used; the message names the file, the key and the problem."""


def read_toml(data: str | bytes, source: str) -> dict:
    """A TOML file's table (also for other files an installer writes, e.g. setup answers);
    not UTF-8 or not TOML is a ConfigError naming the file."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise ConfigError(
                f"{source}: line {line}: not UTF-8 text (save the file as UTF-8)"
            ) from None
    try:
        return tomllib.loads(data.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None


def load_file(path: Path, parse: Callable[[bytes, str], T]) -> T:
    """A file parsed as `parse` does; unreadable is a ConfigError naming it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse(data, str(path))
