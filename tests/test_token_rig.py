"""One API token for the pair, in the twin-board rig: a client that read the token once (from
the pair key, as `nvr token` prints it) fetches footage through the floating IP before and
after the active board loses power, without asking for a new token."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse

import pytest
from conftest import NVR, ROOT, wait_until

from firmware.pairkey import load_pair_key, pair_api_token
from firmware.timefmt import iso
from hil.rig import ADDRESSES, VIRTUAL_IP
from hil.twin import API_PORT, TwinBoards

HOUR_US = 3600 * 1_000_000


def nvr_token(tb: TwinBoards, host: str, priority: int) -> str:
    """What `nvr token --config <host's config>` prints, run from the client's namespace."""
    cfg = tb.config(host, priority)
    res = tb.rig.run("cli", [*NVR, "token", "--config", str(cfg)], cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def get(tb: TwinBoards, addr: str, path: str, token: str, timeout: float = 5.0) -> bytes:
    """GET from the client's namespace with the token; OSError("HTTP 401 ...") when refused."""
    headers = {"Authorization": f"Bearer {token}"}
    return tb.rig.http("cli", addr, API_PORT, path, timeout, headers=headers)


def recordings(tb: TwinBoards, addr: str, token: str) -> list[dict]:
    now = int(time.time() * 1_000_000)
    q = urllib.parse.urlencode({"start": iso(now - HOUR_US), "end": iso(now + HOUR_US)})
    return json.loads(get(tb, addr, f"/api/v1/cameras/cam1/recordings?{q}", token))["segments"]


def segment_path(seg: dict) -> str:
    return f"/api/v1/segments/{urllib.parse.quote(seg['id'], safe='')}"


def fetch_whole(tb: TwinBoards, addr: str, seg: dict, token: str) -> bytes:
    """The segment's file, checked against what the listing says about it."""
    body = get(tb, addr, segment_path(seg), token)
    assert len(body) == seg["bytes"] > 0
    assert hashlib.sha256(body).hexdigest() == seg["sha256"]
    return body


def other_than(token: str) -> str:
    """A token one character off: the closest a wrong token gets."""
    return token[:-1] + ("x" if token[-1] != "x" else "y")


def refused(tb: TwinBoards, addr: str, path: str, token: str) -> bool:
    try:
        get(tb, addr, path, token)
    except OSError as e:
        return str(e).startswith("HTTP 401")
    return False


@pytest.fixture
def twin(tmp_path):
    with TwinBoards(tmp_path, segment_seconds=2.0) as tb:
        tb.start("a", 150)
        try:
            wait_until(lambda: tb.active() == "a", 60, "board a active with the VIP")
            tb.start("b", 100)
            wait_until(lambda: tb.role("b") == "standby"
                       and (tb.status("b")["peer"] or {}).get("role") == "active", 30,
                       "board b standby, hearing a active")  # fmt: skip
            yield tb
        except BaseException:
            print("--- a ---\n" + tb.log("a")[-4000:] + "\n--- b ---\n" + tb.log("b")[-4000:])
            raise


def test_one_token_fetches_footage_through_the_vip_across_a_power_cut(twin):
    token = nvr_token(twin, "a", 150)
    assert nvr_token(twin, "b", 100) == token
    assert token == pair_api_token(load_pair_key(twin.key_file))

    segs = wait_until(lambda: recordings(twin, VIRTUAL_IP, token), 30, "a segment on the VIP")
    assert twin.via_vip()["board"] == "a"
    seg = segs[0]
    fetch_whole(twin, VIRTUAL_IP, seg, token)
    assert refused(twin, VIRTUAL_IP, segment_path(seg), other_than(token))

    # b accepts the same token on its own address once its mirror holds the segment.
    b_lan = ADDRESSES["b"]["lan"]
    wait_until(lambda: fetch_whole(twin, b_lan, seg, token), 30, "b serving the mirrored segment")

    twin.power_cut("a")
    wait_until(lambda: twin.via_vip(0.3)["board"] == "b", 10, "client reaching b on the VIP")
    after = {s["id"]: s for s in recordings(twin, VIRTUAL_IP, token)}
    assert seg["id"] in after
    assert after[seg["id"]]["bytes"] == seg["bytes"]
    body = fetch_whole(twin, VIRTUAL_IP, after[seg["id"]], token)
    assert len(body) == seg["bytes"]

    assert twin.via_vip()["board"] == "b"
    for wrong in (other_than(token), "", "not-the-token"):
        assert refused(twin, VIRTUAL_IP, segment_path(seg), wrong)
        assert refused(twin, VIRTUAL_IP, "/api/v1/cameras", wrong)

    shown = json.dumps(twin.status("b")) + twin.log("a") + twin.log("b")
    assert token not in shown
