"""`nvr pair code` and `nvr pair join CODE`: pairing two boards by a one-time code, through the
running firmware's API on the board itself (firmware/pairing_http.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from firmware.configfile import ConfigError
from firmware.pairing import CODE_TTL_S, EXCHANGE_S, normalize_code

POLL_S = 0.5
"""How often `nvr pair code` asks whether the other board has joined."""


class ApiAnswer(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _fail(msg: str, code: int) -> int:
    print(f"nvr: {msg}", file=sys.stderr)
    return code


def _token(args: argparse.Namespace) -> str:
    """The token the board's files give now: the single board's until the pair key is
    written, the pair's after (the firmware takes it up when it restarts paired)."""
    from firmware.config import load_config
    from firmware.datadir import api_token

    return api_token(load_config(args.config), board=False)


def _call(args: argparse.Namespace, method: str, path: str, body: dict | None = None,
          timeout: float = 5.0, token: str | None = None) -> dict:  # fmt: skip
    """One admin call with `token` (default: the files' token now). ApiAnswer for an HTTP
    error, OSError when the firmware does not answer, ConfigError for a bad config."""
    import urllib.error
    import urllib.request

    from firmware.apiclient import api_base

    token = token or _token(args)
    req = urllib.request.Request(
        api_base(args.config, args.url) + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            message = str(e.reason)
        raise ApiAnswer(e.code, str(message)) from None
    except urllib.error.URLError as e:
        raise OSError(f"the firmware does not answer: {e.reason}") from None


def cmd_pair_code(args: argparse.Namespace) -> int:
    try:
        token = _token(args)
        before = _call(args, "GET", "/api/v1/pair", token=token).get("fingerprint")
        answer = _call(args, "POST", "/api/v1/pair/code", {"replace": args.replace}, token=token)
    except ConfigError as e:
        return _fail(str(e), 2)
    except ApiAnswer as e:
        return _fail(f"no pairing code: {e}", 1)
    except OSError as e:
        return _fail(str(e), 1)
    code = answer["code"]
    print(f"pairing code: {code}  (valid {CODE_TTL_S / 60:.0f} minutes, "
          f"{answer['tries_left']} tries)", flush=True)  # fmt: skip
    print(f"on the other board: nvr pair join {code}", flush=True)
    if args.no_wait:
        return 0
    deadline = time.monotonic() + answer["expires_in_seconds"] + EXCHANGE_S
    try:
        return _wait_paired(args, token, before, deadline)
    except KeyboardInterrupt:
        return _fail("stopped waiting; the code stays valid on the board until it expires", 130)


def _wait_paired(args: argparse.Namespace, token: str, before: str | None, deadline: float) -> int:
    """Until the other board has joined (a new fingerprint), the code is void or expired.
    The firmware answers with the token it started with until it restarts paired, then with
    the pair's: on a 401 the token is read again."""
    while time.monotonic() < deadline:
        try:
            state = _call(args, "GET", "/api/v1/pair", token=token)
        except ApiAnswer as e:
            if e.status == 401:
                with contextlib.suppress(ConfigError, OSError):
                    token = _token(args)
            state = {}
        except (OSError, ConfigError):  # the firmware restarting into the pair
            state = {}
        fp = state.get("fingerprint")
        if fp and fp != before:
            print(f"paired: pair key fingerprint {fp} (the other board shows the same); "
                  "the firmware restarts into the pair")  # fmt: skip
            return 0
        code = state.get("code") or {}
        if code.get("state") in ("void", "expired"):
            why = "too many wrong tries" if code["state"] == "void" else "expired"
            return _fail(f"pairing code {code['state']} ({why}); nothing changed; "
                         "show a new one with `nvr pair code`", 1)  # fmt: skip
        time.sleep(POLL_S)  # polling a remote board's state, not synchronising a test
    return _fail("the other board did not join in time; nothing changed", 1)


def cmd_pair_join(args: argparse.Namespace) -> int:
    try:
        normalize_code(args.code)
    except ValueError as e:
        return _fail(str(e), 2)
    try:
        answer = _call(args, "POST", "/api/v1/pair/join",
                       {"code": args.code, "replace": args.replace},
                       timeout=EXCHANGE_S + 10)  # fmt: skip
    except ConfigError as e:
        return _fail(str(e), 2)
    except ApiAnswer as e:
        return _fail(f"{e}; nothing changed", 1)
    except OSError as e:
        return _fail(str(e), 1)
    print(f"paired: pair key fingerprint {answer['fingerprint']} (the other board shows the "
          "same); the firmware restarts into the pair")  # fmt: skip
    return 0


def add_parser(sub: argparse._SubParsersAction, default_config: Path) -> None:
    p = sub.add_parser("pair", help="pair two boards by a one-time code (docs/FAILOVER.md)")
    pair = p.add_subparsers(dest="pair_cmd", required=True)

    r = pair.add_parser("code", help="show a one-time code here, for the other board to join")
    r.add_argument("--config", type=Path, default=default_config)
    r.add_argument("--url", help="API base URL instead of the config's port on 127.0.0.1")
    r.add_argument("--replace", action="store_true", help="pair anew though a key is here")
    r.add_argument("--no-wait", action="store_true", help="print the code and return")
    r.set_defaults(func=cmd_pair_code)

    r = pair.add_parser("join", help="join the board at the peer sync address with its code")
    r.add_argument("code")
    r.add_argument("--config", type=Path, default=default_config)
    r.add_argument("--url", help="API base URL instead of the config's port on 127.0.0.1")
    r.add_argument("--replace", action="store_true", help="pair anew though a key is here")
    r.set_defaults(func=cmd_pair_join)
