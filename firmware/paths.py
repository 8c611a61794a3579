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
CONSOLE_SHOWN = Path("/run/nvr-console-shown")
"""Left by the console once it asks its first question; at first boot the firmware's start
waits for it (rootfs/usr/lib/nvr/console-first)."""
