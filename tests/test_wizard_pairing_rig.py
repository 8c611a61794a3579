"""Step 4 of the wizard against real boards: two unpaired firmwares in the twin-board rig, the
code shown on a, typed into b's wizard through a pty. A wrong code is refused on the screen,
nothing changes, and the wizard asks again; the right code pairs both boards."""

from __future__ import annotations

import re

from conftest import NVR, ROOT, wait_until
from test_wizard import Term

from firmware.pairkey import key_fingerprint, load_pair_key
from hil.twin import TwinBoards

PAIRING = "code, join with one, or skip"


def test_a_wrong_code_in_the_wizard_is_refused_then_the_right_one_pairs(tmp_path):
    with TwinBoards(tmp_path / "rig", segment_seconds=2.0) as tb:
        keys = {h: tmp_path / h / "pair.key" for h in ("a", "b")}
        term = None
        try:
            tb.start("a", 150, key_file=str(keys["a"]))
            tb.start("b", 100, key_file=str(keys["b"]))
            for h in ("a", "b"):
                wait_until(lambda h=h: tb.role(h) == "unpaired", 60, f"{h} up, unpaired")
            cfg_a = tb.workdir / "a" / "nvr.toml"
            shown = tb.rig.run("a", [*NVR, "pair", "code", "--no-wait", "--config", str(cfg_a)],
                               cwd=ROOT)  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            code = re.search(r"pairing code: (\d{4}-\d{4})", shown.stdout).group(1)
            wrong = code[:-1] + str((int(code[-1]) + 1) % 10)

            # b's console: a fresh board's wizard, its commands against b's firmware.
            term = Term(tmp_path / "console-b", tb.workdir / "b" / "nvr.toml", tb.rig.ns("b"))
            term.answer("admin password:", "Install3r")
            term.answer("again:", "Install3r")
            term.answer("board A or B:", "b")
            term.answer("board name:", "")
            term.answer("LAN by DHCP or static:", "")
            term.answer("LAN address/prefix:", "192.0.2.12/24")
            for prompt in ("gateway (empty: none):", "DNS servers (empty: none):",
                           "sync link address:", "peer sync address:"):  # fmt: skip
                term.answer(prompt, "")
            term.answer("virtual IP/prefix:", "192.0.2.100/24")
            term.answer("peer board LAN address:", "192.0.2.11")
            term.answer("NTP servers (empty: image default):", "")
            term.answer(PAIRING, "\x15join")
            term.answer("pairing code:", "12-34")  # not a code at all: refused under the line
            term.wait("pairing code: a pairing code is 8 digits")
            term.child.send("\x15" + wrong + "\r")
            screen = term.wait("pairing not done", 30)
            assert "wrong code" in screen
            assert not keys["a"].exists() and not keys["b"].exists()
            assert tb.role("a") == tb.role("b") == "unpaired"

            term.answer(PAIRING, "\x15join")  # asked again: the same code still holds (4 tries)
            term.answer("pairing code:", code)
            screen = term.wait("step 5/6: cameras", 60)
            fp = re.search(r"paired: pair key fingerprint (\S+)", screen).group(1)
            ka, kb = load_pair_key(keys["a"]), load_pair_key(keys["b"])
            assert ka == kb and key_fingerprint(ka) == fp
            wait_until(lambda: tb.active() in ("a", "b"), 60, "one board active with the VIP")
            sby = "b" if tb.active() == "a" else "a"  # whichever was up first after the restart
            wait_until(lambda: tb.role(sby) == "standby", 30, f"{sby} standby")
        except BaseException:
            print("--- a ---\n" + tb.log("a")[-3000:] + "\n--- b ---\n" + tb.log("b")[-3000:])
            if term is not None:
                print("--- b's console ---\n" + term.text())
            raise
        finally:
            if term is not None:
                term.close()
