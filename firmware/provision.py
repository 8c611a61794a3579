"""First boot and factory reset of a board in the image.

The image's root is read-only: the factory config is shipped at /usr/share/nvr/nvr.toml, and
/etc/nvr and the data directory are symlinks into the data partition (/data). `firstboot` puts a
board's own files in place (config from the factory default, pair key, data directory) on every
boot and changes nothing when they are there; `factory_reset` deletes them again, so the next
boot's `firstboot` starts the board afresh.

External programs (systemctl) run through a runner that tests replace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from firmware.audit import AUDIT_FILE, AuditLog
from firmware.config import Config, ConfigError, load_config
from firmware.paths import SERVICE, SYSTEMD_RUNTIME
from firmware.recorder.segment_file import fsync_dir
from firmware.timefmt import now_us

NOT_FOUND = 127
"""Exit status of a program that is not installed (as the shell reports it)."""


# --- running external programs ---------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str
    """stdout and stderr together, in the order the program wrote them."""

    @property
    def last_line(self) -> str:
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"


class Runner(Protocol):
    def __call__(
        self, argv: Sequence[str], on_line: Callable[[str], None] | None = None
    ) -> Result: ...


def run_command(argv: Sequence[str], on_line: Callable[[str], None] | None = None) -> Result:
    """Run a program to its end; `on_line` sees each line of its output as it comes."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        return Result(NOT_FOUND, f"{argv[0]}: not installed")
    except OSError as e:
        return Result(126, f"{argv[0]}: {e.strerror}")
    lines: list[str] = []
    with proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
    return Result(proc.returncode, "".join(lines))


def _real(path: Path) -> Path:
    """The path with every symlink resolved, also a dangling one (the target to create)."""
    return Path(os.path.realpath(path))


def own_like_directory(fd: int, directory: Path) -> None:
    """Root (console, setup) making a file where the firmware's user owns the directory: the
    file is that user's too, or the running firmware could not open it (docs/IMAGE.md)."""
    if os.geteuid() == 0:
        st = os.stat(directory)
        os.fchown(fd, st.st_uid, st.st_gid)


def write_file_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `path` (through symlinks) so that a power cut leaves the old state or the whole
    new file: temp file, fsync, rename, fsync of the directory."""
    real = _real(path)
    real.parent.mkdir(parents=True, exist_ok=True)
    tmp = real.parent / f".{real.name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # exactly: not widened by a stale temp file, not narrowed by the umask
    own_like_directory(fd, real.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, real)
    fsync_dir(real.parent)


# --- first boot ------------------------------------------------------------------------------


DONE_MARK = ".firstboot-release"
"""Beside the config: the release whose first boot is done. nvr-firstboot.service skips the
Python start while it matches /etc/nvr-release (rootfs/usr/lib/nvr/firstboot-needed); the
image's build makes it with the config, so even the first boot has no Python start before the
console and the firmware. A factory reset deletes it with the config; an update's new release
runs firstboot once (its board profile may differ)."""


def mark_done(config: Path, release: Path) -> None:
    """The mark that this release's first boot is done (written only when it changes)."""
    mark = config.parent / DONE_MARK
    data = release.read_bytes()
    try:
        if mark.read_bytes() == data:
            return
    except OSError:
        pass
    write_file_atomic(mark, data)


def seed_config(factory: Path, config: Path, board: Path, release: Path) -> None:
    """The first boot's config made at build time, in the data partition's tree: the factory
    config with the board profile's hardware, and the done mark for the release."""
    write_file_atomic(config, factory.read_bytes())
    apply_board(board, config)
    mark_done(config, release)


def firstboot(
    factory: Path,
    config: Path,
    out: TextIO,
    err: TextIO,
    board: Path | None = None,
    release: Path | None = None,
) -> int:
    """Config and data directory in place (the pair key comes from `nvr pair`), the board
    profile's hardware in the config; 0 when all is, 2 on a bad config. A damaged profile is
    said and skipped: a board records on with the hardware its config has. With `release`
    (the image's), the done mark is left for the next boot's fast path."""

    def say(msg: str) -> None:
        print(f"firstboot: {msg}", file=out, flush=True)

    def fail(msg: str, code: int) -> int:
        print(f"nvr: firstboot: {msg}", file=err, flush=True)
        return code

    if not config.exists():
        try:
            data = factory.read_bytes()
        except OSError as e:
            return fail(f"{config} is missing and the factory config {factory}: {e.strerror}", 1)
        try:
            write_file_atomic(config, data)
        except OSError as e:
            return fail(f"{config}: cannot create: {e.strerror}", 1)
        say(f"{config} created from the factory config {factory}")
    if board is not None and board.exists():
        try:
            said = apply_board(board, config)
        except ConfigError as e:
            # The build checked the profile, so the root is damaged. The config keeps the
            # hardware it had and the board records; the firmware raises board-profile-damaged.
            print(f"nvr: firstboot: {e}; the config keeps the hardware it has", file=err,
                  flush=True)  # fmt: skip
            said = []
        except OSError as e:
            return fail(f"{config}: cannot write: {e.strerror}", 1)
        for line in said:
            say(line)
    try:
        cfg = load_config(config)
    except ConfigError as e:
        return fail(str(e), 2)
    if cfg.pair is not None and not cfg.pair.key_file.exists():
        # No key of its own: two boards each making one would drop each other's adverts.
        say(
            f"unpaired ({cfg.pair.key_file} missing): it records alone until paired with "
            f"`nvr pair code` here and `nvr pair join CODE` on the peer "
            f"({cfg.pair.peer_sync_address}), or the other way round"
        )
    if not cfg.board.data_dir.is_dir():
        try:
            _real(cfg.board.data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return fail(f"data directory {cfg.board.data_dir}: cannot create: {e.strerror}", 1)
        say(f"data directory {cfg.board.data_dir} created")
    if release is not None and release.is_file():
        try:
            mark_done(config, release)
        except OSError as e:  # the next boot runs firstboot again: no harm
            print(f"nvr: firstboot: {config.parent / DONE_MARK}: {e.strerror}", file=err,
                  flush=True)  # fmt: skip
    say(f"board {cfg.board.name!r} ready (config {config}, data {cfg.board.data_dir})")
    return 0


def apply_board(board: Path, config: Path) -> list[str]:
    """The profile's device set into the config file (written only when it changes)."""
    from firmware.hw.boardconfig import apply_profile
    from firmware.hw.profile import device_set, load_profile

    profile = load_profile(board)
    base = config.read_bytes().decode("utf-8-sig")
    text, _, changed = apply_profile(base, device_set(profile), str(config))
    if changed:
        write_file_atomic(config, text.encode())
    head = f"board profile {profile.board.name} ({board})"
    return [f"{head}: {line}" for line in changed] or [f"{head}: config already matches"]


# --- factory reset ---------------------------------------------------------------------------


def reset_dirs(data_root: Path, data_dir: Path) -> list[Path]:
    """The directories whose contents a reset may delete (list them with `list_dirs`)."""
    return [data_root / "etc", data_dir, data_root / "log"]


def reset_plan(
    data_root: Path,
    data_dir: Path,
    token_file: Path,
    wipe_footage: bool,
    entries: Mapping[Path, Iterable[str]],
) -> list[Path]:
    """What a factory reset deletes, from resolved paths and the names in each directory of
    `reset_dirs` (`entries`). Always the contents of <data_root>/etc (config, pair key) and the
    API token; with `wipe_footage` also everything in the data directory (segments, catalog,
    audit log) and in <data_root>/log (the persistent journal). The directories themselves stay
    (mount points and symlink targets). Never data_root itself, nothing twice, nothing inside
    another planned path."""
    dirs = [data_root / "etc"]
    if wipe_footage:
        dirs += [data_dir, data_root / "log"]
    planned = [d / name for d in dirs for name in sorted(entries.get(d, ()))]
    planned = [p for p in (*planned, token_file) if p != data_root]
    plan: list[Path] = []
    for p in planned:
        if p not in plan and not any(q in p.parents for q in planned):
            plan.append(p)
    return plan


def list_dirs(dirs: Iterable[Path]) -> dict[Path, list[str]]:
    """The names in each directory; a missing one has none."""
    found: dict[Path, list[str]] = {}
    for d in dirs:
        try:
            found[d] = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            found[d] = []
    return found


def remove_paths(paths: Iterable[Path], data_root: Path, say: Callable[[str], None]) -> list[Path]:
    """Delete each path (a tree with rmtree, a file or symlink with unlink); a path that is or
    leads outside data_root (through any symlink) is refused and left as it is. Returns the
    paths refused or not deleted."""
    root = data_root.resolve()
    bad: list[Path] = []
    for p in paths:
        if not os.path.lexists(p):
            continue
        entry = _real(p.parent) / p.name  # the entry itself; a symlink is not followed
        target = p.resolve()
        if not all(x != root and x.is_relative_to(root) for x in (entry, target)):
            say(f"refused: {p} resolves to {target}, outside {root}")
            bad.append(p)
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)  # removes symlinks inside, never follows them
            else:
                entry.unlink()
        except OSError as e:
            say(f"cannot delete {p}: {e.strerror}")
            bad.append(p)
    return bad


def factory_reset(
    config: Path,
    data_root: Path,
    wipe_footage: bool,
    reboot: bool,
    out: TextIO,
    runner: Runner = run_command,
    systemd_runtime: Path = SYSTEMD_RUNTIME,
) -> int:
    """Stop the firmware, delete config and keys (and with `wipe_footage` the footage and the
    journal), then reboot. 0 when done; 1 when something was refused or failed (no reboot)."""

    def say(msg: str) -> None:
        print(f"factory-reset: {msg}", file=out, flush=True)

    if systemd_runtime.is_dir():
        done = runner(["systemctl", "stop", SERVICE])
        if done.returncode != 0:
            say(f"cannot stop {SERVICE}: {done.last_line}; nothing deleted")
            return 1
        say(f"{SERVICE} stopped")
    try:
        cfg = load_config(config)
    except ConfigError as e:
        cfg = Config()
        say(f"config unusable ({e.args[0].splitlines()[0]}); data directory: the default")
    root = _real(data_root)
    data_dir = _real(cfg.board.data_dir)
    token_file = _real(cfg.token_file.parent) / cfg.token_file.name
    if not wipe_footage:
        try:
            audit = AuditLog(data_dir / AUDIT_FILE)
        except OSError as e:
            say(f"audit log in {data_dir}: {e.strerror}")
        else:
            audit.append(now_us(), "factory-reset", footage="kept")
    entries = list_dirs(reset_dirs(root, data_dir))
    plan = reset_plan(root, data_dir, token_file, wipe_footage, entries)
    bad = remove_paths(plan, root, say)
    gone = sum(1 for p in plan if p not in bad)
    kept = "wiped" if wipe_footage else f"kept in {data_dir}"
    say(f"{gone} path(s) deleted: configuration and keys, footage {kept}")
    if bad:
        say(f"incomplete: {len(bad)} path(s) left; not rebooting")
        return 1
    if not reboot:
        say("done; the next boot sets the board up afresh (nvr firstboot)")
        return 0
    say("rebooting")
    done = runner(["systemctl", "reboot"])
    if done.returncode != 0:
        say(f"reboot failed: {done.last_line}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m firmware.provision FACTORY CONFIG BOARD RELEASE`: seed_config, for the
    image's build (it runs the firmware as a command, never imports it)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m firmware.provision", description=main.__doc__)
    for name in ("factory", "config", "board", "release"):
        ap.add_argument(name, type=Path)
    args = ap.parse_args(argv)
    try:
        seed_config(args.factory, args.config, args.board, args.release)
    except (OSError, ConfigError) as e:
        print(f"seed config: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
