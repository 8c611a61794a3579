"""The console as `nvr console` runs it after its wizard (the admin password, then the menu),
with what a test sets and a board does not: the login's back-off and the shell under a
temp directory instead of /run, the network change's window, networkd as a runner that sets
the addresses inside the test's own network namespace (tests/test_netconfirm_rig.py), and the
shell. Run by tests/test_console_menu.py through a pty."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--release", type=Path, required=True)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--run", type=Path, required=True, help="instead of /run")
    p.add_argument("--window", type=float, help="seconds to confirm a network change")
    p.add_argument("--netns", help="networkd's addresses go to eth0 in this namespace")
    p.add_argument("--shell", nargs="+", default=["/bin/bash", "--norc", "--noprofile"])
    args = p.parse_args()

    from firmware.console import Console
    from firmware.provision import run_command
    from firmware.setupfiles import Layout
    from firmware.wizard import login

    runner = run_command
    if args.netns:
        from test_netconfirm_rig import NetnsNetworkd

        runner = NetnsNetworkd(args.netns, Layout(args.data_root).network_dir)
    args.run.mkdir(parents=True, exist_ok=True)
    if not login(args.data_root, sys.stdin, sys.stdout, state=args.run / "nvr-console-login"):
        return 1
    con = Console(args.config, args.release, sys.stdin, sys.stdout, runner=runner,
                  run=args.run, data_root=args.data_root, shell=tuple(args.shell),
                  net_window=args.window)  # fmt: skip
    return con.loop()


if __name__ == "__main__":
    sys.exit(main())
