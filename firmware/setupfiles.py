"""The files a board's setup writes on the data partition, from the wizard's answers.

`render` is pure (answers and the config there now in, files out), so what a setup would write
can be checked without a board; `apply` writes them as firstboot writes the config: temp file,
fsync, rename, so a power cut leaves the old file or the new one. A file already as wanted is
not touched, so running the setup again changes nothing.

On the image (docs/IMAGE.md, docs/INSTALL.md): /etc/nvr is /data/etc/nvr, systemd-networkd reads
/data/etc/systemd/network before the image's defaults, chrony reads /data/etc/chrony
(firmware.timesync)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

from firmware.config import Config, ConfigError, parse_config, read_toml
from firmware.provision import write_file_atomic
from firmware.timesync import TimeSettings

if TYPE_CHECKING:  # the answers' models are pydantic's: not loaded by `nvr run` (Layout only)
    from firmware.answers import Answers, CameraAnswers, LanAnswers

PRIVATE = 0o600
"""The config holds the cameras' credentials."""
PUBLIC = 0o644
"""systemd-networkd and chronyd read their files as their own users."""


@dataclass(frozen=True)
class Layout:
    """Where the per-board files live, under the data partition's mount point."""

    data_root: Path = Path("/data")

    @property
    def config(self) -> Path:
        return self.data_root / "etc" / "nvr" / "nvr.toml"

    @property
    def network_dir(self) -> Path:
        return self.data_root / "etc" / "systemd" / "network"

    @property
    def chrony_dir(self) -> Path:
        return self.data_root / "etc" / "chrony"


@dataclass(frozen=True)
class SetupFile:
    path: Path
    data: bytes | None
    """None: the file must not exist (e.g. no NTP servers answered: the image's default)."""
    mode: int = PUBLIC


def camera_url(cam: CameraAnswers) -> str:
    """The URL the recorder opens: credentials in it, percent-encoded."""
    if cam.username is None or cam.password is None:
        return cam.url
    parts = urlsplit(cam.url)
    auth = f"{quote(cam.username, safe='')}:{quote(cam.password, safe='')}@"
    return urlunsplit(parts._replace(netloc=auth + parts.netloc))


def render_config(
    answers: Answers, base: str, source: str, keep_cameras: bool = False
) -> tuple[str, Config]:
    """The board's config: `base` (the config there now, or the factory one) with the answered
    keys set, comments and every other key kept; checked by the firmware's own loader.
    `keep_cameras`: the answered cameras are added to the base's (replacing those of the same
    name) instead of replacing them all: the wizard's way, since a paired board's config may
    already hold the pair's cameras from the other board."""
    import tomlkit  # the setup's alone: `nvr run` imports this module for Layout

    doc = tomlkit.parse(base)
    board = doc.setdefault("board", tomlkit.table())
    board["name"] = answers.name
    pair = doc.setdefault("pair", tomlkit.table())
    pair["peer_lan_address"] = str(answers.pair.peer_lan_address)
    pair["peer_sync_address"] = str(answers.peer_sync_address)
    pair["virtual_ip"] = str(answers.pair.virtual_ip)
    pair["priority"] = answers.priority
    if answers.ups is not None:
        ups = doc.setdefault("ups", tomlkit.table())
        ups["backend"] = "none" if answers.ups.protocol == "none" else "serial"
        if answers.ups.protocol != "none":
            ups["protocol"] = answers.ups.protocol
    cameras = tomlkit.aot()
    answered = {c.name for c in answers.camera}
    if keep_cameras:
        for t in doc.get("camera", []):
            if t.get("name") not in answered:
                cameras.append(t)
    for cam in answers.camera:
        t = tomlkit.table()
        t["name"] = cam.name
        t["url"] = camera_url(cam)
        if not cam.enabled:
            t["enabled"] = False
        cameras.append(t)
    if "camera" in doc:
        del doc["camera"]
    if cameras:
        doc["camera"] = cameras
    text = tomlkit.dumps(doc)
    return text, parse_config(text, source)


def _network(name: str, lines: Iterable[str], why: str) -> bytes:
    head = [f"# {why}: written by `nvr setup`", "# (the image's default: /usr/lib/systemd/network)"]
    return "\n".join([*head, "[Match]", f"Name={name}", "", "[Network]", *lines, ""]).encode()


def lan_network(lan: LanAnswers, interface: str) -> bytes:
    """The LAN's .network file (the setup's, and the console's network change)."""
    if lan.dhcp:
        lines = ["DHCP=ipv4"]
    else:
        lines = [f"Address={lan.address}"]
        lines += [f"Gateway={lan.gateway}"] if lan.gateway else []
        lines += [f"DNS={d}" for d in lan.dns]
    lines += ["LinkLocalAddressing=no", "IPv6AcceptRA=no"]
    if lan.dhcp:
        lines += ["", "[DHCPv4]", "UseDomains=no"]
    return _network(interface, lines, "LAN (cameras, clients, the VIP)")


def render(
    answers: Answers, base: str, layout: Layout, keep_cameras: bool = False
) -> tuple[list[SetupFile], Config]:
    """Every file the answers set, with the config they make."""
    text, cfg = render_config(answers, base, str(layout.config), keep_cameras)
    sync_lines = [f"Address={answers.sync_address}", "LinkLocalAddressing=no",
                  "IPv6AcceptRA=no", "ConfigureWithoutCarrier=yes"]  # fmt: skip
    net = cfg.network
    time = TimeSettings(tuple(answers.ntp.servers), str(answers.peer_sync_address))
    files = [
        SetupFile(layout.config, text.encode(), PRIVATE),
        SetupFile(layout.network_dir / "10-lan.network",
                  lan_network(answers.lan, net.lan_interface)),
        SetupFile(layout.network_dir / "20-sync.network",
                  _network(net.sync_interface, sync_lines, "the direct link to the peer board")),
    ]  # fmt: skip
    files += [SetupFile(layout.chrony_dir / rel, None if text is None else text.encode())
              for rel, text in time.files().items()]  # fmt: skip
    return files, cfg


def _current(f: SetupFile) -> bool:
    """The file is already as wanted (content and mode)."""
    try:
        st = os.stat(f.path)
    except FileNotFoundError:
        return f.data is None
    if f.data is None or stat.S_IMODE(st.st_mode) != f.mode:
        return False
    return f.path.read_bytes() == f.data


def apply(files: Iterable[SetupFile]) -> list[Path]:
    """Write (or remove) each file that is not as wanted; the paths changed."""
    changed = []
    for f in files:
        if _current(f):
            continue
        if f.data is None:
            f.path.unlink()
        else:
            if f.mode == PRIVATE and not f.path.parent.exists():
                f.path.parent.mkdir(mode=0o700, parents=True)
            write_file_atomic(f.path, f.data, f.mode)
        changed.append(f.path)
    return changed


def summary_lines(answers: Answers, cfg: Config) -> list[str]:
    """What the answers set, as the installer reads it back; camera URLs without credentials."""
    from firmware.recorder.events import redact

    lan = answers.lan
    return [
        f"board {cfg.board.name!r} (side {answers.board.side.value.upper()}), "
        f"priority {answers.priority}",
        f"LAN {cfg.network.lan_interface}: {'DHCP' if lan.dhcp else lan.address}"
        + (f" gateway {lan.gateway}" if lan.gateway else ""),
        f"sync {cfg.network.sync_interface}: {answers.sync_address}, "
        f"peer {answers.peer_sync_address}",
        f"virtual IP {answers.pair.virtual_ip}, peer LAN {answers.pair.peer_lan_address}",
        f"NTP: {', '.join(answers.ntp.servers) or 'the image default'}",
        *(f"camera {c.name}: {redact(c.url)}" for c in cfg.camera),
    ]


def run_setup(answers_path: Path, layout: Layout, factory: Path, out: TextIO, err: TextIO) -> int:
    """`nvr setup --answers FILE`: 0 when the board's files are as answered, 2 on a bad answer
    (nothing written), 1 when a file cannot be written. Credentials are never printed."""
    from firmware.answers import load_answers

    def fail(msg: str, code: int) -> int:
        print(f"nvr: setup: {msg}", file=err, flush=True)
        return code

    base_path = layout.config if layout.config.exists() else factory
    try:
        answers = load_answers(answers_path)
        base = base_path.read_bytes()
        read_toml(base, str(base_path))  # the firmware's message for a file that is no TOML
        files, cfg = render(answers, base.decode("utf-8-sig"), layout)
    except ConfigError as e:
        return fail(str(e), 2)
    except OSError as e:
        return fail(f"{base_path}: cannot read: {e.strerror}", 1)
    try:
        changed = apply(files)
    except OSError as e:
        return fail(f"{e.filename}: cannot write: {e.strerror}", 1)
    lines = summary_lines(answers, cfg)
    for f in files:
        lines.append(f"{'written' if f.path in changed else 'unchanged'}: {f.path}"
                     + (" (removed)" if f.data is None and f.path in changed else ""))  # fmt: skip
    if changed:
        lines.append("the settings take effect at the next boot")
    print("\n".join(f"setup: {ln}" for ln in lines), file=out, flush=True)
    return 0
