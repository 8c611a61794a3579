"""The pair as the field breaks it, in the twin-board rig: a mis-keyed or garbling peer on the
LAN, garbage at the mirror, and a camera path that fails with credentials in its URL. Nothing of
it moves the pair or loses a frame, the mis-keyed peer is an alert, and no secret (the camera's
password, the pair key, the API token) reaches a log, a status, an alert, the metrics or the
audit log of either board."""

from __future__ import annotations

import json
import subprocess
from urllib.parse import urlsplit

import pytest
from conftest import NVR, ROOT, holds, wait_until
from test_fault_rig_hw import handed_over
from test_fault_rig_hw import pair as start_pair
from test_mirror_rig import all_kept, first_frames

from firmware.pairkey import load_pair_key, pair_api_token
from hil.hostile_peer import HostileAdverts
from hil.rig import ADDRESSES
from hil.twin import ADVERT_PORT, API_PORT, MIRROR_PORT, TwinBoards

PASSWORD = "Pa55-w0rd-xyz"
AUTH = f"installer:{PASSWORD}"


@pytest.fixture
def pair(tmp_path):
    with start_pair(tmp_path, camera_auth=AUTH) as tb:
        yield tb


def everything_shown(tb: TwinBoards, token: str) -> str:
    """What either board shows anyone: logs, status, cameras (with the token), metrics, the
    audit log, and `nvr status` as an installer runs it."""
    out = []
    for host in ("a", "b"):
        out.append(tb.log(host))
        out.append(json.dumps(tb.status(host)))
        auth = {"Authorization": f"Bearer {token}"}
        out.append(tb.rig.http(host, "127.0.0.1", API_PORT, "/api/v1/cameras", headers=auth)
                   .decode())  # fmt: skip
        out.append(tb.rig.http(host, "127.0.0.1", API_PORT, "/metrics").decode())
        out.append((tb.data_dir(host) / "audit.log").read_text(errors="replace"))
        cfg = str(tb.workdir / host / "nvr.toml")
        out.append(tb.rig.run(host, [*NVR, "status", "--config", cfg], cwd=ROOT).stdout)
    return "\n".join(out)


def test_hostile_peer_garbage_and_a_failing_camera_path_move_nothing_and_leak_nothing(pair):
    tb = pair
    key = load_pair_key(tb.key_file)
    token = pair_api_token(key)
    assert tb.camera is not None and PASSWORD in tb.camera.url("cam1")  # the boards use it
    first = first_frames(tb)

    # A board on the LAN with another key, and one that sends garbage, at both boards.
    hostile = HostileAdverts(pair_id="192.0.2.100/24", board="a")
    for host in ("a", "b"):
        addr = ADDRESSES[host]["lan"]
        for datagram in hostile.claims(20) + hostile.garbage(20):
            tb.rig.send_udp("cli", addr, ADVERT_PORT, datagram)
        with pytest.raises(OSError, match="401"):
            tb.rig.http("cli", addr, MIRROR_PORT, "/mirror/v1/feed?seg=0&run=0&wait=0")
        with pytest.raises(OSError, match="401"):
            tb.rig.http("cli", addr, API_PORT, "/api/v1/cameras",
                        headers={"Authorization": "Bearer " + "A" * 43})  # fmt: skip
    for host in ("a", "b"):
        wait_until(lambda h=host: any(a["id"] == "peer-key-mismatch"
                                      for a in tb.status(h)["alerts"]), 5,
                   f"{host}'s peer-key-mismatch alert")  # fmt: skip
        assert tb.status(host)["failover"]["dropped"]["hmac"] >= 20
    holds(lambda: tb.vip_holders() == ["a"] and tb.role("b") == "standby", 3,
          "nothing moved")  # fmt: skip

    # Then the camera path of the active board fails: the recorder's errors name the camera,
    # never its password; the pair moves and keeps every frame.
    port = urlsplit(tb.camera.url("cam1")).port
    tb.rig.block("a", "lan", port, True, proto="tcp")
    try:
        handed_over(tb, "cameras live")
        wait_until(lambda: any(a["id"] == "camera-cam1" for a in tb.status("a")["alerts"]), 20,
                   "a's camera alert")  # fmt: skip
        all_kept(tb, "b", first)
    finally:
        tb.rig.block("a", "lan", port, False, proto="tcp")

    shown = everything_shown(tb, token)
    assert "camera-cam1" in shown and "rtsp://***@" in shown  # the redacted URL is shown
    assert PASSWORD not in shown and AUTH not in shown
    assert key.decode() not in shown and token not in shown
    assert (
        subprocess.run(
            [*NVR, "token", "--config", str(tb.workdir / "a" / "nvr.toml")],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
        == token
    )
