"""Pairing in the twin-board rig: two boards with a [pair] section and no key record alone and
say `unpaired`; `nvr pair code` on a and `nvr pair join CODE` on b (a wrong code first, refused
with nothing changed) give both the same key; the boards restart by themselves into the pair,
the VIP answers, the standby mirrors, and a power cut moves the VIP."""

from __future__ import annotations

import re

from conftest import NVR, ROOT, wait_until

from firmware.pairkey import key_fingerprint, load_pair_key
from hil.rig import VIRTUAL_IP
from hil.twin import TwinBoards


def pair_cli(tb: TwinBoards, host: str, *args: str):
    """`nvr pair ...` typed on host's console (run in its namespace, against its firmware)."""
    cfg = tb.workdir / host / "nvr.toml"
    return tb.rig.run(host, [*NVR, "pair", *args, "--config", str(cfg)], cwd=ROOT)


def test_two_unpaired_boards_paired_by_code_form_the_pair(tmp_path):
    with TwinBoards(tmp_path, segment_seconds=2.0) as tb:
        keys = {h: tmp_path / h / "pair.key" for h in ("a", "b")}
        try:
            tb.start("a", 150, key_file=str(keys["a"]))
            tb.start("b", 100, key_file=str(keys["b"]))
            for h in ("a", "b"):
                wait_until(lambda h=h: tb.role(h) == "unpaired", 60, f"{h} up, unpaired")
            assert tb.vip_holders() == []  # unpaired boards take no floating IP
            pid_a, pid_b = tb.pid("a"), tb.pid("b")

            shown = pair_cli(tb, "a", "code", "--no-wait")
            assert shown.returncode == 0, shown.stderr
            code = re.search(r"pairing code: (\d{4}-\d{4})", shown.stdout).group(1)
            wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
            refused = pair_cli(tb, "b", "join", wrong)
            assert refused.returncode == 1 and "wrong code" in refused.stderr
            assert not keys["a"].exists() and not keys["b"].exists()
            assert tb.role("a") == tb.role("b") == "unpaired"

            joined = pair_cli(tb, "b", "join", code)
            assert joined.returncode == 0, joined.stderr
            fp = re.search(r"fingerprint (\S+)", joined.stdout).group(1)
            ka, kb = load_pair_key(keys["a"]), load_pair_key(keys["b"])
            assert ka == kb and key_fingerprint(ka) == fp
            assert keys["a"].stat().st_mode & 0o777 == keys["b"].stat().st_mode & 0o777 == 0o600

            # Restarted by themselves (same process), paired: one holds the VIP (whichever is
            # up first: the other is restarting, so it is down; no preemption after), the
            # other mirrors it.
            wait_until(lambda: tb.active() in ("a", "b"), 60, "one board active with the VIP")
            act = tb.active()
            sby = "b" if act == "a" else "a"
            wait_until(lambda: tb.role(sby) == "standby", 30, f"{sby} standby")
            assert (tb.pid("a"), tb.pid("b")) == (pid_a, pid_b)
            for h in ("a", "b"):
                assert tb.status(h)["pair_fingerprint"] == fp
            assert tb.via_vip()["board"] == act
            wait_until(lambda: (tb.status(sby)["mirror"] or {}).get("fetched_segments", 0) > 0,
                       60, f"{sby} mirroring {act}'s segments")  # fmt: skip

            tb.power_cut(act)
            wait_until(lambda: tb.via_vip(0.3)["board"] == sby, 15,
                       f"{sby} answering on {VIRTUAL_IP}")  # fmt: skip
        except BaseException:
            print("--- a ---\n" + tb.log("a")[-4000:] + "\n--- b ---\n" + tb.log("b")[-4000:])
            raise
