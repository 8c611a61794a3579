"""Pair-wide settings between two running firmwares in the twin-board rig: an installer edits
the cameras and the retention in board b's nvr.toml; board a's nvr.toml gets them (its own
keys and comments kept, the file before kept as nvr.toml.prev, an audit entry naming b and the
keys), and both boards report the same pair-settings version."""

from __future__ import annotations

import json
import sys

from conftest import ROOT, wait_until

from hil.twin import TwinBoards

PASSWORD = "yard-Secret-9"


def settings(tb: TwinBoards, host: str) -> dict:
    try:
        return tb.status(host).get("pair_settings") or {}
    except (OSError, ValueError):
        return {}


def agreed(tb: TwinBoards) -> int | None:
    """The version both boards report and agree on, or None."""
    a, b = settings(tb, "a"), settings(tb, "b")
    if a.get("agree") and b.get("agree") and a["version"] == b["version"]:
        return a["version"]
    return None


def test_an_edit_on_b_reaches_a_through_the_running_firmware(tmp_path):
    with TwinBoards(tmp_path, camera=False) as tb:
        try:
            tb.start("a", 150)
            tb.start("b", 100)
            first = wait_until(lambda: agreed(tb), 30, "both boards on one settings version")
            a_path = tb.workdir / "a" / "nvr.toml"
            b_path = tb.workdir / "b" / "nvr.toml"
            a_before = a_path.read_text()
            text = b_path.read_text().replace("[recorder]\n", "[recorder]\nretention_days = 7\n")
            text += (f'\n# the yard camera\n[[camera]]\nname = "yard"\n'
                     f'url = "rtsp://admin:{PASSWORD}@192.0.2.40:8554/yard"\n')  # fmt: skip
            b_path.write_text(text)
            wait_until(lambda: "yard" in a_path.read_text(), 20, "a's nvr.toml with b's camera")
            version = wait_until(
                lambda: (v := agreed(tb)) is not None and v > first and v,
                20,
                "both boards on the new version",
            )
            assert version == first + 1
            a_now = a_path.read_text()
            assert "retention_days = 7" in a_now and PASSWORD in a_now
            assert 'name = "a"' in a_now and "priority = 150" in a_now, "a's own keys kept"
            assert (tmp_path / "a" / "nvr.toml.prev").read_text() == a_before
            audit = [json.loads(x) for x in (tb.data_dir("a") / "audit.log").read_text().split("\n")
                     if x]  # fmt: skip
            applied = [e for e in audit if e["event"] == "pair-settings-applied"]
            assert applied and applied[-1]["origin"] == "b"
            assert applied[-1]["keys"] == ["camera[yard] added", "recorder.retention_days"]
            sa, sb = settings(tb, "a"), settings(tb, "b")
            assert sa["hash"] == sb["hash"] and sa["origin"] == sb["origin"] == "b"
            shown = json.dumps([tb.status("a"), tb.status("b"), audit]) + tb.log("a") + tb.log("b")
            assert PASSWORD not in shown
            ids = {al["id"] for h in ("a", "b") for al in tb.status(h)["alerts"]}
            assert not ids & {"pair-settings-conflict", "pair-settings-refused", "config-invalid"}
        except BaseException:
            for h in ("a", "b"):
                print(f"--- {h} ---\n" + tb.log(h)[-5000:])
            raise


HOSTILE = """
import json, sys, threading
from hil.hostile_peer import HostilePeer
peer = HostilePeer(bytes.fromhex(sys.argv[1]), answers=json.loads(sys.argv[2]),
                   bind=("0.0.0.0", int(sys.argv[3])))
with peer:
    print("listening", flush=True)
    threading.Event().wait()
"""


def test_a_hostile_peer_s_settings_are_refused_by_the_running_firmware(tmp_path):
    """Board b's place on the sync link is taken by a peer with the pair key that offers
    settings with a newer version and a retention this board's loader refuses."""
    from firmware.pairkey import load_pair_key
    from firmware.pairsettings import Camera, PairSettings
    from firmware.pairsync import DOC_PATH, HEAD_PATH, content_hash, seal
    from firmware.timefmt import now_us
    from hil.twin import MIRROR_PORT

    with TwinBoards(tmp_path, camera=False) as tb:
        try:
            key = load_pair_key(tb.key_file)
            bad = PairSettings(cameras=(Camera("x", "rtsp://192.0.2.40/x"),),
                               retention_days=-4.0, virtual_ip="192.0.2.100/24")  # fmt: skip
            version = {"counts": {"a": 5, "b": 50}, "origin": "b", "time_us": now_us(),
                       "hash": content_hash(key, bad), "replaced": None, "bases": []}  # fmt: skip
            answers = {HEAD_PATH: {"board": "b", "version": version},
                       DOC_PATH: {"board": "b", "version": version,
                                  "settings": seal(key, bad.canonical())}}  # fmt: skip
            tb.rig.start("b", [sys.executable, "-c", HOSTILE, key.hex(), json.dumps(answers),
                               str(MIRROR_PORT)], cwd=ROOT)  # fmt: skip
            tb.start("a", 150)
            a_path = tb.workdir / "a" / "nvr.toml"

            def refused() -> dict | None:
                try:
                    alerts = tb.status("a")["alerts"]
                except (OSError, ValueError):
                    return None
                return next((al for al in alerts if al["id"] == "pair-settings-refused"), None)

            alert = wait_until(refused, 30, "a refusing the hostile peer's settings")
            assert "recorder.retention_days" in alert["text"] and "v55 of b" in alert["text"]
            before = a_path.read_text()
            assert "retention_days" not in before and 'name = "x"' not in before
            assert not (tmp_path / "a" / "nvr.toml.prev").exists()
            st = settings(tb, "a")
            assert st["version"] == 1 and st["peer_version"] == 55 and st["agree"] is False
            audit = (tb.data_dir("a") / "audit.log").read_text()
            assert "pair-settings-refused" in audit
        except BaseException:
            print("--- a ---\n" + tb.log("a")[-5000:])
            raise
