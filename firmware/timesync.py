"""The board's time settings for chrony, the image's time service: its NTP servers and the peer
board. They are per-board settings, so they live on /data (the root is read-only), in the
directories the image's /etc/chrony/chrony.conf reads (`sourcedir`, `confdir`). The setup (the
console's wizard, `nvr setup --answers`) writes them; the two boards also serve each other
over the sync link, so without any reachable server they still agree (chrony's orphan mode).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from firmware.provision import write_file_atomic

CHRONY_DIR = Path("/data/etc/chrony")
SOURCES = Path("sources.d/nvr.sources")
"""Read by `sourcedir`: server lines only; `chronyc reload sources` takes a change in."""
CONF = Path("conf.d/nvr.conf")
"""Read by `confdir` when chrony starts, and by its reload: who may ask this board for its
time."""
TAKE_IN = ["systemctl", "try-reload-or-restart", "chrony.service"]
"""How a running chronyd takes changed files in: the image's drop-in makes its reload
/usr/lib/nvr/chrony-reload (`chronyc reload sources`, `chronyc allow`), seconds faster than a
restart; a chronyd that is not running reads them when it starts."""
MAX_SERVERS = 8
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")  # fmt: skip


def check_server(server: str) -> str:
    """An NTP server as chrony takes it: an IP address or a host name, nothing that could add
    a directive to its file."""
    try:
        return str(ipaddress.ip_address(server))
    except ValueError:
        if not _HOST.fullmatch(server):
            raise ValueError(
                f"NTP server {server[:80]!r}: not a host name or an IP address"
            ) from None
        return server


@dataclass(frozen=True, slots=True)
class TimeSettings:
    servers: tuple[str, ...]
    """Empty: the image's default pool."""
    peer: str | None
    """The peer board's sync address: asked for its time, and allowed to ask this board."""

    def __post_init__(self) -> None:
        if len(self.servers) > MAX_SERVERS:
            raise ValueError(f"at most {MAX_SERVERS} NTP servers")
        for s in self.servers:
            check_server(s)
        if self.peer is not None:
            ipaddress.ip_address(self.peer)

    def files(self) -> dict[Path, str | None]:
        """Path under CHRONY_DIR -> text, or None for a file that must not exist."""
        servers = [f"server {check_server(s)} iburst\n" for s in self.servers]
        if self.peer is not None:
            servers.append(f"server {self.peer} iburst\n")
        sources = "".join(servers) or None
        conf = None if self.peer is None else f"allow {ipaddress.ip_address(self.peer)}\n"
        return {SOURCES: sources, CONF: conf}


def write(settings: TimeSettings, directory: Path = CHRONY_DIR) -> bool:
    """Write the files (atomically, readable by chrony's own user); True if any changed."""
    changed = False
    for rel, text in settings.files().items():
        path = directory / rel
        old = path.read_text() if path.exists() else None
        if old == text:
            continue
        changed = True
        if text is None:
            path.unlink()
        else:
            write_file_atomic(path, text.encode(), mode=0o644)
    return changed


def apply(settings: TimeSettings, directory: Path = CHRONY_DIR) -> None:
    """Write the settings and have chrony take them in if they changed; on a host without
    chrony, only the files are written."""
    if write(settings, directory):
        subprocess.run(TAKE_IN, check=False, capture_output=True)
