"""`nvr`: the one command of the firmware (see docs/DESIGN.md for the contract).

Building the command line imports no command's code: each command imports what it needs when it
runs. pydantic (the config), aiohttp (the API), PyAV (the recorder) and pyroute2 (the NICs) cost
a large part of a second together, and `nvr --help`, `nvr status` and `nvr catalog` need none of
them but the config (tests/test_start_imports.py keeps it so).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.configfile import ConfigError
from firmware.lograte import setup_logging
from firmware.paths import (
    BOARD_FILE,
    DATA_ROOT,
    DEFAULT_CONFIG,
    FACTORY_CONFIG,
    RELEASE_FILE,
)
from firmware.timefmt import now_us

if TYPE_CHECKING:
    from collections.abc import Callable

    from firmware.board import Board
    from firmware.catalog import Catalog
    from firmware.config import Config

log = logging.getLogger("nvr")


def _fail(msg: str, code: int = 2) -> int:
    print(f"nvr: {msg}", file=sys.stderr)
    return code


def _camera_arg(text: str) -> dict:
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"--camera wants NAME=URL, got {text!r}")
    return {"name": name, "url": url}


# --- run / record ----------------------------------------------------------------------------


def _serve(cfg: Config, serve_api: bool, config_path: Path | None = None) -> int:
    """Run boards until one stops for good: a board that stops to restart (Board.restart) is
    followed by a new one on the config file, in this process."""
    while True:
        # Asked between two boards (or twice), a restart is not the end of the process: the
        # next board reads the config file anyway.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        board = _board(cfg, serve_api, config_path)
        if isinstance(board, int):
            return board
        _run_board(board, config_path)
        if board.shutdown_reason is not None:
            return _power_off(board)
        if board.restart_reason is None or config_path is None:
            return 0
        import gc

        from firmware.config import load_config

        reason = board.restart_reason
        board.close()
        del board
        gc.collect()  # the old board's cycles, and the descriptors they hold, go now

        try:
            cfg = load_config(config_path)
        except ConfigError as e:
            return _fail(f"restart ({reason}): {e}")
        log.warning("restart (%s): starting again on %s", reason, config_path)


def _board(cfg: Config, serve_api: bool, config_path: Path | None) -> Board | int:
    """The board, or the exit code of why there is none (said)."""
    from firmware.board import Board
    from firmware.datadir import DataDirError
    from hal.errors import HalError

    try:
        return Board(cfg, serve_api=serve_api, config_path=config_path)
    except (DataDirError, ConfigError, HalError) as e:
        return _fail(str(e))


def _run_board(board: Board, config_path: Path | None) -> None:
    """Until the board stops: SIGINT/SIGTERM stop it, SIGHUP reloads its config, SIGUSR1
    restarts it in this process (on a config change that needs a restart: the console's
    setup does this)."""
    import asyncio

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: (board.terminate(), stop.set()))
        if config_path is not None:

            def reload() -> None:
                fut = loop.run_in_executor(None, board.reload, config_path)
                fut.add_done_callback(lambda f: log.info("SIGHUP: config %s", f.result()))

            loop.add_signal_handler(signal.SIGHUP, reload)
            loop.add_signal_handler(signal.SIGUSR1, lambda: (board.restart("SIGUSR1"), stop.set()))
        watch = _watch_config(board, config_path)
        task = asyncio.create_task(board.serve(stop))
        try:
            while board.api_port is None and board.serve_api and not task.done():
                await asyncio.sleep(0.05)
            _announce(board)
            await task
        finally:
            if watch is not None:
                await asyncio.to_thread(watch.stop)

    asyncio.run(main())


def _watch_config(board, path: Path | None):
    """An edit of the config file reloads it as SIGHUP does (firmware.configwatch)."""
    if path is None:
        return None
    from firmware.configwatch import ConfigWatch

    watch = ConfigWatch(path, lambda: log.info("config edited: %s", board.reload(path)),
                        board.alerts.task_failed)  # fmt: skip
    watch.start()
    return watch


def _power_off(board) -> int:
    """Everything is committed and the VIP handed over; now the board itself goes down."""
    cmd = board.cfg.ups.shutdown_command.strip()
    log.warning("stopped for %s; running %r", board.shutdown_reason, cmd or "(nothing)")
    board.audit.append(now_us(), "power-off", reason=board.shutdown_reason, command=cmd)
    if cmd:
        done = subprocess.run(cmd, shell=True, check=False)
        if done.returncode != 0:
            return _fail(f"shutdown command {cmd!r} failed with exit code {done.returncode}", 1)
    return 0


def _announce(board) -> None:
    cfg = board.cfg
    lines = [
        f"nvr: board {cfg.board.name!r} recording {len(board.recorder.cameras)} camera(s)",
        f"nvr: segments go to {cfg.board.data_dir / 'segments'}/<camera>/<date>/*.mp4",
        f"nvr: list them with: nvr catalog --data {cfg.board.data_dir}",
    ]
    if board.api_port:
        lines.append(f"nvr: API on http://127.0.0.1:{board.api_port}/api/v1/status")
        if cfg.pair is not None and cfg.api.token_file is None and not board.unpaired:
            lines.append(
                "nvr: API token for footage: `nvr token` (from the pair key, same on both boards)"
            )
        else:
            lines.append(f"nvr: API token for footage is in {cfg.token_file}")
    lines.append("nvr: stop with Ctrl-C or SIGTERM (open segments are committed first)")
    print("\n".join(lines), file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from firmware.recorder.procs import prewarm

    prewarm()  # the workers' imports beside ours
    from firmware.config import load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        return _fail(str(e))
    return _serve(cfg, serve_api=True, config_path=args.config)


def cmd_record(args: argparse.Namespace) -> int:
    from firmware.recorder.procs import prewarm

    prewarm()
    from firmware.config import validate_config

    raw = {
        "board": {"name": args.board, "data_dir": str(args.data)},
        "recorder": {"segment_seconds": args.segment_seconds, "workers": args.workers},
        "camera": args.camera,
    }
    if args.min_free_mb is not None:
        raw["recorder"]["min_free_mb"] = args.min_free_mb
    if args.retention_days is not None:
        raw["recorder"]["retention_days"] = args.retention_days
    if args.stall_seconds is not None:
        raw["recorder"]["stall_seconds"] = args.stall_seconds
    if args.rtsp_reader is not None:
        raw["recorder"]["rtsp_reader"] = args.rtsp_reader
    if args.api_port is not None:
        raw["api"] = {"listen_port": args.api_port, "listen_address": args.api_address}
    try:
        cfg = validate_config(raw, "command line")
    except ConfigError as e:
        return _fail(str(e))
    return _serve(cfg, serve_api=args.api_port is not None)


# --- catalog / verify ------------------------------------------------------------------------


def _open_catalog(data: Path):
    from firmware.catalog import CATALOG_FILE, Catalog

    if not (data / CATALOG_FILE).exists():
        raise FileNotFoundError(f"{data}: no catalog here ({CATALOG_FILE} missing)")
    return Catalog(data, reader=True)


def _corrupt(data: Path, e: Exception) -> int:
    """A corrupt catalog is said, not a traceback; the firmware repairs it at its start."""
    from firmware.catalog import CatalogCorrupt, is_corruption

    if not isinstance(e, CatalogCorrupt) and not is_corruption(e):
        raise e  # locked, unreadable: not corruption
    return _fail(f"{data}: the catalog is corrupt ({e}); the firmware sets it aside and "
                 "rebuilds it from the segment files when it next starts")  # fmt: skip


def cmd_catalog(args: argparse.Namespace) -> int:
    import sqlite3

    from firmware.catalog import CatalogCorrupt

    try:
        return _catalog(args)
    except FileNotFoundError as e:
        return _fail(str(e))
    except (sqlite3.DatabaseError, CatalogCorrupt) as e:
        return _corrupt(args.data, e)


def _catalog(args: argparse.Namespace) -> int:
    from firmware.timefmt import iso

    cat = _open_catalog(args.data)
    segs = cat.segments(args.camera)
    gaps = cat.gaps(args.camera)
    runs = cat.runs(args.camera)
    if args.json:
        keys = ("id", "camera", "path", "start", "end", "frames", "bytes", "sha256", "origin")
        print(
            json.dumps(
                {
                    "segments": [
                        {k: s.to_json()[k] for k in (*keys, "codec", "run", "salvaged")}
                        for s in segs
                    ],
                    "gaps": [g.to_json() for g in gaps],
                    "runs": [
                        {
                            "id": r.id,
                            "camera": r.camera,
                            "origin": r.origin,
                            "start": iso(r.start_us),
                            "end": iso(r.end_us),
                            "end_reason": r.end_reason,
                        }
                        for r in runs
                    ],
                },
                indent=1,
            )
        )
        return 0
    cams = sorted({s.camera for s in segs} | {r.camera for r in runs})
    for cam in cams:
        cs = [s for s in segs if s.camera == cam]
        total = sum(s.bytes for s in cs)
        print(
            f"camera {cam}: {len(cs)} segments, {total / 1e6:.1f} MB, "
            f"{sum(s.frames for s in cs)} frames"
        )
        for r in (r for r in runs if r.camera == cam):
            rs = [s for s in cs if s.run_id == r.id]
            end = r.end_reason or "recording"
            print(
                f"  run {r.id}: {iso(r.start_us)} .. {iso(r.end_us)}  "
                f"{len(rs)} segments  ended: {end}"
            )
        for g in (g for g in gaps if g.camera == cam):
            length = "open" if g.end_us is None else f"{(g.end_us - g.start_us) / 1e6:.3f} s"
            print(
                f"  gap: {iso(g.start_us)} .. {iso(g.end_us) or 'now'}  {length}  "
                f"reason: {g.reason}"
            )
    if not cams:
        print("no recordings")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import sqlite3

    from firmware.catalog import CatalogCorrupt

    if args.archive:
        from firmware.archive.cli import verify_archive

        return verify_archive(args.data, args.config, args.deep)
    if args.data is None:
        return _fail("verify: --data is required (or --archive)")
    try:
        return _verify(args)
    except FileNotFoundError as e:
        return _fail(str(e))
    except (sqlite3.DatabaseError, CatalogCorrupt) as e:
        return _corrupt(args.data, e)


def _verify(args: argparse.Namespace) -> int:
    from functools import cache

    from firmware.recorder.segment_file import sha256_file

    sha = cache(sha256_file)  # each file is read once, by both checks
    cat = _open_catalog(args.data)
    bad = 0
    segs = cat.segments()
    for s in segs:
        path = args.data / s.path
        try:
            digest = sha(path)
        except FileNotFoundError:
            print(f"MISSING  {s.path}  (segment {s.id})")
            bad += 1
            continue
        if digest != s.sha256:
            print(f"MISMATCH {s.path}  catalog {s.sha256[:16]}… file {digest[:16]}…")
            bad += 1
    print(f"verify: {len(segs)} segments checked, {bad} bad")
    broken = _verify_log(args.data, cat, sha)
    return 1 if bad or broken else 0


def _verify_log(data: Path, cat: Catalog, sha: Callable[[Path], str]) -> bool:
    """The evidence log's part of `nvr verify`; True when it shows a break."""
    from firmware.evidence.check import NOTICE, check_log
    from firmware.evidence.log import EvidenceLog, LogDamaged, LogMissing
    from firmware.evidence.note import KeyFileError
    from firmware.evidence.verifier import key_fingerprint

    try:
        evlog = EvidenceLog(data, "verify", reader=True)
    except LogMissing as e:
        print(f"evidence log: none ({e})")
        return False
    except (LogDamaged, KeyFileError, OSError) as e:
        print(f"evidence log: BROKEN: cannot open it: {e}")
        return True
    try:
        rep = check_log(data, cat, evlog, sha)
        peer = evlog.pinned()
        print(f"evidence log: {rep.leaves} entries ({rep.segments} segments, {rep.audit_lines} "
              f"audit events); signed up to {rep.signed}, cosigned by the peer up to "
              f"{rep.cosigned}; key {key_fingerprint(evlog.signer.note_key)}, peer's key "
              f"{key_fingerprint(peer) if peer else 'none'}")  # fmt: skip
    finally:
        evlog.close()
    breaks = [f for f in rep.findings if f.kind not in NOTICE]
    for f in rep.findings[:50]:
        print(f"{'BREAK' if f.kind not in NOTICE else 'NOTE'}  {f.kind.value}: {f.text}")
    if len(rep.findings) > 50:
        print(f"... and {len(rep.findings) - 50} more")
    if breaks:
        print(f"evidence log: BROKEN; the first break: {breaks[0].text}")
    else:
        print("evidence log: intact")
    return bool(breaks)


# --- evidence locks --------------------------------------------------------------------------


def _lock_place(args: argparse.Namespace) -> tuple[Path, set[str]]:
    """The data directory (--data, else the config's) and the cameras a lock may name: the
    config's. ConfigError when the config cannot be read and --data does not stand in."""
    from firmware.config import load_config

    try:
        cfg = load_config(args.config)
    except ConfigError:
        if args.data is None:
            raise
        return args.data, set()
    return args.data or cfg.board.data_dir, {c.name for c in cfg.camera}


def _lock_catalog(data: Path):
    """The board's catalog for writing (the running firmware has it open too: WAL and a busy
    timeout let both write); FileNotFoundError where there is none."""
    from firmware.catalog import CATALOG_FILE, Catalog

    if not (data / CATALOG_FILE).exists():
        raise FileNotFoundError(f"{data}: no catalog here ({CATALOG_FILE} missing)")
    cat = Catalog(data)
    if cat.read_only:
        raise OSError(f"{data}: the data disk is read-only; no lock can be stored")
    return cat


def _lock_time(text: str, flag: str) -> int:
    from firmware.timefmt import parse_iso

    try:
        return parse_iso(text)
    except ValueError:
        raise ValueError(f"{flag}: not an ISO 8601 time: {text[:40]!r}") from None


def cmd_lock(args: argparse.Namespace) -> int:
    import sqlite3

    from firmware.audit import open_audit
    from firmware.evidence.locks import audit_lock, make_lock

    try:
        data, names = _lock_place(args)
        start, end = _lock_time(args.start, "--start"), _lock_time(args.end, "--end")
        cat = _lock_catalog(data)
        now = now_us()
        lock = make_lock(None if args.all_cameras else args.camera, start, end, args.reason,
                         now, names | set(cat.cameras()))  # fmt: skip
        lock = cat.add_lock(lock)
    except (ConfigError, ValueError, OSError) as e:  # LockError is a ValueError
        return _fail(str(e))
    except sqlite3.Error as e:
        return _fail(f"{data}: the lock was not stored: {e}", 1)
    audit_lock(open_audit(data), lock, "cli", now)
    print(lock.id)
    return 0


def cmd_locks(args: argparse.Namespace) -> int:
    import sqlite3

    from firmware.catalog import CatalogCorrupt
    from firmware.timefmt import iso

    try:
        data, _ = _lock_place(args)
        locks = _open_catalog(data).locks(active_only=not args.all)
    except (ConfigError, FileNotFoundError) as e:
        return _fail(str(e))
    except (sqlite3.DatabaseError, CatalogCorrupt) as e:
        return _corrupt(data, e)
    if args.json:
        print(json.dumps({"locks": [lk.to_json() for lk in locks]}, indent=1))
        return 0
    if not locks:
        print("no active evidence locks" if not args.all else "no evidence locks")
        return 0
    print(f"{'ID':<12} {'CAMERA':<16} {'START':<24} {'END':<24} {'STATE':<8} REASON")
    for lk in locks:
        state = "active" if lk.active else "released"
        print(f"{lk.id:<12} {lk.camera or '(all)':<16} {iso(lk.start_us):<24} "
              f"{iso(lk.end_us):<24} {state:<8} {lk.reason}")  # fmt: skip
        if not lk.active:
            print(f"{'':<12} released {iso(lk.released_us)}: {lk.release_reason}")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    import sqlite3

    from firmware.audit import open_audit
    from firmware.evidence.locks import audit_release, check_reason

    try:
        data, _ = _lock_place(args)
        reason = check_reason(args.reason)
        cat = _lock_catalog(data)
        now = now_us()
        lock = cat.release_lock(args.id, reason, now)
    except (ConfigError, ValueError, OSError) as e:
        return _fail(str(e))
    except sqlite3.Error as e:
        return _fail(f"{data}: the release was not stored: {e}", 1)
    audit_release(open_audit(data), lock, "cli", now)
    print(f"released {lock.id}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """An evidence export (firmware/evidence/export.py), beside the running firmware: the
    board's log is read, never signed; the export is an audit event (so a log entry)."""
    import sqlite3

    from firmware import __version__
    from firmware.audit import open_audit
    from firmware.catalog import CatalogCorrupt
    from firmware.evidence.export import (
        EXPORT_EVENT,
        ExportRefused,
        board_of,
        export,
        export_fields,
        read_log,
    )
    from firmware.evidence.note import KeyFileError
    from firmware.timefmt import iso

    data = args.data
    try:
        data, _ = _lock_place(args)
        start, end = _lock_time(args.start, "--start"), _lock_time(args.end, "--end")
        cat = _open_catalog(data)
        reader = read_log(data)
    except (ConfigError, ValueError, OSError, KeyFileError, ExportRefused) as e:
        return _fail(str(e))
    except (sqlite3.DatabaseError, CatalogCorrupt) as e:
        return _corrupt(data, e)
    try:
        summary = export(data, reader, cat, args.camera, start, end, args.out.resolve(),
                         board_of(reader.origin), __version__, allow_damaged=args.allow_damaged,
                         view=args.view)  # fmt: skip
    except ExportRefused as e:
        return _fail(str(e), 1)
    except OSError as e:
        return _fail(f"{args.out}: {e}", 1)
    finally:
        reader.close()
    open_audit(data).append(now_us(), EXPORT_EVENT, **export_fields(summary, "cli"))
    s = summary
    print(f"exported {s.segments} segments ({s.bytes / 1e6:.1f} MB) of {s.camera}, "
          f"{iso(s.start_us)} .. {iso(s.end_us)}, to {s.out_dir}")  # fmt: skip
    if s.damaged:
        print(f"left out (listed as gaps): {', '.join(s.damaged)}")
    print(f"checkpoint: {s.checkpoint_size} log entries, "
          + ("cosigned by the peer" if s.witnessed else "NOT witnessed (signed by this board "
             "only; the verifier fails it without --accept-unwitnessed)"))  # fmt: skip
    if args.view and not s.view:
        print("view.mp4: not made (no ffmpeg, or it could not join these files)")
    print(f"key fingerprints: this board {s.board_key}, peer {s.peer_key or 'unknown'}")
    print(f"check it: cd {s.out_dir} && python3 verify_export.py .")
    return 0


# --- status / token --------------------------------------------------------------------------


def _api_base(args: argparse.Namespace) -> str:
    """--url, else the config's API port on loopback (ConfigError if the config is bad)."""
    from firmware.apiclient import api_base

    return api_base(args.config, args.url)


def _read_token(cfg: Config) -> str:
    """The token the board of this config accepts (the same function the board uses, so a
    pair's token is right on either board); ConfigError for a bad pair key, OSError with a
    hint when a single board has not made its token yet."""
    from firmware.datadir import api_token

    return api_token(cfg, board=False)


def cmd_status(args: argparse.Namespace) -> int:
    from firmware.apiclient import fetch_status, status_lines

    try:
        url = _api_base(args)
    except ConfigError as e:
        return _fail(str(e))
    try:
        st = fetch_status(url)
    except OSError as e:
        return _fail(str(e), 1)
    print(json.dumps(st, indent=1) if args.json else "\n".join(status_lines(st)))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from firmware.config import load_config

    try:
        print(_read_token(load_config(args.config)))
    except ConfigError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(str(e), 1)
    return 0


def cmd_handover(args: argparse.Namespace) -> int:
    """Planned handover: the active board releases the VIP and the standby takes it over."""
    import urllib.error
    import urllib.request

    from firmware.config import load_config

    try:
        token = _read_token(load_config(args.config))
        url = _api_base(args)
    except ConfigError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(str(e), 1)
    req = urllib.request.Request(
        url + "/api/v1/pair/handover",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            answer = json.load(r)
    except urllib.error.HTTPError as e:
        return _fail(f"handover refused: {e.read().decode(errors='replace')}", 1)
    except (urllib.error.URLError, OSError) as e:
        return _fail(f"the firmware does not answer: {e}", 1)
    print(f"board {answer['board']} handed over; it is {answer['role']} now")
    return 0


def cmd_drill_handover(args: argparse.Namespace) -> int:
    """The non-destructive drill on a live pair: handover and back, measured (firmware/drill.py)."""
    from firmware.drillcli import drill_handover

    try:
        return drill_handover(args.config, args.json)
    except ConfigError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(str(e), 1)


def cmd_pair_key(args: argparse.Namespace) -> int:
    from firmware.pairkey import make_pair_key

    try:
        make_pair_key(args.file)
    except FileExistsError:
        return _fail(f"{args.file} exists; not overwriting a pair key")
    except OSError as e:
        return _fail(f"{args.file}: {e.strerror}")
    print(f"pair key written to {args.file}; copy it to the same path on the other board")
    return 0


# --- firstboot / factory-reset / console -----------------------------------------------------


def cmd_firstboot(args: argparse.Namespace) -> int:
    from firmware.provision import firstboot

    return firstboot(args.factory, args.config, sys.stdout, sys.stderr, args.board, args.release)


def cmd_setup(args: argparse.Namespace) -> int:
    from firmware.setupfiles import Layout, run_setup

    return run_setup(args.answers, Layout(args.data_root), args.factory, sys.stdout, sys.stderr)


def cmd_factory_reset(args: argparse.Namespace) -> int:
    from firmware.provision import factory_reset

    if not args.yes:
        return _fail("factory-reset deletes the configuration and keys; add --yes to do it")
    return factory_reset(
        args.config, args.data_root, args.wipe_footage, not args.no_reboot, sys.stdout
    )


def cmd_console(args: argparse.Namespace) -> int:
    from firmware.paths import on_a_board, setup_complete

    board = on_a_board()
    first = None
    if board and not setup_complete(args.data_root):
        from firmware.firstcpu import FirstCpu

        first = FirstCpu()
        first.yield_()  # before the imports below: they are the wait
    from firmware.hw.profile import installed_profile

    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # line noise on the serial line is no crash
    from firmware.golive import GoLive
    from firmware.setupfiles import Layout
    from firmware.storagecli import storage_for
    from firmware.wizard import login, run_wizard

    root = args.data_root
    live = GoLive(Layout(root), args.config) if board else None
    drives = (lambda: storage_for(args.config, root)) if board else None
    try:
        profile = installed_profile(args.board)
    except ConfigError as e:  # the build checked it: a damaged root; the console still works
        print(f"nvr: {e}", file=sys.stderr, flush=True)
        profile = None
    if first is not None:
        first.done()  # the wizard's first question is next
    if not setup_complete(root) and run_wizard(Layout(root), args.factory, args.config, live,
                                               drives, profile):  # fmt: skip
        return 1  # left half way: the next start asks again
    from firmware.console import Console  # the menu's (status, updates, ...): after the wizard

    con = Console(args.config, args.release, sys.stdin, sys.stdout, data_root=root,
                  profile=profile)  # fmt: skip
    if not login(root, sys.stdin, sys.stdout, state=Path("/run/nvr-console-login"),
                 audit=lambda event: con.audit(event, quiet=True, source="console")):  # fmt: skip
        return 1
    return con.loop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nvr", description="Firmware of the hot-standby NVR pair")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="the board firmware, as the config enables it")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.set_defaults(func=cmd_run)

    r = sub.add_parser("record", help="a recorder alone, no pair")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--camera", type=_camera_arg, action="append", required=True, metavar="NAME=URL")
    r.add_argument("--segment-seconds", type=float, default=4.0)
    r.add_argument("--workers", type=int, default=0, help="worker processes (0 = one per CPU core)")
    r.add_argument("--board", default="single", help="board name stored as segment origin")
    r.add_argument("--min-free-mb", type=float, default=None)
    r.add_argument("--stall-seconds", type=float, default=None)
    r.add_argument("--rtsp-reader", choices=("ffmpeg", "builtin"), default=None,
                   help="who reads RTSP cameras (see [recorder] rtsp_reader)")  # fmt: skip
    r.add_argument("--retention-days", type=float, default=None)
    r.add_argument("--api-port", type=int, default=None, help="serve the HTTP API too")
    r.add_argument("--api-address", default="127.0.0.1")
    r.set_defaults(func=cmd_record)

    r = sub.add_parser("catalog", help="recordings on this board: segments, runs, gaps")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--camera")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_catalog)

    r = sub.add_parser("verify", help="re-hash every segment against the catalog")
    r.add_argument("--data", type=Path, help="the data directory (--archive: default the config's)")
    r.add_argument("--archive", action="store_true",
                   help="check the archive's copies of archived segments instead")  # fmt: skip
    r.add_argument("--deep", action="store_true", help="--archive: download and re-hash each")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="--archive: the config with [archive]")  # fmt: skip
    r.set_defaults(func=cmd_verify)

    r = sub.add_parser("lock", help="keep a time range of footage from retention (evidence)")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--camera", help="the camera's name")
    which.add_argument("--all-cameras", action="store_true", help="every camera")
    r.add_argument("--start", required=True, help="ISO 8601; without a zone: UTC")
    r.add_argument("--end", required=True, help="ISO 8601; without a zone: UTC")
    r.add_argument("--reason", required=True, help="why (a case number, a ticket)")
    r.add_argument("--data", type=Path, help="the data directory (default: the config's)")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.set_defaults(func=cmd_lock)

    r = sub.add_parser("locks", help="evidence locks: active ones, or --all with released")
    r.add_argument("--all", action="store_true", help="released locks too")
    r.add_argument("--json", action="store_true")
    r.add_argument("--data", type=Path, help="the data directory (default: the config's)")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.set_defaults(func=cmd_locks)

    r = sub.add_parser("unlock", help="release an evidence lock (retention may delete again)")
    r.add_argument("id", help="the lock's id (nvr locks)")
    r.add_argument("--reason", required=True, help="why it is released")
    r.add_argument("--data", type=Path, help="the data directory (default: the config's)")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.set_defaults(func=cmd_unlock)

    r = sub.add_parser("export", help="footage with its proofs, checkable offline by anyone")
    r.add_argument("--camera", required=True, help="the camera's name")
    r.add_argument("--start", required=True, help="ISO 8601; without a zone: UTC")
    r.add_argument("--end", required=True, help="ISO 8601; without a zone: UTC")
    r.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    r.add_argument(
        "--allow-damaged",
        action="store_true",
        help="export the rest when a segment is missing or changed (listed as a gap)",
    )
    r.add_argument("--view", action="store_true", help="also view.mp4: the segments joined")
    r.add_argument("--data", type=Path, help="the data directory (default: the config's)")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.set_defaults(func=cmd_export)

    r = sub.add_parser("status", help="state of the running firmware")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.add_argument("--url", help="API base URL instead of the config's port on 127.0.0.1")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_status)

    r = sub.add_parser("handover", help="planned handover of the VIP to the standby board")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.add_argument("--url", help="API base URL instead of the config's port on 127.0.0.1")
    r.set_defaults(func=cmd_handover)

    r = sub.add_parser("drill", help="drills on a live pair")
    drill = r.add_subparsers(dest="drill", required=True)
    r = drill.add_parser("handover", help="planned handover and back, measured RTO and continuity")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_drill_handover)

    r = sub.add_parser("pair-key", help="make a new pair key (the same file goes on both boards)")
    r.add_argument("file", type=Path)
    r.set_defaults(func=cmd_pair_key)

    from firmware.hw.report import add_parser as add_hw

    add_hw(sub, DEFAULT_CONFIG)

    from firmware.paircli import add_parser as add_pair

    add_pair(sub, DEFAULT_CONFIG)

    r = sub.add_parser("token", help="print the API token (console only)")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.set_defaults(func=cmd_token)

    from firmware.netcli import add_parser as add_network

    add_network(sub, DEFAULT_CONFIG, DATA_ROOT)
    from firmware.storagecli import add_parser as add_storage

    add_storage(sub, DEFAULT_CONFIG, DATA_ROOT)
    from firmware.archive.cli import add_parser as add_archive

    add_archive(sub)

    r = sub.add_parser("firstboot", help="config, pair key and data directory in place (each boot)")
    r.add_argument("--factory", type=Path, default=FACTORY_CONFIG)
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.add_argument("--board", type=Path, default=BOARD_FILE,
                   help="the board profile the image carries (skipped when missing)")  # fmt: skip
    r.add_argument("--release", type=Path, default=RELEASE_FILE,
                   help="the image's release: marked done for the next boot (skipped when "
                        "missing)")  # fmt: skip
    r.set_defaults(func=cmd_firstboot)

    r = sub.add_parser("setup", help="set this board up from a wizard answers file (TOML)")
    r.add_argument("--answers", type=Path, required=True, help="keys: docs/INSTALL.md")
    r.add_argument("--data-root", type=Path, default=DATA_ROOT, help="the data partition")
    r.add_argument("--factory", type=Path, default=FACTORY_CONFIG,
                   help="the config to start from when the board has none")  # fmt: skip
    r.set_defaults(func=cmd_setup)

    r = sub.add_parser("factory-reset", help="delete configuration and keys, then reboot")
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--keep-footage", action="store_true")
    what.add_argument("--wipe-footage", action="store_true", help="segments, catalog, audit, log")
    r.add_argument("--yes", action="store_true", help="really (there is no undo)")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.add_argument("--data-root", type=Path, default=DATA_ROOT)
    r.add_argument("--no-reboot", action="store_true")
    r.set_defaults(func=cmd_factory_reset)

    r = sub.add_parser("console", help="the installer console on the serial line")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.add_argument("--release", type=Path, default=RELEASE_FILE)
    r.add_argument("--data-root", type=Path, default=DATA_ROOT, help="the data partition")
    r.add_argument("--factory", type=Path, default=FACTORY_CONFIG)
    r.add_argument("--board", type=Path, default=BOARD_FILE, help="the image's board profile")
    r.set_defaults(func=cmd_console)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(logging, args.log_level.upper()))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
