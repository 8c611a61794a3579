"""Where the image keeps the firmware's files: the defaults of `nvr`'s options.

Here, not beside the code that reads each file, so that building the command line (every
command, `nvr --help` too) imports none of that code.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = Path("/etc/nvr/nvr.toml")
FACTORY_CONFIG = Path("/usr/share/nvr/nvr.toml")
"""The documented example the image carries; a board without a config starts from it."""
DATA_ROOT = Path("/data")
"""The data partition."""
BOARD_FILE = Path("/usr/share/nvr/board.toml")
"""Where the build puts the board profile in the image (firmware/hw/profile.py)."""
RELEASE_FILE = Path("/etc/nvr-release")
SYSTEMD_RUNTIME = Path("/run/systemd/system")
"""Exists when systemd is the init system (as sd_booted() checks)."""
SERVICE = "nvr.service"
"""The firmware's unit on the image."""


def on_a_board(release: Path = RELEASE_FILE) -> bool:
    """systemd is PID 1 and this is the image (not a development host)."""
    return SYSTEMD_RUNTIME.is_dir() and release.is_file()


def password_path(data_root: Path) -> Path:
    """The console's admin password hash (firmware/adminpw.py)."""
    return data_root / "etc" / "nvr" / "admin.pw"


def done_path(data_root: Path) -> Path:
    """Left by the wizard's apply: the board is set up."""
    return data_root / "etc" / "nvr" / "setup-done"


def setup_complete(data_root: Path) -> bool:
    return done_path(data_root).exists() and password_path(data_root).exists()
