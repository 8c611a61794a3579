"""`nvr network apply|confirm|status|boot`: commit-confirmed changes of the board's network files
(firmware.netconfirm, docs/INSTALL.md). `apply` waits for the confirmation and rolls back when
none comes in time; it ignores SIGHUP, so a session cut by the change itself does not stop it."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from firmware.configfile import ConfigError, read_toml
from firmware.netconfirm import NetFile

if TYPE_CHECKING:
    from firmware.netchange import NetChange, Outcome
    from firmware.setupfiles import Layout

# firmware.netchange and firmware.setupfiles (pydantic, tomlkit) are imported by the commands
# that use them: every `nvr` command's parser, `nvr --help` too, imports this module.

EXIT_ROLLED_BACK = 3


def network_files(
    answers_path: Path, layout: Layout, config: Path
) -> tuple[list[NetFile], tuple[str, ...]]:
    """The network files the answers make (the setup's own rendering, network part only), and
    the interfaces they configure."""
    from firmware.answers import load_answers
    from firmware.setupfiles import render

    answers = load_answers(answers_path)
    base = config.read_bytes()
    read_toml(base, str(config))
    files, cfg = render(answers, base.decode("utf-8-sig"), layout)
    net = [NetFile(f.path, f.data, f.mode) for f in files if f.path.parent == layout.network_dir]
    return net, (cfg.network.lan_interface, cfg.network.sync_interface)


def _say(out: Outcome, err: TextIO) -> None:
    for a in out.alerts:
        if a.raised:
            print(f"nvr: network: alert {a.id.value}: {a.text}", file=err, flush=True)


def wait_confirmed(nc: NetChange, out: TextIO, err: TextIO, poll: float = 0.5,
                   sleep: Callable[[float], None] = time.sleep) -> int:  # fmt: skip
    """Until confirmed (the record gone) or rolled back at the deadline."""
    last = None
    while True:
        res = nc.tick()
        if res.rolled_back:
            _say(res, err)
            print("network: not confirmed in time: the previous settings are back", file=out)
            return EXIT_ROLLED_BACK
        left = nc.seconds_left()
        if left is None:
            back = nc.rolled_back()
            if back is not None:
                print(f"network: {back}", file=out, flush=True)
                return EXIT_ROLLED_BACK
            print("network: change confirmed", file=out, flush=True)
            return 0
        if last is None or int(left) // 10 != last:
            last = int(left) // 10
            print(
                f"network: confirm within {left:.0f} s: nvr network confirm", file=out, flush=True
            )
        sleep(poll)


def cmd_apply(args: argparse.Namespace) -> int:
    from firmware.netchange import NetChange, NetChangeError
    from firmware.setupfiles import Layout

    layout = Layout(args.data_root)
    try:
        files, ifaces = network_files(args.answers, layout, args.config)
    except ConfigError as e:
        print(f"nvr: network: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"nvr: network: {e.filename}: cannot read: {e.strerror}", file=sys.stderr)
        return 1
    nc = NetChange(layout)
    try:
        res = nc.apply(files, ifaces)
    except (NetChangeError, OSError) as e:
        print(f"nvr: network: {e}", file=sys.stderr)
        return 1
    _say(res, sys.stderr)
    for f in files:
        print(f"network: applied {f.path}", flush=True)
    if args.no_wait:
        return 0
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return wait_confirmed(nc, sys.stdout, sys.stderr)


def cmd_confirm(args: argparse.Namespace) -> int:
    from firmware.netchange import NetChange, NetChangeError
    from firmware.setupfiles import Layout

    try:
        res = NetChange(Layout(args.data_root)).confirm()
    except (NetChangeError, OSError) as e:
        print(f"nvr: network: {e}", file=sys.stderr)
        return 1
    if res.rolled_back:
        _say(res, sys.stderr)
        print("network: too late: the change was rolled back")
        return EXIT_ROLLED_BACK
    print("network: change confirmed" if res.confirmed else "network: no change pending")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from firmware.netchange import NetChange, NetChangeError
    from firmware.setupfiles import Layout

    nc = NetChange(Layout(args.data_root))
    try:
        res = nc.tick()
        left = nc.seconds_left()
    except (NetChangeError, OSError) as e:
        print(f"nvr: network: {e}", file=sys.stderr)
        return 1
    _say(res, sys.stderr)
    if left is not None:
        print(f"network: change pending, rolls back in {left:.0f} s unless confirmed")
    else:
        print("network: no change pending")
    back = nc.rolled_back()
    if back is not None:
        print(f"network: {back}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    from firmware.netchange import NetChange, NetChangeError
    from firmware.setupfiles import Layout

    try:
        res = NetChange(Layout(args.data_root)).start()
    except (NetChangeError, OSError) as e:
        print(f"nvr: network: {e}", file=sys.stderr)
        return 1
    _say(res, sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction, default_config: Path, data_root: Path) -> None:
    p = sub.add_parser("network", help="commit-confirmed changes of the network settings")
    net = p.add_subparsers(dest="net_cmd", required=True)

    def common(r: argparse.ArgumentParser) -> None:
        r.add_argument("--config", type=Path, default=default_config,
                       help="the board config (interface names)")  # fmt: skip
        r.add_argument("--data-root", type=Path, default=data_root, help="the data partition")

    r = net.add_parser("apply", help="apply the answers' network settings; roll back in 60 s "
                       "unless confirmed")  # fmt: skip
    r.add_argument("--answers", type=Path, required=True, help="keys: docs/INSTALL.md")
    r.add_argument(
        "--no-wait",
        action="store_true",
        help="return at once; any later `nvr network` command rolls back when late",
    )
    common(r)
    r.set_defaults(func=cmd_apply)
    r = net.add_parser("confirm", help="keep the pending network change")
    common(r)
    r.set_defaults(func=cmd_confirm)
    r = net.add_parser("status", help="is a change pending, and how long until it rolls back")
    common(r)
    r.set_defaults(func=cmd_status)
    r = net.add_parser("boot", help="at start: roll back a change left pending by a restart")
    common(r)
    r.set_defaults(func=cmd_boot)
